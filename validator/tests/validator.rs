//! The validator against a JWKS server on a random port that counts its fetches.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sigil_validator::{ErrorKind, Validator};

mod common;
use common::Key;

const ISS: &str = "https://issuer.test/realms/ledger";
const NOW: i64 = 1_800_000_000;

fn claims() -> Value {
    json!({"iss":ISS,"sub":"ach-processor","aud":"ledger","client_id":"ach-processor",
           "scope":"tx:post:ach balances:read","token_use":"access",
           "iat":NOW,"nbf":NOW,"exp":NOW+3600,"jti":"j1"})
}

/// 0 = serve keys, 1 = garbage, 2 = 503, 3 = empty key set.
struct Jwks {
    keys: Mutex<Vec<Value>>,
    mode: AtomicU8,
    hits: AtomicU64,
}

async fn serve_jwks(State(s): State<Arc<Jwks>>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    match s.mode.load(Ordering::SeqCst) {
        1 => "<html>oops</html>".into_response(),
        2 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        3 => axum::Json(json!({"keys": []})).into_response(),
        _ => {
            let keys = s.keys.lock().expect("lock").clone();
            let mut r = axum::Json(json!({ "keys": keys })).into_response();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=600"),
            );
            r
        }
    }
}

struct Harness {
    jwks: Arc<Jwks>,
    clock: Arc<AtomicI64>,
    validator: Validator,
}

async fn harness(keys: &[&Key]) -> Harness {
    harness_with(keys, |b| b).await
}

async fn harness_with(
    keys: &[&Key],
    tweak: impl FnOnce(sigil_validator::ValidatorBuilder) -> sigil_validator::ValidatorBuilder,
) -> Harness {
    let jwks = Arc::new(Jwks {
        keys: Mutex::new(keys.iter().map(|k| k.jwk()).collect()),
        mode: AtomicU8::new(0),
        hits: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/jwks", get(serve_jwks))
        .with_state(jwks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let clock = Arc::new(AtomicI64::new(NOW));
    let c = clock.clone();
    let builder = Validator::builder(ISS, "ledger")
        .jwks_uri(format!("http://{addr}/jwks"))
        .clock(move || c.load(Ordering::SeqCst));
    let validator = tweak(builder).build().await.expect("build");
    Harness {
        jwks,
        clock,
        validator,
    }
}

#[tokio::test]
async fn valid_token_passes_and_claims_are_read() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let c = h
        .validator
        .validate(&k.token(claims()))
        .await
        .expect("valid");
    assert_eq!(c.client_id.as_deref(), Some("ach-processor"));
    assert!(c.has_scope("balances:read") && !c.has_scope("balances"));
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn claim_checks_refuse_each_bad_claim() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let cases: Vec<(&str, Value, ErrorKind)> = vec![
        ("exp", json!(NOW - 120), ErrorKind::Expired),
        ("nbf", json!(NOW + 600), ErrorKind::NotYetValid),
        (
            "iss",
            json!("https://evil.test/realms/ledger"),
            ErrorKind::WrongIssuer,
        ),
        ("aud", json!("payments"), ErrorKind::WrongAudience),
        ("token_use", json!("id"), ErrorKind::WrongTokenUse),
    ];
    for (claim, value, kind) in cases {
        let mut c = claims();
        c[claim] = value;
        let err = h.validator.validate(&k.token(c)).await.expect_err(claim);
        assert_eq!(err.kind(), &kind, "{claim}");
    }
    // An array audience containing ours is fine; leeway covers small skew.
    let mut c = claims();
    c["aud"] = json!(["other", "ledger"]);
    c["exp"] = json!(NOW - 30);
    h.validator
        .validate(&k.token(c))
        .await
        .expect("within leeway");
    // An ID-token-shaped header is refused before anything else.
    let id = k.sign(json!({"alg":"ES256","kid":"k1","typ":"JWT"}), claims());
    assert!(matches!(
        h.validator
            .validate(&id)
            .await
            .expect_err("must fail")
            .kind(),
        ErrorKind::UnsupportedHeader(_)
    ));
}

#[tokio::test]
async fn forged_algorithms_and_tampering_fail() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let good = k.token(claims());
    let parts: Vec<&str> = good.split('.').collect();
    // alg none, no signature.
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg":"none","kid":"k1","typ":"at+jwt"}).to_string()),
        parts[1]
    );
    assert_eq!(
        h.validator
            .validate(&none)
            .await
            .expect_err("must fail")
            .kind(),
        &ErrorKind::AlgorithmMismatch
    );
    // HS256 keyed with the public key's JWK text.
    let header = B64.encode(json!({"alg":"HS256","kid":"k1","typ":"at+jwt"}).to_string());
    let input = format!("{header}.{}", parts[1]);
    let hkey = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.jwk().to_string().as_bytes());
    let forged = format!(
        "{input}.{}",
        B64.encode(ring::hmac::sign(&hkey, input.as_bytes()).as_ref())
    );
    assert_eq!(
        h.validator
            .validate(&forged)
            .await
            .expect_err("must fail")
            .kind(),
        &ErrorKind::AlgorithmMismatch
    );
    // A scope added after signing.
    let mut c = claims();
    c["scope"] = json!("tx:post:ach balances:read tx:post:wire");
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
    assert_eq!(
        h.validator
            .validate(&tampered)
            .await
            .expect_err("must fail")
            .kind(),
        &ErrorKind::BadSignature
    );
    // Garbage.
    for junk in ["", "a.b", "a.b.c.d", "...", "eyJ.eyJ.sig"] {
        assert!(h.validator.validate(junk).await.is_err(), "{junk}");
    }
}

