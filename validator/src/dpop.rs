//! DPoP proofs (RFC 9449): [`verify_proof`] checks one proof against one request (§4.3) and
//! returns the thumbprint of the key that signed it; [`ReplayCache`] refuses a second use of a
//! proof's `jti` within the acceptance window. The two are separate so that the issuer can keep
//! its own cross-node replay store: `verify_proof` never consults a cache.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

use crate::jwk::{self, JwsError, PublicJwk};

/// Longest `jti` accepted, in bytes.
pub const MAX_JTI_BYTES: usize = 256;

/// Why a DPoP proof was refused. Every kind answers `invalid_dpop_proof` except a missing or
/// stale nonce (`use_dpop_nonce`, [`DpopError::error_code`]). Descriptions are fixed and never
/// echo proof text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopError {
    TooLarge,
    Malformed,
    WrongType,
    UnsupportedAlgorithm,
    UnsupportedHeader,
    BadKey,
    BadSignature,
    MissingClaim(&'static str),
    MethodMismatch,
    UriMismatch,
    Stale,
    FromTheFuture,
    AccessTokenHashMismatch,
    UseNonce,
    Replayed,
    ReplayCacheFull,
    MissingProof,
    MultipleProofs,
}

impl DpopError {
    /// The RFC 9449 error code: `use_dpop_nonce` or `invalid_dpop_proof`.
    pub fn error_code(&self) -> &'static str {
        match self {
            DpopError::UseNonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }

    /// A fixed description for responses: never text from the proof.
    pub fn description(&self) -> &'static str {
        match self {
            DpopError::TooLarge => "the DPoP proof is larger than allowed",
            DpopError::Malformed => "the DPoP proof is not a compact JWS",
            DpopError::WrongType => "the DPoP proof's typ is not dpop+jwt",
            DpopError::UnsupportedAlgorithm => "unsupported DPoP proof algorithm",
            DpopError::UnsupportedHeader => "unsupported DPoP proof header",
            DpopError::BadKey => {
                "the DPoP proof's jwk is missing or not a public key that fits alg"
            }
            DpopError::BadSignature => "bad DPoP proof signature",
            DpopError::MissingClaim(_) => "the DPoP proof lacks a required claim",
            DpopError::MethodMismatch => "the DPoP proof is for another HTTP method",
            DpopError::UriMismatch => "the DPoP proof is for another URI",
            DpopError::Stale => "the DPoP proof is too old",
            DpopError::FromTheFuture => "the DPoP proof is issued in the future",
            DpopError::AccessTokenHashMismatch => {
                "the DPoP proof's ath is not the hash of the access token"
            }
            DpopError::UseNonce => "a fresh DPoP nonce is required",
            DpopError::Replayed => "the DPoP proof has been used before",
            DpopError::ReplayCacheFull => "the replay cache is full",
            DpopError::MissingProof => "a DPoP proof is required",
            DpopError::MultipleProofs => "more than one DPoP proof",
        }
    }
}

impl std::fmt::Display for DpopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DpopError::MissingClaim(c) => write!(f, "{}: {c}", self.description()),
            _ => f.write_str(self.description()),
        }
    }
}

impl std::error::Error for DpopError {}

impl From<JwsError> for DpopError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::TooLarge => DpopError::TooLarge,
            JwsError::UnsupportedAlgorithm => DpopError::UnsupportedAlgorithm,
            JwsError::UnsupportedHeader => DpopError::UnsupportedHeader,
            JwsError::BadSignature => DpopError::BadSignature,
            JwsError::UnknownKey => DpopError::BadKey,
            _ => DpopError::Malformed,
        }
    }
}

/// How old (and how far in the future) a proof's `iat` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IatWindow {
    /// Seconds a proof stays acceptable after its `iat` (default 60).
    pub max_age: i64,
    /// Seconds of clock skew tolerated for an `iat` ahead of `now` (default 5).
    pub max_future: i64,
}

impl Default for IatWindow {
    fn default() -> Self {
        IatWindow {
            max_age: 60,
            max_future: 5,
        }
    }
}

impl IatWindow {
    /// How long a replay cache must remember a `jti`: any proof older is refused anyway.
    pub fn span(&self) -> i64 {
        self.max_age.saturating_add(self.max_future).max(1)
    }
}

