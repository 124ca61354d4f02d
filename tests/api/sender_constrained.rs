//! Services without shared secrets (RFC 8705, RFC 7523, RFC 9449): the real server with TLS and a
//! mutual-TLS listener, certificates made here with rcgen, client assertions and DPoP proofs
//! signed here with ring, and every attack the issue lists.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use sigil::admin;
use sigil::clients::auth::{AuthMethod, ClientAuth, TlsSubject};
use sigil::clients::mtls::thumbprint;
use sigil::clock::Clock;
use sigil::config::ForwardedCertFormat;
use sigil::keys::Alg;
use sigil_validator::{RequestCredentials, Validator};

use crate::helpers::{Backend, TestApp, backends, decode_part, spawn_app_with};
use crate::jose::{self, EcKey};
use crate::pki::{self, Ca, EXPIRED, Leaf, NOT_YET_VALID, VALID};

const SPIFFE: &str = "spiffe://bank.example/ns/payments/sa/ach";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The app with TLS on its main listener and a mutual-TLS listener; the server certificate's CA.
async fn tls_app(
    backend: Backend,
    tweak: impl FnOnce(&mut sigil::config::Config),
) -> (TestApp, Ca, tempfile::TempDir) {
    let server_ca = Ca::new("Sigil test server CA");
    let dir = tempfile::tempdir().expect("dir");
    let files = pki::server_files(dir.path(), &server_ca.server());
    let app = spawn_app_with(backend, None, |c| {
        c.tls = Some(files);
        c.mtls_bind = Some(([127, 0, 0, 1], 0).into());
        tweak(c);
    })
    .await;
    (app, server_ca, dir)
}

/// Registers a client with `auth`; its secret when it has one.
async fn register(app: &TestApp, realm: &str, id: &str, auth: ClientAuth) -> Option<String> {
    admin::clients::create(
        app.store.as_ref(),
        admin::clients::NewClient {
            realm: realm.into(),
            client_id: id.into(),
            scopes: "tx:post:ach".into(),
            audience: "ledger".into(),
            auth,
            ..Default::default()
        },
        app.now(),
        "test",
    )
    .await
    .expect("client")
    .client_secret
}

fn tls_auth(subject: TlsSubject) -> ClientAuth {
    ClientAuth {
        method: Some(AuthMethod::TlsClientAuth),
        tls_subject: Some(subject),
        ..ClientAuth::default()
    }
}

async fn set_cas(app: &TestApp, realm: &str, ca: &Ca) {
    admin::realms::set_mtls(app.store.as_ref(), realm, Some(&ca.pem), app.now(), "test")
        .await
        .expect("CAs set");
}

