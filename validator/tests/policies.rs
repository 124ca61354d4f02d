//! The policy bundle as the validator reads it, from an issuer on a random port whose answers
//! the tests choose: signed or tampered, for this resource server or another, fresh or old,
//! conditional (304), slow, or down.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sigil_validator::policy::{Decision, DenyReason};
use sigil_validator::{Claims, ErrorKind, Validator};

mod common;
use common::Key;

const ISS: &str = "https://issuer.test/realms/ledger";
const NOW: i64 = 1_800_000_000;
const RS: &str = "ledger-rs";

/// 0 = serve, 1 = tamper with the payload, 2 = 503, 3 = slow (2 s), 4 = another audience,
/// 5 = an `iat` from an hour ago, 6 = signed by a key not in the JWKS.
struct Issuer {
    key: Key,
    stranger: Key,
    version: AtomicI64,
    policies: Mutex<Value>,
    mode: AtomicU8,
    clock: Arc<AtomicI64>,
    hits: AtomicU64,
    not_modified: AtomicU64,
}

async fn jwks(State(s): State<Arc<Issuer>>) -> Response {
    axum::Json(json!({"keys": [s.key.jwk()]})).into_response()
}

async fn bundle(State(s): State<Arc<Issuer>>, headers: HeaderMap) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{RS}:s3cret"))
    );
    if auth != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let version = s.version.load(Ordering::SeqCst);
    let etag = format!("\"v{version}:groups\"");
    let mode = s.mode.load(Ordering::SeqCst);
    if mode == 2 {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if mode == 3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.to_str().ok() == Some(etag.as_str()))
    {
        s.not_modified.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let now = s.clock.load(Ordering::SeqCst);
    let payload = json!({
        "iss": ISS,
        "aud": if mode == 4 { "another-rs" } else { RS },
        "iat": if mode == 5 { now - 3600 } else { now },
        "version": version,
        "groups_claim": "groups",
        "policies": s.policies.lock().expect("lock").clone(),
    });
    let signer = if mode == 6 { &s.stranger } else { &s.key };
    let mut jws = signer.sign(
        json!({"alg": "ES256", "kid": signer.kid, "typ": "policies+jwt"}),
        payload,
    );
    if mode == 1 {
        // In transit: the limit raised from 10 000 to 90 000, the signature left as it was.
        let parts: Vec<&str> = jws.split('.').collect();
        let body = String::from_utf8(B64.decode(parts[1]).expect("b64")).expect("utf8");
        let forged = body.replace("10000", "90000");
        assert_ne!(forged, body);
        jws = format!("{}.{}.{}", parts[0], B64.encode(forged), parts[2]);
    }
    let mut res = jws.into_response();
    res.headers_mut()
        .insert(header::ETAG, etag.parse().expect("etag"));
    res
}

fn policies(limit: i64) -> Value {
    json!([
        {"name": "ach-insert", "principal": {"kind": "client", "id": "ach-processor"}, "effect": "ALLOW",
         "actions": ["db:Insert"], "resources": ["financial.ledger.document.*"],
         "assertions": [format!("context.document.amount <= {limit}")]},
        {"name": "ach-no-delete", "principal": {"kind": "client", "id": "ach-processor"}, "effect": "DENY",
         "actions": ["db:Delete"], "resources": ["*"]},
    ])
}

struct Harness {
    issuer: Arc<Issuer>,
    clock: Arc<AtomicI64>,
    validator: Validator,
}

async fn harness(
    tweak: impl FnOnce(sigil_validator::ValidatorBuilder) -> sigil_validator::ValidatorBuilder,
) -> Result<Harness, sigil_validator::Error> {
    harness_in_mode(0, tweak).await.map(|(h, _)| h)
}

