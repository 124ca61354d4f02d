//! In-process verification rate of `Validator::validate` against the raw `ring` signature check
//! of the same key and token, in the same run; and of a validator holding a revocation feed of
//! 100,000 entries against one without a feed; and of `validate` followed by `authorize` under a
//! bundle of 20 policies (one CEL assertion on the deciding one, a document) against `validate`
//! alone. Prints each pair and its ratio.
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

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
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
    // A JWS of media type `typ` over `payload`, signed by the issuer key in the low-s form the
    // validator accepts (as Sigil signs): its signing input and signature.
    let sign = |typ: &str, payload: &serde_json::Value| {
        let input = format!(
            "{}.{}",
            B64.encode(json!({"alg":"ES256","kid":"k","typ":typ}).to_string()),
            B64.encode(payload.to_string())
        );
        let mut sig = pair
            .sign(&rng, input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec();
        sigil_validator::es256::to_low_s(&mut sig);
        (input, sig)
    };
    let jws = |typ: &str, payload: &serde_json::Value| {
        let (input, sig) = sign(typ, payload);
        format!("{input}.{}", B64.encode(&sig))
    };
    let (input, sig_bytes) = sign("at+jwt", &claims);
    let token = format!("{input}.{}", B64.encode(&sig_bytes));

    // A feed page of 100,000 entries (jtis, sessions, users, clients), signed by the same key.
    let entries: Vec<_> = (0..100_000)
        .map(|i| {
            let kind = ["jti", "sid", "sub", "client"][i % 4];
            json!({"seq": i + 1, "kind": kind, "value": format!("{kind}-{i}"), "not_before": t, "exp": t + 3600})
        })
        .collect();
    let feed_page = jws(
        "revocations+jwt",
        &json!({"iss": iss, "aud": "rs", "iat": t, "after": 0, "next": 100_000,
            "more": false, "entries": entries}),
    );
    // A bundle of 20 policies over several principals; for the benchmark's token (the client
    // ach-processor) 4 match by principal, one of them decides with an assertion.
    let mut policies = vec![
        json!({"name": "ach-insert", "principal": {"kind": "client", "id": "ach-processor"}, "effect": "ALLOW",
               "actions": ["db:Insert"], "resources": ["financial.ledger.document.*"],
               "assertions": ["context.document.amount <= 10000", "context.document.currency in ['USD', 'EUR']",
                              "context.document.memo.matches('^[A-Za-z0-9 .,-]{0,140}$')"]}),
        json!({"name": "ach-select", "principal": {"kind": "client", "id": "ach-processor"}, "effect": "ALLOW",
               "actions": ["db:Select"], "resources": ["financial.ledger.*"]}),
        json!({"name": "ach-no-delete", "principal": {"kind": "client", "id": "ach-processor"}, "effect": "DENY",
               "actions": ["db:Delete"], "resources": ["*"]}),
        json!({"name": "no-night-batch", "principal": {"kind": "issuer", "id": iss}, "effect": "DENY",
               "actions": ["db:Truncate"], "resources": ["*"]}),
    ];
    for i in 0..16 {
        let principal = match i % 4 {
            0 => json!({"kind": "client", "id": format!("svc-{i}")}),
            1 => json!({"kind": "group", "id": format!("team-{i}")}),
            2 => json!({"kind": "aws", "id": format!("arn:aws:iam::123456789012:role/job-{i}-*")}),
            _ => json!({"kind": "user", "id": format!("user-{i}")}),
        };
        policies.push(json!({"name": format!("p{i}"), "principal": principal, "effect": "ALLOW",
            "actions": ["db:Select", "db:Update"], "resources": [format!("financial.ledger.document.f{i}")],
            "assertions": ["context.auth.claims.sub == context.document.owner"]}));
    }
    let bundle = jws(
        "policies+jwt",
        &json!({"iss": iss, "aud": "rs", "iat": t, "version": 1, "groups_claim": "groups",
            "policies": policies}),
    );
    let (validator, with_feed, with_policies) = rt.block_on(async {
        let body = json!({ "keys": [jwk] }).to_string();
        let app = Router::new()
            .route("/jwks", get(move || async move { body.clone() }))
            .route(
                "/revocations",
                get(move || async move { feed_page.clone() }),
            )
            .route("/policies", get(move || async move { bundle.clone() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let plain = Validator::builder(iss, "ledger")
            .jwks_uri(format!("http://{addr}/jwks"))
            .build()
            .await
            .expect("validator");
        let with_feed = Validator::builder(iss, "ledger")
            .jwks_uri(format!("http://{addr}/jwks"))
            .revocation_feed("rs", "secret")
            .revocation_feed_url(format!("http://{addr}/revocations"))
            .revocation_poll_interval(Duration::from_secs(3600))
            .build()
            .await
            .expect("validator with feed");
        assert_eq!(with_feed.revocations().0, 100_000);
        let with_policies = Validator::builder(iss, "ledger")
            .jwks_uri(format!("http://{addr}/jwks"))
            .policy_bundle("rs", "secret")
            .policy_bundle_url(format!("http://{addr}/policies"))
            .policy_poll_interval(Duration::from_secs(3600))
            .build()
            .await
            .expect("validator with policies");
        assert_eq!(with_policies.policy_version(), Some(1));
        (plain, with_feed, with_policies)
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
    let with_feed = Arc::new(with_feed);
    let fed = rate(|| {
        let v = with_feed.clone();
        let ok = rt.block_on(async { v.validate(&token).await.is_ok() });
        assert!(ok);
    });
    // The plain validator again, so drift on a shared machine shows.
    let full_again = rate(|| {
        let v = validator.clone();
        let ok = rt.block_on(async { v.validate(&token).await.is_ok() });
        assert!(ok);
    });
    let with_policies = Arc::new(with_policies);
    let document =
        json!({"amount": 5000, "currency": "USD", "owner": "ach-processor", "memo": "payroll"});
    // Interleaved rounds of the two (validate alone, validate + authorize), so that drift of a
    // shared machine hits both alike; the ratio is of the summed times.
    let (mut t_plain, mut t_authorized, mut n) = (Duration::ZERO, Duration::ZERO, 0u64);
    let round = 2_000;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2 * SECONDS) {
        let t = Instant::now();
        for _ in 0..round {
            let v = with_policies.clone();
            assert!(rt.block_on(async { v.validate(&token).await.is_ok() }));
        }
        t_plain += t.elapsed();
        let t = Instant::now();
        for _ in 0..round {
            let v = with_policies.clone();
            let ok = rt.block_on(async {
                let claims = v.validate(&token).await.expect("valid");
                v.authorize(
                    &claims,
                    "db:Insert",
                    "financial.ledger.document.tx",
                    &document,
                )
                .is_allowed()
            });
            assert!(ok);
        }
        t_authorized += t.elapsed();
        n += round;
    }
    let plain_again = n as f64 / t_plain.as_secs_f64();
    let authorized = n as f64 / t_authorized.as_secs_f64();
    let claims = rt.block_on(with_policies.validate(&token)).expect("valid");
    let authorize_only = rate(|| {
        assert!(
            with_policies
                .authorize(
                    &claims,
                    "db:Insert",
                    "financial.ledger.document.tx",
                    &document
                )
                .is_allowed()
        );
    });
    println!("raw_verify_per_sec {raw:.0}");
    println!("validator_verify_per_sec {full:.0}");
    println!("validator_vs_raw_ratio {:.3}", full / raw);
    println!("validator_with_100k_revocations_per_sec {fed:.0}");
    println!("validator_again_per_sec {full_again:.0}");
    println!(
        "with_feed_vs_without_ratio {:.3}",
        fed / ((full + full_again) / 2.0)
    );
    println!("validate_per_sec {plain_again:.0}");
    println!("validate_and_authorize_20_policies_per_sec {authorized:.0}");
    println!("authorize_alone_per_sec {authorize_only:.0}");
    // Time per request with authorization over time without: the target is at most 1.10.
    println!(
        "authorize_added_time_ratio {:.3} (target <= 1.100; interleaved rounds)",
        t_authorized.as_secs_f64() / t_plain.as_secs_f64()
    );
    println!(
        "authorize_alone_over_validate {:.3}",
        plain_again / authorize_only
    );
}
