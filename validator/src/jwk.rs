//! Public keys that clients present themselves: one JWK (a DPoP proof's `jwk` header, RFC 9449) or
//! a client's JWKS (`private_key_jwt` client assertions, RFC 7523), their RFC 7638 thumbprints, and
//! compact JWS verification with them.
//!
//! Unlike [`crate::VerifyingKey`] (Sigil's own keys, ES256 low-s only), signatures here come from
//! independent clients whose ECDSA libraries do not normalise `s`: both forms of an ECDSA
//! signature are accepted. Replay of such JWTs is detected by their `jti`, never by their text.
//!
//! Only asymmetric public keys are accepted: a JWK with private members (`d`, `p`, `q`, `dp`, `dq`,
//! `qi`, `oth`, `k`) or of type `oct` is refused, and `none` and `HS*` are never algorithms.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256,
    RSA_PSS_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde_json::{Map, Value};

/// The algorithms a [`PublicJwk`] can verify, in the order a `DPoP` challenge lists them.
pub const SUPPORTED_ALGS: &[&str] = &["ES256", "ES384", "RS256", "PS256", "EdDSA"];

/// Largest compact JWS [`verify_jws_compact`] (and a DPoP proof) may be.
pub const MAX_JWS_BYTES: usize = 8 * 1024;

/// Members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a JWK or a JWKS was refused. The descriptions are fixed: they never echo key text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    #[error("the JWK is not a JSON object")]
    NotAnObject,
    #[error("the JWK carries private key material")]
    PrivateKey,
    #[error("symmetric (oct) keys are not accepted")]
    Symmetric,
    #[error("unsupported key type or curve")]
    UnsupportedKeyType,
    #[error("a required key member is missing or not base64url")]
    BadMember(&'static str),
    #[error("the key's declared alg does not fit the key")]
    AlgorithmMismatch,
    #[error("the key is not for signatures")]
    NotForSignatures,
    #[error("RSA keys must be of 2048 to 8192 bits")]
    RsaKeySize,
    #[error("not a JWK set")]
    NotASet,
}

#[derive(Debug, Clone)]
enum Material {
    P256(UnparsedPublicKey<Vec<u8>>),
    P384(UnparsedPublicKey<Vec<u8>>),
    Ed25519(UnparsedPublicKey<Vec<u8>>),
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
}

/// One public signing key a client presented, with its RFC 7638 thumbprint.
#[derive(Debug, Clone)]
pub struct PublicJwk {
    material: Material,
    kid: Option<String>,
    /// The `alg` the JWK itself declares, if any: then it is the only algorithm accepted.
    alg: Option<String>,
    thumbprint: String,
}

fn member<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JwkError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or(JwkError::BadMember(name))
}

/// A base64url member (no padding, canonical), decoded.
fn bytes(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    B64.decode(member(obj, name)?)
        .map_err(|_| JwkError::BadMember(name))
}

/// base64url (no padding) of SHA-256 of `data`.
pub fn sha256_b64(data: &[u8]) -> String {
    B64.encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// The RFC 7638 thumbprint: SHA-256 of the required members, given here in lexicographic order,
/// as JSON without whitespace (serde_json writes strings in the minimal form the RFC asks for).
fn thumbprint_of(members: &[(&str, &str)]) -> String {
    let fields: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(*k), Value::from(*v)))
        .collect();
    sha256_b64(format!("{{{}}}", fields.join(",")).as_bytes())
}