/// What one request expects of its DPoP proof.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DpopExpectations<'a> {
    /// The request's HTTP method (`htm`), compared exactly (`GET`, `POST`...).
    pub method: &'a str,
    /// The absolute request URI as the client addressed it (`htu`): compared after dropping
    /// query and fragment and normalising case, default ports and percent-encodings.
    pub uri: &'a str,
    /// The access token presented with the proof: `ath` is then required and must be its hash.
    /// `None` at the token endpoint, where `ath` is ignored.
    pub access_token: Option<&'a str>,
    /// A nonce the server requires (`use_dpop_nonce` when missing or different).
    pub nonce: Option<&'a str>,
    pub window: IatWindow,
}

impl<'a> DpopExpectations<'a> {
    pub fn new(method: &'a str, uri: &'a str) -> Self {
        DpopExpectations {
            method,
            uri,
            access_token: None,
            nonce: None,
            window: IatWindow::default(),
        }
    }
    /// Require `ath` to be the hash of this access token.
    pub fn access_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }
    /// Require this nonce.
    pub fn nonce(mut self, nonce: &'a str) -> Self {
        self.nonce = Some(nonce);
        self
    }
    pub fn window(mut self, window: IatWindow) -> Self {
        self.window = window;
        self
    }
}

/// A proof that passed [`verify_proof`].
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    /// The RFC 7638 thumbprint of the proof's key (compare with `cnf.jkt`).
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    /// The proof's `nonce`, if it has one.
    pub nonce: Option<String>,
    /// The proof's public key.
    pub jwk: PublicJwk,
}

/// Verifies one DPoP proof against a request (RFC 9449 §4.3, steps 2–11 except replay): one
/// compact JWS of at most [`jwk::MAX_JWS_BYTES`], `typ: dpop+jwt`, an asymmetric supported
/// `alg`, a public `jwk` that fits it and verifies the signature, `jti`, `htm`, `htu`, `iat`
/// within the window, `ath` when an access token is presented, `nonce` when one is expected.
/// Replay is the caller's check ([`ReplayCache`], or the issuer's own store), keyed by
/// `(jkt, jti)` and kept for [`IatWindow::span`] seconds.
pub fn verify_proof(
    proof: &str,
    expected: &DpopExpectations<'_>,
    now: i64,
) -> Result<VerifiedProof, DpopError> {
    let parsed = jwk::parse_compact(proof)?;
    let header = &parsed.header;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::WrongType);
    }
    let key = header
        .get("jwk")
        .ok_or(DpopError::BadKey)
        .and_then(|j| PublicJwk::from_json(j).map_err(|_| DpopError::BadKey))?;
    if !key.accepts(&parsed.alg) {
        return Err(DpopError::BadKey);
    }
    if !key.verify(
        &parsed.alg,
        parsed.signing_input.as_bytes(),
        &parsed.signature,
    ) {
        return Err(DpopError::BadSignature);
    }
    let claims = &parsed.claims;
    let string = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .ok_or(DpopError::MissingClaim(name))
    };
    let jti = string("jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(DpopError::MissingClaim("jti"));
    }
    if string("htm")? != expected.method {
        return Err(DpopError::MethodMismatch);
    }
    let htu = normalise_uri(string("htu")?).ok_or(DpopError::UriMismatch)?;
    if normalise_uri(expected.uri) != Some(htu) {
        return Err(DpopError::UriMismatch);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(DpopError::MissingClaim("iat"))?;
    if iat < now.saturating_sub(expected.window.max_age) {
        return Err(DpopError::Stale);
    }
    if iat > now.saturating_add(expected.window.max_future) {
        return Err(DpopError::FromTheFuture);
    }
    if let Some(token) = expected.access_token {
        let ath = string("ath")?;
        let want = jwk::sha256_b64(token.as_bytes());
        if !constant_time_eq(ath.as_bytes(), want.as_bytes()) {
            return Err(DpopError::AccessTokenHashMismatch);
        }
    }
    if let Some(nonce) = expected.nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
    {
        return Err(DpopError::UseNonce);
    }
    Ok(VerifiedProof {
        jkt: key.thumbprint().to_owned(),
        jti: jti.to_owned(),
        iat,
        nonce: claims
            .get("nonce")
            .and_then(Value::as_str)
            .map(str::to_owned),
        jwk: key,
    })
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `scheme://host[:port]/path` of an absolute http(s) URI, for comparing `htu` with the request:
/// query and fragment dropped, scheme and host lowercased, the scheme's default port removed, an
/// empty path made `/`, percent-encodings uppercased and unreserved characters decoded (RFC 3986
/// §6.2.2–6.2.3). `None` for anything else (relative, userinfo, another scheme, bad port).
pub fn normalise_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // The port follows the last ':' outside an IPv6 literal.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            let n: u16 = p.parse().ok()?;
            let n = n.to_string();
            (n != default_port).then_some(n)
        }
    };
    let mut out = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p);
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    if !out.is_ascii() {
        return None;
    }
    Some(out)
}