/// A client_credentials request on the mutual-TLS listener, presenting `cert`.
async fn mtls_grant(
    app: &TestApp,
    server_ca: &Ca,
    cert: Option<&Leaf>,
    realm: &str,
    client: &str,
) -> (u16, Value) {
    let http = pki::https_client(server_ca, cert);
    let url = format!(
        "{}/realms/{realm}/oauth2/token",
        app.mtls_base.as_deref().expect("mtls listener")
    );
    let res = http
        .post(url)
        .form(&[("grant_type", "client_credentials"), ("client_id", client)])
        .send()
        .await
        .expect("token request");
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

fn refused(r: &(u16, Value)) -> bool {
    r.0 == 401 && r.1["error"] == "invalid_client"
}

async fn mtls_clients_get_certificate_bound_tokens(backend: Backend) {
    let (app, server_ca, _dir) = tls_app(backend, |_| {}).await;
    assert!(app.base.starts_with("https://"), "{}", app.base);
    app.create_realm("payments", Alg::ES256).await;
    app.create_realm("other", Alg::ES256).await;
    let ca = Ca::new("payments client CA");
    let other_ca = Ca::new("other client CA");
    set_cas(&app, "payments", &ca).await;
    set_cas(&app, "other", &other_ca).await;
    register(
        &app,
        "payments",
        "ach",
        tls_auth(TlsSubject::SanUri(SPIFFE.into())),
    )
    .await;
    register(
        &app,
        "payments",
        "reporting",
        tls_auth(TlsSubject::Dn("CN=reporting,O=Bank".into())),
    )
    .await;
    let unbound = ClientAuth {
        bind_tokens: false,
        ..tls_auth(TlsSubject::SanDns("batch.bank.example".into()))
    };
    register(&app, "payments", "batch", unbound).await;
    let mine = pki::self_signed("selfie", vec![]);
    let next = pki::self_signed("selfie-next", vec![]);
    register(
        &app,
        "payments",
        "selfie",
        ClientAuth {
            method: Some(AuthMethod::SelfSignedTlsClientAuth),
            cert_thumbprints: vec![thumbprint(&mine.der), thumbprint(&next.der)],
            ..ClientAuth::default()
        },
    )
    .await;
    let secret = register(&app, "payments", "secret-svc", ClientAuth::default())
        .await
        .expect("a secret client has a secret");

    // The SPIFFE certificate from the realm's CA: a token bound to it.
    let good = ca.client("ach", None, vec![pki::uri(SPIFFE)], VALID);
    let (status, body) = mtls_grant(&app, &server_ca, Some(&good), "payments", "ach").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let claims = decode_part(&token, 1);
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint(&good.der).as_str());
    assert_eq!(claims["sub"], "ach");

    // Discovery (over TLS) names the alias; the main listener never asks for a certificate, so
    // the same client there has nothing to show.
    let plain_tls = pki::https_client(&server_ca, None);
    let doc: Value = plain_tls
        .get(format!(
            "{}/.well-known/openid-configuration",
            app.issuer("payments")
        ))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        doc["mtls_endpoint_aliases"]["token_endpoint"],
        format!(
            "{}/realms/payments/oauth2/token",
            app.mtls_base.as_deref().expect("mtls")
        )
        .as_str()
    );
    assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
    let with_cert_on_main = pki::https_client(&server_ca, Some(&good));
    let res = with_cert_on_main
        .post(app.token_url("payments"))
        .form(&[("grant_type", "client_credentials"), ("client_id", "ach")])
        .send()
        .await
        .expect("main listener");
    assert_eq!(
        res.status(),
        401,
        "the main listener does not ask for certificates"
    );

    // Attacks that must fail.
    let attacks: Vec<(&str, Option<Leaf>, &str)> = vec![
        (
            "another realm's CA",
            Some(other_ca.client("ach", None, vec![pki::uri(SPIFFE)], VALID)),
            "ach",
        ),
        (
            "expired",
            Some(ca.client("ach", None, vec![pki::uri(SPIFFE)], EXPIRED)),
            "ach",
        ),
        (
            "not yet valid",
            Some(ca.client("ach", None, vec![pki::uri(SPIFFE)], NOT_YET_VALID)),
            "ach",
        ),
        (
            "self-signed for a tls_client_auth client",
            Some(pki::self_signed("ach", vec![pki::uri(SPIFFE)])),
            "ach",
        ),
        (
            "right CA, wrong SAN",
            Some(ca.client(
                "ach",
                None,
                vec![pki::uri("spiffe://bank.example/ns/payments/sa/evil")],
                VALID,
            )),
            "ach",
        ),
        (
            "right CA, wrong subject DN",
            Some(ca.client("reporting", Some("Evil"), vec![], VALID)),
            "reporting",
        ),
        ("no certificate", None, "ach"),
        (
            "an unregistered self-signed certificate",
            Some(pki::self_signed("selfie", vec![])),
            "selfie",
        ),
        (
            "a certificate for a secret client",
            Some(good.clone()),
            "secret-svc",
        ),
    ];
    for (what, cert, client) in &attacks {
        let r = mtls_grant(&app, &server_ca, cert.as_ref(), "payments", client).await;
        assert!(refused(&r), "{what}: {r:?}");
    }
    // A tls_client_auth client cannot fall back to a secret, nor a secret client to its
    // certificate.
    let http = pki::https_client(&server_ca, Some(&good));
    let mtls_token_url = format!(
        "{}/realms/payments/oauth2/token",
        app.mtls_base.as_deref().expect("mtls")
    );
    let res = http
        .post(&mtls_token_url)
        .basic_auth("secret-svc", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("secret over mtls");
    assert_eq!(res.status(), 200, "a secret client may use the alias");
    let body: Value = res.json().await.expect("json");
    assert!(
        decode_part(body["access_token"].as_str().expect("t"), 1)
            .get("cnf")
            .is_none(),
        "a secret client's token is not bound"
    );
    let res = http
        .post(&mtls_token_url)
        .basic_auth("ach", Some("guessed"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("guess");
    assert_eq!(res.status(), 401);

    // The DN client, the self-signed client (both registered certificates) and the unbound one.
    let dn_cert = ca.client("reporting", Some("Bank"), vec![], VALID);
    let (s, b) = mtls_grant(&app, &server_ca, Some(&dn_cert), "payments", "reporting").await;
    assert_eq!(s, 200, "{b}");
    for cert in [&mine, &next] {
        let (s, b) = mtls_grant(&app, &server_ca, Some(cert), "payments", "selfie").await;
        assert_eq!(s, 200, "{b}");
        let c = decode_part(b["access_token"].as_str().expect("t"), 1);
        assert_eq!(c["cnf"]["x5t#S256"], thumbprint(&cert.der).as_str());
    }
    let batch = ca.client("batch", None, vec![pki::dns("batch.bank.example")], VALID);
    let (s, b) = mtls_grant(&app, &server_ca, Some(&batch), "payments", "batch").await;
    assert_eq!(s, 200, "{b}");
    assert!(
        decode_part(b["access_token"].as_str().expect("t"), 1)
            .get("cnf")
            .is_none(),
        "--bind-tokens false"
    );

    // The audit log has each refusal's own reason (no attack passed the checks by accident)
    // and the binding of each issued token.
    let audit = app.audit_after_tally().await;
    let reasons = refusal_reasons(&audit);
    for reason in [
        "certificate_untrusted",
        "certificate_subject_mismatch",
        "no_client_certificate",
        "certificate_not_registered",
        "no_client_authentication",
    ] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
    assert!(audit.iter().any(|r| r.kind == "token.issued"
        && serde_json::from_str::<Value>(&r.detail).expect("detail")["cnf"]["x5t#S256"]
            == thumbprint(&good.der).as_str()));

    // The validator: the token with the same certificate passes; with another, without one, or
    // as a plain bearer token checked without the request, it is refused.
    let v = Validator::builder(app.issuer("payments"), "ledger")
        .http_client(pki::https_client(&server_ca, None))
        .build()
        .await
        .expect("validator");
    let auth = format!("Bearer {token}");
    let url = "https://ledger.bank.example/transactions/ach";
    v.validate_request(
        &RequestCredentials::new("POST", url)
            .authorization(&auth)
            .client_certificate(&good.der),
    )
    .await
    .expect("same certificate");
    let stranger = ca.client("ach", None, vec![pki::uri(SPIFFE)], VALID);
    for (what, req) in [
        (
            "another certificate",
            RequestCredentials::new("POST", url)
                .authorization(&auth)
                .client_certificate(&stranger.der),
        ),
        (
            "no certificate",
            RequestCredentials::new("POST", url).authorization(&auth),
        ),
    ] {
        assert!(v.validate_request(&req).await.is_err(), "{what}");
    }
    assert!(v.validate(&token).await.is_err(), "bound token as bearer");
}

#[tokio::test]
async fn mtls_clients_get_certificate_bound_tokens_and_attacks_fail() {
    for backend in backends() {
        mtls_clients_get_certificate_bound_tokens(backend).await;
    }
}

/// The reasons of every refusal in the audit log (counted anonymous ones included).
fn refusal_reasons(audit: &[sigil::audit::AuditRecord]) -> Vec<String> {
    audit
        .iter()
        .filter(|r| r.kind == "token.refused")
        .filter_map(|r| {
            serde_json::from_str::<Value>(&r.detail).ok()?["reason"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// A URL-encoded PEM (what both proxy formats carry).
fn escaped(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn forwarded_certificates_and_addresses_only_from_trusted_proxies() {
    let ca = Ca::new("payments client CA");
    let good = ca.client("ach", None, vec![pki::uri(SPIFFE)], VALID);
    let envoy = format!(
        "By=spiffe://bank.example/sigil;Cert=\"{}\";Subject=\"CN=ach\";URI={SPIFFE}",
        escaped(&good.cert_pem)
    );
    for (proxies, format, header, value, trusted) in [
        (
            vec!["127.0.0.1/32"],
            ForwardedCertFormat::Envoy,
            "x-forwarded-client-cert",
            envoy.clone(),
            true,
        ),
        (
            vec!["10.0.0.0/8"],
            ForwardedCertFormat::Envoy,
            "x-forwarded-client-cert",
            envoy.clone(),
            false,
        ),
        (
            vec!["127.0.0.0/8"],
            ForwardedCertFormat::Nginx,
            "ssl-client-cert",
            escaped(&good.cert_pem),
            true,
        ),
    ] {
        let app = spawn_app_with(Backend::Sqlite, None, |c| {
            c.trusted_proxies = proxies.iter().map(|p| p.parse().expect("cidr")).collect();
            c.forwarded_cert_format = format;
            c.forwarded_cert_header = header.to_owned();
            c.failures_per_minute_per_ip = 3;
        })
        .await;
        app.create_realm("payments", Alg::ES256).await;
        set_cas(&app, "payments", &ca).await;
        register(
            &app,
            "payments",
            "ach",
            tls_auth(TlsSubject::SanUri(SPIFFE.into())),
        )
        .await;
        let res = app
            .http
            .post(app.token_url("payments"))
            .header(header, &value)
            .form(&[("grant_type", "client_credentials"), ("client_id", "ach")])
            .send()
            .await
            .expect("request");
        if trusted {
            assert_eq!(res.status(), 200, "{proxies:?}");
            let body: Value = res.json().await.expect("json");
            let c = decode_part(body["access_token"].as_str().expect("t"), 1);
            assert_eq!(c["cnf"]["x5t#S256"], thumbprint(&good.der).as_str());
        } else {
            assert_eq!(
                res.status(),
                401,
                "a header from an untrusted peer is ignored"
            );
        }

        // Rate limits count the real client: behind a trusted proxy, per forwarded address.
        let fail = |addr: &'static str| {
            app.http
                .post(app.token_url("payments"))
                .header("x-forwarded-for", addr)
                .basic_auth("nobody", Some("wrong"))
                .form(&[("grant_type", "client_credentials")])
                .send()
        };
        // Untrusted: the refused request above already counted against 127.0.0.1.
        let allowed = if trusted { 3 } else { 2 };
        for _ in 0..allowed {
            assert_eq!(fail("203.0.113.5").await.expect("fail").status(), 401);
        }
        assert_eq!(fail("203.0.113.5").await.expect("limited").status(), 429);
        let other = fail("203.0.113.6").await.expect("other").status();
        if trusted {
            assert_eq!(other, 401, "another client behind the proxy is not blocked");
        } else {
            assert_eq!(
                other, 429,
                "X-Forwarded-For from an untrusted peer is ignored"
            );
        }
    }
}

/// A client_credentials request with a client assertion.
async fn assertion_grant(app: &TestApp, realm: &str, jwt: &str) -> (u16, Value) {
    let res = app
        .http
        .post(app.token_url(realm))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", jwt),
        ])
        .send()
        .await
        .expect("request");
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

fn assertion_claims(client: &str, aud: &str, now: i64) -> Value {
    json!({
        "iss": client,
        "sub": client,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": hex(&jose::rand_bytes()),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pk_auth(key: &EcKey) -> ClientAuth {
    ClientAuth {
        method: Some(AuthMethod::PrivateKeyJwt),
        jwks: Some(key.jwks()),
        ..ClientAuth::default()
    }
}

/// Serves `jwks` at `/jwks` on a loopback port.
async fn serve_jwks(jwks: Value) -> SocketAddr {
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn private_key_jwt(backend: Backend) {
    let app = spawn_app_with(backend, None, |_| {}).await;
    app.create_realm("payments", Alg::ES256).await;
    app.create_realm("other", Alg::ES256).await;
    let key = EcKey::generate("k1");
    let other_key = EcKey::generate("k2");
    assert!(
        register(&app, "payments", "pk", pk_auth(&key))
            .await
            .is_none(),
        "a private_key_jwt client is shown no secret"
    );
    register(&app, "payments", "pk2", pk_auth(&other_key)).await;
    let now = app.now();
    let issuer = app.issuer("payments");

    let good = key.assertion(&assertion_claims("pk", &issuer, now));
    let (s, b) = assertion_grant(&app, "payments", &good).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        decode_part(b["access_token"].as_str().expect("t"), 1)["sub"],
        "pk"
    );
    // The token endpoint URL is an accepted audience too.
    let (s, b) = assertion_grant(
        &app,
        "payments",
        &key.assertion(&assertion_claims("pk", &app.token_url("payments"), now)),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = assertion_claims("pk", &issuer, now);
        f(&mut c);
        c
    };
    let public_jwk_text = key.public_jwk().to_string();
    let attacks: Vec<(&str, String)> = vec![
        ("replayed", good.clone()),
        (
            "alg none",
            jose::unsigned(&assertion_claims("pk", &issuer, now)),
        ),
        (
            "HMAC keyed with the client's public key",
            jose::hs256(
                "k1",
                &assertion_claims("pk", &issuer, now),
                public_jwk_text.as_bytes(),
            ),
        ),
        (
            "signed by another client's key",
            other_key.sign(
                &json!({"alg": "ES256", "kid": "k1"}),
                &assertion_claims("pk", &issuer, now),
            ),
        ),
        (
            "aud another realm",
            key.assertion(&assertion_claims("pk", &app.issuer("other"), now)),
        ),
        (
            "aud this realm and another server",
            key.assertion(&with(&|c| {
                c["aud"] = json!([issuer, "https://elsewhere.example"])
            })),
        ),
        (
            "expired",
            key.assertion(&with(&|c| c["exp"] = json!(now - 120))),
        ),
        (
            "exp far in the future",
            key.assertion(&with(&|c| c["exp"] = json!(now + 3600))),
        ),
        (
            "no exp",
            key.assertion(&with(&|c| {
                c.as_object_mut().expect("obj").remove("exp");
            })),
        ),
        (
            "no jti",
            key.assertion(&with(&|c| {
                c.as_object_mut().expect("obj").remove("jti");
            })),
        ),
        (
            "sub another client",
            key.assertion(&with(&|c| c["sub"] = json!("pk2"))),
        ),
        (
            "typ at+jwt",
            key.sign(
                &json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
                &assertion_claims("pk", &issuer, now),
            ),
        ),
        (
            "pk2's assertion signed with pk's key",
            key.assertion(&assertion_claims("pk2", &issuer, now)),
        ),
    ];
    for (what, jwt) in &attacks {
        let r = assertion_grant(&app, "payments", jwt).await;
        assert!(refused(&r), "{what}: {r:?}");
    }
    let reasons = refusal_reasons(&app.audit_after_tally().await);
    for reason in [
        "assertion_replayed",
        "assertion_bad_alg",
        "assertion_bad_signature",
        "assertion_wrong_audience",
        "assertion_expired",
        "assertion_lifetime_too_long",
        "assertion_no_exp",
        "assertion_no_jti",
        "assertion_wrong_issuer",
        "assertion_bad_typ",
    ] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
    // A private_key_jwt client cannot use a secret.
    let res = app
        .token_request(
            "payments",
            Some(("pk", "anything")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status(), 401);

    // Many copies of one assertion at once: exactly one is honoured.
    let one = key.assertion(&assertion_claims("pk", &issuer, now));
    let all = futures_util_join_all(
        (0..16)
            .map(|_| {
                let (app, one) = (&app, one.clone());
                async move { assertion_grant(app, "payments", &one).await.0 }
            })
            .collect(),
    )
    .await;
    assert_eq!(all.iter().filter(|s| **s == 200).count(), 1, "{all:?}");
    assert_eq!(all.iter().filter(|s| **s == 401).count(), 15, "{all:?}");

    // Keys from a jwks_uri.
    let at = serve_jwks(key.jwks()).await;
    register(
        &app,
        "payments",
        "pk-uri",
        ClientAuth {
            method: Some(AuthMethod::PrivateKeyJwt),
            jwks_uri: Some(format!("http://127.0.0.1:{}/jwks", at.port())),
            ..ClientAuth::default()
        },
    )
    .await;
    let (s, b) = assertion_grant(
        &app,
        "payments",
        &key.assertion(&assertion_claims("pk-uri", &issuer, now)),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // A jwks_uri that redirects to another origin (another port, plain http) is not followed;
    // a failing one is fetched once however many requests name it at once, and not again
    // within the cooldown.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let target = at;
    let huge_keys = key.jwks();
    let redirector = axum::Router::new()
        .route(
            "/moved",
            axum::routing::get(move || async move {
                axum::response::Redirect::temporary(&format!(
                    "http://127.0.0.1:{}/jwks",
                    target.port()
                ))
            }),
        )
        .route(
            "/huge",
            axum::routing::get(move || async move {
                // A valid JWKS padded past the 64 KiB cap.
                let mut jwks = huge_keys.clone();
                jwks["padding"] = json!("x".repeat(70 * 1024));
                axum::Json(jwks)
            }),
        )
        .route(
            "/broken",
            axum::routing::get(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let other = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, redirector).await });
    for (id, path) in [
        ("pk-moved", "moved"),
        ("pk-huge", "huge"),
        ("pk-broken", "broken"),
    ] {
        register(
            &app,
            "payments",
            id,
            ClientAuth {
                method: Some(AuthMethod::PrivateKeyJwt),
                jwks_uri: Some(format!("http://127.0.0.1:{}/{path}", other.port())),
                ..ClientAuth::default()
            },
        )
        .await;
    }
    let r = assertion_grant(
        &app,
        "payments",
        &key.assertion(&assertion_claims("pk-moved", &issuer, now)),
    )
    .await;
    assert!(refused(&r), "a redirect to another origin: {r:?}");
    let r = assertion_grant(
        &app,
        "payments",
        &key.assertion(&assertion_claims("pk-huge", &issuer, now)),
    )
    .await;
    assert!(refused(&r), "a JWKS over 64 KiB: {r:?}");
    let all = futures_util_join_all(
        (0..20)
            .map(|_| {
                let (app, jwt) = (
                    &app,
                    key.assertion(&assertion_claims("pk-broken", &issuer, now)),
                );
                async move { assertion_grant(app, "payments", &jwt).await.0 }
            })
            .collect(),
    )
    .await;
    assert!(all.iter().all(|s| *s == 401), "{all:?}");
    let r = assertion_grant(
        &app,
        "payments",
        &key.assertion(&assertion_claims("pk-broken", &issuer, now)),
    )
    .await;
    assert!(refused(&r));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "one fetch for 21 requests naming a failing jwks_uri"
    );

    // Two nodes on one PostgreSQL database: one assertion is honoured once across both.
    if backend == Backend::Postgres {
        let mut config =
            sigil::config::Config::for_tests(&app.database_url, &app._dir.path().join("keys/kek"));
        config.public_url = Some(url::Url::parse(&app.base).expect("url"));
        let second = sigil::Application::build(config)
            .await
            .expect("second node");
        let second_url = format!(
            "http://127.0.0.1:{}/realms/payments/oauth2/token",
            second.local_addr().port()
        );
        tokio::spawn(second.run_until_stopped());
        for _ in 0..5 {
            let jwt = key.assertion(&assertion_claims("pk", &issuer, app.now()));
            let a = app
                .http
                .post(app.token_url("payments"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &jwt),
                ])
                .send();
            let b = app
                .http
                .post(&second_url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &jwt),
                ])
                .send();
            let (a, b) = tokio::join!(a, b);
            let mut statuses = [
                a.expect("node 1").status().as_u16(),
                b.expect("node 2").status().as_u16(),
            ];
            statuses.sort();
            assert_eq!(statuses, [200, 401], "one assertion, two nodes");
        }
    }
}

#[tokio::test]
async fn private_key_jwt_clients_and_attacks_fail() {
    for backend in backends() {
        private_key_jwt(backend).await;
    }
}

/// `join_all` without a futures dependency: polls every future concurrently on this task.
async fn futures_util_join_all<F: std::future::Future<Output = u16>>(futs: Vec<F>) -> Vec<u16> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<u16>> = vec![None; pinned.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.unwrap_or(0)).collect()
}

/// A client_credentials request with Basic credentials and these DPoP headers.
async fn dpop_grant(app: &TestApp, client: &str, secret: &str, proofs: &[String]) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.token_url("payments"))
        .basic_auth(client, Some(secret))
        .form(&[("grant_type", "client_credentials")]);
    for p in proofs {
        req = req.header("DPoP", p);
    }
    let res = req.send().await.expect("request");
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

fn dpop_refused(r: &(u16, Value)) -> bool {
    r.0 == 400 && r.1["error"] == "invalid_dpop_proof"
}

async fn dpop(backend: Backend) {
    let app = spawn_app_with(backend, None, |_| {}).await;
    app.create_realm("payments", Alg::ES256).await;
    let secret = register(&app, "payments", "svc", ClientAuth::default())
        .await
        .expect("secret");
    let strict = register(
        &app,
        "payments",
        "strict",
        ClientAuth {
            require_dpop: true,
            ..ClientAuth::default()
        },
    )
    .await
    .expect("secret");
    let key = EcKey::generate("dpop");
    let now = app.now();
    let url = app.token_url("payments");

    let proof = key.dpop("POST", &url, now, None);
    let (s, b) = dpop_grant(&app, "svc", &secret, std::slice::from_ref(&proof)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["token_type"], "DPoP");
    let token = b["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        decode_part(&token, 1)["cnf"]["jkt"],
        key.thumbprint().as_str()
    );

    let mut private = key.public_jwk();
    private["d"] = json!("c2VjcmV0");
    let with_private = key.sign(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}),
        &json!({"jti": "x1", "htm": "POST", "htu": url, "iat": now}),
    );
    let attacks: Vec<(&str, Vec<String>)> = vec![
        ("replayed", vec![proof.clone()]),
        ("for GET", vec![key.dpop("GET", &url, now, None)]),
        (
            "for another URL",
            vec![key.dpop("POST", &app.token_url("other"), now, None)],
        ),
        ("stale", vec![key.dpop("POST", &url, now - 600, None)]),
        (
            "from the future",
            vec![key.dpop("POST", &url, now + 600, None)],
        ),
        ("a private key in jwk", vec![with_private]),
        (
            "two proofs",
            vec![
                key.dpop("POST", &url, now, None),
                key.dpop("POST", &url, now, None),
            ],
        ),
    ];
    for (what, proofs) in &attacks {
        let r = dpop_grant(&app, "svc", &secret, proofs).await;
        assert!(dpop_refused(&r), "{what}: {r:?}");
    }
    let r = dpop_grant(&app, "strict", &strict, &[]).await;
    assert!(dpop_refused(&r), "--require-dpop without a proof: {r:?}");
    let (s, b) = dpop_grant(
        &app,
        "strict",
        &strict,
        &[key.dpop("POST", &url, now, None)],
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // One proof sent many times at once: one token.
    let one = key.dpop("POST", &url, now, None);
    let all = futures_util_join_all(
        (0..16)
            .map(|_| {
                let (app, one, secret) = (&app, one.clone(), secret.clone());
                async move {
                    dpop_grant(app, "svc", &secret, std::slice::from_ref(&one))
                        .await
                        .0
                }
            })
            .collect(),
    )
    .await;
    assert_eq!(all.iter().filter(|s| **s == 200).count(), 1, "{all:?}");

    // At the resource server: DPoP with a fresh proof for the request passes; the token as a
    // bearer token, a replayed proof, a proof for another URL and another key's proof fail.
    let v = Validator::builder(app.issuer("payments"), "ledger")
        .build()
        .await
        .expect("validator");
    let res_url = "https://ledger.bank.example/balances";
    let auth = format!("DPoP {token}");
    let good = key.dpop("GET", res_url, app.now(), Some(&jose::ath(&token)));
    v.validate_request(
        &RequestCredentials::new("GET", res_url)
            .authorization(&auth)
            .dpop_proof(&good),
    )
    .await
    .expect("bound token with its proof");
    let other_key = EcKey::generate("thief");
    let bearer = format!("Bearer {token}");
    let cases = [
        ("replayed", auth.clone(), Some(good.clone()), res_url),
        ("as bearer", bearer, None, res_url),
        (
            "re-aimed",
            auth.clone(),
            Some(key.dpop(
                "GET",
                "https://ledger.bank.example/other",
                app.now(),
                Some(&jose::ath(&token)),
            )),
            res_url,
        ),
        (
            "another key",
            auth.clone(),
            Some(other_key.dpop("GET", res_url, app.now(), Some(&jose::ath(&token)))),
            res_url,
        ),
    ];
    for (what, authz, proof, url) in &cases {
        let mut req = RequestCredentials::new("GET", url).authorization(authz);
        if let Some(p) = proof {
            req = req.dpop_proof(p);
        }
        assert!(v.validate_request(&req).await.is_err(), "{what}");
    }
}

#[tokio::test]
async fn dpop_bound_tokens_and_attacks_fail() {
    for backend in backends() {
        dpop(backend).await;
    }
}

/// A token request with Basic credentials and one DPoP proof: status, body, `DPoP-Nonce`.
async fn nonce_grant(
    app: &TestApp,
    realm: &str,
    secret: &str,
    proof: &str,
) -> (u16, Value, Option<String>) {
    let res = app
        .http
        .post(app.token_url(realm))
        .basic_auth("svc", Some(secret))
        .header("DPoP", proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    let nonce = dpop_nonce_of(&res);
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
        nonce,
    )
}

/// The response's `DPoP-Nonce`, if any.
fn dpop_nonce_of(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn wants_nonce(r: &(u16, Value, Option<String>)) -> bool {
    r.0 == 400 && r.1["error"] == "use_dpop_nonce" && r.2.is_some()
}

/// `dpop_nonce_secs`: every proof must carry a nonce this deployment issued for the realm in
/// this period or the last (RFC 9449 §8); a missing, foreign, forged or expired one is answered
/// `use_dpop_nonce` with a fresh nonce, which is a challenge, not a failure counted toward the
/// address's limit.
#[tokio::test]
async fn dpop_server_nonces_are_required_when_configured() {
    for backend in backends() {
        let clock = sigil::clock::MockClock::new(1_800_000_000);
        let app = spawn_app_with(backend, Some(clock.clone()), |c| {
            c.dpop_nonce_secs = 60;
            c.failures_per_minute_per_ip = 3;
        })
        .await;
        app.create_realm("payments", Alg::ES256).await;
        app.create_realm("other", Alg::ES256).await;
        let secret = register(&app, "payments", "svc", ClientAuth::default())
            .await
            .expect("secret");
        let other = register(&app, "other", "svc", ClientAuth::default())
            .await
            .expect("secret");
        let key = EcKey::generate("dpop");
        let url = app.token_url("payments");
        let proof =
            |nonce: Option<&str>| key.dpop_with_nonce("POST", &url, clock.now(), None, nonce);

        // More nonce-less proofs than the address's failure limit: each is a challenge.
        let mut nonce = String::new();
        for _ in 0..5 {
            let r = nonce_grant(&app, "payments", &secret, &proof(None)).await;
            assert!(wants_nonce(&r), "{r:?}");
            nonce = r.2.expect("nonce");
        }
        // A proof refused for its nonce does not spend its jti: the retry may reuse it.
        let fixed_jti = |nonce: Option<&str>| {
            let mut claims =
                json!({"jti": "retried-1", "htm": "POST", "htu": url, "iat": clock.now()});
            if let Some(n) = nonce {
                claims["nonce"] = json!(n);
            }
            key.sign(
                &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()}),
                &claims,
            )
        };
        let r = nonce_grant(&app, "payments", &secret, &fixed_jti(None)).await;
        assert!(wants_nonce(&r), "{r:?}");
        let r = nonce_grant(&app, "payments", &secret, &fixed_jti(Some(&nonce))).await;
        assert_eq!(r.0, 200, "the same jti with the nonce: {r:?}");
        let good = proof(Some(&nonce));
        let r = nonce_grant(&app, "payments", &secret, &good).await;
        assert_eq!(
            (r.0, r.1["token_type"].as_str()),
            (200, Some("DPoP")),
            "{r:?}"
        );
        assert!(
            r.2.is_some(),
            "a token response to a proof carries the current nonce"
        );
        let r = nonce_grant(&app, "payments", &secret, &good).await;
        assert_eq!(
            r.1["error"], "invalid_dpop_proof",
            "a replayed proof: {r:?}"
        );

        // Another realm's nonce, a forged one, one edited by a character.
        let other_url = app.token_url("other");
        let r = nonce_grant(
            &app,
            "other",
            &other,
            &key.dpop("POST", &other_url, clock.now(), None),
        )
        .await;
        let foreign = r.2.expect("other realm's nonce");
        let forged = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jose::rand_bytes().repeat(3),
        );
        let mut edited = nonce.clone().into_bytes();
        edited[10] = if edited[10] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).expect("ascii");
        for (what, n) in [
            ("another realm's", &foreign),
            ("forged", &forged),
            ("edited", &edited),
        ] {
            let r = nonce_grant(&app, "payments", &secret, &proof(Some(n))).await;
            assert!(wants_nonce(&r), "{what} nonce: {r:?}");
        }

        // A nonce is good in its period and the next, not after.
        clock.advance(60);
        let r = nonce_grant(&app, "payments", &secret, &proof(Some(&nonce))).await;
        assert_eq!(r.0, 200, "the next period: {r:?}");
        clock.advance(60);
        let r = nonce_grant(&app, "payments", &secret, &proof(Some(&nonce))).await;
        assert!(wants_nonce(&r), "two periods on: {r:?}");
        let fresh = r.2.expect("fresh nonce");
        let r = nonce_grant(&app, "payments", &secret, &proof(Some(&fresh))).await;
        assert_eq!(r.0, 200, "the fresh nonce: {r:?}");
    }
}