impl PublicJwk {
    /// Parses one public JWK (`EC` P-256/P-384, `RSA` of 2048+ bits, `OKP` Ed25519).
    pub fn from_json(jwk: &Value) -> Result<Self, JwkError> {
        let obj = jwk.as_object().ok_or(JwkError::NotAnObject)?;
        if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
            return Err(JwkError::PrivateKey);
        }
        if obj.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            return Err(JwkError::NotForSignatures);
        }
        if let Some(ops) = obj.get("key_ops") {
            let verify = ops
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
            if !verify {
                return Err(JwkError::NotForSignatures);
            }
        }
        let kty = member(obj, "kty").map_err(|_| JwkError::UnsupportedKeyType)?;
        let (material, thumbprint) = match kty {
            "oct" => return Err(JwkError::Symmetric),
            "EC" => {
                let crv = member(obj, "crv")?;
                let (x, y) = (bytes(obj, "x")?, bytes(obj, "y")?);
                let (len, alg) = match crv {
                    "P-256" => (32, &ECDSA_P256_SHA256_FIXED),
                    "P-384" => (48, &ECDSA_P384_SHA384_FIXED),
                    _ => return Err(JwkError::UnsupportedKeyType),
                };
                if x.len() != len {
                    return Err(JwkError::BadMember("x"));
                }
                if y.len() != len {
                    return Err(JwkError::BadMember("y"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend(x);
                point.extend(y);
                let key = UnparsedPublicKey::new(alg, point);
                let material = if len == 32 {
                    Material::P256(key)
                } else {
                    Material::P384(key)
                };
                let tp = thumbprint_of(&[
                    ("crv", crv),
                    ("kty", "EC"),
                    ("x", member(obj, "x")?),
                    ("y", member(obj, "y")?),
                ]);
                (material, tp)
            }
            "OKP" => {
                let crv = member(obj, "crv")?;
                if crv != "Ed25519" {
                    return Err(JwkError::UnsupportedKeyType);
                }
                let x = bytes(obj, "x")?;
                if x.len() != 32 {
                    return Err(JwkError::BadMember("x"));
                }
                let tp = thumbprint_of(&[("crv", crv), ("kty", "OKP"), ("x", member(obj, "x")?)]);
                (Material::Ed25519(UnparsedPublicKey::new(&ED25519, x)), tp)
            }
            "RSA" => {
                let (n, e) = (bytes(obj, "n")?, bytes(obj, "e")?);
                // RFC 7518 §6.3.1: unsigned big-endian without leading zero octets.
                if n.first().is_none_or(|b| *b == 0) {
                    return Err(JwkError::BadMember("n"));
                }
                if e.first().is_none_or(|b| *b == 0) || e.len() > 4 {
                    return Err(JwkError::BadMember("e"));
                }
                if !(256..=1024).contains(&n.len()) {
                    return Err(JwkError::RsaKeySize);
                }
                let tp = thumbprint_of(&[
                    ("e", member(obj, "e")?),
                    ("kty", "RSA"),
                    ("n", member(obj, "n")?),
                ]);
                (Material::Rsa(RsaPublicKeyComponents { n, e }), tp)
            }
            _ => return Err(JwkError::UnsupportedKeyType),
        };
        let alg = match obj.get("alg") {
            None => None,
            Some(Value::String(a)) => Some(a.clone()),
            Some(_) => return Err(JwkError::AlgorithmMismatch),
        };
        let key = PublicJwk {
            material,
            kid: obj.get("kid").and_then(Value::as_str).map(str::to_owned),
            alg,
            thumbprint,
        };
        // A declared alg must be one this key type verifies (never HS256 on an RSA key, ...).
        if let Some(a) = &key.alg
            && !key.type_fits(a)
        {
            return Err(JwkError::AlgorithmMismatch);
        }
        Ok(key)
    }

    /// Parses a JWK from its JSON text.
    pub fn from_json_str(jwk: &str) -> Result<Self, JwkError> {
        let v: Value = serde_json::from_str(jwk).map_err(|_| JwkError::NotAnObject)?;
        Self::from_json(&v)
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url without padding (what `cnf.jkt` holds).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `alg` the JWK declares, if it declares one.
    pub fn declared_alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    /// The algorithms this key verifies: its declared `alg` alone, else every one its type fits.
    pub fn algs(&self) -> Vec<&'static str> {
        SUPPORTED_ALGS
            .iter()
            .copied()
            .filter(|a| self.accepts(a))
            .collect()
    }

    fn type_fits(&self, alg: &str) -> bool {
        matches!(
            (&self.material, alg),
            (Material::P256(_), "ES256")
                | (Material::P384(_), "ES384")
                | (Material::Ed25519(_), "EdDSA")
                | (Material::Rsa(_), "RS256" | "PS256")
        )
    }

    /// True when a JWS with header `alg` may be verified with this key.
    pub fn accepts(&self, alg: &str) -> bool {
        self.type_fits(alg) && self.alg.as_deref().is_none_or(|a| a == alg)
    }

    /// Verifies `signature` over `message` with the algorithm a JWS header names; false for an
    /// algorithm this key does not take (`none`, `HS256`, `RS256` on an EC key...). ECDSA
    /// signatures are fixed-width `r ‖ s` (RFC 7518 §3.4), either form of `s`.
    pub fn verify(&self, alg: &str, message: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::P256(k) | Material::P384(k) | Material::Ed25519(k), _) => {
                k.verify(message, signature).is_ok()
            }
            (Material::Rsa(k), "RS256") => k
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            (Material::Rsa(k), "PS256") => k
                .verify(&RSA_PSS_2048_8192_SHA256, message, signature)
                .is_ok(),
            _ => false,
        }
    }
}

/// Parses a client's JWKS (`{"keys": [...]}`), keeping the public signing keys this crate
/// supports and skipping the others (`use: enc`, unknown types or curves, small RSA keys).
/// A set that publishes private or symmetric key material is refused as a whole: the client's
/// keys are compromised or misconfigured, and none of them should be trusted.
pub fn parse_jwk_set(jwks: &Value) -> Result<Vec<PublicJwk>, JwkError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwkError::NotASet)?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        match PublicJwk::from_json(k) {
            Ok(key) => out.push(key),
            Err(e @ (JwkError::PrivateKey | JwkError::Symmetric)) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Why a compact JWS was refused. Descriptions are fixed: they never echo token text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    #[error("the JWS is larger than allowed")]
    TooLarge,
    #[error("not a compact JWS of JSON header and claims")]
    Malformed,
    #[error("unsupported JWS algorithm")]
    UnsupportedAlgorithm,
    #[error("unsupported JWS header")]
    UnsupportedHeader,
    #[error("no key fits the JWS")]
    UnknownKey,
    #[error("bad JWS signature")]
    BadSignature,
}

