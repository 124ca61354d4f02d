//! Public JWKs, RFC 7638 thumbprints (used as `kid`) and the JWKS document a realm publishes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;

use super::Alg;

/// The public half of a key, as raw big-endian components.
pub enum PublicParts {
    Ec { x: Vec<u8>, y: Vec<u8> },
    Okp { x: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicParts {
    /// RFC 7638: SHA-256 over the required members, lexicographically ordered, no whitespace.
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicParts::Ec { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                B64.encode(x),
                B64.encode(y)
            ),
            PublicParts::Okp { x } => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(x))
            }
            PublicParts::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                B64.encode(e),
                B64.encode(n)
            ),
        };
        B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    pub fn to_jwk(&self, alg: Alg, kid: &str) -> serde_json::Value {
        let mut jwk = match self {
            PublicParts::Ec { x, y } => {
                json!({"kty": "EC", "crv": "P-256", "x": B64.encode(x), "y": B64.encode(y)})
            }
            PublicParts::Okp { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(x)}),
            PublicParts::Rsa { n, e } => {
                json!({"kty": "RSA", "n": B64.encode(n), "e": B64.encode(e)})
            }
        };
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.as_str());
        jwk["use"] = json!("sig");
        jwk
    }
}

/// A realm's serialised JWKS document, built once per key change and served as bytes, with the
/// same keys parsed for Sigil's own checks of what it signed (userinfo, introspection, revocation,
/// logout hints): parsed once per realm load, not per request.
#[derive(Debug, Clone)]
pub struct Jwks {
    pub body: std::sync::Arc<[u8]>,
    pub keys: std::sync::Arc<std::collections::HashMap<String, sigil_validator::VerifyingKey>>,
}

impl Jwks {
    pub fn from_public_jwks<'a>(keys: impl IntoIterator<Item = &'a serde_json::Value>) -> Jwks {
        let keys: Vec<&serde_json::Value> = keys.into_iter().collect();
        let body = serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default();
        let parsed = sigil_validator::parse_jwks(&body).unwrap_or_default();
        Jwks {
            body: body.into(),
            keys: std::sync::Arc::new(parsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1's RSA example key and its published thumbprint.
        let n = B64
            .decode("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
            .expect("n");
        let e = B64.decode("AQAB").expect("e");
        assert_eq!(
            PublicParts::Rsa { n, e }.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