#[tokio::test]
async fn flood_of_unknown_kids_costs_one_fetch_per_cooldown() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let stranger = Key::new("k1");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let v = h.validator.clone();
        let mut header = json!({"alg":"ES256","typ":"at+jwt"});
        header["kid"] = json!(format!("random-{i}"));
        let t = stranger.sign(header, claims());
        tasks.push(tokio::spawn(async move { v.validate(&t).await }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect_err("must fail").kind(),
            &ErrorKind::UnknownKey
        );
    }
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 2, "build + one refetch");
    // After the cooldown a new unknown kid may trigger one more.
    h.clock.fetch_add(31, Ordering::SeqCst);
    let mut header = json!({"alg":"ES256","typ":"at+jwt"});
    header["kid"] = json!("again");
    let _ = h.validator.validate(&stranger.sign(header, claims())).await;
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 3);
    // A same-kid token signed by another key is a bad signature, not a refetch.
    let _ = h.validator.validate(&stranger.token(claims())).await;
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn new_key_is_picked_up_by_one_refetch() {
    let k1 = Key::new("k1");
    let h = harness(&[&k1]).await;
    let k2 = Key::new("k2");
    h.jwks.keys.lock().expect("lock").push(k2.jwk());
    h.validator
        .validate(&k2.token(claims()))
        .await
        .expect("k2 after refetch");
    assert_eq!(h.jwks.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn garbage_and_outages_do_not_evict_good_keys() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let token = k.token(claims());
    for mode in [1u8, 2, 3] {
        h.jwks.mode.store(mode, Ordering::SeqCst);
        h.clock.fetch_add(601, Ordering::SeqCst); // cache expired: a refresh is due
        h.validator.refresh().await;
        let mut c = claims();
        let now = h.clock.load(Ordering::SeqCst);
        c["iat"] = json!(now);
        c["nbf"] = json!(now);
        c["exp"] = json!(now + 3600);
        h.validator
            .validate(&k.token(c))
            .await
            .expect("still verifies");
    }
    let _ = token;
    assert!(h.jwks.hits.load(Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn keys_past_the_stale_period_fail_closed_and_recover() {
    let k = Key::new("k1");
    let Harness {
        jwks,
        clock,
        validator: v,
    } = harness_with(&[&k], |b| {
        b.stale_period(std::time::Duration::from_secs(3600))
    })
    .await;
    let token_at = |now: i64| {
        let mut c = claims();
        c["iat"] = json!(now);
        c["nbf"] = json!(now);
        c["exp"] = json!(now + 600);
        k.token(c)
    };
    jwks.mode.store(2, Ordering::SeqCst); // outage
    // max-age 600 + stale 3600: still usable just before, refused after.
    clock.store(NOW + 600 + 3500, Ordering::SeqCst);
    v.refresh().await;
    v.validate(&token_at(NOW + 4100))
        .await
        .expect("inside the stale period");
    clock.store(NOW + 600 + 3601, Ordering::SeqCst);
    let err = v
        .validate(&token_at(NOW + 4201))
        .await
        .expect_err("past the stale period");
    assert!(matches!(err.kind(), ErrorKind::Jwks(_)));
    jwks.mode.store(0, Ordering::SeqCst); // recovered
    v.refresh().await;
    v.validate(&token_at(NOW + 4201))
        .await
        .expect("works again without a restart");
}

#[tokio::test]
async fn the_high_s_twin_of_a_valid_es256_token_is_refused() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let good = k.token(claims());
    h.validator.validate(&good).await.expect("low-s verifies");
    let (input, sig) = good.rsplit_once('.').expect("jwt");
    let mut sig = B64.decode(sig).expect("b64");
    // (r, n − s): a second valid ECDSA signature over the same input, which ring accepts.
    sigil_validator::es256::negate_s(&mut sig);
    let twin = format!("{input}.{}", B64.encode(&sig));
    assert_ne!(twin, good);
    assert_eq!(
        h.validator
            .validate(&twin)
            .await
            .expect_err("the malleated token must fail")
            .kind(),
        &ErrorKind::BadSignature
    );
}

/// Splits a `WWW-Authenticate: Bearer ...` value into its auth-params the way an RFC 9110 parser
/// does (`name=token` or `name="quoted \" string"`, comma-separated).
fn challenge_params(header: &str) -> Vec<(String, String)> {
    let rest = header.strip_prefix("Bearer").expect("Bearer challenge");
    let mut chars = rest.chars().peekable();
    let mut params = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return params;
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=') {
            name.push(c);
        }
        assert_eq!(
            chars.next(),
            Some('='),
            "parameter without a value in {header}"
        );
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next().expect("unterminated quoted string") {
                    '\\' => value.push(chars.next().expect("escaped char")),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

async fn serve_behind_layer(v: &Validator) -> String {
    async fn ok() -> &'static str {
        "ok"
    }
    let app = Router::new()
        .route(
            "/balances",
            get(ok).route_layer(v.require_scope("balances:read")),
        )
        .route("/admin", get(ok).route_layer(v.require_scope("admin")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn get_with(url: &str, authorization: Option<&str>) -> (u16, String, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let res = req.send().await.expect("send");
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (
        res.status().as_u16(),
        www,
        res.json().await.expect("json body"),
    )
}

#[tokio::test]
async fn a_token_header_cannot_inject_challenge_parameters() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let base = serve_behind_layer(&h.validator).await;
    for typ in [
        ", error=insufficient_scope, scope=admin, x=",
        r#"", error="insufficient_scope", scope="admin", x=""#,
        "\\\", error=insufficient_scope, scope=admin, x=\\",
    ] {
        let token = k.sign(json!({"alg":"ES256","kid":"k1","typ":typ}), claims());
        let (status, www, body) = get_with(
            &format!("{base}/balances"),
            Some(&format!("Bearer {token}")),
        )
        .await;
        assert_eq!(status, 401, "{typ}");
        let params = challenge_params(&www);
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["error", "error_description"], "{www}");
        assert_eq!(params[0].1, "invalid_token", "{www}");
        assert!(
            !www.contains("insufficient_scope") && !www.contains("admin"),
            "{www}"
        );
        // The body carries no token-derived text either.
        assert!(!body.to_string().contains("admin"), "{body}");
    }
}

#[tokio::test]
async fn a_request_without_credentials_gets_a_bare_challenge() {
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let base = serve_behind_layer(&h.validator).await;
    let url = format!("{base}/balances");
    // RFC 6750 §3.1: no credentials (or another scheme) → no error code.
    for auth in [None, Some("Basic YWxpY2U6c2VjcmV0")] {
        let (status, www, body) = get_with(&url, auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(www, r#"Bearer realm="ledger""#, "{auth:?}");
        assert!(body.get("error").is_none(), "{body}");
    }
    // A bearer attempt that fails is invalid_token.
    for auth in [
        "Bearer",
        "Bearer not-a-jwt",
        &format!("Bearer {}x", k.token(claims())),
    ] {
        let (status, www, body) = get_with(&url, Some(auth)).await;
        assert_eq!(status, 401, "{auth}");
        assert!(www.starts_with(r#"Bearer error="invalid_token""#), "{www}");
        assert_eq!(body["error"], "invalid_token");
    }
    // A valid token passes; a missing scope is 403 insufficient_scope.
    let good = format!("Bearer {}", k.token(claims()));
    let res = reqwest::Client::new()
        .get(&url)
        .header("authorization", &good)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let (status, www, _) = get_with(&format!("{base}/admin"), Some(&good)).await;
    assert_eq!(status, 403);
    assert_eq!(www, r#"Bearer error="insufficient_scope", scope="admin""#);

    // A configured realm is escaped as a quoted string.
    let h = harness_with(&[&k], |b| b.realm(r#"ledger "prod""#)).await;
    let base = serve_behind_layer(&h.validator).await;
    let (_, www, _) = get_with(&format!("{base}/balances"), None).await;
    assert_eq!(www, r#"Bearer realm="ledger \"prod\"""#);
    assert_eq!(
        challenge_params(&www),
        [("realm".into(), r#"ledger "prod""#.into())]
    );
}

/// RFC 9470: a route demanding a passkey sign-in within five minutes, another only a recent one.
#[tokio::test]
async fn step_up_demands_the_sign_in_class_and_age_and_says_what_to_ask_for() {
    async fn ok() -> &'static str {
        "ok"
    }
    let k = Key::new("k1");
    let h = harness(&[&k]).await;
    let v = &h.validator;
    let app = Router::new()
        .route(
            "/transfers/high-value",
            get(ok).route_layer(
                v.require_scope("tx:post:ach")
                    .require_acr(["urn:sigil:acr:passkey"])
                    .max_age(std::time::Duration::from_secs(300)),
            ),
        )
        .route(
            "/recent",
            get(ok).route_layer(v.layer().max_age(std::time::Duration::from_secs(60))),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let user = |acr: Value, auth_time: Option<i64>| {
        let mut c = claims();
        c["sub"] = json!("alice");
        c["acr"] = acr;
        if let Some(t) = auth_time {
            c["auth_time"] = json!(t);
        }
        format!("Bearer {}", k.token(c))
    };
    let high = format!("{base}/transfers/high-value");
    let passkey = json!("urn:sigil:acr:passkey");
    let password = json!("urn:sigil:acr:password-otp");

    // A password + TOTP sign-in, a passkey sign-in too old, a service token, a sign-in from the
    // future, an `acr` that is not a string: the RFC 9470 challenge, naming what to ask for.
    for (why, token) in [
        ("password", user(password.clone(), Some(NOW - 10))),
        ("too old", user(passkey.clone(), Some(NOW - 301))),
        ("no auth_time", user(passkey.clone(), None)),
        ("service", format!("Bearer {}", k.token(claims()))),
        ("future", user(passkey.clone(), Some(NOW + 120))),
        ("array", user(json!(["urn:sigil:acr:passkey"]), Some(NOW))),
    ] {
        let (status, www, body) = get_with(&high, Some(&token)).await;
        assert_eq!(status, 401, "{why}");
        let params = challenge_params(&www);
        assert_eq!(
            params,
            [
                ("error".into(), "insufficient_user_authentication".into()),
                (
                    "error_description".into(),
                    "a stronger or more recent sign-in is required".into()
                ),
                ("acr_values".into(), "urn:sigil:acr:passkey".into()),
                ("max_age".into(), "300".into()),
            ],
            "{why}: {www}"
        );
        assert_eq!(
            body["error_code"], "INSUFFICIENT_USER_AUTHENTICATION",
            "{why}"
        );
        assert_eq!(body["max_age"], 300);
    }
    // A recent passkey sign-in passes; the scope is still checked first.
    let status = status_of(&high, &user(passkey.clone(), Some(NOW - 299))).await;
    assert_eq!(status, 200);
    let mut no_scope = claims();
    no_scope["scope"] = json!("balances:read");
    no_scope["acr"] = passkey.clone();
    no_scope["auth_time"] = json!(NOW);
    let (status, _, body) = get_with(&high, Some(&format!("Bearer {}", k.token(no_scope)))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
    // Time moves on: the same token falls short once five minutes have passed.
    let token = user(passkey.clone(), Some(NOW));
    assert_eq!(status_of(&high, &token).await, 200);
    h.clock.store(NOW + 301, Ordering::SeqCst);
    assert_eq!(get_with(&high, Some(&token)).await.0, 401);
    h.clock.store(NOW, Ordering::SeqCst);

    // Only an age demanded: any class, and no acr_values in the challenge.
    let recent = format!("{base}/recent");
    assert_eq!(
        status_of(&recent, &user(password.clone(), Some(NOW - 30))).await,
        200
    );
    let (status, www, _) = get_with(&recent, Some(&user(password, Some(NOW - 61)))).await;
    assert_eq!(status, 401);
    let names: Vec<String> = challenge_params(&www).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["error", "error_description", "max_age"], "{www}");

    // The same rule without axum.
    let demand = sigil_validator::StepUp::acr(["urn:sigil:acr:passkey"])
        .max_age(std::time::Duration::from_secs(300));
    let c = v
        .validate(user(passkey, Some(NOW - 5)).trim_start_matches("Bearer "))
        .await
        .expect("valid");
    assert!(v.check_step_up(&c, &demand).is_ok());
    let err = v
        .check_step_up(&c, &sigil_validator::StepUp::acr(["urn:x"]))
        .expect_err("other class");
    assert_eq!(err.rfc6750_code(), "insufficient_user_authentication");
}

async fn status_of(url: &str, authorization: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .header("authorization", authorization)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

/// A key set handed over in-process (an issuer checking its own tokens): no HTTP, and the same
/// caching and unknown-`kid` refetch as a fetched one.
#[tokio::test]
async fn an_in_process_key_set_source_is_cached_and_refetched_like_a_fetched_one() {
    struct Source {
        keys: Mutex<Vec<Value>>,
        calls: AtomicU64,
    }
    impl sigil_validator::JwksSource for Source {
        fn fetch(
            &self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = sigil_validator::JwksFetch> + Send + '_>,
        > {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let keys = self.keys.lock().expect("lock").clone();
                Ok((json!({ "keys": keys }).to_string().into_bytes(), Some(600)))
            })
        }
    }
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let source = Arc::new(Source {
        keys: Mutex::new(vec![k1.jwk()]),
        calls: AtomicU64::new(0),
    });
    let v = Validator::builder(ISS, "ledger")
        .jwks_source(source.clone())
        .clock(|| NOW)
        .build()
        .await
        .expect("build without discovery or HTTP");
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    for _ in 0..5 {
        v.validate(&k1.token(claims())).await.expect("valid");
    }
    assert_eq!(source.calls.load(Ordering::SeqCst), 1, "cached");
    // A forged token is refused as ever; a new key is picked up by one refetch.
    let mut forged = k1.token(claims());
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert!(v.validate(&forged).await.is_err());
    source.keys.lock().expect("lock").push(k2.jwk());
    v.validate(&k2.token(claims())).await.expect("new key");
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
}

/// With the `metrics` feature the validator reports through the `metrics` facade: fetches by
/// outcome, unknown-`kid` refetches, stale keys used, refusals by reason, policy decisions.
#[cfg(feature = "metrics")]
#[test]
fn counters_reach_the_metrics_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let k = Key::new("k1");
                let h = harness(&[&k]).await;
                let valid = h.validator.validate(&k.token(claims())).await.expect("ok");
                // No policy bundle configured: every authorization is a deny, and counted.
                assert!(
                    !h.validator
                        .authorize(&valid, "db:Select", "x", &Value::Null)
                        .is_allowed()
                );
                let mut expired = claims();
                expired["exp"] = json!(NOW - 3600);
                assert!(h.validator.validate(&k.token(expired)).await.is_err());
                let stranger = Key::new("nobody");
                assert!(
                    h.validator
                        .validate(&stranger.token(claims()))
                        .await
                        .is_err()
                );
                // The JWKS server fails; keys past max-age keep serving within the stale period.
                h.jwks.mode.store(2, Ordering::SeqCst);
                h.clock.fetch_add(601, Ordering::SeqCst);
                h.validator.refresh().await;
                let mut c = claims();
                let now = h.clock.load(Ordering::SeqCst);
                c["iat"] = json!(now);
                c["nbf"] = json!(now);
                c["exp"] = json!(now + 3600);
                h.validator
                    .validate(&k.token(c))
                    .await
                    .expect("stale but usable");
            });
    });
    let counters: std::collections::HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let (_, k) = key.into_parts();
            let labels: Vec<String> = k
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            match value {
                DebugValue::Counter(n) => Some((format!("{}{labels:?}", k.name()), n)),
                _ => None,
            }
        })
        .collect();
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    assert_eq!(
        get(r#"sigil_validator_refusals_total["reason=expired"]"#),
        1,
        "{counters:?}"
    );
    assert_eq!(
        get(r#"sigil_validator_refusals_total["reason=unknown_key"]"#),
        1
    );
    assert_eq!(get("sigil_validator_unknown_kid_refetches_total[]"), 1);
    assert!(get(r#"sigil_validator_jwks_fetches_total["outcome=ok"]"#) >= 2);
    assert_eq!(
        get(r#"sigil_validator_jwks_fetches_total["outcome=error"]"#),
        1
    );
    assert_eq!(get("sigil_validator_stale_keys_used_total[]"), 1);
    assert_eq!(
        get(r#"sigil_validator_authorizations_total["outcome=deny"]"#),
        1
    );
}
