//! Attacks on the token endpoint that must fail with the standard error, never a 500.

use serde_json::Value;
use sigil::keys::Alg;

use crate::helpers::{TestApp, error_of};
use crate::on_every_backend;

async fn wrong_secret_and_unknown_client_look_the_same(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    let form = [("grant_type", "client_credentials")];
    let wrong = error_of(
        app.token_request("ledger", Some((&c.id, "not-the-secret")), &form)
            .await,
    )
    .await;
    let unknown = error_of(
        app.token_request("ledger", Some(("nobody", &c.secret)), &form)
            .await,
    )
    .await;
    let malformed_id = error_of(
        app.token_request("ledger", Some(("bad id!", "x")), &form)
            .await,
    )
    .await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.2["error"], "invalid_client");
    assert!(wrong.1.starts_with("Basic"), "WWW-Authenticate on 401");
    assert_eq!(wrong, unknown, "same status, challenge and body");
    assert_eq!(wrong, malformed_id);
    // No Authorization at all is invalid_client too.
    let none = error_of(app.token_request("ledger", None, &form).await).await;
    assert_eq!(none.0, 401);

    // Secrets never reach the audit log, even wrong ones.
    for row in app.audit().await {
        let text = format!("{row:?}");
        assert!(!text.contains(&c.secret), "secret in audit row {}", row.seq);
        assert!(!text.contains("not-the-secret"));
    }
    // Anonymous refusals are tallied: one row per address, reason and claimed client.
    let refused: Vec<_> = app
        .audit_after_tally()
        .await
        .into_iter()
        .filter(|r| r.kind == "token.refused")
        .collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().any(|r| r.detail.contains("bad_secret")));
    assert!(refused.iter().any(|r| r.detail.contains("unknown_client")));
}
on_every_backend!(
    wrong_secret_equals_unknown_client,
    wrong_secret_and_unknown_client_look_the_same
);

