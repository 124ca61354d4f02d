//! A decrypted signing key, parsed once and kept: signing is the token endpoint's hot path.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use serde::{Deserialize, Serialize};

use super::KeyError;
use super::jwk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    ES256,
    RS256,
    EdDSA,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
            Alg::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" => Ok(Alg::ES256),
            "RS256" => Ok(Alg::RS256),
            "EdDSA" => Ok(Alg::EdDSA),
            other => Err(format!(
                "unsupported algorithm {other:?} (ES256, RS256, EdDSA)"
            )),
        }
    }
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A parsed private key with its `kid` and the precomputed, base64url JWT header prefix.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    pair: Pair,
    rng: SystemRandom,
    /// `base64url(header)` for access tokens (`typ: at+jwt`).
    at_header: String,
    /// `base64url(header)` for ID tokens (`typ: JWT`).
    id_header: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A freshly generated key: its private PKCS#8 DER (to be sealed) and public JWK.
pub struct GeneratedKey {
    pub kid: String,
    pub pkcs8: Vec<u8>,
    pub public_jwk: serde_json::Value,
}

impl SigningKey {
    pub fn from_pkcs8(alg: Alg, kid: String, pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let bad = |e: String| KeyError::Malformed(format!("{kid}: {e}"));
        let pair = match alg {
            Alg::ES256 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            Alg::RS256 => Pair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| bad(e.to_string()))?),
            Alg::EdDSA => Pair::Ed(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                    .map_err(|e| bad(e.to_string()))?,
            ),
        };
        let header = serde_json::json!({"alg": alg.as_str(), "kid": kid, "typ": "at+jwt"});
        let at_header = B64.encode(header.to_string());
        let id_header = B64
            .encode(serde_json::json!({"alg": alg.as_str(), "kid": kid, "typ": "JWT"}).to_string());
        Ok(SigningKey {
            kid,
            alg,
            pair,
            rng,
            at_header,
            id_header,
        })
    }

    pub fn generate(alg: Alg) -> Result<GeneratedKey, KeyError> {
        let rng = SystemRandom::new();
        let (pkcs8, public) = match alg {
            Alg::ES256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Malformed("EC generation failed".into()))?;
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                        .map_err(|e| KeyError::Malformed(e.to_string()))?;
                let point = pair.public_key().as_ref();
                // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
                let public = jwk::PublicParts::Ec {
                    x: point[1..33].to_vec(),
                    y: point[33..65].to_vec(),
                };
                (doc.as_ref().to_vec(), public)
            }
            Alg::EdDSA => {
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| KeyError::Malformed("Ed25519 generation failed".into()))?;
                let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                    .map_err(|e| KeyError::Malformed(e.to_string()))?;
                let public = jwk::PublicParts::Okp {
                    x: pair.public_key().as_ref().to_vec(),
                };
                (doc.as_ref().to_vec(), public)
            }
            Alg::RS256 => {
                use rsa::pkcs8::EncodePrivateKey;
                use rsa::traits::PublicKeyParts;
                // ring cannot generate RSA keys; `rsa` does, and ring signs with the PKCS#8.
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                    .map_err(|e| KeyError::Malformed(e.to_string()))?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Malformed(e.to_string()))?;
                let public = jwk::PublicParts::Rsa {
                    n: key.n().to_bytes_be(),
                    e: key.e().to_bytes_be(),
                };
                (der.as_bytes().to_vec(), public)
            }
        };
        let kid = public.thumbprint();
        let public_jwk = public.to_jwk(alg, &kid);
        Ok(GeneratedKey {
            kid,
            pkcs8,
            public_jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Signs `message`. ES256 signatures always come out in their low-s form (`s ≤ n/2`), the
    /// only form the validator and userinfo accept, so every token has exactly one encoding.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            Pair::Ecdsa(p) => {
                let mut sig = p
                    .sign(&self.rng, message)
                    .map_err(|_| KeyError::Sign)?
                    .as_ref()
                    .to_vec();
                sigil_validator::es256::to_low_s(&mut sig);
                Ok(sig)
            }
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Rsa(p) => {
                let mut sig = vec![0u8; p.public().modulus_len()];
                p.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
        }
    }

    /// Signs `claims` (already serialised JSON) as an RFC 9068 access token.
    pub fn sign_access_token(&self, claims_json: &[u8]) -> Result<String, KeyError> {
        self.sign_with_header(&self.at_header, claims_json)
    }

    /// Signs `payload` as a JWS of media type `typ` (such as `revocations+jwt`), this key's `alg`
    /// and `kid` in the header.
    pub fn sign_typed(&self, typ: &str, payload_json: &[u8]) -> Result<String, KeyError> {
        let header = serde_json::json!({"alg": self.alg().as_str(), "kid": self.kid(), "typ": typ});
        self.sign_with_header(&B64.encode(header.to_string()), payload_json)
    }

    /// Signs `claims` as an OpenID Connect ID token (`typ: JWT`).
    pub fn sign_id_token(&self, claims_json: &[u8]) -> Result<String, KeyError> {
        self.sign_with_header(&self.id_header, claims_json)
    }

    fn sign_with_header(&self, header: &str, claims_json: &[u8]) -> Result<String, KeyError> {
        let payload_len = base64::encoded_len(claims_json.len(), false).unwrap_or(0);
        let mut jwt = String::with_capacity(header.len() + payload_len + 400);
        jwt.push_str(header);
        jwt.push('.');
        B64.encode_string(claims_json, &mut jwt);
        let sig = self.sign(jwt.as_bytes())?;
        jwt.push('.');
        B64.encode_string(sig, &mut jwt);
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
    };

    fn verify(alg: Alg, jwk: &serde_json::Value, jwt: &str) {
        let (signed, sig) = jwt.rsplit_once('.').expect("jwt");
        let sig = B64.decode(sig).expect("b64");
        let field = |k: &str| B64.decode(jwk[k].as_str().expect("field")).expect("b64");
        match alg {
            Alg::ES256 => {
                let mut point = vec![4u8];
                point.extend(field("x"));
                point.extend(field("y"));
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &sig)
                    .expect("ES256 verifies");
            }
            Alg::EdDSA => UnparsedPublicKey::new(&ED25519, field("x"))
                .verify(signed.as_bytes(), &sig)
                .expect("EdDSA verifies"),
            Alg::RS256 => ring::signature::RsaPublicKeyComponents {
                n: field("n"),
                e: field("e"),
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &sig)
            .expect("RS256 verifies"),
        }
    }

    #[test]
    fn every_alg_signs_what_its_jwk_verifies() {
        for alg in [Alg::ES256, Alg::EdDSA, Alg::RS256] {
            let g = SigningKey::generate(alg).expect("generate");
            assert_eq!(g.public_jwk["kid"], g.kid.as_str());
            assert_eq!(g.public_jwk["alg"], alg.as_str());
            let key = SigningKey::from_pkcs8(alg, g.kid.clone(), &g.pkcs8).expect("parse");
            let jwt = key.sign_access_token(br#"{"sub":"x"}"#).expect("sign");
            let header: serde_json::Value = serde_json::from_slice(
                &B64.decode(jwt.split('.').next().expect("header"))
                    .expect("b64"),
            )
            .expect("json");
            assert_eq!(header["typ"], "at+jwt");
            assert_eq!(header["kid"], g.kid.as_str());
            verify(alg, &g.public_jwk, &jwt);
        }
    }

    #[test]
    fn es256_signatures_are_all_low_s() {
        let g = SigningKey::generate(Alg::ES256).expect("generate");
        let key = SigningKey::from_pkcs8(Alg::ES256, g.kid.clone(), &g.pkcs8).expect("parse");
        // ring produces a high s half the time: 500 signatures would all be low by chance with
        // probability 2^-500.
        for i in 0..500 {
            let jwt = key
                .sign_access_token(format!(r#"{{"n":{i}}}"#).as_bytes())
                .expect("sign");
            let sig = B64
                .decode(jwt.rsplit_once('.').expect("jwt").1)
                .expect("b64");
            assert!(
                sigil_validator::es256::is_low_s(&sig),
                "token {i} is high-s"
            );
            verify(Alg::ES256, &g.public_jwk, &jwt);
        }
    }
}
