//! Client certificates forwarded by a TLS-terminating proxy in a request header, and the CIDR
//! ranges such proxies are trusted from. A forwarded certificate is only as good as the proxy
//! that sets the header: read it only from peers inside a trusted range (the axum layer does),
//! and make the proxy overwrite (never append to) what the client sent.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Largest header value parsed.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// How the proxy writes the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Envoy's `X-Forwarded-Client-Cert`: `By=...;Hash=<hex>;Cert="<URL-encoded PEM>";...`, one
    /// comma-separated element per proxy. The last element (the nearest proxy's) is used; it must
    /// carry `Cert` (a `Hash` alone is not enough), and a `Hash` present must match it.
    EnvoyXfcc,
    /// nginx `$ssl_client_escaped_cert`: the whole value is a URL-encoded PEM certificate.
    NginxEscapedPem,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "envoy" | "xfcc" | "x-forwarded-client-cert" => Ok(Format::EnvoyXfcc),
            "nginx" | "escaped-pem" => Ok(Format::NginxEscapedPem),
            _ => Err(format!(
                "unknown forwarded certificate format {s:?} (envoy, nginx)"
            )),
        }
    }
}

/// The DER of the client certificate in a proxy header value, or `None` when there is none or
/// it cannot be read.
pub fn parse(value: &str, format: Format) -> Option<Vec<u8>> {
    if value.len() > MAX_HEADER_BYTES {
        return None;
    }
    match format {
        Format::NginxEscapedPem => pem_certificate(&percent_decode(value.trim())?),
        Format::EnvoyXfcc => {
            let element = split_unquoted(value, ',').pop()?;
            let mut cert = None;
            let mut hash = None;
            for pair in split_unquoted(&element, ';') {
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                let v = unquote(v.trim())?;
                if k.trim().eq_ignore_ascii_case("cert") {
                    cert = Some(pem_certificate(&percent_decode(&v)?)?);
                } else if k.trim().eq_ignore_ascii_case("hash") {
                    hash = Some(v.to_ascii_lowercase());
                }
            }
            let cert = cert?;
            if let Some(hash) = hash {
                let actual = ring::digest::digest(&ring::digest::SHA256, &cert);
                let hex: String = actual.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                if hex != hash {
                    return None;
                }
            }
            Some(cert)
        }
    }
}

/// Splits on `sep` outside double quotes (a backslash escapes inside them).
fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

/// A value as it is, or the content of a quoted string with its escapes removed.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Some(v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
fn pem_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN)? + BEGIN.len();
    let len = text[start..].find(END)?;
    let body: String = text[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD.decode(body).ok()?;
    // A DER certificate is a SEQUENCE.
    (der.first() == Some(&0x30)).then_some(der)
}

/// An IP range such as `10.0.0.0/8`, `192.0.2.7` (one address) or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` is inside the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not an IP range: {s:?}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(c.contains("10.1.200.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        let one: Cidr = "127.0.0.1".parse().expect("cidr");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("203.0.113.9".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn quoted_values_and_elements() {
        assert_eq!(
            split_unquoted(r#"a="x,y";b=2,c="q\",r""#, ','),
            [r#"a="x,y";b=2"#, r#"c="q\",r""#]
        );
        assert_eq!(unquote(r#""q\",r""#).as_deref(), Some(r#"q",r"#));
        assert_eq!(unquote("plain").as_deref(), Some("plain"));
        assert_eq!(parse("Hash=abc;Subject=\"CN=x\"", Format::EnvoyXfcc), None);
        assert_eq!(parse("%zz", Format::NginxEscapedPem), None);
    }
}
