//! Revocation (RFC 7009) and introspection (RFC 7662) over HTTP, on both stores: a service's
//! access token and a user's access and refresh tokens revoked by their own client and by no other;
//! introspection only for clients registered for it, `active: false` once a token is revoked, its
//! client or user disabled, or its session ended (global sign-out); userinfo refusing the same
//! tokens; a refresh token refreshed and revoked at once never leaves a live token behind.

use serde_json::Value;
use sigil::clock::Clock;
use sigil::identity::totp;
use sigil::keys::Alg;

use crate::helpers::{Client, TestApp, backends, count_rows, decode_part};
use crate::login::{browser, location, pkce, query_param, setup};

/// A resource server allowed to introspect.
async fn resource_server(app: &TestApp, realm: &str, id: &str) -> Client {
    let made = sigil::admin::clients::create(
        app.store.as_ref(),
        sigil::admin::clients::NewClient {
            realm: realm.into(),
            client_id: id.into(),
            scopes: "balances:read".into(),
            audience: "ledger".into(),
            introspect: true,
            ..Default::default()
        },
        app.now(),
        "test",
    )
    .await
    .expect("resource server");
    assert!(made.client.introspect);
    Client {
        id: made.client.client_id,
        secret: made.client_secret.expect("secret"),
    }
}

fn endpoint(app: &TestApp, realm: &str, what: &str) -> String {
    format!("{}/oauth2/{what}", app.issuer(realm))
}

/// POSTs `form` with Basic credentials (if any); status, JSON body (or `Null`), Cache-Control.
async fn call(
    app: &TestApp,
    url: &str,
    who: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, String) {
    let mut req = app.http.post(url).form(form);
    if let Some((id, secret)) = who {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.expect("answered");
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, cache)
}