/// A verified compact JWS: its header and claims as JSON objects.
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// The header's `alg`.
    pub alg: String,
}

/// The parts of a compact JWS, decoded but not verified.
pub(crate) struct Parsed<'a> {
    pub signing_input: &'a str,
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub signature: Vec<u8>,
    pub alg: String,
}

/// Splits and decodes a compact JWS: size bound, three parts, JSON objects, a supported
/// asymmetric `alg`, no `crit`.
pub(crate) fn parse_compact(token: &str) -> Result<Parsed<'_>, JwsError> {
    if token.len() > MAX_JWS_BYTES {
        return Err(JwsError::TooLarge);
    }
    let (signing_input, sig_b64) = token.rsplit_once('.').ok_or(JwsError::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(JwsError::Malformed)?;
    if payload_b64.contains('.') {
        return Err(JwsError::Malformed);
    }
    let object = |part: &str| -> Result<Map<String, Value>, JwsError> {
        let raw = B64.decode(part).map_err(|_| JwsError::Malformed)?;
        match serde_json::from_slice(&raw) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(JwsError::Malformed),
        }
    };
    let header = object(header_b64)?;
    let claims = object(payload_b64)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwsError::Malformed)?;
    if !SUPPORTED_ALGS.contains(&alg) {
        return Err(JwsError::UnsupportedAlgorithm);
    }
    // No extension this verifier would have to understand (b64: false, ...).
    if header.contains_key("crit") {
        return Err(JwsError::UnsupportedHeader);
    }
    let signature = B64.decode(sig_b64).map_err(|_| JwsError::Malformed)?;
    Ok(Parsed {
        signing_input,
        alg: alg.to_owned(),
        header,
        claims,
        signature,
    })
}

/// Verifies a compact JWS (at most [`MAX_JWS_BYTES`]) made by a client with one of `keys` (its
/// JWKS, from [`parse_jwk_set`]): by `kid` when the header names one (only keys with that `kid`
/// are tried), else every key that accepts the header's `alg`. Returns the header, the claims and
/// the key that verified. Only the signature and the header's form are checked: the caller checks
/// `typ` and the claims (`iss`, `sub`, `aud`, `exp`, `jti` replay for RFC 7523 assertions).
pub fn verify_jws_compact<'k>(
    token: &str,
    keys: &'k [PublicJwk],
) -> Result<(VerifiedJws, &'k PublicJwk), JwsError> {
    let parsed = parse_compact(token)?;
    let kid = match parsed.header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(JwsError::Malformed),
    };
    let mut candidates = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.kid() == Some(kid)))
        .filter(|k| k.accepts(&parsed.alg))
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwsError::UnknownKey);
    }
    let key = candidates
        .find(|k| {
            k.verify(
                &parsed.alg,
                parsed.signing_input.as_bytes(),
                &parsed.signature,
            )
        })
        .ok_or(JwsError::BadSignature)?;
    Ok((
        VerifiedJws {
            header: parsed.header,
            claims: parsed.claims,
            alg: parsed.alg,
        },
        key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7638_thumbprint_vector() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let key = PublicJwk::from_json(&jwk).expect("RFC key");
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(key.kid(), Some("2011-04-29"));
        assert_eq!(key.algs(), ["RS256"]);
    }

    #[test]
    fn private_symmetric_and_odd_keys_are_refused() {
        let ec = json!({"kty":"EC","crv":"P-256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let key = PublicJwk::from_json(&ec).expect("public EC key");
        assert_eq!(key.algs(), ["ES256"]);
        for private in PRIVATE_MEMBERS {
            let mut k = ec.clone();
            k[*private] = json!("AAAA");
            assert_eq!(
                PublicJwk::from_json(&k).expect_err(private),
                JwkError::PrivateKey
            );
        }
        assert_eq!(
            PublicJwk::from_json(&json!({"kty":"oct"})).expect_err("oct"),
            JwkError::Symmetric
        );
        let mut hs = ec.clone();
        hs["alg"] = json!("HS256");
        assert_eq!(
            PublicJwk::from_json(&hs).expect_err("HS256 on EC"),
            JwkError::AlgorithmMismatch
        );
        let mut enc = ec.clone();
        enc["use"] = json!("enc");
        assert!(PublicJwk::from_json(&enc).is_err());
        let mut short = ec.clone();
        short["x"] = json!("AAAA");
        assert!(PublicJwk::from_json(&short).is_err());
        assert!(!key.verify("none", b"x", b""));
        assert!(!key.verify("HS256", b"x", b""));
        // A set with a private key is refused; unsupported keys are skipped.
        let mut with_d = ec.clone();
        with_d["d"] = json!("AAAA");
        assert_eq!(
            parse_jwk_set(&json!({"keys":[ec.clone(), with_d]})).expect_err("private"),
            JwkError::PrivateKey
        );
        let set =
            parse_jwk_set(&json!({"keys":[ec, {"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}))
                .expect("set");
        assert_eq!(set.len(), 1);
    }
}
