//! The AWS exchange against a fake STS on loopback that misbehaves on purpose: redirects, errors,
//! garbage, oversized answers, silence. Each is `invalid_client` and an audit record, never a 500.
//! (The real-STS-peer tests, with moto, are in tests/python/test_aws_exchange.py.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use sigil::aws::exchange::CHALLENGE_TTL;
use sigil::aws::sign::{AwsCredentials, sign_get_caller_identity};
use sigil::clock::MockClock;
use sigil::keys::Alg;

use crate::helpers::{TestApp, backends, decode_part, error_of, spawn_app_with};
use crate::on_every_backend;

const OK: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/ledger-writer/i-0abc</Arn><UserId>AROAEXAMPLE:i-0abc</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>"#;

struct FakeSts {
    mode: AtomicU8,
    hits: AtomicUsize,
    last_host: std::sync::Mutex<Option<String>>,
}

async fn sts(State(s): State<Arc<FakeSts>>, headers: HeaderMap, body: String) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    *s.last_host.lock().expect("lock") = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    assert_eq!(body, "Action=GetCallerIdentity&Version=2011-06-15");
    match s.mode.load(Ordering::SeqCst) {
        1 => (
            StatusCode::FOUND,
            [(header::LOCATION, "http://127.0.0.1:1/")],
        )
            .into_response(),
        2 => (StatusCode::FORBIDDEN, "<ErrorResponse/>").into_response(),
        3 => "this is not xml".into_response(),
        4 => "x".repeat(200 * 1024).into_response(),
        5 => {
            tokio::time::sleep(std::time::Duration::from_secs(8)).await;
            OK.into_response()
        }
        6 => OK
            .replace("123456789012</Account>", "999999999999</Account>")
            .into_response(),
        // IAM role names are unique regardless of case: this is a role named `Temp-Admin`.
        7 => OK
            .replace("assumed-role/ledger-writer/", "assumed-role/Temp-Admin/")
            .into_response(),
        _ => OK.into_response(),
    }
}

async fn fake_sts() -> (Arc<FakeSts>, String) {
    let s = Arc::new(FakeSts {
        mode: AtomicU8::new(0),
        hits: AtomicUsize::new(0),
        last_host: std::sync::Mutex::new(None),
    });
    let app = Router::new().route("/", post(sts)).with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (s, format!("http://{addr}/"))
}

fn creds() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("session-token-value".into()),
    }
}

async fn setup(app: &TestApp, sts_url: &str) {
    app.create_realm("ledger", Alg::ES256).await;
    let now = app.now();
    sigil::admin::aws::configure(
        app.store.as_ref(),
        sigil::admin::aws::Configure {
            realm: "ledger".into(),
            sts_endpoint: Some(sts_url.into()),
            partitions: vec![],
            server_id: "sigil-test".into(),
            require_challenge: false,
        },
        now,
        "test",
    )
    .await
    .expect("configure");
    sigil::admin::aws::bind(
        app.store.as_ref(),
        sigil::admin::aws::Bind {
            realm: "ledger".into(),
            id: Some("writers".into()),
            principal: Some("arn:aws:iam::123456789012:role/ledger-*".into()),
            account: None,
            deny: false,
            scopes: Some("tx:post:ach".into()),
            audience: Some("ledger".into()),
            access_token_ttl: Some(900),
        },
        now,
        "test",
    )
    .await
    .expect("bind");
}

async fn post_exchange(app: &TestApp, payload: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/aws/token", app.issuer("ledger")))
        .json(payload)
        .send()
        .await
        .expect("send")
}