/// RFC 9449 §10: `dpop_jkt` at the authorization request binds the code to a DPoP key; only a
/// proof made with that key redeems it, and a refused attempt does not burn it. With server
/// nonces on, the code redemption and userinfo (401 `use_dpop_nonce`) ask for them too.
#[tokio::test]
async fn a_code_bound_with_dpop_jkt_is_redeemed_only_with_that_key() {
    use crate::login::{browser, location, pkce, query_param, setup_with};
    for backend in backends() {
        let f = setup_with(backend, |c| c.dpop_nonce_secs = 300).await;
        let key = EcKey::generate("app");
        let b = browser();
        let p = pkce();
        let res = b
            .get(f.authorize_url("customers", "mobile", &p, "&dpop_jkt=not-a-thumbprint"))
            .send()
            .await
            .expect("authorize");
        assert_eq!(res.status(), 303);
        assert_eq!(
            query_param(&location(&res), "error").as_deref(),
            Some("invalid_request"),
            "a malformed dpop_jkt"
        );
        let res = f
            .sign_in_with(
                &b,
                &p,
                &sigil::identity::totp::code_at(&f.secret, f.clock.now()),
                &format!("&dpop_jkt={}", key.thumbprint()),
            )
            .await;
        let code = query_param(&location(&res), "code").expect("code");
        let url = f.app.token_url("customers");
        let redeem = |proof: Option<String>| {
            let mut req = f.app.http.post(&url).form(&[
                ("grant_type", "authorization_code"),
                ("client_id", "mobile"),
                ("code", code.as_str()),
                ("redirect_uri", crate::login::REDIRECT),
                ("code_verifier", p.verifier.as_str()),
            ]);
            if let Some(proof) = proof {
                req = req.header("DPoP", proof);
            }
            async move {
                let res = req.send().await.expect("redeem");
                let nonce = dpop_nonce_of(&res);
                (
                    res.status().as_u16(),
                    res.json::<Value>().await.expect("json"),
                    nonce,
                )
            }
        };
        let r = redeem(Some(key.dpop("POST", &url, f.clock.now(), None))).await;
        assert!(wants_nonce(&r), "{r:?}");
        let nonce = r.2.expect("nonce");
        let r = redeem(None).await;
        assert_eq!(
            (r.0, r.1["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "no proof: {r:?}"
        );
        let with_nonce =
            |k: &EcKey| Some(k.dpop_with_nonce("POST", &url, f.clock.now(), None, Some(&nonce)));
        let r = redeem(with_nonce(&EcKey::generate("thief"))).await;
        assert_eq!(
            (r.0, r.1["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "another key: {r:?}"
        );
        let r = redeem(with_nonce(&key)).await;
        assert_eq!(r.0, 200, "the bound key, after two refusals: {r:?}");
        assert_eq!(r.1["token_type"], "DPoP");
        let access = r.1["access_token"].as_str().expect("access").to_owned();
        assert_eq!(
            decode_part(&access, 1)["cnf"]["jkt"],
            key.thumbprint().as_str()
        );

        // userinfo, Sigil's own resource: a proof without the nonce gets the RFC 9449 §9 challenge.
        let ui_url = format!("{}/oauth2/userinfo", f.app.issuer("customers"));
        let userinfo = |nonce: Option<&str>| {
            f.app
                .http
                .get(&ui_url)
                .header("authorization", format!("DPoP {access}"))
                .header(
                    "DPoP",
                    key.dpop_with_nonce(
                        "GET",
                        &ui_url,
                        f.clock.now(),
                        Some(&jose::ath(&access)),
                        nonce,
                    ),
                )
                .send()
        };
        let res = userinfo(None).await.expect("userinfo");
        assert_eq!(res.status(), 401);
        let challenge = res.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            challenge.starts_with(r#"DPoP error="use_dpop_nonce""#),
            "{challenge}"
        );
        let fresh = res.headers()["dpop-nonce"]
            .to_str()
            .expect("nonce")
            .to_owned();
        let res = userinfo(Some(&fresh)).await.expect("userinfo");
        assert_eq!(res.status(), 200, "with the nonce");
    }
}

/// A public app's code and refresh tokens with DPoP: the refresh token works only with a proof
/// made with the key it was first used with (RFC 9449 §5).
#[tokio::test]
async fn a_public_clients_refresh_token_is_bound_to_its_dpop_key() {
    use crate::login::{browser, location, pkce, query_param, setup};
    for backend in backends() {
        let f = setup(backend).await;
        let b = browser();
        let p = pkce();
        let res = f
            .sign_in(
                &b,
                &p,
                &sigil::identity::totp::code_at(&f.secret, f.clock.now()),
            )
            .await;
        let code = query_param(&location(&res), "code").expect("code");
        let key = EcKey::generate("app");
        let url = f.app.token_url("customers");
        let redirect = crate::login::REDIRECT;
        let res = f
            .app
            .http
            .post(&url)
            .header("DPoP", key.dpop("POST", &url, f.clock.now(), None))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", "mobile"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
                ("code_verifier", p.verifier.as_str()),
            ])
            .send()
            .await
            .expect("redeem");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["token_type"], "DPoP", "{body}");
        assert_eq!(
            decode_part(body["access_token"].as_str().expect("t"), 1)["cnf"]["jkt"],
            key.thumbprint().as_str()
        );
        let access = body["access_token"].as_str().expect("access").to_owned();
        // userinfo, a resource Sigil serves itself, holds the token to its key as well.
        let ui_url = format!("{}/oauth2/userinfo", f.app.issuer("customers"));
        let ui = |scheme: &str, proof: Option<String>| {
            let mut req = f
                .app
                .http
                .get(&ui_url)
                .header("authorization", format!("{scheme} {access}"));
            if let Some(p) = proof {
                req = req.header("DPoP", p);
            }
            req.send()
        };
        let proof = key.dpop("GET", &ui_url, f.clock.now(), Some(&jose::ath(&access)));
        let res = ui("DPoP", Some(proof.clone())).await.expect("userinfo");
        assert_eq!(res.status(), 200, "DPoP-bound token with its proof");
        for (what, scheme, proof) in [
            ("as a bearer token", "Bearer", None),
            ("without a proof", "DPoP", None),
            ("with a replayed proof", "DPoP", Some(proof)),
            (
                "with another key's proof",
                "DPoP",
                Some(EcKey::generate("x").dpop(
                    "GET",
                    &ui_url,
                    f.clock.now(),
                    Some(&jose::ath(&access)),
                )),
            ),
            (
                "with a proof for POST",
                "DPoP",
                Some(key.dpop("POST", &ui_url, f.clock.now(), Some(&jose::ath(&access)))),
            ),
        ] {
            let res = ui(scheme, proof).await.expect("userinfo");
            assert_eq!(res.status(), 401, "{what}");
            let challenge = res
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(challenge.starts_with("DPoP "), "{what}: {challenge}");
        }
        let refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
        let attempt = |proof: Option<String>| {
            let mut req = f.app.http.post(&url).form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "mobile"),
                ("refresh_token", refresh.as_str()),
            ]);
            if let Some(p) = proof {
                req = req.header("DPoP", p);
            }
            req.send()
        };
        let thief = EcKey::generate("thief");
        for (what, proof) in [
            ("without a proof", None),
            (
                "with another key",
                Some(thief.dpop("POST", &url, f.clock.now(), None)),
            ),
        ] {
            let res = attempt(proof).await.expect("refresh");
            assert_eq!(res.status(), 400, "{what}");
            let e: Value = res.json().await.expect("json");
            assert_eq!(e["error"], "invalid_dpop_proof", "{what}");
        }
        let res = attempt(Some(key.dpop("POST", &url, f.clock.now(), None)))
            .await
            .expect("refresh");
        assert_eq!(res.status(), 200, "the right key refreshes");
        let next: Value = res.json().await.expect("json");
        assert_eq!(next["token_type"], "DPoP");

        // Redeemed without a proof, then refreshed with one: bound from that refresh on.
        let p = pkce();
        let b = browser();
        let res = f
            .sign_in(
                &b,
                &p,
                &sigil::identity::totp::code_at(&f.secret, f.clock.now() + 30),
            )
            .await;
        let code = query_param(&location(&res), "code").expect("code");
        let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        let later = EcKey::generate("later");
        let res = f
            .app
            .http
            .post(&url)
            .header("DPoP", later.dpop("POST", &url, f.clock.now(), None))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "mobile"),
                ("refresh_token", body["refresh_token"].as_str().expect("rt")),
            ])
            .send()
            .await
            .expect("refresh");
        let bound: Value = res.json().await.expect("json");
        assert_eq!(bound["token_type"], "DPoP", "{bound}");
        let res = f
            .app
            .http
            .post(&url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "mobile"),
                (
                    "refresh_token",
                    bound["refresh_token"].as_str().expect("rt"),
                ),
            ])
            .send()
            .await
            .expect("refresh");
        assert_eq!(res.status(), 400, "bound at the first refresh with a proof");
    }
}