async fn introspect(app: &TestApp, realm: &str, rs: &Client, token: &str) -> Value {
    let (status, body, cache) = call(
        app,
        &endpoint(app, realm, "introspect"),
        Some((&rs.id, &rs.secret)),
        &[("token", token)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache, "no-store");
    body
}

async fn revoke(app: &TestApp, realm: &str, c: &Client, token: &str) {
    let (status, body, cache) = call(
        app,
        &endpoint(app, realm, "revoke"),
        Some((&c.id, &c.secret)),
        &[("token", token)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache, "no-store");
}

async fn service_tokens(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    app.create_realm("other", Alg::ES256).await;
    let a = app
        .create_client("ledger", "svc-a", "tx:post:ach", "ledger")
        .await;
    let b = app
        .create_client("ledger", "svc-b", "tx:post:ach", "ledger")
        .await;
    let rs = resource_server(app, "ledger", "ledger-rs").await;
    let stranger = app
        .create_client("other", "svc-o", "tx:post:ach", "ledger")
        .await;
    let token = app.token("ledger", &a, None).await;
    let jti = decode_part(&token, 1)["jti"]
        .as_str()
        .expect("jti")
        .to_owned();

    // Discovery names both endpoints.
    let doc: Value = app
        .http
        .get(format!(
            "{}/.well-known/openid-configuration",
            app.issuer("ledger")
        ))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        doc["revocation_endpoint"],
        endpoint(app, "ledger", "revoke")
    );
    assert_eq!(
        doc["introspection_endpoint"],
        endpoint(app, "ledger", "introspect")
    );

    let active = introspect(app, "ledger", &rs, &token).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["client_id"], "svc-a");
    assert_eq!(active["sub"], "svc-a");
    assert_eq!(active["scope"], "tx:post:ach");
    assert_eq!(active["token_type"], "Bearer");
    assert_eq!(active["jti"], jti.as_str());
    assert_eq!(active["iss"], app.issuer("ledger"));
    assert!(active["exp"].is_i64() && active.get("token_use").is_none());

    // Who may introspect: a client registered for it, authenticated.
    let url = endpoint(app, "ledger", "introspect");
    let form = [("token", token.as_str())];
    let (status, body, _) = call(app, &url, Some((&b.id, &b.secret)), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("unauthorized_client"))
    );
    let (status, body, _) = call(app, &url, None, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body, _) = call(app, &url, Some((&rs.id, "wrong-secret")), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body, _) = call(app, &url, Some((&rs.id, &rs.secret)), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // Another realm's client, with its own realm's credentials, is unknown here.
    let (status, _, _) = call(app, &url, Some((&stranger.id, &stranger.secret)), &form).await;
    assert_eq!(status, 401);
    // Not a token of this realm: inactive, nothing else said.
    for t in [
        "garbage",
        "a.b.c",
        &app.token("other", &stranger, None).await,
    ] {
        assert_eq!(
            introspect(app, "ledger", &rs, t).await,
            serde_json::json!({"active": false})
        );
    }

    // Another client revoking the token: 200, no effect, audited.
    revoke(app, "ledger", &b, &token).await;
    assert_eq!(introspect(app, "ledger", &rs, &token).await["active"], true);
    // Revocation needs client authentication too.
    let revoke_url = endpoint(app, "ledger", "revoke");
    let (status, _, _) = call(app, &revoke_url, None, &[("token", &token)]).await;
    assert_eq!(status, 401);
    let (status, _, _) = call(
        app,
        &revoke_url,
        Some((&a.id, "nope")),
        &[("token", &token)],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(introspect(app, "ledger", &rs, &token).await["active"], true);

    // Its own client revokes it; twice is the same; unknown tokens are 200 too.
    revoke(app, "ledger", &a, &token).await;
    assert_eq!(
        introspect(app, "ledger", &rs, &token).await,
        serde_json::json!({"active": false})
    );
    revoke(app, "ledger", &a, &token).await;
    revoke(app, "ledger", &a, "not-a-token").await;
    assert_eq!(
        count_rows(app, "SELECT COUNT(*) FROM flows WHERE kind = 'revoked_at'").await,
        1
    );

    // Many revocations of one token at once: all 200, one row.
    let t2 = app.token("ledger", &a, None).await;
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (http, url, id, secret, t) = (
            app.http.clone(),
            revoke_url.clone(),
            a.id.clone(),
            a.secret.clone(),
            t2.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .basic_auth(id, Some(secret))
                .form(&[("token", t)])
                .send()
                .await
                .expect("answered")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(
        count_rows(app, "SELECT COUNT(*) FROM flows WHERE kind = 'revoked_at'").await,
        2
    );
    assert_eq!(introspect(app, "ledger", &rs, &t2).await["active"], false);

    // A disabled client's tokens are inactive.
    let t3 = app.token("ledger", &a, None).await;
    assert_eq!(introspect(app, "ledger", &rs, &t3).await["active"], true);
    sigil::admin::clients::set_enabled(
        app.store.as_ref(),
        "ledger",
        "svc-a",
        None,
        false,
        app.now(),
        "t",
    )
    .await
    .expect("disable");
    assert_eq!(introspect(app, "ledger", &rs, &t3).await["active"], false);
    // Enabled again, the client's earlier tokens stay dead; tokens issued after work (a token
    // issued in the very second of the disable counts as before it, so wait for the next one).
    let store = app.store.as_ref();
    sigil::admin::clients::set_enabled(store, "ledger", "svc-a", None, true, app.now(), "t")
        .await
        .expect("enable");
    assert_eq!(introspect(app, "ledger", &rs, &t3).await["active"], false);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let t4 = app.token("ledger", &a, None).await;
    assert_eq!(introspect(app, "ledger", &rs, &t4).await["active"], true);
    // Deleted and created again under the same id: the old client's tokens stay dead.
    sigil::admin::clients::delete(store, "ledger", "svc-a", None, app.now(), "t")
        .await
        .expect("delete");
    let again = app
        .create_client("ledger", "svc-a", "balances:read", "elsewhere")
        .await;
    assert_eq!(introspect(app, "ledger", &rs, &t4).await["active"], false);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let t5 = app.token("ledger", &again, None).await;
    assert_eq!(introspect(app, "ledger", &rs, &t5).await["active"], true);

    // The audit log has each revocation and each ignored one, and never a token.
    let rows = app.audit().await;
    let revoked: Vec<_> = rows.iter().filter(|r| r.kind == "token.revoked").collect();
    assert!(
        revoked
            .iter()
            .any(|r| r.detail.contains(&jti) && r.actor == "svc-a")
    );
    assert!(rows.iter().any(|r| r.kind == "token.revoke_ignored"
        && r.actor == "svc-b"
        && r.detail.contains("foreign_access_token")));
    assert!(
        rows.iter()
            .any(|r| r.kind == "token.introspect_refused" && r.actor == "svc-b")
    );
    for r in &rows {
        assert!(!r.detail.contains(&token) && !r.detail.contains(&t2));
    }
}
crate::on_every_backend!(
    a_services_token_is_revoked_by_its_own_client_and_introspected_by_resource_servers,
    service_tokens
);

/// A signed-in customer's tokens, through the public `mobile` client.
#[tokio::test]
async fn a_users_tokens_stop_on_revocation_sign_out_and_disable() {
    for backend in backends() {
        let f = setup(backend).await;
        let app = &f.app;
        let rs = resource_server(app, "customers", "ledger-rs").await;
        let web = Client {
            id: "web".into(),
            secret: f.web_secret.clone(),
        };
        let sign_in = || async {
            f.clock.advance(31);
            let p = pkce();
            let res = f
                .sign_in(&browser(), &p, &totp::code_at(&f.secret, f.clock.now()))
                .await;
            assert_eq!(res.status(), 303);
            let code = query_param(&location(&res), "code").expect("code");
            let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
            assert_eq!(status, 200, "{body}");
            (
                body["access_token"].as_str().expect("at").to_owned(),
                body["refresh_token"].as_str().expect("rt").to_owned(),
            )
        };
        let userinfo = |token: String| async move {
            app.http
                .get(format!("{}/oauth2/userinfo", app.issuer("customers")))
                .bearer_auth(token)
                .send()
                .await
                .expect("userinfo")
                .status()
                .as_u16()
        };
        let mobile_revokes = |token: String| async move {
            let (status, body, _) = call(
                app,
                &endpoint(app, "customers", "revoke"),
                None,
                &[("client_id", "mobile"), ("token", &token)],
            )
            .await;
            assert_eq!(status, 200, "{body}");
        };

        let (access, refresh) = sign_in().await;
        let a = introspect(app, "customers", &rs, &access).await;
        assert_eq!(a["active"], true, "{a}");
        assert_eq!(a["client_id"], "mobile");
        assert!(a["sid"].is_string() && a["sub"].is_string());
        let r = introspect(app, "customers", &rs, &refresh).await;
        assert_eq!(r["active"], true, "{r}");
        assert_eq!(r["token_type"], "refresh_token");
        assert_eq!(r["sub"], a["sub"]);
        assert_eq!(r["sid"], a["sid"]);
        assert_eq!(userinfo(access.clone()).await, 200);

        // The public client revokes its access token: introspection and userinfo both refuse it.
        mobile_revokes(access.clone()).await;
        assert_eq!(
            introspect(app, "customers", &rs, &access).await["active"],
            false
        );
        assert_eq!(userinfo(access.clone()).await, 401);
        // Another client cannot revoke mobile's refresh token.
        revoke(app, "customers", &web, &refresh).await;
        assert_eq!(
            introspect(app, "customers", &rs, &refresh).await["active"],
            true
        );
        // Mobile can: the refresh grant then fails and introspection says inactive.
        mobile_revokes(refresh.clone()).await;
        assert_eq!(
            introspect(app, "customers", &rs, &refresh).await["active"],
            false
        );
        let (status, body) = f.refresh(&refresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );

        // Global sign-out: the access token is inactive at once, the refresh token too.
        let (access, refresh) = sign_in().await;
        assert_eq!(
            introspect(app, "customers", &rs, &access).await["active"],
            true
        );
        sigil::admin::users::sign_out_everywhere(
            app.store.as_ref(),
            "customers",
            "alice",
            f.clock.now(),
            "t",
        )
        .await
        .expect("sign out");
        assert_eq!(
            introspect(app, "customers", &rs, &access).await["active"],
            false
        );
        assert_eq!(
            introspect(app, "customers", &rs, &refresh).await["active"],
            false
        );
        assert_eq!(userinfo(access).await, 401);

        // A disabled user: the same.
        let (access, refresh) = sign_in().await;
        assert_eq!(
            introspect(app, "customers", &rs, &access).await["active"],
            true
        );
        sigil::admin::users::set_enabled(
            app.store.as_ref(),
            "customers",
            "alice",
            None,
            false,
            f.clock.now(),
            "t",
        )
        .await
        .expect("disable");
        assert_eq!(
            introspect(app, "customers", &rs, &access).await["active"],
            false
        );
        assert_eq!(
            introspect(app, "customers", &rs, &refresh).await["active"],
            false
        );
        sigil::admin::users::set_enabled(
            app.store.as_ref(),
            "customers",
            "alice",
            None,
            true,
            f.clock.now(),
            "t",
        )
        .await
        .expect("enable");

        // Refreshed and revoked at once, many times over: whatever wins, no live refresh token of
        // the family is left (a rotation after the revocation is refused; one before it is
        // revoked with its family).
        let (_, refresh) = sign_in().await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (http, token, url_token, url_revoke, rt) = (
                app.http.clone(),
                refresh.clone(),
                app.token_url("customers"),
                endpoint(app, "customers", "revoke"),
                i % 2 == 0,
            );
            tasks.push(tokio::spawn(async move {
                let res = if rt {
                    http.post(url_token).form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", "mobile"),
                        ("refresh_token", &token),
                    ])
                } else {
                    http.post(url_revoke)
                        .form(&[("client_id", "mobile"), ("token", &token)])
                }
                .send()
                .await
                .expect("answered");
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                (status, body["refresh_token"].as_str().map(str::to_owned))
            }));
        }
        let mut issued = Vec::new();
        for t in tasks {
            let (status, new) = t.await.expect("task");
            assert!(status == 200 || status == 400, "{status}");
            issued.extend(new);
        }
        assert!(issued.len() <= 1, "one rotation at most: {issued:?}");
        for t in issued.iter().chain([&refresh]) {
            assert_eq!(introspect(app, "customers", &rs, t).await["active"], false);
            assert_eq!(f.refresh(t).await.0, 400);
        }
    }
}
