//! RFC 9470 end to end, on both stores: a customer signed in with password + TOTP gets an access
//! token the ledger's high-value route (the validator's `require_acr(passkey).max_age(300 s)`)
//! answers with `insufficient_user_authentication`; the app sends her back to `/authorize` with the
//! challenge's `acr_values` and `max_age`, she signs in with a passkey (a software authenticator),
//! and the new token is accepted.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use sigil::clock::Clock;
use sigil::identity::totp;
use sigil_validator::Validator;

use crate::helpers::{backends, decode_part};
use crate::login::{
    PASSWORD, REDIRECT, between, browser, field, location, pkce, query_param, setup, urlencode,
};
use crate::passkey::{add_passkey_from_account, origin, post_json};

/// The auth-params of a `WWW-Authenticate: Bearer ...` challenge (values quoted, no escapes used).
fn challenge(www: &str) -> Vec<(String, String)> {
    www.trim_start_matches("Bearer ")
        .split("\", ")
        .map(|p| {
            let (k, v) = p.split_once('=').expect("param");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_password_token_is_challenged_and_a_passkey_step_up_is_accepted() {
    for backend in backends() {
        let f = setup(backend).await;
        let app = &f.app;
        let s = app.store.as_ref();
        let now = f.clock.now();
        sigil::admin::users::create_group(s, "customers", "payers", "tx:post:ach", now, "t")
            .await
            .expect("group");
        sigil::admin::users::add_group(s, "customers", "alice", "payers", now, "t")
            .await
            .expect("member");

        // The ledger's high-value route, as in the example ledger.
        let clock = f.clock.clone();
        let v = Validator::builder(app.issuer("customers"), "ledger")
            .clock(move || clock.now())
            .build()
            .await
            .expect("validator");
        let router = Router::new().route(
            "/transfers/high-value",
            post(|| async { "sent" }).route_layer(
                v.require_scope("tx:post:ach")
                    .require_acr([sigil::identity::ACR_PASSKEY])
                    .max_age(Duration::from_secs(300)),
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ledger = format!(
            "http://{}/transfers/high-value",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        let transfer = |token: String| {
            let (http, url) = (app.http.clone(), ledger.clone());
            async move {
                let res = http
                    .post(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("ledger");
                let www = res
                    .headers()
                    .get("www-authenticate")
                    .map(|h| h.to_str().expect("ascii").to_owned())
                    .unwrap_or_default();
                (res.status().as_u16(), www)
            }
        };
        let issuer = app.issuer("customers");
        let authorize = |challenge: &str, extra: &str| {
            format!(
                "{issuer}/oauth2/authorize?response_type=code&client_id=mobile&redirect_uri={}&scope=openid%20tx:post:ach&state=s&code_challenge={challenge}&code_challenge_method=S256{extra}",
                urlencode(REDIRECT)
            )
        };

        // 1. Password + TOTP.
        let b = browser();
        let p = pkce();
        let res = b
            .get(authorize(&p.challenge, ""))
            .send()
            .await
            .expect("authorize");
        assert_eq!(location(&res), format!("{issuer}/login"));
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
                ("username", "alice".into()),
                ("password", PASSWORD.into()),
                ("code", totp::code_at(&f.secret, f.clock.now())),
            ])
            .send()
            .await
            .expect("sign in");
        let code = query_param(&location(&res), "code").expect("code");
        let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(status, 200, "{body}");
        let weak = body["access_token"].as_str().expect("token").to_owned();
        assert_eq!(
            decode_part(&weak, 1)["acr"],
            sigil::identity::ACR_PASSWORD_OTP
        );

        // 2. The ledger asks for more, and says what.
        let (status, www) = transfer(weak.clone()).await;
        assert_eq!(status, 401, "{www}");
        let params = challenge(&www);
        let get = |k: &str| {
            params
                .iter()
                .find(|p| p.0 == k)
                .map(|p| p.1.clone())
                .unwrap_or_else(|| panic!("{k} in {www}"))
        };
        assert_eq!(get("error"), "insufficient_user_authentication");
        let (acr_values, max_age) = (get("acr_values"), get("max_age"));
        assert_eq!(acr_values, sigil::identity::ACR_PASSKEY);
        assert_eq!(max_age, "300");

        // 3. She adds a passkey from the account page (signed in with the password).
        let (mut key, _) = add_passkey_from_account(app, &b).await;

        // 4. The app re-authorizes with the challenge's parameters: the password session does not
        // satisfy them, so the sign-in page asks again, and the passkey answers.
        f.clock.advance(5);
        let p = pkce();
        let extra = format!("&acr_values={}&max_age={max_age}", urlencode(&acr_values));
        let res = b
            .get(authorize(&p.challenge, &extra))
            .send()
            .await
            .expect("authorize");
        assert_eq!(location(&res), format!("{issuer}/login"), "a new sign-in");
        let page = b
            .get(format!("{issuer}/login"))
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("html");
        // Only the passkey is offered: "This sign-in requires a passkey."
        assert!(page.contains("requires a passkey") && !page.contains("name=\"password\""));
        let csrf = between(&page, "data-csrf=\"", "\"").to_owned();
        let (status, options) = post_json(
            &b,
            format!("{issuer}/login/passkey/options"),
            json!({"csrf": csrf}),
        )
        .await;
        assert_eq!(status, 200, "{options}");
        let assertion = key.assert(&options, &origin(app));
        let (status, done) = post_json(
            &b,
            format!("{issuer}/login/passkey"),
            json!({"csrf": csrf, "credential": assertion}),
        )
        .await;
        assert_eq!(status, 200, "{done}");
        let redirect = done["redirect"].as_str().expect("redirect").to_owned();
        let code = match query_param(&redirect, "code") {
            Some(code) => code,
            None => f.consent(&b, "allow").await.expect("code after consent"),
        };
        let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(status, 200, "{body}");
        let strong = body["access_token"].as_str().expect("token").to_owned();
        let claims: Value = decode_part(&strong, 1);
        assert_eq!(claims["acr"], sigil::identity::ACR_PASSKEY);

        // 5. Accepted; the old token still is not.
        assert_eq!(transfer(strong).await.0, 200);
        assert_eq!(transfer(weak).await.0, 401);
    }
}
