//! Access tokens (RFC 9068): claim building and signing, no HTTP types.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;

use crate::clock::UnixTime;
use crate::keys::{KeyError, SigningKey};
use crate::random::random_bytes;

#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    azp: &'a str,
    scope: &'a str,
    token_use: &'static str,
    iat: UnixTime,
    nbf: UnixTime,
    exp: UnixTime,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<&'a Cnf>,
    #[serde(flatten)]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// RFC 7800 confirmation: what a token is bound to. A client certificate's thumbprint
/// (RFC 8705 §3.1) and/or a DPoP key's thumbprint (RFC 9449 §6); a resource server checks each
/// member present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cnf {
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

impl Cnf {
    /// `None` when the token is bound to nothing (a bearer token).
    pub fn into_option(self) -> Option<Cnf> {
        (self.x5t_s256.is_some() || self.jkt.is_some()).then_some(self)
    }
}

/// What an access token says.
#[derive(Debug, Clone, Copy)]
pub struct AccessSpec<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub audience: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub ttl: i64,
    pub now: UnixTime,
    /// What the token is bound to, if anything.
    pub cnf: Option<&'a Cnf>,
    /// Further claims (AWS identity, user attributes); never overriding the ones above.
    pub extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug)]
pub struct Minted {
    pub jwt: String,
    pub jti: String,
    pub exp: UnixTime,
}

/// A fresh token id: 128 random bits, base64url.
pub fn new_jti() -> String {
    B64.encode(random_bytes::<16>())
}

pub fn mint_access_token(key: &SigningKey, spec: AccessSpec<'_>) -> Result<Minted, KeyError> {
    let jti = new_jti();
    let exp = spec.now + spec.ttl;
    let claims = AccessClaims {
        iss: spec.issuer,
        sub: spec.subject,
        aud: spec.audience,
        client_id: spec.client_id,
        azp: spec.client_id,
        scope: spec.scope,
        token_use: "access",
        iat: spec.now,
        nbf: spec.now,
        exp,
        jti: &jti,
        cnf: spec.cnf,
        extra: spec.extra,
    };
    let json = serde_json::to_vec(&claims).map_err(|_| KeyError::Sign)?;
    let jwt = key.sign_access_token(&json)?;
    Ok(Minted { jwt, jti, exp })
}

/// Signs access tokens shaped like the token endpoint's, on `threads` threads for `seconds`, and
/// returns signatures per second: the in-process baseline the load benchmark is compared with.
#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
pub fn bench_sign_rate(realm: &crate::directory::LiveRealm, seconds: u64, threads: usize) -> f64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while std::time::Instant::now() < deadline {
                        for _ in 0..64 {
                            let spec = AccessSpec {
                                issuer: &realm.issuer,
                                subject: "bench-client",
                                audience: "ledger",
                                client_id: "bench-client",
                                scope: "tx:post:ach",
                                ttl: 3600,
                                now: 1_700_000_000,
                                cnf: None,
                                extra: None,
                            };
                            if mint_access_token(&realm.signing, spec).is_ok() {
                                n += 1;
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / seconds.max(1) as f64
}
