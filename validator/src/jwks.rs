//! Public keys from a JWKS: parsed once into what `ring` verifies with; the algorithm belongs to the
//! key, never to the token. Only asymmetric keys are accepted: no `oct`, so no HMAC.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use serde::Deserialize;

/// A verification key with its pinned algorithm.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    Es256(UnparsedPublicKey<Vec<u8>>),
    EdDsa(UnparsedPublicKey<Vec<u8>>),
    Rs256(RsaPublicKeyComponents<Vec<u8>>),
}

impl VerifyingKey {
    pub fn alg(&self) -> &'static str {
        match self {
            VerifyingKey::Es256(_) => "ES256",
            VerifyingKey::EdDsa(_) => "EdDSA",
            VerifyingKey::Rs256(_) => "RS256",
        }
    }

    /// Verifies `signature` over `message`. ES256 accepts only the low-s form of a signature (see
    /// [`crate::es256`]), so a token has one valid encoding.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            VerifyingKey::Es256(k) => {
                crate::es256::is_low_s(signature) && k.verify(message, signature).is_ok()
            }
            VerifyingKey::EdDsa(k) => k.verify(message, signature).is_ok(),
            VerifyingKey::Rs256(k) => k
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Debug, Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

fn b64(field: &Option<String>) -> Option<Vec<u8>> {
    B64.decode(field.as_deref()?).ok()
}

fn parse_key(k: &RawJwk) -> Option<VerifyingKey> {
    if k.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let key = match (k.kty.as_str(), k.crv.as_deref()) {
        ("EC", Some("P-256")) => {
            let (x, y) = (b64(&k.x)?, b64(&k.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend(x);
            point.extend(y);
            VerifyingKey::Es256(UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point))
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64(&k.x)?;
            if x.len() != 32 {
                return None;
            }
            VerifyingKey::EdDsa(UnparsedPublicKey::new(&ED25519, x))
        }
        ("RSA", _) => {
            let (n, e) = (b64(&k.n)?, b64(&k.e)?);
            if n.len() < 256 {
                return None; // under 2048 bits
            }
            VerifyingKey::Rs256(RsaPublicKeyComponents { n, e })
        }
        _ => return None,
    };
    // A declared alg must be the key's own; anything else (HS256 on an RSA key...) drops the key.
    match &k.alg {
        Some(alg) if alg != key.alg() => None,
        _ => Some(key),
    }
}

/// Parses a JWKS document into kid → key; keys without a kid or of unsupported types are skipped.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<HashMap<String, VerifyingKey>, String> {
    let raw: RawJwks = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: HashMap<String, VerifyingKey> = raw
        .keys
        .iter()
        .filter_map(|k| Some((k.kid.clone()?, parse_key(k)?)))
        .collect();
    if keys.is_empty() {
        return Err("the JWKS holds no usable signing key".into());
    }
    Ok(keys)
}

/// `max-age` of a `Cache-Control` header value, if any.
pub(crate) fn max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("max-age") {
            v.trim().trim_matches('"').parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=3600"), Some(3600));
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("Max-Age=\"5\""), Some(5));
    }

    #[test]
    fn es256_accepts_the_low_s_form_only() {
        use ring::rand::SystemRandom;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
            .expect("parse");
        let ring_key = UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref().to_vec(),
        );
        let key = VerifyingKey::Es256(ring_key.clone());
        let (mut high_seen, mut low_seen) = (false, false);
        for i in 0..64u32 {
            let message = i.to_be_bytes();
            let raw = pair.sign(&rng, &message).expect("sign").as_ref().to_vec();
            let mut low = raw.clone();
            crate::es256::to_low_s(&mut low);
            // The other form of the same signature: (r, n − s).
            let mut high = low.clone();
            crate::es256::negate_s(&mut high);
            assert!(
                ring_key.verify(&message, &high).is_ok(),
                "ring alone takes both"
            );
            assert!(key.verify(&message, &low), "low-s verifies");
            assert!(!key.verify(&message, &high), "high-s is refused");
            if raw == low {
                low_seen = true;
            } else {
                high_seen = true;
            }
        }
        assert!(
            high_seen && low_seen,
            "ring signs both forms; 64 tries see each"
        );
    }

    #[test]
    fn symmetric_and_mislabelled_keys_are_ignored() {
        let body = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-256","kid":"e","alg":"HS256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
        ]}"#;
        assert!(parse_jwks(body).is_err());
        assert!(parse_jwks(b"garbage").is_err());
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
    }
}
