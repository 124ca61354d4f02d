//! The signed `GetCallerIdentity` request a workload hands over, and every check made on it before
//! Sigil sends anything anywhere: where it may go, what it may say, which headers it may carry
//! (once each), that Sigil's server-ID header is present, correct and signed, and that it is fresh.

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use url::Url;

use crate::store::AwsSettingsRecord;

pub const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
pub const SERVER_ID_HEADER: &str = "x-sigil-server-id";
pub const CHALLENGE_HEADER: &str = "x-sigil-challenge";
/// How far `X-Amz-Date` may be from Sigil's clock (STS emulators do not check this; Sigil does).
pub const MAX_SKEW_SECS: i64 = 300;

const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "host",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-user-agent",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "user-agent",
    "accept",
    "accept-encoding",
    SERVER_ID_HEADER,
    CHALLENGE_HEADER,
];
const MAX_HEADERS: usize = 20;
const MAX_HEADER_VALUE: usize = 4096;

/// `{"method", "url", "headers", "body"}` as the workload signed it. Header values may be strings
/// or arrays; every occurrence is kept so duplicates can be refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    pub method: String,
    pub url: String,
    #[serde(deserialize_with = "header_list")]
    pub headers: Vec<(String, String)>,
    pub body: String,
}

fn header_list<'de, D: de::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct V;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum One {
        S(String),
        Many(Vec<String>),
    }
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of header names to values")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, One>()? {
                match v {
                    One::S(s) => out.push((k, s)),
                    One::Many(vs) => out.extend(vs.into_iter().map(|s| (k.clone(), s))),
                }
                if out.len() > MAX_HEADERS * 2 {
                    return Err(de::Error::custom("too many headers"));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// Why a request was refused before any network call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// For the audit log.
    pub reason: &'static str,
    /// Malformed (`invalid_request`) or failed authentication (`invalid_client`).
    pub malformed: bool,
    pub description: &'static str,
}

fn malformed(reason: &'static str, description: &'static str) -> Reject {
    Reject {
        reason,
        malformed: true,
        description,
    }
}

fn unauthenticated(reason: &'static str, description: &'static str) -> Reject {
    Reject {
        reason,
        malformed: false,
        description,
    }
}

/// A request that passed every local check.
#[derive(Debug)]
pub struct Checked {
    /// Where Sigil sends it: chosen from the realm's configuration, never taken from the caller.
    pub target: Url,
    /// The headers to forward, unchanged (the `Host` among them).
    pub headers: Vec<(String, String)>,
    pub challenge: Option<String>,
}

fn is_region(r: &str) -> bool {
    // us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-4 ...
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].len() <= 2
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// The real STS hosts of a partition: global, regional and FIPS.
pub fn is_partition_sts_host(partition: &str, host: &str) -> bool {
    let (suffix, global) = match partition {
        "aws" => (".amazonaws.com", Some("sts.amazonaws.com")),
        "aws-us-gov" => (".amazonaws.com", None),
        "aws-cn" => (".amazonaws.com.cn", None),
        _ => return false,
    };
    if Some(host) == global {
        return true;
    }
    let Some(rest) = host.strip_suffix(suffix) else {
        return false;
    };
    let region = rest
        .strip_prefix("sts.")
        .or_else(|| rest.strip_prefix("sts-fips."));
    region.is_some_and(|r| {
        is_region(r)
            && match partition {
                "aws-us-gov" => r.starts_with("us-gov-"),
                "aws-cn" => r.starts_with("cn-"),
                _ => !r.starts_with("us-gov-") && !r.starts_with("cn-"),
            }
    })
}

fn authority(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

fn choose_target(settings: &AwsSettingsRecord, url: &Url) -> Result<Url, Reject> {
    let refuse = || {
        malformed(
            "sts_host_not_allowed",
            "the request is not for an allowed STS endpoint",
        )
    };
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(malformed(
            "bad_sts_url",
            "the request must be for / with no query string",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse());
    }
    match &settings.sts_endpoint {
        Some(endpoint) => {
            let ep = Url::parse(endpoint).map_err(|_| refuse())?;
            if ep.scheme() == url.scheme()
                && ep.host_str() == url.host_str()
                && ep.port_or_known_default() == url.port_or_known_default()
            {
                let mut target = ep;
                target.set_path("/");
                Ok(target)
            } else {
                Err(refuse())
            }
        }
        None => {
            let host = url.host_str().ok_or_else(refuse)?;
            let allowed = url.scheme() == "https"
                && url.port().is_none()
                && settings
                    .partitions
                    .split(' ')
                    .any(|p| is_partition_sts_host(p, host));
            if allowed {
                Url::parse(&format!("https://{host}/")).map_err(|_| refuse())
            } else {
                Err(refuse())
            }
        }
    }
}

struct AuthHeader {
    service: String,
    date: String,
    signed: Vec<String>,
}

fn parse_authorization(value: &str) -> Option<AuthHeader> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let sig = signature?;
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Credential = AKID/yyyymmdd/region/service/aws4_request
    let scope: Vec<&str> = credential?.split('/').collect();
    let [_akid, date, _region, service, "aws4_request"] = scope[..] else {
        return None;
    };
    Some(AuthHeader {
        service: service.to_owned(),
        date: date.to_owned(),
        signed: signed?.split(';').map(str::to_owned).collect(),
    })
}

