//! The bundled validator against the real server: good tokens pass, every forgery fails, and the
//! axum layer answers 200 / 401 / 403 as RFC 6750 says.

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sigil::keys::Alg;
use sigil::oauth::token::{AccessSpec, mint_access_token};
use sigil_validator::{Claims, ErrorKind, Validator};

use crate::helpers::{TestApp, live_realm};
use crate::on_every_backend;

async fn validator_accepts_real_tokens_and_refuses_forgeries(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    app.create_realm("payments", Alg::ES256).await;
    let c = app
        .create_client(
            "ledger",
            "ach-processor",
            "tx:post:ach balances:read",
            "ledger",
        )
        .await;
    let other_aud = app
        .create_client("ledger", "wire", "tx:post:ach", "payments")
        .await;
    let other_realm = app
        .create_client("payments", "ach-processor", "tx:post:ach", "ledger")
        .await;
    let v = Validator::builder(app.issuer("ledger"), "ledger")
        .build()
        .await
        .expect("validator");
    assert_eq!(v.jwks_fetches(), 1);

    let good = app.token("ledger", &c, Some("tx:post:ach")).await;
    let claims = v.validate(&good).await.expect("valid");
    assert_eq!(claims.client_id.as_deref(), Some("ach-processor"));
    assert!(claims.has_scope("tx:post:ach") && !claims.has_scope("balances:read"));

    let kind = |r: Result<Claims, sigil_validator::Error>| r.expect_err("must fail").kind().clone();

    // Signed by another realm's key (its kid is unknown here, even after one refetch).
    let foreign = app.token("payments", &other_realm, None).await;
    assert_eq!(kind(v.validate(&foreign).await), ErrorKind::UnknownKey);
    // Another audience.
    let wrong_aud = app.token("ledger", &other_aud, None).await;
    assert_eq!(kind(v.validate(&wrong_aud).await), ErrorKind::WrongAudience);

    let parts: Vec<&str> = good.split('.').collect();
    let header = crate::helpers::decode_part(&good, 0);
    // alg none.
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg":"none","kid":header["kid"],"typ":"at+jwt"}).to_string()),
        parts[1]
    );
    assert_eq!(kind(v.validate(&none).await), ErrorKind::AlgorithmMismatch);
    // HS256 keyed with the realm's public JWKS.
    let jwks = app
        .http
        .get(format!("{}/jwks", app.issuer("ledger")))
        .send()
        .await
        .expect("jwks")
        .text()
        .await
        .expect("text");
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg":"HS256","kid":header["kid"],"typ":"at+jwt"}).to_string()),
        parts[1]
    );
    let hk = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwks.as_bytes());
    let hs = format!(
        "{input}.{}",
        B64.encode(ring::hmac::sign(&hk, input.as_bytes()).as_ref())
    );
    assert_eq!(kind(v.validate(&hs).await), ErrorKind::AlgorithmMismatch);
    // A forged kid.
    let forged_kid = format!(
        "{}.{}.{}",
        B64.encode(json!({"alg":"ES256","kid":"attacker-key","typ":"at+jwt"}).to_string()),
        parts[1],
        parts[2]
    );
    assert_eq!(kind(v.validate(&forged_kid).await), ErrorKind::UnknownKey);
    // A scope added after signing.
    let mut widened = crate::helpers::decode_part(&good, 1);
    widened["scope"] = json!("tx:post:ach balances:read");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(widened.to_string()),
        parts[2]
    );
    assert_eq!(kind(v.validate(&tampered).await), ErrorKind::BadSignature);

    // Properly signed by the realm's own key, but expired / ID-token-shaped.
    let live = live_realm(app, "ledger").await;
    let expired = mint_access_token(
        &live.signing,
        AccessSpec {
            issuer: &live.issuer,
            subject: "ach-processor",
            audience: "ledger",
            client_id: "ach-processor",
            scope: "tx:post:ach",
            ttl: 300,
            now: app.now() - 7200,
            cnf: None,
            extra: None,
        },
    )
    .expect("mint");
    assert_eq!(kind(v.validate(&expired.jwt).await), ErrorKind::Expired);
    let mut id_claims: Value = crate::helpers::decode_part(&good, 1);
    id_claims["token_use"] = json!("id");
    let id_token = live
        .signing
        .sign_access_token(id_claims.to_string().as_bytes())
        .expect("sign");
    assert_eq!(kind(v.validate(&id_token).await), ErrorKind::WrongTokenUse);
    let jwt_typ = {
        let input = format!(
            "{}.{}",
            B64.encode(json!({"alg":"ES256","kid":live.signing.kid(),"typ":"JWT"}).to_string()),
            parts[1]
        );
        let sig = live.signing.sign(input.as_bytes()).expect("sign");
        format!("{input}.{}", B64.encode(sig))
    };
    assert!(matches!(
        kind(v.validate(&jwt_typ).await),
        ErrorKind::UnsupportedHeader(_)
    ));

    // Allowed client ids.
    let only_wire = Validator::builder(app.issuer("ledger"), "ledger")
        .allowed_client_ids(["wire"])
        .build()
        .await
        .expect("validator");
    assert_eq!(
        kind(only_wire.validate(&good).await),
        ErrorKind::ClientNotAllowed
    );
    // The forged-kid and foreign tokens cost at most one refetch in the cooldown.
    assert_eq!(v.jwks_fetches(), 2);
}
on_every_backend!(
    validator_vs_server,
    validator_accepts_real_tokens_and_refuses_forgeries
);

