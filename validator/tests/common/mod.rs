//! What the integration tests share: an ES256 issuer key that signs tokens and JWS.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub struct Key {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    pub fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
            .expect("parse");
        Key {
            kid: kid.into(),
            pair,
        }
    }
    pub fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty":"EC","crv":"P-256","kid":self.kid,"alg":"ES256","use":"sig",
               "x":B64.encode(&p[1..33]),"y":B64.encode(&p[33..65])})
    }
    pub fn sign(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let mut sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec();
        // The validator takes only the low-s form, the one Sigil signs.
        sigil_validator::es256::to_low_s(&mut sig);
        format!("{input}.{}", B64.encode(&sig))
    }
    pub fn token(&self, claims: Value) -> String {
        self.sign(json!({"alg":"ES256","kid":self.kid,"typ":"at+jwt"}), claims)
    }
}