/// An in-memory, bounded replay cache of DPoP proofs: `(jkt, jti)` pairs remembered for the iat
/// window's span. When it holds `capacity` live entries it refuses new proofs
/// ([`DpopError::ReplayCacheFull`]) rather than forget a live one (which would let it be replayed).
/// Only proofs of valid, bound tokens reach it in the validator, so filling it takes valid tokens.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    ttl: i64,
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    expiry: HashMap<[u8; 32], i64>,
    order: VecDeque<([u8; 32], i64)>,
}

impl ReplayCache {
    /// A cache of at most `capacity` live entries, each kept `ttl_secs` (use
    /// [`IatWindow::span`]).
    pub fn new(capacity: usize, ttl_secs: i64) -> Self {
        ReplayCache {
            capacity: capacity.max(1),
            ttl: ttl_secs.max(1),
            inner: Mutex::new(Seen::default()),
        }
    }

    /// Records the proof's `(jkt, jti)`; `Err(Replayed)` when it is already recorded and live.
    pub fn check_and_insert(&self, jkt: &str, jti: &str, now: i64) -> Result<(), DpopError> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(jkt.as_bytes());
        ctx.update(&[0]);
        ctx.update(jti.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.finish().as_ref());
        let mut seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what has expired (entries are queued in insertion order; a clock that steps
        // back only delays forgetting).
        while let Some((old, exp)) = seen.order.front().copied() {
            if exp > now {
                break;
            }
            seen.order.pop_front();
            if seen.expiry.get(&old) == Some(&exp) {
                seen.expiry.remove(&old);
            }
        }
        if seen.expiry.get(&id).is_some_and(|exp| *exp > now) {
            return Err(DpopError::Replayed);
        }
        if seen.expiry.len() >= self.capacity {
            tracing::warn!(
                capacity = self.capacity,
                "DPoP replay cache full: refusing proofs"
            );
            return Err(DpopError::ReplayCacheFull);
        }
        let exp = now.saturating_add(self.ttl);
        seen.expiry.insert(id, exp);
        seen.order.push_back((id, exp));
        Ok(())
    }

    /// Live entries (for metrics and tests).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expiry
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_normalisation() {
        let n = |u: &str| normalise_uri(u);
        assert_eq!(
            n("HTTPS://Ledger.Bank.Example:443/balances?x=1#f").as_deref(),
            Some("https://ledger.bank.example/balances")
        );
        assert_eq!(n("http://h:80").as_deref(), Some("http://h/"));
        assert_eq!(
            n("http://h:8080/a%7eb%2f").as_deref(),
            Some("http://h:8080/a~b%2F")
        );
        assert_eq!(
            n("http://[::1]:8443/x").as_deref(),
            Some("http://[::1]:8443/x")
        );
        assert_eq!(n("https://[::1]/x").as_deref(), Some("https://[::1]/x"));
        for bad in [
            "/relative",
            "ftp://h/",
            "https://u@h/",
            "https://h:99999/",
            "https://h/%zz",
            "https:///x",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
        assert_ne!(n("https://h/a"), n("https://h/b"));
        assert_ne!(n("https://h:8443/a"), n("https://h/a"));
        assert_ne!(n("http://h/a"), n("https://h/a"));
    }

    #[test]
    fn replay_cache_remembers_for_its_ttl_and_is_bounded() {
        let c = ReplayCache::new(2, 65);
        c.check_and_insert("k", "a", 100).expect("fresh");
        assert_eq!(c.check_and_insert("k", "a", 164), Err(DpopError::Replayed));
        c.check_and_insert("other-key", "a", 100)
            .expect("scoped by jkt");
        assert_eq!(
            c.check_and_insert("k", "b", 101),
            Err(DpopError::ReplayCacheFull)
        );
        c.check_and_insert("k", "a", 165)
            .expect("expired, forgotten");
        assert_eq!(c.len(), 1);
    }
}
