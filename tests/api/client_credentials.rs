//! The client_credentials grant: both authentication methods, scopes, the RFC 9068 token shape.

use serde_json::Value;
use sigil::keys::Alg;

use crate::helpers::{TestApp, decode_part, error_of};
use crate::on_every_backend;

async fn issues_rfc9068_tokens_with_basic_and_post(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client(
            "ledger",
            "ach-processor",
            "tx:post:ach balances:read",
            "ledger",
        )
        .await;

    let res = app
        .token_request(
            "ledger",
            Some((&c.id, &c.secret)),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "tx:post:ach"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "tx:post:ach");
    let jwt = body["access_token"].as_str().expect("token");
    let header = decode_part(jwt, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());
    let claims = decode_part(jwt, 1);
    assert_eq!(claims["iss"], app.issuer("ledger").as_str());
    assert_eq!(claims["sub"], "ach-processor");
    assert_eq!(claims["aud"], "ledger");
    assert_eq!(claims["client_id"], "ach-processor");
    assert_eq!(claims["azp"], "ach-processor");
    assert_eq!(claims["token_use"], "access");
    assert_eq!(claims["scope"], "tx:post:ach");
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 3600));
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    assert!(jti.len() >= 22);

    // client_secret_post, and no scope = the client's defaults (all allowed here).
    let res = app
        .token_request(
            "ledger",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &c.id),
                ("client_secret", &c.secret),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["scope"], "tx:post:ach balances:read");
    let jti2 = decode_part(body["access_token"].as_str().expect("t"), 1)["jti"].clone();
    assert_ne!(jti2, jti.as_str(), "every token has its own jti");

    // Each issued token is in the audit log with its jti, scopes and audience.
    let audit = app.audit().await;
    let issued: Vec<_> = audit.iter().filter(|r| r.kind == "token.issued").collect();
    assert_eq!(issued.len(), 2);
    let detail: Value = serde_json::from_str(&issued[0].detail).expect("detail");
    assert_eq!(detail["jti"], jti.as_str());
    assert_eq!(detail["scope"], "tx:post:ach");
    assert_eq!(issued[0].actor, "ach-processor");
}
on_every_backend!(
    issues_rfc9068_tokens,
    issues_rfc9068_tokens_with_basic_and_post
);

async fn scopes_are_a_subset_and_defaults_apply(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client_with(
            "ledger",
            "reader",
            "balances:read tx:post:ach",
            Some("balances:read"),
            "ledger",
        )
        .await;
    let res = app
        .token_request(
            "ledger",
            Some((&c.id, &c.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["scope"], "balances:read", "default scopes only");

    for bad in [
        "tx:post:wire",
        "balances:read tx:post:wire",
        "balances",
        "a\\b",
    ] {
        let res = app
            .token_request(
                "ledger",
                Some((&c.id, &c.secret)),
                &[("grant_type", "client_credentials"), ("scope", bad)],
            )
            .await;
        let (status, _, body) = error_of(res).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope")),
            "{bad}"
        );
    }
}
on_every_backend!(scopes_subset, scopes_are_a_subset_and_defaults_apply);

async fn rs256_and_eddsa_realms_issue_tokens(app: &TestApp) {
    for (realm, alg) in [("rsa", Alg::RS256), ("ed", Alg::EdDSA)] {
        app.create_realm(realm, alg).await;
        let c = app
            .create_client(realm, "svc", "balances:read", "ledger")
            .await;
        let jwt = app.token(realm, &c, None).await;
        assert_eq!(decode_part(&jwt, 0)["alg"], alg.as_str());
    }
}
on_every_backend!(rs256_and_eddsa, rs256_and_eddsa_realms_issue_tokens);

async fn per_client_lifetime_overrides_the_realm(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let made = sigil::admin::clients::create(
        app.store.as_ref(),
        sigil::admin::clients::NewClient {
            realm: "ledger".into(),
            client_id: "short".into(),
            scopes: "balances:read".into(),
            audience: "ledger".into(),
            access_token_ttl: Some(300),
            ..Default::default()
        },
        app.now(),
        "test",
    )
    .await
    .expect("client");
    let c = crate::helpers::Client {
        id: made.client.client_id,
        secret: made.client_secret.expect("confidential client"),
    };
    let jwt = app.token("ledger", &c, None).await;
    let claims = decode_part(&jwt, 1);
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        300
    );
}
on_every_backend!(per_client_lifetime, per_client_lifetime_overrides_the_realm);

async fn disabled_then_enabled_client(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    let now = app.now();
    sigil::admin::clients::set_enabled(
        app.store.as_ref(),
        "ledger",
        "svc",
        None,
        false,
        now,
        "test",
    )
    .await
    .expect("disable");
    let res = app
        .token_request(
            "ledger",
            Some((&c.id, &c.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let (status, _, body) = error_of(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    sigil::admin::clients::set_enabled(
        app.store.as_ref(),
        "ledger",
        "svc",
        None,
        true,
        now,
        "test",
    )
    .await
    .expect("enable");
    app.token("ledger", &c, None).await;
    // Rotating the secret kills the old one at once.
    let rotated = sigil::admin::clients::rotate_secret(
        app.store.as_ref(),
        "ledger",
        "svc",
        None,
        now,
        "test",
    )
    .await
    .expect("rotate");
    let res = app
        .token_request(
            "ledger",
            Some((&c.id, &c.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status(), 401);
    let fresh = crate::helpers::Client {
        id: "svc".into(),
        secret: rotated.client_secret.expect("secret"),
    };
    app.token("ledger", &fresh, None).await;
}
on_every_backend!(disable_enable_rotate, disabled_then_enabled_client);

async fn concurrent_grants_are_each_audited_in_one_chain(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let http = app.http.clone();
        let url = app.token_url("ledger");
        let (id, secret) = (c.id.clone(), c.secret.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .expect("send");
            assert_eq!(res.status(), 200);
            let body: Value = res.json().await.expect("json");
            decode_part(body["access_token"].as_str().expect("t"), 1)["jti"]
                .as_str()
                .expect("jti")
                .to_owned()
        }));
    }
    let mut jtis = Vec::new();
    for t in tasks {
        jtis.push(t.await.expect("join"));
    }
    let audit = app.audit().await;
    for jti in &jtis {
        assert!(
            audit
                .iter()
                .any(|r| r.kind == "token.issued" && r.detail.contains(jti.as_str())),
            "every token answered is already audited"
        );
    }
    assert!(matches!(
        sigil::admin::audit::verify(app.store.as_ref(), Some(app.kek.as_ref()))
            .await
            .expect("verify"),
        sigil::audit::VerifyReport::Intact { .. }
    ));
}
on_every_backend!(
    concurrent_grants_audited,
    concurrent_grants_are_each_audited_in_one_chain
);