async fn secret_of_another_realm_fails(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    app.create_realm("payments", Alg::ES256).await;
    let other = app
        .create_client("payments", "svc", "balances:read", "ledger")
        .await;
    app.create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    let res = app
        .token_request(
            "ledger",
            Some((&other.id, &other.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let (status, _, body) = error_of(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
}
on_every_backend!(secret_of_another_realm, secret_of_another_realm_fails);

async fn malformed_requests_get_standard_errors(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    let url = app.token_url("ledger");
    let basic = |r: reqwest::RequestBuilder| r.basic_auth(&c.id, Some(&c.secret));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "missing grant_type",
            basic(app.http.post(&url)).form(&[("scope", "balances:read")]),
            400,
            "invalid_request",
        ),
        (
            "unknown grant_type",
            basic(app.http.post(&url)).form(&[("grant_type", "password")]),
            400,
            "unsupported_grant_type",
        ),
        (
            "repeated parameter",
            basic(app.http.post(&url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials&scope=balances:read&scope=balances:read"),
            400,
            "invalid_request",
        ),
        (
            "json body",
            basic(app.http.post(&url))
                .header("content-type", "application/json")
                .body(r#"{"grant_type":"client_credentials"}"#),
            400,
            "invalid_request",
        ),
        (
            "no content type",
            basic(app.http.post(&url)).body("grant_type=client_credentials"),
            400,
            "invalid_request",
        ),
        (
            "oversized body",
            basic(app.http.post(&url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=client_credentials&pad={}",
                    "a".repeat(64 * 1024)
                )),
            413,
            "invalid_request",
        ),
        (
            "two auth methods",
            basic(app.http.post(&url)).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", c.id.as_str()),
                ("client_secret", c.secret.as_str()),
            ]),
            400,
            "invalid_request",
        ),
        (
            "non-basic scheme",
            app.http
                .post(&url)
                .bearer_auth("abc")
                .form(&[("grant_type", "client_credentials")]),
            400,
            "invalid_request",
        ),
        (
            "garbage basic",
            app.http
                .post(&url)
                .header("authorization", "Basic !!!")
                .form(&[("grant_type", "client_credentials")]),
            400,
            "invalid_request",
        ),
        (
            "invalid utf-8",
            basic(app.http.post(&url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b"grant_type=client_credentials&scope=\xff\xfe".to_vec()),
            400,
            "invalid_request",
        ),
    ];
    for (name, req, status, code) in cases {
        let res = req.send().await.expect("send");
        assert_eq!(
            res.headers().get("cache-control").map(|v| v.to_str().ok()),
            Some(Some("no-store")),
            "{name}"
        );
        let (got, _, body) = error_of(res).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
    }

    // Unknown realm and an impossible realm name: 404, JSON.
    for realm in ["nope", "UPPER", "%2e%2e"] {
        let res = app
            .token_request(
                realm,
                Some((&c.id, &c.secret)),
                &[("grant_type", "client_credentials")],
            )
            .await;
        assert_eq!(res.status(), 404, "{realm}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"], "invalid_request");
    }
    // A realm segment that does not even decode is a JSON 404 on every realm endpoint.
    for path in [
        "oauth2/token",
        "jwks",
        ".well-known/openid-configuration",
        "aws/token",
    ] {
        let url = format!("{}/realms/%FF%FE/{path}", app.base);
        let res = if path.ends_with("token") {
            app.http
                .post(&url)
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
        } else {
            app.http.get(&url).send().await
        }
        .expect("send");
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"], "invalid_request");
    }
    // Wrong method on the token endpoint is not a 500.
    let res = app.http.get(&url).send().await.expect("send");
    assert_eq!(res.status(), 405);
}
on_every_backend!(malformed_requests, malformed_requests_get_standard_errors);

#[tokio::test]
async fn an_address_failing_too_often_is_slowed_down() {
    for backend in crate::helpers::backends() {
        let clock = sigil::clock::MockClock::new(1_800_000_000);
        let app = crate::helpers::spawn_app_with(backend, Some(clock.clone()), |c| {
            c.failures_per_minute_per_ip = 5
        })
        .await;
        app.create_realm("ledger", Alg::ES256).await;
        let c = app
            .create_client("ledger", "svc", "balances:read", "ledger")
            .await;
        let form = [("grant_type", "client_credentials")];
        for _ in 0..5 {
            let res = app
                .token_request("ledger", Some((&c.id, "wrong")), &form)
                .await;
            assert_eq!(res.status(), 401);
        }
        // Now even a correct request from this address waits for the next minute.
        let res = app
            .token_request("ledger", Some((&c.id, &c.secret)), &form)
            .await;
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "60");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"], "temporarily_unavailable");
        let limited = app
            .audit_after_tally()
            .await
            .into_iter()
            .filter(|r| r.kind == "token.rate_limited")
            .count();
        assert_eq!(limited, 1, "audited once, not per blocked request");
        clock.advance(60);
        app.token("ledger", &c, None).await;
    }
}

/// Guessing a secret at revocation, introspection or the revocation feed counts toward the same
/// per-address limit as the token endpoint: each endpoint is blocked once it is used up.
#[tokio::test]
async fn guessing_at_revocation_introspection_and_the_feed_is_slowed_down_too() {
    for backend in crate::helpers::backends() {
        for (endpoint, get) in [
            ("oauth2/revoke", false),
            ("oauth2/introspect", false),
            ("revocations", true),
        ] {
            let clock = sigil::clock::MockClock::new(1_800_000_000);
            let app = crate::helpers::spawn_app_with(backend, Some(clock.clone()), |c| {
                c.failures_per_minute_per_ip = 5
            })
            .await;
            app.create_realm("ledger", Alg::ES256).await;
            let c = app
                .create_client("ledger", "svc", "balances:read", "ledger")
                .await;
            let url = format!("{}/{endpoint}", app.issuer("ledger"));
            let send = |secret: String| {
                let req = if get {
                    app.http.get(&url)
                } else {
                    app.http.post(&url).form(&[("token", "x")])
                };
                req.basic_auth(&c.id, Some(secret)).send()
            };
            for i in 0..5 {
                let res = send(format!("guess-{i}")).await.expect("send");
                assert_eq!(res.status(), 401, "{endpoint}");
            }
            let res = send(c.secret.clone()).await.expect("send");
            assert_eq!(res.status(), 429, "{endpoint}: the right secret waits too");
            // And the token endpoint from the same address.
            let res = app
                .token_request(
                    "ledger",
                    Some((&c.id, &c.secret)),
                    &[("grant_type", "client_credentials")],
                )
                .await;
            assert_eq!(res.status(), 429);
            clock.advance(60);
            app.token("ledger", &c, None).await;
        }
    }
}
