//! RP-Initiated Logout 1.0 over HTTP, on both stores: the end-session endpoint with an ID token
//! hint for this browser's session ends it at once and returns to the app's registered URI with
//! `state`; without a hint the user confirms first (CSRF-protected, and the page's CSP lets the
//! form go to the app); a URI off by one character, a forged hint, an access token as hint or a
//! hint for another client is refused with a page, nothing ended and no redirect. An ended
//! session's refresh token, userinfo and introspection stop too, and its `sid` is in the feed.

use serde_json::Value;
use sigil::clock::Clock;
use sigil::identity::totp;

use crate::helpers::{backends, count_rows};
use crate::login::{
    Fixture, SIGNED_OUT, between, browser, location, pkce, query_param, setup, urlencode,
};

pub(crate) struct Tokens {
    pub(crate) id: String,
    pub(crate) access: String,
    pub(crate) refresh: String,
}

pub(crate) async fn sign_in(f: &Fixture, b: &reqwest::Client) -> Tokens {
    f.clock.advance(31);
    let p = pkce();
    let res = f
        .sign_in(b, &p, &totp::code_at(&f.secret, f.clock.now()))
        .await;
    let code = query_param(&location(&res), "code").expect("code");
    let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
    assert_eq!(status, 200, "{body}");
    let s = |k: &str| body[k].as_str().expect(k).to_owned();
    Tokens {
        id: s("id_token"),
        access: s("access_token"),
        refresh: s("refresh_token"),
    }
}

pub(crate) async fn signed_in(f: &Fixture, b: &reqwest::Client) -> bool {
    let res = b
        .get(format!("{}/account", f.app.issuer("customers")))
        .send()
        .await
        .expect("account");
    res.status() == 200
}

