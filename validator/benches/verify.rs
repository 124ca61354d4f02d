//! In-process verification rate of `Validator::validate` against the raw `ring` signature check
//! of the same key and token, in the same run. Prints both and their ratio.
//! `cargo bench -p sigil-validator --bench verify`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::json;
use sigil_validator::Validator;

const SECONDS: u64 = 3;

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(SECONDS) {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[allow(clippy::disallowed_methods)]
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
        .expect("key");
    let point = pair.public_key().as_ref().to_vec();
    let jwk = json!({"kty":"EC","crv":"P-256","kid":"k","alg":"ES256","use":"sig",
        "x":B64.encode(&point[1..33]),"y":B64.encode(&point[33..65])});
    let iss = "https://issuer.bench/realms/ledger";
    let t = now();
    let claims = json!({"iss":iss,"sub":"ach-processor","aud":"ledger","client_id":"ach-processor",
        "azp":"ach-processor","scope":"tx:post:ach","token_use":"access","iat":t,"nbf":t,
        "exp":t+3600,"jti":"bench"});
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg":"ES256","kid":"k","typ":"at+jwt"}).to_string()),
        B64.encode(claims.to_string())
    );
    let mut sig_bytes = pair
        .sign(&rng, input.as_bytes())
        .expect("sign")
        .as_ref()
        .to_vec();
    // The validator accepts only low-s ES256 signatures (as Sigil signs them).
    sigil_validator::es256::to_low_s(&mut sig_bytes);
    let token = format!("{input}.{}", B64.encode(&sig_bytes));

    let validator = rt.block_on(async {
        let body = json!({ "keys": [jwk] }).to_string();
        let app = Router::new().route("/jwks", get(move || async move { body.clone() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Validator::builder(iss, "ledger")
            .jwks_uri(format!("http://{addr}/jwks"))
            .build()
            .await
            .expect("validator")
    });

    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
    let raw = rate(|| {
        assert!(key.verify(input.as_bytes(), &sig_bytes).is_ok());
    });
    let validator = Arc::new(validator);
    let full = rate(|| {
        let v = validator.clone();
        let ok = rt.block_on(async { v.validate(&token).await.is_ok() });
        assert!(ok);
    });
    println!("raw_verify_per_sec {raw:.0}");
    println!("validator_verify_per_sec {full:.0}");
    println!("validator_vs_raw_ratio {:.3}", full / raw);
}