async fn harness_in_mode(
    mode: u8,
    tweak: impl FnOnce(sigil_validator::ValidatorBuilder) -> sigil_validator::ValidatorBuilder,
) -> Result<(Harness, Arc<Issuer>), sigil_validator::Error> {
    let clock = Arc::new(AtomicI64::new(NOW));
    let issuer = Arc::new(Issuer {
        key: Key::new("k1"),
        stranger: Key::new("k1"), // the same kid, another key
        version: AtomicI64::new(3),
        policies: Mutex::new(policies(10_000)),
        mode: AtomicU8::new(mode),
        clock: clock.clone(),
        hits: AtomicU64::new(0),
        not_modified: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/jwks", get(jwks))
        .route("/policies", get(bundle))
        .with_state(issuer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = clock.clone();
    let builder = Validator::builder(ISS, "ledger")
        .jwks_uri(format!("http://{addr}/jwks"))
        .policy_bundle(RS, "s3cret")
        .policy_bundle_url(format!("http://{addr}/policies"))
        .policy_poll_interval(Duration::from_secs(3600)) // the tests poll themselves
        .clock(move || c.load(Ordering::SeqCst));
    let validator = tweak(builder).build().await?;
    Ok((
        Harness {
            issuer: issuer.clone(),
            clock,
            validator,
        },
        issuer,
    ))
}

fn service() -> Claims {
    serde_json::from_value(
        json!({"iss": ISS, "sub": "ach-processor", "client_id": "ach-processor",
        "aud": "ledger", "exp": NOW + 3600, "token_use": "access"}),
    )
    .expect("claims")
}

fn insert(v: &Validator, amount: i64) -> Decision {
    v.authorize(
        &service(),
        "db:Insert",
        "financial.ledger.document.tx",
        &json!({"amount": amount}),
    )
}

#[tokio::test]
async fn a_verified_bundle_decides_and_an_unchanged_one_costs_a_304() {
    let h = harness(|b| b).await.expect("build");
    let v = &h.validator;
    assert_eq!(v.policy_version(), Some(3));
    assert!(insert(v, 10_000).is_allowed());
    assert!(!insert(v, 10_001).is_allowed());
    let d = v.authorize(
        &service(),
        "db:Delete",
        "financial.ledger.document.tx",
        &Value::Null,
    );
    assert_eq!(d.policy(), Some("ach-no-delete"));
    v.poll_policies().await.expect("poll");
    assert_eq!(h.issuer.not_modified.load(Ordering::SeqCst), 1);
    // A new version replaces the policies.
    *h.issuer.policies.lock().expect("lock") = policies(20_000);
    h.issuer.version.store(4, Ordering::SeqCst);
    v.poll_policies().await.expect("poll");
    assert_eq!(v.policy_version(), Some(4));
    assert!(insert(v, 20_000).is_allowed());
}

#[tokio::test]
async fn tampered_misaddressed_stale_foreign_and_older_bundles_are_refused() {
    for (mode, what) in [
        (1, "tampered"),
        (4, "another audience"),
        (5, "an old iat"),
        (6, "another key"),
    ] {
        let err = harness_in_mode(mode, |b| b)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert!(
            matches!(err.kind(), ErrorKind::Policies(_)),
            "{what}: {err}"
        );
    }
    // Held a good bundle: a bad one later changes nothing.
    let h = harness(|b| b).await.expect("build");
    let v = &h.validator;
    h.issuer.version.store(5, Ordering::SeqCst); // so no 304 short-cut
    for mode in [1, 4, 5, 6] {
        h.issuer.mode.store(mode, Ordering::SeqCst);
        assert!(v.poll_policies().await.is_err(), "mode {mode}");
        assert_eq!(v.policy_version(), Some(3));
        assert!(!insert(v, 90_000).is_allowed(), "mode {mode}");
    }
    // A bundle older than the one held (a rollback) is refused.
    h.issuer.mode.store(0, Ordering::SeqCst);
    v.poll_policies().await.expect("v5");
    h.issuer.version.store(4, Ordering::SeqCst);
    let err = v.poll_policies().await.expect_err("rollback");
    assert!(err.to_string().contains("older"), "{err}");
    assert_eq!(v.policy_version(), Some(5));
    // A bundle whose assertion does not compile is refused whole.
    *h.issuer.policies.lock().expect("lock") = json!([{"name": "x", "principal": {"kind": "client", "id": "c"},
        "effect": "ALLOW", "actions": ["a"], "resources": ["r"], "assertions": ["[1].all(x, x > 0)"]}]);
    h.issuer.version.store(6, Ordering::SeqCst);
    assert!(v.poll_policies().await.is_err());
    assert_eq!(v.policy_version(), Some(5));
}

#[tokio::test]
async fn past_the_stale_period_everything_is_denied_until_the_issuer_answers() {
    let h = harness(|b| b.policy_stale_period(Duration::from_secs(120)))
        .await
        .expect("build");
    let v = &h.validator;
    h.issuer.mode.store(2, Ordering::SeqCst); // down
    h.clock.store(NOW + 100, Ordering::SeqCst);
    assert!(v.poll_policies().await.is_err());
    assert!(insert(v, 1).is_allowed(), "inside the stale period");
    h.clock.store(NOW + 121, Ordering::SeqCst);
    assert_eq!(
        insert(v, 1),
        Decision::Deny {
            policy: None,
            reason: DenyReason::BundleUnavailable
        }
    );
    h.issuer.mode.store(0, Ordering::SeqCst);
    v.poll_policies().await.expect("back");
    assert!(insert(v, 1).is_allowed());
    // A 304 keeps a bundle alive only while its signed iat is young: after half the stale
    // period the poll is unconditional and needs a freshly signed bundle.
    let before = h.issuer.not_modified.load(Ordering::SeqCst);
    h.clock.store(NOW + 121 + 61, Ordering::SeqCst);
    v.poll_policies().await.expect("poll");
    assert_eq!(h.issuer.not_modified.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn a_slow_refresh_does_not_hold_up_decisions() {
    let h = harness(|b| b).await.expect("build");
    let v = h.validator.clone();
    h.issuer.mode.store(3, Ordering::SeqCst); // 2 s per answer
    h.issuer.version.store(7, Ordering::SeqCst);
    let poll = tokio::spawn({
        let v = v.clone();
        async move { v.poll_policies().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..1000 {
        assert!(insert(&v, 1).is_allowed());
    }
    // All 1000 decisions were made while the refresh still waits on the issuer.
    assert!(
        !poll.is_finished(),
        "the refresh is still waiting on the issuer"
    );
    poll.await.expect("join").expect("poll");
    assert_eq!(v.policy_version(), Some(7));
    assert!(h.issuer.hits.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_validator_without_a_bundle_denies() {
    let jwk = Key::new("k1").jwk();
    let app = Router::new().route(
        "/jwks",
        get(move || {
            let jwk = jwk.clone();
            async move { axum::Json(json!({"keys": [jwk]})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let v = Validator::builder(ISS, "ledger")
        .jwks_uri(format!("http://{addr}/jwks"))
        .build()
        .await
        .expect("build");
    assert_eq!(
        insert(&v, 1),
        Decision::Deny {
            policy: None,
            reason: DenyReason::BundleUnavailable
        }
    );
}

async fn serve_guarded(v: &Validator, key: &Key) -> (String, String) {
    async fn ok() -> &'static str {
        "ok"
    }
    let app = Router::new()
        .route(
            "/insert",
            get(ok).route_layer(v.require_policy("db:Insert", "financial.ledger.document.*")),
        )
        .route(
            "/delete",
            get(ok).route_layer(v.require_policy("db:Delete", "financial.ledger.document.*")),
        )
        .route(
            "/scoped",
            get(ok).route_layer(v.require_scope("admin").require_policy("db:Delete", "x")),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let token = key.token(json!({"iss": ISS, "sub": "ach-processor", "client_id": "ach-processor",
        "aud": "ledger", "scope": "tx:post:ach", "token_use": "access", "iat": NOW, "exp": NOW + 3600}));
    (format!("http://{addr}"), token)
}

#[tokio::test]
async fn the_guard_answers_403_policy_denied_and_401_stays_401() {
    let h = harness(|b| b).await.expect("build");
    let (base, token) = serve_guarded(&h.validator, &h.issuer.key).await;
    let http = reqwest::Client::new();
    let get = |path: &str, auth: &str| {
        http.get(format!("{base}{path}"))
            .header("authorization", auth.to_owned())
            .send()
    };
    let bearer = format!("Bearer {token}");
    // The route has no document: the insert policy's assertion cannot be evaluated, so denied.
    let res = get("/insert", &bearer).await.expect("send");
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error_code"], "POLICY_DENIED");
    assert_eq!(body["error"], "access_denied");
    assert!(
        body.get("policy").is_none(),
        "the guard does not name policies"
    );
    assert_eq!(get("/delete", &bearer).await.expect("send").status(), 403);
    // A missing scope is still INSUFFICIENT_SCOPE, checked first; a bad token still 401.
    let res = get("/scoped", &bearer).await.expect("send");
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.expect("json")["error_code"],
        "INSUFFICIENT_SCOPE"
    );
    assert_eq!(
        get("/insert", "Bearer nonsense")
            .await
            .expect("send")
            .status(),
        401
    );
    // A policy that allows without assertions lets the guarded route through.
    *h.issuer.policies.lock().expect("lock") = json!([{"name": "all", "principal": {"kind": "issuer", "id": ISS},
        "effect": "ALLOW", "actions": ["db:*"], "resources": ["financial.ledger.*"]}]);
    h.issuer.version.store(9, Ordering::SeqCst);
    h.validator.poll_policies().await.expect("poll");
    assert_eq!(get("/insert", &bearer).await.expect("send").status(), 200);
}

#[tokio::test]
async fn hostile_documents_are_denied_in_bounded_time() {
    let h = harness(|b| b).await.expect("build");
    let v = &h.validator;
    // 1 MB wide: a list of 200 000 numbers, and a 1 MB string.
    let wide = json!({"amount": 1, "pad": vec![1; 200_000]});
    let long = json!({"amount": 1, "pad": "x".repeat(1 << 20)});
    let mut deep = json!({"amount": 1});
    for _ in 0..120 {
        deep = json!({"amount": 1, "n": deep});
    }
    for doc in [&wide, &long, &deep] {
        let d = v.authorize(&service(), "db:Insert", "financial.ledger.document.tx", doc);
        assert_eq!(
            d,
            Decision::Deny {
                policy: None,
                reason: DenyReason::DocumentTooLarge
            }
        );
    }
}