async fn exchange_with_aws_sigv4_and_misbehaving_sts(app: &TestApp) {
    let (fake, url) = fake_sts().await;
    setup(app, &url).await;
    let signed =
        sign_get_caller_identity(&creds(), "us-east-1", &url, "sigil-test", None, app.now())
            .expect("sign");
    assert!(
        signed["headers"]["authorization"]
            .as_str()
            .expect("auth")
            .contains("x-sigil-server-id")
    );

    let res = post_exchange(app, &signed).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let claims = decode_part(body["access_token"].as_str().expect("token"), 1);
    assert_eq!(
        claims["sub"],
        "arn:aws:iam::123456789012:role/ledger-writer"
    );
    assert_eq!(claims["aws_user_id"], "AROAEXAMPLE:i-0abc");
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );
    let forwarded_host = fake.last_host.lock().expect("lock").clone();
    assert_eq!(
        forwarded_host.as_deref(),
        Some(url.trim_start_matches("http://").trim_end_matches('/'))
    );

    for (mode, reason) in [
        (1, "sts_refused"),
        (2, "sts_refused"),
        (3, "sts_malformed"),
        (4, "sts_malformed"),
        (5, "sts_unreachable"),
        (6, "account_mismatch"),
    ] {
        fake.mode.store(mode, Ordering::SeqCst);
        let signed =
            sign_get_caller_identity(&creds(), "us-east-1", &url, "sigil-test", None, app.now())
                .expect("sign");
        let (status, _, body) = error_of(post_exchange(app, &signed).await).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "mode {mode}"
        );
        // Refused before STS confirmed an identity: tallied (one row per address and reason).
        assert!(
            app.audit_after_tally()
                .await
                .iter()
                .any(|r| r.kind == "token.refused" && r.detail.contains(reason)),
            "mode {mode}: {reason} audited"
        );
    }
    fake.mode.store(0, Ordering::SeqCst);

    // Refused before any call to STS: a stale date (signed 10 minutes ago), and garbage JSON.
    let before = fake.hits.load(Ordering::SeqCst);
    let stale = sign_get_caller_identity(
        &creds(),
        "us-east-1",
        &url,
        "sigil-test",
        None,
        app.now() - 600,
    )
    .expect("sign");
    let (status, _, _) = error_of(post_exchange(app, &stale).await).await;
    assert_eq!(status, 401);
    for junk in [
        serde_json::json!({"method": "POST"}),
        serde_json::json!([1, 2]),
        serde_json::json!({"method":"POST","url":url,"headers":{},"body":"","extra":1}),
    ] {
        let (status, _, body) = error_of(post_exchange(app, &junk).await).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request"))
        );
    }
    let res = app
        .http
        .post(format!("{}/aws/token", app.issuer("ledger")))
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);
    assert_eq!(
        fake.hits.load(Ordering::SeqCst),
        before,
        "nothing reached STS"
    );

    // The secret key and the session token never reach the audit log.
    for row in app.audit().await {
        assert!(
            !row.detail.contains("wJalrXUtnFEMI") && !row.detail.contains("session-token-value")
        );
    }
}
on_every_backend!(
    aws_exchange_sts_failures,
    exchange_with_aws_sigv4_and_misbehaving_sts
);

async fn realm_without_aws_refuses_cleanly(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let signed = sign_get_caller_identity(
        &creds(),
        "us-east-1",
        "https://sts.amazonaws.com/",
        "x",
        None,
        app.now(),
    )
    .expect("sign");
    let (status, _, body) = error_of(post_exchange(app, &signed).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let res = app
        .http
        .post(format!("{}/aws/challenge", app.issuer("ledger")))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);
    let doc: Value = app
        .http
        .get(format!(
            "{}/.well-known/openid-configuration",
            app.issuer("ledger")
        ))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(doc.get("aws_sts_exchange_endpoint").is_none());
}
on_every_backend!(aws_not_configured, realm_without_aws_refuses_cleanly);

