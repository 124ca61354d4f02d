//! Passkeys over HTTP with a software authenticator (ES256, "none" attestation, user verification,
//! discoverable): enrolment, sign-in without a username, step-up, and forged assertions.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sigil::clock::{Clock, MockClock};
use sigil::keys::Alg;

use crate::helpers::{TestApp, backends, decode_part, spawn_app_with};

const REDIRECT: &str = "https://app.example/cb";

pub use crate::soft_passkey::SoftPasskey;

pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) fn field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).map(|i| i + marker.len());
    match start {
        Some(s) => html[s..].split('"').next().expect("v").to_owned(),
        None => {
            let m = r#"data-csrf=""#;
            let s = html.find(m).expect("csrf") + m.len();
            html[s..].split('"').next().expect("v").to_owned()
        }
    }
}

pub(crate) fn query_param(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub(crate) async fn post_json(b: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let res = b.post(url).json(&body).send().await.expect("post");
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

pub(crate) fn origin(app: &TestApp) -> String {
    app.base.clone()
}

pub(crate) async fn enrol(app: &TestApp, clock: &MockClock, username: &str) -> SoftPasskey {
    let invite = sigil::admin::users::invite(
        app.store.as_ref(),
        None,
        &app.base,
        "customers",
        username,
        3600,
        clock.now(),
        "t",
    )
    .await
    .expect("invite");
    let b = browser();
    let page = b
        .get(&invite)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("html");
    let csrf = field(&page, "csrf");
    let issuer = app.issuer("customers");
    let (status, options) = post_json(
        &b,
        format!("{issuer}/enrol/passkey/options"),
        json!({"csrf": csrf}),
    )
    .await;
    assert_eq!(status, 200, "{options}");
    let mut key = SoftPasskey::new();
    let credential = key.register(&options, &origin(app));
    let (status, done) = post_json(
        &b,
        format!("{issuer}/enrol/passkey"),
        json!({"csrf": csrf, "credential": credential}),
    )
    .await;
    assert_eq!((status, &done["done"]), (200, &json!(true)), "{done}");
    key
}

/// Adds a passkey (a new software authenticator) from the account page of the signed-in browser
/// `b`; returns it and the page's CSRF token.
pub(crate) async fn add_passkey_from_account(
    app: &TestApp,
    b: &reqwest::Client,
) -> (SoftPasskey, String) {
    let issuer = app.issuer("customers");
    let account = b
        .get(format!("{issuer}/account"))
        .send()
        .await
        .expect("account")
        .text()
        .await
        .expect("html");
    let csrf = field(&account, "csrf");
    let (status, options) = post_json(
        b,
        format!("{issuer}/account/passkey/options"),
        json!({"csrf": csrf}),
    )
    .await;
    assert_eq!(status, 200, "{options}");
    let mut key = SoftPasskey::new();
    let credential = key.register(&options, &origin(app));
    let (status, added) = post_json(
        b,
        format!("{issuer}/account/passkey"),
        json!({"csrf": csrf, "credential": credential}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    (key, csrf)
}

pub(crate) fn authorize_url(app: &TestApp, challenge: &str, extra: &str) -> String {
    format!(
        "{}/oauth2/authorize?response_type=code&client_id=mobile&redirect_uri={}&scope=openid%20balances:read&state=s&code_challenge={challenge}&code_challenge_method=S256{extra}",
        app.issuer("customers"),
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    )
}

/// Authorize, then sign in with the passkey; returns the JSON answer of the finish call.
pub(crate) async fn passkey_sign_in(
    app: &TestApp,
    b: &reqwest::Client,
    key: &mut SoftPasskey,
    challenge: &str,
    tamper: impl FnOnce(&mut Value),
) -> (u16, Value) {
    let issuer = app.issuer("customers");
    let res = b
        .get(authorize_url(app, challenge, ""))
        .send()
        .await
        .expect("authorize");
    assert_eq!(res.status(), 303);
    let page = b
        .get(format!("{issuer}/login"))
        .send()
        .await
        .expect("login")
        .text()
        .await
        .expect("html");
    let csrf = field(&page, "csrf");
    let (status, options) = post_json(
        b,
        format!("{issuer}/login/passkey/options"),
        json!({"csrf": csrf}),
    )
    .await;
    assert_eq!(status, 200, "{options}");
    assert!(
        options["publicKey"]
            .get("allowCredentials")
            .is_none_or(|a| a.as_array().is_none_or(Vec::is_empty)),
        "discoverable: no username, no credential list"
    );
    let mut credential = key.assert(&options, &origin(app));
    tamper(&mut credential);
    post_json(
        b,
        format!("{issuer}/login/passkey"),
        json!({"csrf": csrf, "credential": credential}),
    )
    .await
}

#[tokio::test]
async fn passkey_enrolment_sign_in_step_up_and_forgeries() {
    for backend in backends() {
        let clock = MockClock::new(1_800_000_000);
        let app = spawn_app_with(backend, Some(clock.clone()), |_| {}).await;
        let s = app.store.as_ref();
        app.create_realm("customers", Alg::ES256).await;
        sigil::admin::users::create_group(
            s,
            "customers",
            "retail",
            "balances:read",
            clock.now(),
            "t",
        )
        .await
        .expect("group");
        sigil::admin::clients::create(
            s,
            sigil::admin::clients::NewClient {
                realm: "customers".into(),
                client_id: "mobile".into(),
                scopes: "balances:read".into(),
                audience: "ledger".into(),
                redirect_uris: vec![REDIRECT.into()],
                public: true,
                ..Default::default()
            },
            clock.now(),
            "t",
        )
        .await
        .expect("client");
        for u in ["alice", "bob"] {
            sigil::admin::users::create(
                s,
                &crate::helpers::unused_kek(),
                "customers",
                u,
                &[],
                &["retail".into()],
                clock.now(),
                "t",
            )
            .await
            .expect("user");
        }
        let mut alice = enrol(&app, &clock, "alice").await;
        let mut bob = enrol(&app, &clock, "bob").await;
        assert_eq!(
            s.passkeys(
                "customers",
                &sigil::admin::users::find(s, "customers", "alice")
                    .await
                    .expect("u")
                    .id
            )
            .await
            .expect("pk")
            .len(),
            1
        );

        // Sign in without typing a username; the code gives tokens with amr hwk+user.
        let verifier = B64.encode(sigil::random::random_bytes::<32>());
        let challenge = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        let b = browser();
        let (status, body) = passkey_sign_in(&app, &b, &mut alice, &challenge, |_| {}).await;
        assert_eq!(status, 200, "{body}");
        let redirect = body["redirect"].as_str().expect("redirect");
        let code = query_param(redirect, "code").expect("code");
        let res = app
            .http
            .post(app.token_url("customers"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", "mobile"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .expect("token");
        let tokens: Value = res.json().await.expect("json");
        let claims = decode_part(tokens["access_token"].as_str().expect("access"), 1);
        assert_eq!(claims["amr"], json!(["hwk", "user"]));
        assert_eq!(claims["acr"], sigil::identity::ACR_PASSKEY);
        let user_id = sigil::admin::users::find(s, "customers", "alice")
            .await
            .expect("u")
            .id;
        assert_eq!(claims["sub"], user_id.as_str());

        // From the account page: add a second passkey, then remove the first one.
        let issuer = app.issuer("customers");
        let (mut second, csrf) = add_passkey_from_account(&app, &b).await;
        let (status, _) = post_json(
            &b,
            format!("{issuer}/account/passkey/options"),
            json!({"csrf": "forged"}),
        )
        .await;
        assert_eq!(status, 403, "CSRF on adding a passkey");
        let first_id = B64.encode(&alice.cred_id);
        let res = b
            .post(format!("{issuer}/account/passkeys/remove"))
            .form(&[("csrf", "forged"), ("credential_id", first_id.as_str())])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 403, "CSRF on removing a passkey");
        let res = b
            .post(format!("{issuer}/account/passkeys/remove"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("credential_id", first_id.as_str()),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 303);
        let (status, _) = passkey_sign_in(&app, &browser(), &mut alice, &challenge, |_| {}).await;
        assert_eq!(status, 401, "a removed passkey no longer signs in");
        let (status, _) = passkey_sign_in(&app, &browser(), &mut second, &challenge, |_| {}).await;
        assert_eq!(status, 200, "the new passkey does");

        // Step-up: acr_values=passkey is satisfied by this session without a new prompt.
        let res = b
            .get(authorize_url(
                &app,
                &challenge,
                &format!("&acr_values={}", sigil::identity::ACR_PASSKEY),
            ))
            .send()
            .await
            .expect("authorize");
        // A public app gets the confirmation page, never a silent code (RFC 8252 §8.6).
        assert!(
            res.headers()["location"]
                .to_str()
                .expect("ascii")
                .ends_with("/consent")
        );
        // max_age=0 forces a fresh sign-in.
        clock.advance(5);
        let res = b
            .get(authorize_url(&app, &challenge, "&max_age=0"))
            .send()
            .await
            .expect("authorize");
        assert!(
            res.headers()["location"]
                .to_str()
                .expect("ascii")
                .ends_with("/login")
        );

        // Forgeries: another origin, a tampered signature, bob's key claiming alice's handle.
        let (status, _) = passkey_sign_in(&app, &browser(), &mut second, &challenge, |c| {
            let cdj: Value = serde_json::from_slice(
                &B64.decode(c["response"]["clientDataJSON"].as_str().expect("cdj"))
                    .expect("b64"),
            )
            .expect("json");
            let mut cdj = cdj;
            cdj["origin"] = json!("https://evil.example");
            c["response"]["clientDataJSON"] = json!(B64.encode(cdj.to_string()));
        })
        .await;
        assert_eq!(status, 401, "another origin");
        let (status, _) = passkey_sign_in(&app, &browser(), &mut second, &challenge, |c| {
            let mut sig = B64
                .decode(c["response"]["signature"].as_str().expect("sig"))
                .expect("b64");
            let last = sig.len() - 1;
            sig[last] ^= 1;
            c["response"]["signature"] = json!(B64.encode(sig));
        })
        .await;
        assert_eq!(status, 401, "tampered signature");
        let alice_handle = B64.encode(&alice.user_handle);
        let (status, _) = passkey_sign_in(&app, &browser(), &mut bob, &challenge, |c| {
            c["response"]["userHandle"] = json!(alice_handle);
        })
        .await;
        assert_eq!(status, 401, "bob's credential cannot sign in as alice");

        // A ceremony is single-use: replaying the finished assertion fails.
        let b2 = browser();
        b2.get(authorize_url(&app, &challenge, ""))
            .send()
            .await
            .expect("authorize");
        let page = b2
            .get(format!("{issuer}/login"))
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("html");
        let csrf = field(&page, "csrf");
        let (_, options) = post_json(
            &b2,
            format!("{issuer}/login/passkey/options"),
            json!({"csrf": csrf}),
        )
        .await;
        let assertion = second.assert(&options, &origin(&app));
        let (first, _) = post_json(
            &b2,
            format!("{issuer}/login/passkey"),
            json!({"csrf": csrf, "credential": assertion.clone()}),
        )
        .await;
        assert_eq!(first, 200);
        let (again, _) = post_json(
            &b2,
            format!("{issuer}/login/passkey"),
            json!({"csrf": csrf, "credential": assertion}),
        )
        .await;
        assert_eq!(again, 400, "the ceremony and the sign-in flow are gone");

        let rows = app.audit_after_tally().await;
        let failures = rows.iter().filter(|r| r.kind == "login.failed").count();
        assert_eq!(
            failures, 2,
            "another origin, tampered signature: written at once against alice's account"
        );
        let unknown: u64 = rows
            .iter()
            .filter(|r| r.kind == "login.refused" && r.detail.contains("unknown_credential"))
            .map(|r| {
                serde_json::from_str::<Value>(&r.detail).expect("json")["count"]
                    .as_u64()
                    .expect("count")
            })
            .sum();
        assert_eq!(
            unknown, 2,
            "removed key, foreign handle: tallied, none lost"
        );
    }
}
