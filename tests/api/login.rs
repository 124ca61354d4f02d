//! Sign-in with the password + TOTP fallback, end to end over HTTP: enrolment through an invite,
//! authorization code + PKCE, ID token, refresh rotation, userinfo, global sign-out — and the
//! attacks on each step.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;
use sigil::clock::{Clock, MockClock};
use sigil::identity::totp;
use sigil::keys::Alg;

use crate::helpers::{Backend, TestApp, backends, decode_part, spawn_app_with};

pub(crate) const REDIRECT: &str = "https://app.example/cb";
pub(crate) const SIGNED_OUT: &str = "https://app.example/signed-out";
pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) fn field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).expect("field present") + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

pub(crate) fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let s = html.find(start).expect("start") + start.len();
    html[s..].split(end).next().expect("end")
}

pub(crate) fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

pub(crate) fn query_param(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub(crate) struct Pkce {
    pub(crate) verifier: String,
    pub(crate) challenge: String,
}

pub(crate) fn pkce() -> Pkce {
    let verifier = B64.encode(sigil::random::random_bytes::<32>());
    let challenge = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    Pkce {
        verifier,
        challenge,
    }
}

pub(crate) struct Fixture {
    pub(crate) app: TestApp,
    pub(crate) clock: MockClock,
    pub(crate) secret: Vec<u8>,
    pub(crate) recovery: Vec<String>,
    pub(crate) web_secret: String,
}

pub(crate) async fn setup(backend: Backend) -> Fixture {
    setup_with(backend, |_| {}).await
}

/// [`setup`] on a server whose configuration `tweak` changes.
pub(crate) async fn setup_with(
    backend: Backend,
    tweak: impl FnOnce(&mut sigil::config::Config),
) -> Fixture {
    let clock = MockClock::new(1_800_000_000);
    let app = spawn_app_with(backend, Some(clock.clone()), tweak).await;
    let s = app.store.as_ref();
    let now = clock.now();
    app.create_realm("customers", Alg::ES256).await;
    app.create_realm("staff", Alg::ES256).await;
    sigil::admin::users::create_group(s, "customers", "retail", "balances:read", now, "t")
        .await
        .expect("group");
    let settings = sigil::identity::settings::LoginSettings {
        groups_claim: "cognito:groups".into(),
        attribute_claims: [("party_id".to_owned(), "custom:party_id".to_owned())].into(),
        ..Default::default()
    };
    sigil::admin::users::set_login_settings(s, "customers", &settings, now, "t")
        .await
        .expect("settings");
    let mut web_secret = String::new();
    for (id, public) in [("mobile", true), ("web", false)] {
        let made = sigil::admin::clients::create(
            s,
            sigil::admin::clients::NewClient {
                realm: "customers".into(),
                client_id: id.into(),
                scopes: "balances:read tx:post:ach".into(),
                audience: "ledger".into(),
                redirect_uris: vec![REDIRECT.into()],
                public,
                post_logout_redirect_uris: vec![SIGNED_OUT.into()],
                ..Default::default()
            },
            now,
            "t",
        )
        .await
        .expect("client");
        if let Some(secret) = made.client_secret {
            web_secret = secret;
        }
    }
    sigil::admin::users::create(
        s,
        &crate::helpers::unused_kek(),
        "customers",
        "alice",
        &[("party_id".into(), "P-42".into())],
        &["retail".into()],
        now,
        "t",
    )
    .await
    .expect("user");
    let invite =
        sigil::admin::users::invite(s, None, &app.base, "customers", "alice", 3600, now, "t")
            .await
            .expect("invite");

    // Enrol through the invite link: password + TOTP, then the recovery codes.
    let b = browser();
    let page = b
        .get(&invite)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("html");
    let secret = totp::base32_decode(between(&page, r#"data-secret=""#, "\"")).expect("secret");
    assert_eq!(secret.len(), 20, "160-bit TOTP secret");
    let res = b
        .post(format!("{}/enrol", app.issuer("customers")))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("password", PASSWORD.into()),
            ("code", totp::code_at(&secret, clock.now())),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200);
    let html = res.text().await.expect("html");
    let recovery: Vec<String> = html
        .split("<li>")
        .skip(1)
        .map(|c| c.split('<').next().expect("code").to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    // The invite is single-use.
    assert_eq!(b.get(&invite).send().await.expect("get").status(), 404);
    clock.advance(30);
    Fixture {
        app,
        clock,
        secret,
        recovery,
        web_secret,
    }
}

impl Fixture {
    pub(crate) fn authorize_url(&self, realm: &str, client: &str, p: &Pkce, extra: &str) -> String {
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}&scope=openid%20balances:read&state=st-1&nonce=n-1&code_challenge={}&code_challenge_method=S256{extra}",
            self.app.issuer(realm),
            urlencode(REDIRECT),
            p.challenge
        )
    }

    /// Authorize → sign-in form → submit; returns the redirect (code or error).
    pub(crate) async fn sign_in(
        &self,
        b: &reqwest::Client,
        p: &Pkce,
        code: &str,
    ) -> reqwest::Response {
        self.sign_in_with(b, p, code, "").await
    }

    /// [`Fixture::sign_in`] with `extra` appended to the authorization request's query.
    pub(crate) async fn sign_in_with(
        &self,
        b: &reqwest::Client,
        p: &Pkce,
        code: &str,
        extra: &str,
    ) -> reqwest::Response {
        let res = b
            .get(self.authorize_url("customers", "mobile", p, extra))
            .send()
            .await
            .expect("authorize");
        assert_eq!(res.status(), 303);
        assert_eq!(
            location(&res),
            format!("{}/login", self.app.issuer("customers"))
        );
        let form = b
            .get(location(&res))
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("html");
        b.post(format!("{}/login", self.app.issuer("customers")))
            .form(&[
                ("csrf", field(&form, "csrf")),
                ("username", "alice".into()),
                ("password", PASSWORD.into()),
                ("code", code.into()),
            ])
            .send()
            .await
            .expect("submit")
    }

    /// The app confirmation page, answered with `decision`; the code, if one was issued.
    pub(crate) async fn consent(&self, b: &reqwest::Client, decision: &str) -> Option<String> {
        let page = b
            .get(format!("{}/consent", self.app.issuer("customers")))
            .send()
            .await
            .expect("consent page");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("html");
        assert!(
            html.contains("Continue to mobile"),
            "the page names the app"
        );
        let res = b
            .post(format!("{}/consent", self.app.issuer("customers")))
            .form(&[
                ("csrf", field(&html, "csrf").as_str()),
                ("decision", decision),
            ])
            .send()
            .await
            .expect("consent");
        assert_eq!(res.status(), 303);
        query_param(&location(&res), "code")
    }

    pub(crate) async fn redeem(&self, client: &str, code: &str, verifier: &str) -> (u16, Value) {
        let res = self
            .app
            .http
            .post(self.app.token_url("customers"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", client),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .expect("token");
        (res.status().as_u16(), res.json().await.expect("json"))
    }

    pub(crate) async fn refresh(&self, token: &str) -> (u16, Value) {
        let res = self
            .app
            .http
            .post(self.app.token_url("customers"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "mobile"),
                ("refresh_token", token),
            ])
            .send()
            .await
            .expect("refresh");
        (res.status().as_u16(), res.json().await.expect("json"))
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn password_totp_sign_in_code_pkce_refresh_and_global_sign_out() {
    for backend in backends() {
        let f = setup(backend).await;
        let b = browser();
        let p = pkce();
        let res = f
            .sign_in(&b, &p, &totp::code_at(&f.secret, f.clock.now()))
            .await;
        assert_eq!(res.status(), 303);
        let to = location(&res);
        assert!(to.starts_with(&format!("{REDIRECT}?code=")), "{to}");
        assert_eq!(query_param(&to, "state").as_deref(), Some("st-1"));
        assert_eq!(
            query_param(&to, "iss").as_deref(),
            Some(f.app.issuer("customers").as_str())
        );
        let code = query_param(&to, "code").expect("code");

        let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(status, 200, "{body}");
        let access = body["access_token"].as_str().expect("access");
        let claims = decode_part(access, 1);
        assert_eq!(claims["scope"], "openid balances:read");
        assert_eq!(claims["cognito:groups"], serde_json::json!(["retail"]));
        assert_eq!(claims["custom:party_id"], "P-42");
        assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
        assert_eq!(claims["acr"], sigil::identity::ACR_PASSWORD_OTP);
        assert!(claims["sid"].is_string() && claims["auth_time"].is_i64());
        let id = body["id_token"].as_str().expect("id token");
        let id_claims = decode_part(id, 1);
        assert_eq!(decode_part(id, 0)["typ"], "JWT");
        assert_eq!(id_claims["aud"], "mobile");
        assert_eq!(id_claims["nonce"], "n-1");
        assert_eq!(id_claims["token_use"], "id");
        assert_eq!(id_claims["preferred_username"], "alice");
        let want_at_hash = B64
            .encode(&ring::digest::digest(&ring::digest::SHA256, access.as_bytes()).as_ref()[..16]);
        assert_eq!(id_claims["at_hash"], want_at_hash.as_str());

        // The ledger's validator takes the access token and refuses the ID token.
        let v = sigil_validator::Validator::builder(f.app.issuer("customers"), "ledger")
            .clock({
                let c = f.clock.clone();
                move || c.now()
            })
            .build()
            .await
            .expect("validator");
        v.validate(access).await.expect("access token valid");
        assert!(
            v.validate(id).await.is_err(),
            "an ID token is never an access token"
        );

        // userinfo.
        let ui: Value = f
            .app
            .http
            .get(format!("{}/oauth2/userinfo", f.app.issuer("customers")))
            .bearer_auth(access)
            .send()
            .await
            .expect("ui")
            .json()
            .await
            .expect("json");
        assert_eq!(ui["preferred_username"], "alice");
        assert_eq!(ui["custom:party_id"], "P-42");

        // Refresh rotates; the old one is dead, and reusing it revokes the family.
        let r1 = body["refresh_token"].as_str().expect("refresh").to_owned();
        let (status, next) = f.refresh(&r1).await;
        assert_eq!(status, 200, "{next}");
        let r2 = next["refresh_token"].as_str().expect("rotated").to_owned();
        assert_ne!(r1, r2);
        let (status, err) = f.refresh(&r1).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let (status, _) = f.refresh(&r2).await;
        assert_eq!(status, 400, "reuse of r1 revoked r2 (same family)");
        assert!(
            f.app
                .audit()
                .await
                .iter()
                .any(|r| r.kind == "token.refresh_reused")
        );

        // A replayed refresh token may have been stolen: its session ended too, so the browser
        // signs in again.
        let p2 = pkce();
        let res = b
            .get(f.authorize_url("customers", "mobile", &p2, ""))
            .send()
            .await
            .expect("authorize");
        assert_eq!(
            location(&res),
            format!("{}/login", f.app.issuer("customers"))
        );
        f.clock.advance(31);
        let res = f
            .sign_in(&b, &p2, &totp::code_at(&f.secret, f.clock.now()))
            .await;
        let code2 = query_param(&location(&res), "code").expect("code after signing in again");
        let (_, body2) = f.redeem("mobile", &code2, &p2.verifier).await;
        let r3 = body2["refresh_token"].as_str().expect("refresh").to_owned();
        // Replace the authenticator app from the account page; the old secret stops working.
        let account = b
            .get(format!("{}/account", f.app.issuer("customers")))
            .send()
            .await
            .expect("account")
            .text()
            .await
            .expect("html");
        let res = b
            .post(format!("{}/account/totp", f.app.issuer("customers")))
            .form(&[("csrf", "forged")])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 403, "CSRF on re-enrolling TOTP");
        let page = b
            .post(format!("{}/account/totp", f.app.issuer("customers")))
            .form(&[("csrf", field(&account, "csrf"))])
            .send()
            .await
            .expect("post")
            .text()
            .await
            .expect("html");
        let new_secret =
            totp::base32_decode(between(&page, r#"data-secret=""#, "\"")).expect("secret");
        f.clock.advance(30);
        let res = b
            .post(format!(
                "{}/account/totp/confirm",
                f.app.issuer("customers")
            ))
            .form(&[
                ("csrf", field(&page, "csrf")),
                ("code", totp::code_at(&new_secret, f.clock.now())),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 200);
        f.clock.advance(30);
        let old = f
            .sign_in(
                &browser(),
                &pkce(),
                &totp::code_at(&f.secret, f.clock.now()),
            )
            .await;
        assert_eq!(old.status(), 401, "the old authenticator no longer works");
        let new = f
            .sign_in(
                &browser(),
                &pkce(),
                &totp::code_at(&new_secret, f.clock.now()),
            )
            .await;
        assert_eq!(new.status(), 303, "the new one does");
        // Sign out everywhere is CSRF-protected too.
        let res = b
            .post(format!(
                "{}/account/sign-out-everywhere",
                f.app.issuer("customers")
            ))
            .form(&[("csrf", "forged")])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 403);

        // Account page, then sign out everywhere.
        let account = b
            .get(format!("{}/account", f.app.issuer("customers")))
            .send()
            .await
            .expect("account")
            .text()
            .await
            .expect("html");
        assert!(account.contains("this browser"));
        let res = b
            .post(format!(
                "{}/account/sign-out-everywhere",
                f.app.issuer("customers")
            ))
            .form(&[("csrf", field(&account, "csrf"))])
            .send()
            .await
            .expect("sign out");
        assert_eq!(res.status(), 200);
        let (status, _) = f.refresh(&r3).await;
        assert_eq!(status, 400, "refresh token dead after global sign-out");
        let res = f
            .app
            .http
            .get(format!("{}/oauth2/userinfo", f.app.issuer("customers")))
            .bearer_auth(body2["access_token"].as_str().expect("a"))
            .send()
            .await
            .expect("ui");
        assert_eq!(res.status(), 401, "userinfo knows the session ended");
        let res = b
            .get(f.authorize_url("customers", "mobile", &pkce(), ""))
            .send()
            .await
            .expect("authorize");
        assert!(location(&res).ends_with("/login"), "the session is gone");
    }
}

#[tokio::test]
async fn attacks_on_the_sign_in_flow_fail() {
    for backend in backends() {
        let f = setup(backend).await;
        let issuer = f.app.issuer("customers");
        let b = browser();
        let p = pkce();

        // PKCE missing or plain: redirected error (the redirect URI is the client's own).
        for extra in ["&code_challenge_method=plain", ""] {
            let url = format!(
                "{issuer}/oauth2/authorize?response_type=code&client_id=mobile&redirect_uri={}&state=s{}",
                urlencode(REDIRECT),
                extra
            );
            let res = b.get(url).send().await.expect("authorize");
            assert_eq!(res.status(), 303);
            assert_eq!(
                query_param(&location(&res), "error").as_deref(),
                Some("invalid_request")
            );
        }
        // redirect_uri changed by one character, or an unknown client with an evil redirect:
        // an error page, never a redirect.
        for (client, uri) in [
            ("mobile", "https://app.example/cc"),
            ("nobody", "https://evil.example/"),
            ("mobile", "https://app.example/cb/"),
        ] {
            let url = format!(
                "{issuer}/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}&code_challenge={}&code_challenge_method=S256",
                urlencode(uri),
                p.challenge
            );
            let res = b.get(url).send().await.expect("authorize");
            assert_eq!(res.status(), 400, "{client} {uri}");
            assert!(res.headers().get("location").is_none());
        }

        // CSRF: a login POST without the form's token is refused.
        let res = b
            .get(f.authorize_url("customers", "mobile", &p, ""))
            .send()
            .await
            .expect("authorize");
        assert_eq!(res.status(), 303);
        let res = b
            .post(format!("{issuer}/login"))
            .form(&[
                ("username", "alice"),
                ("password", PASSWORD),
                ("code", &totp::code_at(&f.secret, f.clock.now())),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 403);

        // Unknown user, wrong password, wrong code: the same answer.
        let mut answers = Vec::new();
        for (user, pw, code) in [
            ("mallory", PASSWORD, "000000"),
            ("alice", "wrong password!!", "000000"),
            ("alice", PASSWORD, "000000"),
        ] {
            let b = browser();
            b.get(f.authorize_url("customers", "mobile", &p, ""))
                .send()
                .await
                .expect("authorize");
            let form = b
                .get(format!("{issuer}/login"))
                .send()
                .await
                .expect("login")
                .text()
                .await
                .expect("html");
            let res = b
                .post(format!("{issuer}/login"))
                .form(&[
                    ("csrf", field(&form, "csrf")),
                    ("username", user.into()),
                    ("password", pw.into()),
                    ("code", code.into()),
                ])
                .send()
                .await
                .expect("post");
            let status = res.status().as_u16();
            let html = res.text().await.expect("html");
            answers.push((status, between(&html, r#"role="alert">"#, "<").to_owned()));
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        assert_eq!(answers[0].0, 401);

        // A TOTP code works once.
        let code = totp::code_at(&f.secret, f.clock.now());
        let first = f.sign_in(&browser(), &p, &code).await;
        assert_eq!(first.status(), 303);
        let replay = f.sign_in(&browser(), &p, &code).await;
        assert_eq!(replay.status(), 401, "TOTP code replayed");
        // A recovery code works once too.
        let res = f.sign_in(&browser(), &p, &f.recovery[0]).await;
        assert_eq!(res.status(), 303);
        assert_eq!(
            f.sign_in(&browser(), &p, &f.recovery[0]).await.status(),
            401
        );

        // A code redeemed twice: refused, and the tokens it issued are revoked.
        let auth_code = query_param(&location(&first), "code").expect("code");
        let (status, tokens) = f.redeem("mobile", &auth_code, &p.verifier).await;
        assert_eq!(status, 200);
        let (status, err) = f.redeem("mobile", &auth_code, &p.verifier).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let (status, _) = f
            .refresh(tokens["refresh_token"].as_str().expect("r"))
            .await;
        assert_eq!(status, 400, "code reuse revoked its refresh token");

        // A code redeemed by another client, or with a wrong verifier, or another redirect URI.
        f.clock.advance(30);
        let fresh = f
            .sign_in(&browser(), &p, &totp::code_at(&f.secret, f.clock.now()))
            .await;
        let c = query_param(&location(&fresh), "code").expect("code");
        let (status, _) = f.redeem("web", &c, &p.verifier).await;
        assert_eq!(status, 401, "a confidential client must authenticate");
        let web_secret_missing = f
            .app
            .http
            .post(f.app.token_url("customers"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", "nobody"),
                ("code", c.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", p.verifier.as_str()),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(web_secret_missing.status(), 401);
        // The confidential client, properly authenticated, cannot redeem the public client's code.
        let res = f
            .app
            .http
            .post(f.app.token_url("customers"))
            .basic_auth("web", Some(&f.web_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", c.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", p.verifier.as_str()),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 400, "a code from another client");
        let err: Value = res.json().await.expect("json");
        assert_eq!(err["error"], "invalid_grant");
        f.clock.advance(30);
        let fresh = f
            .sign_in(&browser(), &p, &totp::code_at(&f.secret, f.clock.now()))
            .await;
        let c = query_param(&location(&fresh), "code").expect("code");
        let (status, err) = f.redeem("mobile", &c, &pkce().verifier).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_grant")),
            "wrong verifier"
        );

        // A session cookie of one realm means nothing in another.
        let staff_client = sigil::admin::clients::create(
            f.app.store.as_ref(),
            sigil::admin::clients::NewClient {
                realm: "staff".into(),
                client_id: "backoffice".into(),
                scopes: "balances:read".into(),
                audience: "ledger".into(),
                redirect_uris: vec![REDIRECT.into()],
                public: true,
                ..Default::default()
            },
            f.clock.now(),
            "t",
        )
        .await
        .expect("client");
        assert!(staff_client.client_secret.is_none());
        let signed_in = browser();
        let ok = f.sign_in(&signed_in, &p, &f.recovery[1]).await;
        assert_eq!(ok.status(), 303);
        let cookie_of_customers = signed_in
            .get(f.authorize_url("staff", "backoffice", &p, ""))
            .send()
            .await
            .expect("authorize");
        assert!(
            location(&cookie_of_customers).ends_with("/realms/staff/login"),
            "no code from another realm's session"
        );

        // A disabled user can no longer refresh.
        let c = query_param(&location(&ok), "code").expect("code");
        let (_, tokens) = f.redeem("mobile", &c, &p.verifier).await;
        sigil::admin::users::set_enabled(
            f.app.store.as_ref(),
            "customers",
            "alice",
            None,
            false,
            f.clock.now(),
            "t",
        )
        .await
        .expect("disable");
        let (status, err) = f
            .refresh(tokens["refresh_token"].as_str().expect("r"))
            .await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_grant"))
        );

        // prompt=login forces the form even with a session; acr_values=passkey refuses the fallback.
        sigil::admin::users::set_enabled(
            f.app.store.as_ref(),
            "customers",
            "alice",
            None,
            true,
            f.clock.now(),
            "t",
        )
        .await
        .expect("enable");
        let res = signed_in
            .get(f.authorize_url("customers", "mobile", &p, "&prompt=login"))
            .send()
            .await
            .expect("authorize");
        assert!(location(&res).ends_with("/login"));
        let res = signed_in
            .get(f.authorize_url(
                "customers",
                "mobile",
                &p,
                &format!("&acr_values={}", urlencode(sigil::identity::ACR_PASSKEY)),
            ))
            .send()
            .await
            .expect("authorize");
        assert!(location(&res).ends_with("/login"));
        let form = signed_in
            .get(format!("{issuer}/login"))
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("html");
        assert!(form.contains("requires a passkey") && !form.contains(r#"name="password""#));

        // Nothing secret reached the audit log.
        for row in f.app.audit().await {
            assert!(!row.detail.contains(PASSWORD) && !row.detail.contains(&f.recovery[0]));
        }
    }
}

#[tokio::test]
async fn an_account_failing_too_often_is_slowed_down_even_with_the_right_password() {
    let f = setup(Backend::Sqlite).await;
    let p = pkce();
    // Five failures for alice within the minute (each from a fresh browser).
    for _ in 0..5 {
        let res = f.sign_in(&browser(), &p, "000000").await;
        assert_eq!(res.status(), 401);
    }
    // The sixth attempt, even with the right code, waits for the next minute.
    let res = f.sign_in(&browser(), &p, &f.recovery[0]).await;
    assert_eq!(res.status(), 429);
    // How long to wait: until the limiter's minute turns (the page says it in words too).
    let wait: i64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        res.text()
            .await
            .expect("html")
            .contains("Too many attempts")
    );
    f.clock.advance(60);
    let res = f.sign_in(&browser(), &p, &f.recovery[0]).await;
    assert_eq!(
        res.status(),
        303,
        "the recovery code was not spent by the refused attempt"
    );
}

/// Malformed bodies and queries on the pages' endpoints get Sigil's own answers (JSON errors,
/// themed pages with the pages' headers), never the framework's plain-text rejections; the pages
/// speak the browser's language, falling back to the realm's default.
#[tokio::test]
async fn malformed_page_requests_get_sigils_own_answers_in_the_right_language() {
    for backend in backends() {
        let f = setup(backend).await;
        let base = format!("{}/realms/customers", f.app.base);
        let c = reqwest::Client::new();
        for path in [
            "enrol/passkey/options",
            "login/passkey/options",
            "account/passkey/options",
        ] {
            let res = c
                .post(format!("{base}/{path}"))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("post");
            assert!(res.status().is_client_error(), "{path}: {}", res.status());
            let ct = res.headers()["content-type"]
                .to_str()
                .expect("ct")
                .to_owned();
            assert!(ct.starts_with("application/json"), "{path}: {ct}");
        }
        let res = c
            .get(format!("{base}/enrol/done?method=a&method=b"))
            .header("accept-language", "de-DE,de;q=0.9")
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("content-security-policy"));
        let html = res.text().await.expect("body");
        assert!(html.contains(r#"<html lang="de">"#) && html.contains("Alles eingerichtet"));
        // No language the pages speak: the realm's default, then English.
        let res = c
            .get(format!("{base}/login"))
            .header("accept-language", "fr-FR")
            .send()
            .await
            .expect("get");
        let html = res.text().await.expect("body");
        assert!(html.contains(r#"<html lang="en">"#), "{html}");
        let s = f.app.store.as_ref();
        let settings = sigil::identity::settings::LoginSettings {
            default_locale: "de".into(),
            ..Default::default()
        };
        sigil::admin::users::set_login_settings(s, "customers", &settings, f.clock.now(), "t")
            .await
            .expect("settings");
        let html = c
            .get(format!("{base}/login"))
            .header("accept-language", "fr-FR")
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        assert!(html.contains(r#"<html lang="de">"#), "{html}");
    }
}