/// The replay store's batch claim: first use wins, a key twice in one batch wins once, a key
/// already spent loses; expired keys are purged by housekeeping like sign-in flows.
#[tokio::test]
async fn single_use_claims_in_one_batch() {
    use sigil::store::SingleUse;
    for backend in backends() {
        let app = spawn_app_with(backend, None, |_| {}).await;
        app.create_realm("payments", Alg::ES256).await;
        let claim = |k: &str| SingleUse {
            realm: "payments".into(),
            key: k.into(),
            expires_at: app.now() + 60,
        };
        // The audit writer's own path: a session of its own, claims with no records.
        let mut session = app.store.audit_session().await.expect("session");
        let (won, _) = session
            .claim_and_append(&[claim("c")], &[])
            .await
            .expect("claim");
        assert_eq!(won, vec![true]);
        let (won, _) = session
            .claim_and_append(&[claim("a"), claim("b"), claim("a"), claim("c")], &[])
            .await
            .expect("claims");
        assert_eq!(won, vec![true, true, false, false], "{backend:?}");
        drop(session);
        let spent = "SELECT COUNT(*) FROM flows WHERE kind = 'spent'";
        assert_eq!(crate::helpers::count_rows(&app, spent).await, 3);
        // Once expired, housekeeping removes them.
        app.store
            .purge_expired(app.now() + 120, 100)
            .await
            .expect("purge");
        assert_eq!(crate::helpers::count_rows(&app, spent).await, 0);
    }
}

/// Behind a proxy that terminates mutual TLS, `mtls_public_url` alone publishes the aliases.
#[tokio::test]
async fn mtls_public_url_alone_publishes_the_aliases() {
    let app = spawn_app_with(Backend::Sqlite, None, |c| {
        c.mtls_public_url = Some(url::Url::parse("https://mtls.id.example").expect("url"));
    })
    .await;
    app.create_realm("payments", Alg::ES256).await;
    let doc: Value = app
        .http
        .get(format!(
            "{}/.well-known/openid-configuration",
            app.issuer("payments")
        ))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        doc["mtls_endpoint_aliases"]["token_endpoint"],
        "https://mtls.id.example/realms/payments/oauth2/token"
    );
}