/// `yyyymmddThhmmssZ` → Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Every check that needs no network.
pub fn check(
    req: &SignedRequest,
    settings: &AwsSettingsRecord,
    now: i64,
) -> Result<Checked, Reject> {
    if req.method != "POST" {
        return Err(malformed("bad_method", "the request must be a POST"));
    }
    if req.body != BODY {
        return Err(malformed(
            "bad_body",
            "the body must be exactly the GetCallerIdentity action",
        ));
    }
    let url = Url::parse(&req.url)
        .map_err(|_| malformed("bad_sts_url", "the request URL does not parse"))?;
    let target = choose_target(settings, &url)?;
    if req.headers.len() > MAX_HEADERS {
        return Err(malformed("too_many_headers", "too many headers"));
    }
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if !ALLOWED_HEADERS.contains(&lower.as_str()) {
            return Err(malformed(
                "header_not_allowed",
                "a header is not on the allowlist",
            ));
        }
        if seen.contains(&lower) {
            return Err(malformed(
                "duplicate_header",
                "a header appears more than once",
            ));
        }
        if value.len() > MAX_HEADER_VALUE || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(malformed(
                "bad_header_value",
                "a header value is too long or not printable",
            ));
        }
        seen.push(lower);
    }
    let get = |n: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    let host = get("host").ok_or(malformed(
        "missing_host",
        "the signed Host header is required",
    ))?;
    let want_host = authority(&url).unwrap_or_default();
    if !host.eq_ignore_ascii_case(&want_host) {
        return Err(malformed(
            "host_mismatch",
            "the Host header does not match the URL",
        ));
    }
    let auth = get("authorization")
        .ok_or(unauthenticated("unsigned", "the request is not signed"))
        .and_then(|v| {
            parse_authorization(v).ok_or(unauthenticated(
                "bad_authorization",
                "malformed SigV4 Authorization header",
            ))
        })?;
    if auth.service != "sts" {
        return Err(unauthenticated(
            "wrong_service",
            "the request is not signed for STS",
        ));
    }
    let amz_date = get("x-amz-date").ok_or(unauthenticated("no_date", "X-Amz-Date is required"))?;
    let signed_at =
        parse_amz_date(amz_date).ok_or(unauthenticated("bad_date", "malformed X-Amz-Date"))?;
    if (signed_at - now).abs() > MAX_SKEW_SECS || !amz_date.starts_with(&auth.date) {
        return Err(unauthenticated(
            "stale_date",
            "the signature's date is too far from now",
        ));
    }
    let signed = |h: &str| auth.signed.iter().any(|s| s == h);
    if !signed("host") || !signed("x-amz-date") {
        return Err(unauthenticated(
            "unsigned_header",
            "Host and X-Amz-Date must be signed",
        ));
    }
    match get(SERVER_ID_HEADER) {
        Some(v) if v == settings.server_id => {}
        Some(_) => {
            return Err(unauthenticated(
                "wrong_server_id",
                "the server-ID header names another server",
            ));
        }
        None => {
            return Err(unauthenticated(
                "missing_server_id",
                "the X-Sigil-Server-ID header is required",
            ));
        }
    }
    if !signed(SERVER_ID_HEADER) {
        return Err(unauthenticated(
            "server_id_unsigned",
            "the X-Sigil-Server-ID header must be signed",
        ));
    }
    let challenge = get(CHALLENGE_HEADER).map(str::to_owned);
    match (&challenge, settings.require_challenge) {
        (None, true) => {
            return Err(unauthenticated(
                "missing_challenge",
                "a challenge from the challenge endpoint is required",
            ));
        }
        (Some(_), _) if !signed(CHALLENGE_HEADER) => {
            return Err(unauthenticated(
                "challenge_unsigned",
                "the X-Sigil-Challenge header must be signed",
            ));
        }
        _ => {}
    }
    Ok(Checked {
        target,
        headers: req.headers.clone(),
        challenge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_sts_hosts_only() {
        for ok in [
            "sts.amazonaws.com",
            "sts.us-east-1.amazonaws.com",
            "sts-fips.us-west-2.amazonaws.com",
            "sts.eu-central-1.amazonaws.com",
        ] {
            assert!(is_partition_sts_host("aws", ok), "{ok}");
        }
        assert!(is_partition_sts_host(
            "aws-us-gov",
            "sts.us-gov-west-1.amazonaws.com"
        ));
        assert!(is_partition_sts_host(
            "aws-cn",
            "sts.cn-north-1.amazonaws.com.cn"
        ));
        for bad in [
            "evil.com",
            "sts.amazonaws.com.evil.com",
            "sts.us-east-1.amazonaws.com.",
            "xsts.us-east-1.amazonaws.com",
            "sts.us-east-1.evil.com",
            "sts.cn-north-1.amazonaws.com",
            "s3.us-east-1.amazonaws.com",
            "sts.a.b.amazonaws.com",
        ] {
            assert!(!is_partition_sts_host("aws", bad), "{bad}");
        }
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20261122T201500Z"), Some(1_795_378_500));
        for bad in [
            "2026-11-22T20:15:00Z",
            "20261322T201500Z",
            "20261122T201500",
            "2026112xT201500Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn duplicate_headers_in_any_case_are_kept_for_refusal() {
        let r: SignedRequest = serde_json::from_str(
            r#"{"method":"POST","url":"https://sts.amazonaws.com/","body":"","headers":{"Host":"a","host":"b","X-Amz-Date":["1","2"]}}"#,
        )
        .expect("parse");
        assert_eq!(r.headers.len(), 4);
    }
}
