//! Client-side JOSE for tests: ES256 keys made with ring, their public JWKs, compact JWS
//! (client assertions, DPoP proofs) signed the way an independent client would.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub struct EcKey {
    pair: EcdsaKeyPair,
    pub kid: String,
}

impl EcKey {
    pub fn generate(kid: &str) -> EcKey {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("pkcs8");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        EcKey {
            pair,
            kid: kid.to_owned(),
        }
    }

    /// The public JWK (no `kid`).
    pub fn public_jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64.encode(&point[1..33]),
            "y": B64.encode(&point[33..65]),
        })
    }

    pub fn jwks(&self) -> Value {
        let mut jwk = self.public_jwk();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        json!({ "keys": [jwk] })
    }

    /// RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> String {
        let j = self.public_jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().expect("x"),
            j["y"].as_str().expect("y")
        );
        B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    /// A `private_key_jwt` assertion with these claims.
    pub fn assertion(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    /// A DPoP proof for `htm` `htu` at `iat` (`ath` for a resource request).
    pub fn dpop(&self, htm: &str, htu: &str, iat: i64, ath: Option<&str>) -> String {
        self.dpop_with_nonce(htm, htu, iat, ath, None)
    }

    /// [`EcKey::dpop`] carrying a server nonce.
    pub fn dpop_with_nonce(
        &self,
        htm: &str,
        htu: &str,
        iat: i64,
        ath: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut claims = json!({
            "jti": B64.encode(rand_bytes()),
            "htm": htm,
            "htu": htu,
            "iat": iat,
        });
        if let Some(a) = ath {
            claims["ath"] = json!(a);
        }
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        self.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk()}),
            &claims,
        )
    }
}

pub fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).expect("random");
    b
}

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(token: &str) -> String {
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// An unsigned `alg: none` JWT.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        B64.encode(claims.to_string())
    )
}

/// HS256 keyed with `secret` (e.g. a client's public key bytes: the key-confusion attack).
pub fn hs256(header_kid: &str, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "kid": header_kid}).to_string()),
        B64.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", B64.encode(tag.as_ref()))
}
