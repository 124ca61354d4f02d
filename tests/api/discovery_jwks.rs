//! Discovery read by an independent client library (`openidconnect`), and the JWKS contents.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use openidconnect::core::CoreProviderMetadata;
use serde_json::Value;
use sigil::keys::Alg;

use crate::helpers::TestApp;
use crate::on_every_backend;

async fn discovery_parses_with_openidconnect(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    app.create_client("ledger", "svc", "tx:post:ach balances:read", "ledger")
        .await;
    let url = format!("{}/.well-known/openid-configuration", app.issuer("ledger"));
    let doc: Value = app
        .http
        .get(&url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let meta: CoreProviderMetadata =
        serde_json::from_value(doc.clone()).expect("openidconnect parses");
    assert_eq!(meta.issuer().as_str(), app.issuer("ledger"));
    let token_endpoint = meta
        .token_endpoint()
        .expect("token endpoint")
        .url()
        .to_string();
    assert_eq!(token_endpoint, app.token_url("ledger"));
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["client_credentials", "authorization_code", "refresh_token"])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!([
            "client_secret_basic",
            "client_secret_post",
            "tls_client_auth",
            "self_signed_tls_client_auth",
            "private_key_jwt",
            "none"
        ])
    );
    assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
    // No mutual-TLS listener configured: no aliases.
    assert!(doc.get("mtls_endpoint_aliases").is_none());
    for key in [
        "token_endpoint_auth_signing_alg_values_supported",
        "dpop_signing_alg_values_supported",
    ] {
        let algs = doc[key].as_array().expect(key);
        assert!(algs.iter().any(|a| a == "ES256"), "{key}");
        assert!(
            !algs
                .iter()
                .any(|a| a == "none" || a.as_str().is_some_and(|a| a.starts_with("HS"))),
            "{key}"
        );
    }
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["balances:read", "tx:post:ach"])
    );
    // The RFC 8414 well-known location serves the same document.
    let rfc8414 = format!(
        "{}/.well-known/oauth-authorization-server/realms/ledger",
        app.base
    );
    let doc2: Value = app
        .http
        .get(&rfc8414)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(doc, doc2);
    // Unknown realm: 404.
    let res = app
        .http
        .get(format!(
            "{}/realms/nope/.well-known/openid-configuration",
            app.base
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
}
on_every_backend!(discovery, discovery_parses_with_openidconnect);

/// Configuring the AWS exchange adds the token-exchange grant; it never takes the others away.
async fn aws_configuration_adds_a_grant_type(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    sigil::admin::aws::configure(
        app.store.as_ref(),
        sigil::admin::aws::Configure {
            realm: "ledger".into(),
            sts_endpoint: None,
            partitions: vec![],
            server_id: "sigil-test".into(),
            require_challenge: false,
        },
        app.now(),
        "test",
    )
    .await
    .expect("configure");
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
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!([
            "client_credentials",
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert!(doc["aws_sts_exchange_endpoint"].is_string());
    serde_json::from_value::<CoreProviderMetadata>(doc).expect("openidconnect parses");
}
on_every_backend!(discovery_with_aws, aws_configuration_adds_a_grant_type);

fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str().expect("kty") {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().expect("crv"),
            jwk["x"].as_str().expect("x"),
            jwk["y"].as_str().expect("y")
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().expect("e"),
            jwk["n"].as_str().expect("n")
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().expect("crv"),
            jwk["x"].as_str().expect("x")
        ),
        other => panic!("unexpected kty {other}"),
    };
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

async fn jwks_publishes_public_keys_only(app: &TestApp) {
    for (realm, alg, kty) in [
        ("ec", Alg::ES256, "EC"),
        ("rsa", Alg::RS256, "RSA"),
        ("ed", Alg::EdDSA, "OKP"),
    ] {
        app.create_realm(realm, alg).await;
        let res = app
            .http
            .get(format!("{}/jwks", app.issuer(realm)))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 200);
        let cc = res.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(cc.contains("max-age=3600"), "{cc}");
        let jwks: Value = res.json().await.expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k["kty"], kty);
        assert_eq!(k["alg"], alg.as_str());
        assert_eq!(k["use"], "sig");
        assert_eq!(
            k["kid"].as_str().expect("kid"),
            thumbprint(k),
            "kid is the RFC 7638 thumbprint"
        );
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(k.get(private).is_none(), "{realm} JWKS leaks {private}");
        }
    }
}
on_every_backend!(jwks_public_only, jwks_publishes_public_keys_only);

async fn database_alone_never_reveals_a_private_key(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let keys = app.store.realm_keys("ledger").await.expect("keys");
    let live = crate::helpers::live_realm(app, "ledger").await;
    assert_eq!(keys[0].kid, live.signing.kid());
    // The stored blob is sealed: it is not a usable PKCS#8 key and does not open under another KEK.
    let rng = ring::rand::SystemRandom::new();
    assert!(
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &keys[0].private_sealed,
            &rng
        )
        .is_err()
    );
    let other = sigil::keys::FileKek::from_bytes(&[9u8; 32]).expect("kek");
    use sigil::keys::KekSource;
    assert!(
        other
            .open(
                &sigil::keys::key_aad("ledger", &keys[0].kid),
                &keys[0].private_sealed
            )
            .is_err()
    );
}
on_every_backend!(
    private_keys_sealed,
    database_alone_never_reveals_a_private_key
);