async fn who(claims: Claims) -> String {
    claims.client_id.unwrap_or_default()
}

async fn axum_layer_answers_200_401_403(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "reader", "balances:read tx:post:ach", "ledger")
        .await;
    let v = Validator::builder(app.issuer("ledger"), "ledger")
        .build()
        .await
        .expect("validator");
    let router = Router::new()
        .route(
            "/balances",
            get(who).route_layer(v.require_scope("balances:read")),
        )
        .route("/ach", get(who).route_layer(v.require_scope("tx:post:ach")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });

    let reader = app.token("ledger", &c, Some("balances:read")).await;
    let res = app
        .http
        .get(format!("http://{addr}/balances"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("text"), "reader");

    let res = app
        .http
        .get(format!("http://{addr}/ach"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 403);
    let www = res.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        www,
        r#"Bearer error="insufficient_scope", scope="tx:post:ach""#
    );
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["error_code"], "INSUFFICIENT_SCOPE");

    // No credentials (or another scheme): a bare challenge without an error code (RFC 6750
    // §3.1); a bearer attempt that fails: invalid_token.
    for (auth, bare) in [
        (None, true),
        (Some("Basic abc"), true),
        (Some("Bearer"), false),
        (Some("Bearer not-a-jwt"), false),
    ] {
        let mut req = app.http.get(format!("http://{addr}/balances"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.expect("send");
        assert_eq!(res.status(), 401, "{auth:?}");
        let www = res.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        if bare {
            assert_eq!(www, r#"Bearer realm="ledger""#, "{auth:?}");
        } else {
            assert!(www.starts_with(r#"Bearer error="invalid_token""#), "{www}");
        }
    }
}
on_every_backend!(axum_layer, axum_layer_answers_200_401_403);

/// ECDSA signatures are malleable: `(r, n − s)` verifies wherever `(r, s)` does. The server signs
/// only the low-s form and both verifiers (the validator crate, the server's own userinfo check)
/// refuse the high form, so a token has exactly one valid encoding.
async fn es256_tokens_have_one_encoding(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "ach-processor", "tx:post:ach", "ledger")
        .await;
    let v = Validator::builder(app.issuer("ledger"), "ledger")
        .build()
        .await
        .expect("validator");
    let live = live_realm(app, "ledger").await;
    // ring signs a high s half the time; every token the server hands out must be low-s.
    let mut tokens = Vec::new();
    for _ in 0..64 {
        let t = app.token("ledger", &c, None).await;
        let sig = B64.decode(t.rsplit_once('.').expect("jwt").1).expect("b64");
        assert!(sigil_validator::es256::is_low_s(&sig), "high-s token: {t}");
        tokens.push(t);
    }
    for good in &tokens[..8] {
        v.validate(good).await.expect("valid");
        assert!(sigil::oidc::userinfo::verify_own(&live, good, app.now()).is_some());
        let (input, sig) = good.rsplit_once('.').expect("jwt");
        let mut sig = B64.decode(sig).expect("b64");
        sigil_validator::es256::negate_s(&mut sig);
        let twin = format!("{input}.{}", B64.encode(&sig));
        assert_eq!(
            v.validate(&twin).await.expect_err("twin refused").kind(),
            &ErrorKind::BadSignature
        );
        assert!(sigil::oidc::userinfo::verify_own(&live, &twin, app.now()).is_none());
    }
}
on_every_backend!(es256_malleability, es256_tokens_have_one_encoding);