pub(crate) fn logout_url(f: &Fixture, query: &[(&str, &str)]) -> String {
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    format!(
        "{}/oauth2/logout?{}",
        f.app.issuer("customers"),
        q.join("&")
    )
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_session_and_returns_only_to_a_registered_uri() {
    for backend in backends() {
        let f = setup(backend).await;
        let app = &f.app;
        let issuer = app.issuer("customers");
        let doc: Value = app
            .http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .expect("discovery")
            .json()
            .await
            .expect("json");
        assert_eq!(
            doc["end_session_endpoint"],
            format!("{issuer}/oauth2/logout")
        );

        let b = browser();
        let t = sign_in(&f, &b).await;

        // Refused with a page, nothing ended, no redirect: a URI off by one character, a
        // tampered hint, an access token as hint, a hint for another client.
        let off_by_one = "https://app.example/signed-oux";
        let mut tampered = t.id.clone();
        tampered.pop();
        tampered.push(if t.id.ends_with('A') { 'B' } else { 'A' });
        for (why, query) in [
            (
                "off by one",
                vec![
                    ("id_token_hint", t.id.as_str()),
                    ("post_logout_redirect_uri", off_by_one),
                ],
            ),
            (
                "unregistered for this client",
                vec![
                    ("client_id", "web"),
                    ("post_logout_redirect_uri", "https://evil.example/"),
                ],
            ),
            ("tampered hint", vec![("id_token_hint", tampered.as_str())]),
            (
                "access token as hint",
                vec![("id_token_hint", t.access.as_str())],
            ),
            (
                "hint for another client",
                vec![("id_token_hint", t.id.as_str()), ("client_id", "web")],
            ),
            (
                "redirect without a client",
                vec![("post_logout_redirect_uri", SIGNED_OUT)],
            ),
        ] {
            let res = b.get(logout_url(&f, &query)).send().await.expect("logout");
            assert_eq!(res.status(), 400, "{why}");
            assert!(res.headers().get("location").is_none(), "{why}");
            let html = res.text().await.expect("html");
            assert!(html.contains("logout_bad_request"), "{why}");
            assert!(signed_in(&f, &b).await, "{why}: still signed in");
        }

        // No hint: a confirmation page; its form may go to the app (CSP form-action).
        let res = b
            .get(logout_url(
                &f,
                &[
                    ("client_id", "mobile"),
                    ("post_logout_redirect_uri", SIGNED_OUT),
                    ("state", "s-1"),
                ],
            ))
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 200);
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            csp.contains("form-action 'self' https://app.example"),
            "{csp}"
        );
        let html = res.text().await.expect("html");
        assert!(html.contains("id=\"logout-confirm\""));
        let csrf = between(&html, "name=\"csrf\" value=\"", "\"").to_owned();
        let confirm = format!("{issuer}/oauth2/logout/confirm");
        let post = |form: Vec<(&'static str, String)>| {
            let (b, url) = (b.clone(), confirm.clone());
            async move { b.post(url).form(&form).send().await.expect("confirm") }
        };
        let carried = |csrf: &str, decision: &str| {
            vec![
                ("csrf", csrf.to_owned()),
                ("client_id", "mobile".to_owned()),
                ("post_logout_redirect_uri", SIGNED_OUT.to_owned()),
                ("state", "s-1".to_owned()),
                ("decision", decision.to_owned()),
            ]
        };
        assert_eq!(post(carried("forged", "sign_out")).await.status(), 403);
        // A cross-site POST arrives without the (SameSite=Lax) session cookie: it ends nothing
        // and must not clear the cookie of the browser it lands in either.
        for url in [confirm.clone(), format!("{issuer}/oauth2/logout")] {
            let res = app
                .http
                .post(url)
                .form(&[("decision", "sign_out")])
                .send()
                .await
                .expect("cross-site");
            assert!(
                res.headers().get_all("set-cookie").iter().next().is_none(),
                "no cookie change without a session"
            );
        }
        assert!(signed_in(&f, &b).await);
        // A huge state is refused rather than echoed into a Location header.
        let huge = "s".repeat(2_000);
        let res = b
            .get(logout_url(
                &f,
                &[
                    ("client_id", "mobile"),
                    ("post_logout_redirect_uri", SIGNED_OUT),
                    ("state", &huge),
                ],
            ))
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 400);
        assert_eq!(post(carried(&csrf, "stay")).await.status(), 200);
        assert!(signed_in(&f, &b).await, "stayed");
        // A hidden field changed to another URI is checked again.
        let mut evil = carried(&csrf, "sign_out");
        evil[2].1 = "https://evil.example/".into();
        assert_eq!(post(evil).await.status(), 400);
        assert!(signed_in(&f, &b).await);
        let res = post(carried(&csrf, "sign_out")).await;
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), format!("{SIGNED_OUT}?state=s-1"));
        assert!(!signed_in(&f, &b).await, "the session ended");
        // Its refresh token, userinfo and introspection-style checks follow.
        assert_eq!(f.refresh(&t.refresh).await.0, 400);
        let userinfo = app
            .http
            .get(format!("{issuer}/oauth2/userinfo"))
            .bearer_auth(&t.access)
            .send()
            .await
            .expect("userinfo");
        assert_eq!(userinfo.status(), 401);

        // With a hint for this session: ended at once, back to the app with state.
        let t = sign_in(&f, &b).await;
        let res = b
            .get(logout_url(
                &f,
                &[
                    ("id_token_hint", t.id.as_str()),
                    ("post_logout_redirect_uri", SIGNED_OUT),
                    ("state", "s-2"),
                ],
            ))
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), format!("{SIGNED_OUT}?state=s-2"));
        let cleared = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap_or("").starts_with("sigil_session=;"));
        assert!(cleared, "the session cookie is cleared");
        assert!(!signed_in(&f, &b).await);
        assert_eq!(f.refresh(&t.refresh).await.0, 400);
        // The same request again (nothing left to end): the same answer, nothing else.
        let res = b
            .get(logout_url(
                &f,
                &[
                    ("id_token_hint", t.id.as_str()),
                    ("post_logout_redirect_uri", SIGNED_OUT),
                ],
            ))
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 303);
        // Many logouts of one session at once (all with its cookie and hint): every one answers,
        // and the session ends once (one audit record, one feed entry, counted below).
        let t = sign_in(&f, &b).await;
        let url = logout_url(
            &f,
            &[
                ("id_token_hint", t.id.as_str()),
                ("post_logout_redirect_uri", SIGNED_OUT),
            ],
        );
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (b, url) = (b.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                b.get(url).send().await.expect("logout").status().as_u16()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task"), 303);
        }
        assert!(!signed_in(&f, &b).await);
        // POST works as GET (the spec allows both); without a redirect URI, the signed-out page.
        let t = sign_in(&f, &b).await;
        let res = b
            .post(format!("{issuer}/oauth2/logout"))
            .form(&[("id_token_hint", t.id.as_str())])
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 200);
        assert!(res.text().await.expect("html").contains("signed_out"));
        assert!(!signed_in(&f, &b).await);

        // Audited, and each ended session's sid is in the revocation feed.
        let rows = app.audit().await;
        let ended = rows
            .iter()
            .filter(|r| r.kind == "user.signed_out" && r.detail.contains("end_session"))
            .count();
        assert_eq!(ended, 4);
        assert_eq!(
            count_rows(app, "SELECT COUNT(*) FROM revocations WHERE kind = 'sid'").await,
            4
        );
    }
}
