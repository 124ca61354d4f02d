//! A software passkey authenticator (ES256, "none" attestation, user verification, discoverable):
//! registration and assertions as a browser would send them to Sigil. Shared by the integration
//! tests (`tests/api/passkey.rs`) and the sign-in benchmark (`examples/signin_bench.rs`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// Minimal CBOR: what attestation objects and COSE keys need.
fn cbor_head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => vec![m | 25, (n >> 8) as u8, n as u8],
        _ => {
            let mut v = vec![m | 26];
            v.extend((n as u32).to_be_bytes());
            v
        }
    }
}
fn cbor_int(i: i64) -> Vec<u8> {
    if i >= 0 {
        cbor_head(0, i as u64)
    } else {
        cbor_head(1, (-1 - i) as u64)
    }
}
fn cbor_bytes(b: &[u8]) -> Vec<u8> {
    let mut v = cbor_head(2, b.len() as u64);
    v.extend_from_slice(b);
    v
}
fn cbor_text(s: &str) -> Vec<u8> {
    let mut v = cbor_head(3, s.len() as u64);
    v.extend_from_slice(s.as_bytes());
    v
}

#[allow(dead_code)]
pub struct SoftPasskey {
    pair: EcdsaKeyPair,
    pub cred_id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub counter: u32,
}

impl SoftPasskey {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("gen");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref(), &rng)
            .expect("key");
        SoftPasskey {
            pair,
            cred_id: sigil::random::random_bytes::<16>().to_vec(),
            user_handle: vec![],
            counter: 0,
        }
    }

    fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }

    pub fn register(&mut self, options: &Value, origin: &str) -> Value {
        let pk = &options["publicKey"];
        assert_eq!(
            pk["authenticatorSelection"]["residentKey"], "required",
            "discoverable credential"
        );
        assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
        let rp_id = pk["rp"]["id"].as_str().expect("rp id");
        self.user_handle = B64
            .decode(pk["user"]["id"].as_str().expect("user id"))
            .expect("b64");
        let point = self.pair.public_key().as_ref();
        let mut cose = cbor_head(5, 5);
        for (k, v) in [
            (1, cbor_int(2)),
            (3, cbor_int(-7)),
            (-1, cbor_int(1)),
            (-2, cbor_bytes(&point[1..33])),
            (-3, cbor_bytes(&point[33..65])),
        ] {
            cose.extend(cbor_int(k));
            cose.extend(v);
        }
        let mut auth = ring::digest::digest(&ring::digest::SHA256, rp_id.as_bytes())
            .as_ref()
            .to_vec();
        auth.push(0x45); // UP | UV | AT
        auth.extend(self.counter.to_be_bytes());
        auth.extend([0u8; 16]); // AAGUID
        auth.extend((self.cred_id.len() as u16).to_be_bytes());
        auth.extend(&self.cred_id);
        auth.extend(cose);
        let mut att = cbor_head(5, 3);
        att.extend(cbor_text("fmt"));
        att.extend(cbor_text("none"));
        att.extend(cbor_text("attStmt"));
        att.extend(cbor_head(5, 0));
        att.extend(cbor_text("authData"));
        att.extend(cbor_bytes(&auth));
        let cdj = Self::client_data(
            "webauthn.create",
            pk["challenge"].as_str().expect("challenge"),
            origin,
        );
        let id = B64.encode(&self.cred_id);
        json!({"id": id, "rawId": id, "type": "public-key",
               "response": {"attestationObject": B64.encode(att), "clientDataJSON": B64.encode(cdj)},
               "extensions": {}})
    }

    pub fn assert(&mut self, options: &Value, origin: &str) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rpId"].as_str().expect("rp id");
        self.counter += 1;
        let mut auth = ring::digest::digest(&ring::digest::SHA256, rp_id.as_bytes())
            .as_ref()
            .to_vec();
        auth.push(0x05); // UP | UV
        auth.extend(self.counter.to_be_bytes());
        let cdj = Self::client_data(
            "webauthn.get",
            pk["challenge"].as_str().expect("challenge"),
            origin,
        );
        let mut signed = auth.clone();
        signed.extend(ring::digest::digest(&ring::digest::SHA256, &cdj).as_ref());
        let sig = self.pair.sign(&SystemRandom::new(), &signed).expect("sign");
        let id = B64.encode(&self.cred_id);
        json!({"id": id, "rawId": id, "type": "public-key",
               "response": {"authenticatorData": B64.encode(&auth), "clientDataJSON": B64.encode(cdj),
                            "signature": B64.encode(sig.as_ref()), "userHandle": B64.encode(&self.user_handle)},
               "extensions": {}})
    }
}