/// A DENY on `role/temp-*` must hold for a role named `Temp-Admin`: IAM role names are unique
/// case-insensitively, so a case-sensitive glob would let a differently-cased role slip past.
async fn a_deny_binding_ignores_the_case_of_role_names(app: &TestApp) {
    let (fake, url) = fake_sts().await;
    setup(app, &url).await;
    let now = app.now();
    for (id, principal, deny) in [
        ("everyone", "arn:aws:iam::123456789012:role/*", false),
        ("no-temp", "arn:aws:iam::123456789012:role/temp-*", true),
    ] {
        sigil::admin::aws::bind(
            app.store.as_ref(),
            sigil::admin::aws::Bind {
                realm: "ledger".into(),
                id: Some(id.into()),
                principal: Some(principal.into()),
                account: None,
                deny,
                scopes: Some("tx:post:ach".into()),
                audience: Some("ledger".into()),
                access_token_ttl: None,
            },
            now,
            "test",
        )
        .await
        .expect("bind");
    }
    // The control: ledger-writer is allowed.
    let signed =
        sign_get_caller_identity(&creds(), "us-east-1", &url, "sigil-test", None, app.now())
            .expect("sign");
    assert_eq!(post_exchange(app, &signed).await.status(), 200);

    fake.mode.store(7, Ordering::SeqCst);
    let signed =
        sign_get_caller_identity(&creds(), "us-east-1", &url, "sigil-test", None, app.now())
            .expect("sign");
    let (status, _, body) = error_of(post_exchange(app, &signed).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let last = app
        .audit()
        .await
        .into_iter()
        .rev()
        .find(|r| r.kind == "token.refused")
        .expect("audited");
    assert!(last.detail.contains("denied_by_binding"), "{}", last.detail);
    assert_eq!(
        last.actor, "arn:aws:iam::123456789012:role/Temp-Admin",
        "the refusal names the role as STS reported it"
    );
}
on_every_backend!(
    aws_deny_is_case_insensitive,
    a_deny_binding_ignores_the_case_of_role_names
);

async fn count_challenges(app: &TestApp) -> i64 {
    crate::helpers::count_rows(app, "SELECT COUNT(*) FROM aws_challenges").await
}

/// POSTs to the challenge endpoint from `from` (any 127/8 address is ours on loopback).
async fn ask_challenge(app: &TestApp, from: [u8; 4]) -> reqwest::Response {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .expect("client")
        .post(format!("{}/aws/challenge", app.issuer("ledger")))
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn challenge_floods_are_limited_per_address_and_the_table_stays_bounded() {
    for backend in backends() {
        // At the start of a minute, so the whole flood falls in one rate-limit window.
        let clock = MockClock::new(1_800_000_000);
        let app = spawn_app_with(backend, Some(clock.clone()), |c| {
            c.aws_challenges_per_minute_per_ip = 5;
            c.aws_max_live_challenges = 12;
        })
        .await;
        setup(&app, "http://127.0.0.1:1/").await;

        // One address: five challenges, then 429 in the OAuth error shape, nothing stored.
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let res = ask_challenge(&app, [127, 0, 0, 1]).await;
            let status = res.status().as_u16();
            if status == 429 {
                assert_eq!(
                    res.headers().get("retry-after").map(|v| v.as_bytes()),
                    Some(&b"60"[..])
                );
                let (_, _, body) = error_of(res).await;
                assert_eq!(body["error"], "temporarily_unavailable");
            }
            statuses.push(status);
        }
        assert_eq!(statuses[..5], [200; 5], "{backend:?}");
        assert_eq!(statuses[5..], [429; 15], "{backend:?}");
        assert_eq!(count_challenges(&app).await, 5);

        // Many addresses, each within its own limit: the realm's cap (12) holds, then 503.
        let mut statuses = Vec::new();
        for host in 2..=4u8 {
            for _ in 0..5 {
                let res = ask_challenge(&app, [127, 0, 0, host]).await;
                let status = res.status().as_u16();
                if status == 503 {
                    assert_eq!(
                        res.headers().get("retry-after").map(|v| v.as_bytes()),
                        Some(&b"60"[..])
                    );
                    let (_, _, body) = error_of(res).await;
                    assert_eq!(body["error"], "temporarily_unavailable");
                }
                statuses.push(status);
            }
        }
        assert_eq!(statuses[..7], [200; 7], "{backend:?}");
        assert_eq!(statuses[7..], [503; 8], "{backend:?}");
        assert_eq!(count_challenges(&app).await, 12);

        // Reaching the limit is tallied: one row per address, not one per refusal.
        let limited = app
            .audit_after_tally()
            .await
            .into_iter()
            .filter(|r| r.kind == "aws.challenge_rate_limited")
            .count();
        assert_eq!(limited, 4);

        // A minute later the expired challenges are pruned and the address may ask again.
        clock.advance(CHALLENGE_TTL + 1);
        let res = ask_challenge(&app, [127, 0, 0, 1]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(count_challenges(&app).await, 1);
    }
}
