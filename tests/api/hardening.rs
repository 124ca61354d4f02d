//! Issue 8's attacks on sessions, credentials and the sign-in flow, each performed against the
//! running application on SQLite and PostgreSQL; races with many concurrent attempts.

use serde_json::{Value, json};
use sigil::clock::Clock;
use sigil::identity::totp;

use crate::helpers::{TestApp, backends, exec_raw};
use crate::login::{
    Fixture, PASSWORD, REDIRECT, browser, field, location, pkce, query_param, setup, urlencode,
};
use crate::passkey::{SoftPasskey, origin, post_json};

async fn count(app: &TestApp, sql: &str) -> i64 {
    crate::helpers::count_rows(app, sql).await
}

/// The confidential `web` client (authenticated) presenting a code.
async fn redeem_by_web(f: &Fixture, code: &str, verifier: &str) -> u16 {
    f.app
        .http
        .post(f.app.token_url("customers"))
        .basic_auth("web", Some(&f.web_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token")
        .status()
        .as_u16()
}

fn issuer(f: &Fixture) -> String {
    f.app.issuer("customers")
}

/// A fresh password + TOTP sign-in of alice in `b` (advancing the clock to a new TOTP step);
/// returns the code.
async fn signed_in(f: &Fixture, b: &reqwest::Client, p: &crate::login::Pkce) -> String {
    f.clock.advance(30);
    let res = f
        .sign_in(b, p, &totp::code_at(&f.secret, f.clock.now()))
        .await;
    assert_eq!(res.status(), 303);
    query_param(&location(&res), "code").expect("code")
}

async fn tokens(f: &Fixture, b: &reqwest::Client) -> Value {
    let p = pkce();
    let code = signed_in(f, b, &p).await;
    let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn account_csrf(f: &Fixture, b: &reqwest::Client) -> String {
    let html = b
        .get(format!("{}/account", issuer(f)))
        .send()
        .await
        .expect("account")
        .text()
        .await
        .expect("html");
    field(&html, "csrf")
}

async fn set_login(f: &Fixture, tweak: impl FnOnce(&mut sigil::identity::settings::LoginSettings)) {
    let mut s = sigil::identity::settings::LoginSettings {
        groups_claim: "cognito:groups".into(),
        attribute_claims: [("party_id".to_owned(), "custom:party_id".to_owned())].into(),
        ..Default::default()
    };
    tweak(&mut s);
    sigil::admin::users::set_login_settings(
        f.app.store.as_ref(),
        "customers",
        &s,
        f.clock.now(),
        "t",
    )
    .await
    .expect("settings");
}

/// Item 2: a session cookie alone cannot change credentials; a recent sign-in can, and each change
/// ends the other sessions and refresh tokens, is audited and listed on the account page.
#[tokio::test]
async fn credential_changes_need_a_recent_sign_in() {
    for backend in backends() {
        let f = setup(backend).await;
        let iss = issuer(&f);
        let b = browser();
        let other = browser();
        let other_tokens = tokens(&f, &other).await;
        let _ = tokens(&f, &b).await;
        // The thief's situation: a cookie, but the sign-in is older than five minutes.
        f.clock.advance(301);
        let csrf = account_csrf(&f, &b).await;
        for path in ["account/totp", "account/recovery-codes"] {
            let res = b
                .post(format!("{iss}/{path}"))
                .form(&[("csrf", csrf.as_str())])
                .send()
                .await
                .expect("post");
            assert_eq!(res.status(), 303, "{path}");
            assert!(location(&res).contains("/account/reauth"), "{path}");
        }
        let (status, body) = post_json(
            &b,
            format!("{iss}/account/passkey/options"),
            json!({"csrf": csrf}),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("reauth_required"))
        );
        // Confirming with the password + a code makes the session recent again.
        f.clock.advance(30);
        let res = b
            .post(format!("{iss}/account/reauth"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("password", PASSWORD),
                ("code", &totp::code_at(&f.secret, f.clock.now())),
            ])
            .send()
            .await
            .expect("reauth");
        assert_eq!(res.status(), 303);
        assert!(location(&res).ends_with("/account"));
        // Now a first passkey may be added.
        let (status, options) = post_json(
            &b,
            format!("{iss}/account/passkey/options"),
            json!({"csrf": csrf}),
        )
        .await;
        assert_eq!(status, 200, "{options}");
        let mut key = SoftPasskey::new();
        let credential = key.register(&options, &origin(&f.app));
        let (status, done) = post_json(
            &b,
            format!("{iss}/account/passkey"),
            json!({"csrf": csrf, "credential": credential}),
        )
        .await;
        assert_eq!(status, 200, "{done}");
        // The other session and every refresh token ended with the change.
        let res = other
            .get(format!("{iss}/account"))
            .send()
            .await
            .expect("account");
        assert_eq!(res.status(), 401, "the other session was ended");
        let (status, _) = f
            .refresh(other_tokens["refresh_token"].as_str().expect("rt"))
            .await;
        assert_eq!(status, 400, "the other session's refresh token was revoked");
        // Listed on the account page, and audited.
        let html = b
            .get(format!("{iss}/account"))
            .send()
            .await
            .expect("account")
            .text()
            .await
            .expect("html");
        assert!(html.contains(r#"data-kind="user.passkey_added""#), "{html}");
        // A second passkey on an account that has one needs a passkey sign-in, however recent the
        // password sign-in is.
        let (status, body) = post_json(
            &b,
            format!("{iss}/account/passkey/options"),
            json!({"csrf": csrf}),
        )
        .await;
        assert_eq!(status, 403);
        assert!(body["reauth"].as_str().expect("url").ends_with("passkey=1"));
        let rows = f.app.audit().await;
        assert!(rows.iter().any(|r| r.kind == "user.passkey_added"));
        assert!(rows.iter().any(|r| r.kind == "user.reauthenticated"));
    }
}

/// Item 3: an admin's disable is never reverted by writes of the user's own requests in flight,
/// and ends sessions and refresh tokens in the same transaction.
#[tokio::test]
async fn a_disable_is_never_reverted_by_concurrent_writes() {
    for backend in backends() {
        let f = setup(backend).await;
        let s = f.app.store.clone();
        let user = s
            .user_by_name("customers", "alice")
            .await
            .expect("db")
            .expect("alice");
        for trial in 0..8 {
            sigil::admin::users::set_enabled(s.as_ref(), "customers", "alice", None, true, 1, "t")
                .await
                .expect("enable");
            let body = tokens(&f, &browser()).await;
            let mut tasks = Vec::new();
            for i in 0..6 {
                let s = s.clone();
                let id = user.id.clone();
                tasks.push(tokio::spawn(async move {
                    let attrs = [(format!("k{i}"), format!("v{trial}"))];
                    let _ = s
                        .update_user_attributes("customers", &id, None, &attrs, None, 2, &[])
                        .await;
                    let _ = s
                        .use_totp_step("customers", &id, 1_000_000 + trial * 10 + i)
                        .await;
                }));
            }
            let s2 = s.clone();
            tasks.push(tokio::spawn(async move {
                sigil::admin::users::set_enabled(
                    s2.as_ref(),
                    "customers",
                    "alice",
                    None,
                    false,
                    3,
                    "t",
                )
                .await
                .expect("disable");
            }));
            for t in tasks {
                t.await.expect("join");
            }
            let after = s
                .user_by_name("customers", "alice")
                .await
                .expect("db")
                .expect("alice");
            assert!(!after.enabled, "trial {trial}: the disable was reverted");
            assert!(
                s.sessions_of("customers", &user.id)
                    .await
                    .expect("db")
                    .is_empty()
            );
            let (status, _) = f.refresh(body["refresh_token"].as_str().expect("rt")).await;
            assert_eq!(status, 400, "trial {trial}: refresh after disable");
        }
        // Every concurrent attribute write landed (none overwrote another).
        let attrs: Value = serde_json::from_str(
            &s.user_by_name("customers", "alice")
                .await
                .expect("db")
                .expect("alice")
                .attributes,
        )
        .expect("json");
        for i in 0..6 {
            assert_eq!(attrs[format!("k{i}")], "v7");
        }
    }
}

/// Item 4: refresh and userinfo apply the session's idle and absolute timeouts, and no refresh
/// token outlives the session's absolute end.
#[tokio::test]
async fn refresh_and_userinfo_obey_the_session_timeouts() {
    for backend in backends() {
        let f = setup(backend).await;
        set_login(&f, |s| {
            s.session_idle_secs = 60;
            s.session_absolute_secs = 300;
            s.refresh_token_ttl = 300;
        })
        .await;
        // Idle: nothing for 65 s ends the session for refresh and userinfo too.
        let body = tokens(&f, &browser()).await;
        f.clock.advance(65);
        let (status, err) = f.refresh(body["refresh_token"].as_str().expect("rt")).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let res = f
            .app
            .http
            .get(format!("{}/oauth2/userinfo", issuer(&f)))
            .bearer_auth(body["access_token"].as_str().expect("at"))
            .send()
            .await
            .expect("userinfo");
        assert_eq!(res.status(), 401, "userinfo after the idle timeout");
        // Absolute: refreshing every 50 s keeps it alive only until 300 s after sign-in.
        let body = tokens(&f, &browser()).await;
        let signed_in_at = f.clock.now();
        let mut rt = body["refresh_token"].as_str().expect("rt").to_owned();
        let mut last_ok = 0;
        for _ in 0..8 {
            f.clock.advance(50);
            let (status, next) = f.refresh(&rt).await;
            if status != 200 {
                break;
            }
            last_ok = f.clock.now() - signed_in_at;
            rt = next["refresh_token"].as_str().expect("rt").to_owned();
            let stored = f
                .app
                .store
                .refresh_token(&sigil::identity::token_hash(&rt), "customers")
                .await
                .expect("db")
                .expect("row");
            assert!(
                stored.expires_at <= signed_in_at + 300,
                "outlives the session"
            );
        }
        assert!(
            (250..300).contains(&last_ok),
            "the last refresh that worked was {last_ok} s after sign-in"
        );
    }
}

/// Item 5: anonymous refusals count toward the address's limit and are tallied into a bounded
/// number of audit rows; an authenticated client's refusal is still written on its own.
#[tokio::test]
async fn anonymous_floods_are_limited_and_tallied() {
    for backend in backends() {
        let f = setup(backend).await;
        let iss = issuer(&f);
        let before = f.app.audit().await.len();
        let token_url = f.app.token_url("customers");
        let mut refused = 0u64;
        let mut limited = 0u64;
        for i in 0..120 {
            let res = match i % 4 {
                0 => f
                    .app
                    .http
                    .get(format!(
                        "{iss}/oauth2/authorize?client_id=nobody&redirect_uri=https://evil.example/"
                    ))
                    .send()
                    .await
                    .expect("authorize"),
                1 => f
                    .app
                    .http
                    .post(&token_url)
                    .form(&[("grant_type", "password")])
                    .send()
                    .await
                    .expect("token"),
                2 => f
                    .app
                    .http
                    .post(&token_url)
                    .header("authorization", "Basic !!!")
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                    .expect("token"),
                _ => f
                    .app
                    .http
                    .post(format!("{iss}/login"))
                    .form(&[("csrf", "forged")])
                    .send()
                    .await
                    .expect("login"),
            };
            match res.status().as_u16() {
                429 => limited += 1,
                400 | 401 | 403 => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert!(limited > 0, "the floods were never limited");
        let rows = f.app.audit_after_tally().await;
        let added = &rows[before..];
        assert!(added.len() <= 10, "{} rows for a flood", added.len());
        let counted: u64 = added
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.detail).ok())
            .filter_map(|d| d["count"].as_u64())
            .sum();
        assert!(
            counted >= refused,
            "tallied {counted} of {refused} refusals"
        );
        // An authenticated client's refusal is written on its own, at once.
        let res = f
            .app
            .http
            .post(&token_url)
            .basic_auth("web", Some(&f.web_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("code_verifier", "y"),
            ])
            .send()
            .await
            .expect("token");
        assert!(res.status() == 400 || res.status() == 429);
    }
}

/// Item 6: `/authorize` writes no database row; expired rows are purged in batches.
#[tokio::test]
async fn authorize_writes_nothing_and_housekeeping_purges() {
    for backend in backends() {
        let f = setup(backend).await;
        let flows = count(&f.app, "SELECT COUNT(*) FROM flows").await;
        let audit = f.app.audit().await.len();
        for _ in 0..50 {
            let res = browser()
                .get(f.authorize_url("customers", "mobile", &pkce(), ""))
                .send()
                .await
                .expect("authorize");
            assert_eq!(res.status(), 303);
        }
        assert_eq!(count(&f.app, "SELECT COUNT(*) FROM flows").await, flows);
        assert_eq!(f.app.audit().await.len(), audit, "no audit row either");
        exec_raw(
            &f.app,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) \
             INSERT INTO flows (id_hash, realm, kind, data, expires_at) \
             SELECT 'old' || i, 'customers', 'x', '', 1 FROM n",
        )
        .await
        .expect("insert");
        // The background housekeeping may take some too; each call deletes a bounded batch.
        for _ in 0..10 {
            let n = f
                .app
                .store
                .purge_expired(f.clock.now(), 500)
                .await
                .expect("purge");
            assert!(n <= 5 * 500, "one call deletes a bounded batch");
        }
        assert_eq!(
            count(
                &f.app,
                "SELECT COUNT(*) FROM flows WHERE id_hash LIKE 'old%'"
            )
            .await,
            0
        );
    }
}

/// Item 7: one invite enrols once, however many enrolments race for it.
#[tokio::test]
async fn one_invite_enrols_once_under_concurrency() {
    for backend in backends() {
        let f = setup(backend).await;
        let s = f.app.store.as_ref();
        let iss = issuer(&f);
        for trial in 0..3 {
            let name = format!("bob{trial}");
            sigil::admin::users::create(
                s,
                &crate::helpers::unused_kek(),
                "customers",
                &name,
                &[],
                &[],
                f.clock.now(),
                "t",
            )
            .await
            .expect("user");
            let invite = sigil::admin::users::invite(
                s,
                None,
                &f.app.base,
                "customers",
                &name,
                3600,
                f.clock.now(),
                "t",
            )
            .await
            .expect("invite");
            // Six passkey enrolments and two password ones, all through the same invite.
            let mut finishes = Vec::new();
            for _ in 0..6 {
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
                let (_, options) = post_json(
                    &b,
                    format!("{iss}/enrol/passkey/options"),
                    json!({"csrf": csrf}),
                )
                .await;
                let mut key = SoftPasskey::new();
                let credential = key.register(&options, &origin(&f.app));
                finishes.push((b, csrf, credential));
            }
            let mut pw = Vec::new();
            for _ in 0..2 {
                let b = browser();
                let page = b
                    .get(&invite)
                    .send()
                    .await
                    .expect("get")
                    .text()
                    .await
                    .expect("html");
                let secret =
                    totp::base32_decode(crate::login::between(&page, r#"data-secret=""#, "\""))
                        .expect("secret");
                pw.push((b, field(&page, "csrf"), secret));
            }
            let mut tasks = Vec::new();
            for (b, csrf, credential) in finishes {
                let url = format!("{iss}/enrol/passkey");
                tasks.push(tokio::spawn(async move {
                    post_json(&b, url, json!({"csrf": csrf, "credential": credential}))
                        .await
                        .0
                }));
            }
            for (b, csrf, secret) in pw {
                let url = format!("{iss}/enrol");
                let code = totp::code_at(&secret, f.clock.now());
                tasks.push(tokio::spawn(async move {
                    let res = b
                        .post(url)
                        .form(&[
                            ("csrf", csrf.as_str()),
                            ("password", PASSWORD),
                            ("code", &code),
                        ])
                        .send()
                        .await
                        .expect("post");
                    res.status().as_u16()
                }));
            }
            let mut ok = 0;
            for t in tasks {
                if t.await.expect("join") == 200 {
                    ok += 1;
                }
            }
            assert_eq!(ok, 1, "trial {trial}: {ok} enrolments won");
            let u = s
                .user_by_name("customers", &name)
                .await
                .expect("db")
                .expect("user");
            let passkeys = s.passkeys("customers", &u.id).await.expect("db").len();
            let has_password = u.password_hash.is_some();
            assert_eq!(
                passkeys + usize::from(has_password),
                1,
                "trial {trial}: exactly one credential stored"
            );
        }
    }
}

/// Item 8: when the audit record of a rotation cannot be written, nothing happened: the client's
/// retry with the same refresh token works and is not taken for reuse.
#[tokio::test]
async fn a_failed_audit_write_leaves_the_refresh_token_usable() {
    for backend in backends() {
        let f = setup(backend).await;
        let body = tokens(&f, &browser()).await;
        let rt = body["refresh_token"].as_str().expect("rt");
        exec_raw(&f.app, "CREATE TABLE fail_audit (x INTEGER)")
            .await
            .expect("t");
        match f.app.backend {
            crate::helpers::Backend::Sqlite => {
                exec_raw(
                    &f.app,
                    "CREATE TRIGGER audit_outage BEFORE INSERT ON audit_log \
                     WHEN EXISTS (SELECT 1 FROM fail_audit) BEGIN SELECT RAISE(ABORT, 'outage'); END",
                )
                .await
                .expect("trigger");
            }
            crate::helpers::Backend::Postgres => {
                exec_raw(
                    &f.app,
                    "CREATE FUNCTION audit_outage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     IF EXISTS (SELECT 1 FROM fail_audit) THEN RAISE EXCEPTION 'outage'; END IF; \
                     RETURN NEW; END $$",
                )
                .await
                .expect("function");
                exec_raw(
                    &f.app,
                    "CREATE TRIGGER audit_outage BEFORE INSERT ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION audit_outage()",
                )
                .await
                .expect("trigger");
            }
        }
        exec_raw(&f.app, "INSERT INTO fail_audit VALUES (1)")
            .await
            .expect("on");
        let (status, err) = f.refresh(rt).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (503, Some("temporarily_unavailable"))
        );
        exec_raw(&f.app, "DELETE FROM fail_audit")
            .await
            .expect("off");
        let (status, next) = f.refresh(rt).await;
        assert_eq!(status, 200, "the retry is not reuse: {next}");
        let (status, _) = f.refresh(next["refresh_token"].as_str().expect("rt")).await;
        assert_eq!(status, 200, "and the family is alive");
    }
}

/// Item 9: public apps get a confirmation page, `prompt=none` and `prompt=consent` are honoured.
#[tokio::test]
async fn public_apps_are_confirmed_and_prompt_is_honoured() {
    for backend in backends() {
        let f = setup(backend).await;
        let b = browser();
        let none = |client: &str| f.authorize_url("customers", client, &pkce(), "&prompt=none");
        // No session: prompt=none answers login_required to the client.
        let res = b.get(none("mobile")).send().await.expect("authorize");
        assert_eq!(
            query_param(&location(&res), "error").as_deref(),
            Some("login_required")
        );
        let _ = tokens(&f, &b).await;
        // A live session: the public app still needs the user's "continue"; prompt=none cannot
        // have it silently.
        let res = b.get(none("mobile")).send().await.expect("authorize");
        assert_eq!(
            query_param(&location(&res), "error").as_deref(),
            Some("interaction_required")
        );
        let p = pkce();
        let res = b
            .get(f.authorize_url("customers", "mobile", &p, ""))
            .send()
            .await
            .expect("authorize");
        assert!(location(&res).ends_with("/consent"));
        assert!(
            f.consent(&b, "deny").await.is_none(),
            "cancel issues no code"
        );
        // The confidential web client may get a code silently, but prompt=consent asks.
        let res = b.get(none("web")).send().await.expect("authorize");
        assert!(query_param(&location(&res), "code").is_some());
        let res = b
            .get(f.authorize_url("customers", "web", &pkce(), "&prompt=consent"))
            .send()
            .await
            .expect("authorize");
        assert!(location(&res).ends_with("/consent"));
        let res = b
            .get(f.authorize_url("customers", "web", &pkce(), "&prompt=none%20login"))
            .send()
            .await
            .expect("authorize");
        assert_eq!(
            query_param(&location(&res), "error").as_deref(),
            Some("invalid_request")
        );
        // A realm that remembers consent: "continue" once, then silent for that app.
        set_login(&f, |s| s.remember_consent = true).await;
        b.get(f.authorize_url("customers", "mobile", &pkce(), ""))
            .send()
            .await
            .expect("authorize");
        let page = b
            .get(format!("{}/consent", issuer(&f)))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        let res = b
            .post(format!("{}/consent", issuer(&f)))
            .form(&[
                ("csrf", field(&page, "csrf").as_str()),
                ("decision", "allow"),
                ("remember", "yes"),
            ])
            .send()
            .await
            .expect("consent");
        assert!(query_param(&location(&res), "code").is_some());
        let res = b.get(none("mobile")).send().await.expect("authorize");
        assert!(query_param(&location(&res), "code").is_some(), "remembered");
    }
}

/// Item 10: starting a ceremony again replaces the first instead of failing.
#[tokio::test]
async fn a_second_ceremony_replaces_the_first() {
    for backend in backends() {
        let f = setup(backend).await;
        let iss = issuer(&f);
        let b = browser();
        b.get(f.authorize_url("customers", "mobile", &pkce(), ""))
            .send()
            .await
            .expect("authorize");
        let page = b
            .get(format!("{iss}/login"))
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("html");
        let csrf = field(&page, "csrf");
        for _ in 0..3 {
            let (status, _) = post_json(
                &b,
                format!("{iss}/login/passkey/options"),
                json!({"csrf": csrf}),
            )
            .await;
            assert_eq!(status, 200);
        }
        let b = browser();
        let _ = tokens(&f, &b).await;
        let csrf = account_csrf(&f, &b).await;
        for _ in 0..3 {
            let res = b
                .post(format!("{iss}/account/totp"))
                .form(&[("csrf", csrf.as_str())])
                .send()
                .await
                .expect("totp");
            assert_eq!(res.status(), 200);
        }
    }
}

/// Item 11: a wrong password never spends the TOTP step or a recovery code.
#[tokio::test]
async fn a_wrong_password_spends_no_second_factor() {
    for backend in backends() {
        let f = setup(backend).await;
        let iss = issuer(&f);
        let attempt = |pw: &'static str, code: String| {
            let f = &f;
            let iss = iss.clone();
            async move {
                let b = browser();
                b.get(f.authorize_url("customers", "mobile", &pkce(), ""))
                    .send()
                    .await
                    .expect("authorize");
                let page = b
                    .get(format!("{iss}/login"))
                    .send()
                    .await
                    .expect("l")
                    .text()
                    .await
                    .expect("h");
                b.post(format!("{iss}/login"))
                    .form(&[
                        ("csrf", field(&page, "csrf").as_str()),
                        ("username", "alice"),
                        ("password", pw),
                        ("code", &code),
                    ])
                    .send()
                    .await
                    .expect("post")
                    .status()
                    .as_u16()
            }
        };
        f.clock.advance(30);
        let code = totp::code_at(&f.secret, f.clock.now());
        assert_eq!(attempt("wrong password!!", code.clone()).await, 401);
        assert_eq!(attempt(PASSWORD, code).await, 303, "the code was not spent");
        let rc = f.recovery[1].clone();
        assert_eq!(attempt("wrong password!!", rc.clone()).await, 401);
        assert_eq!(
            attempt(PASSWORD, rc.clone()).await,
            303,
            "the recovery code was not spent"
        );
        assert_eq!(attempt(PASSWORD, rc).await, 401, "and it is single-use");
    }
}

/// Item 13: a code is checked (client, redirect, PKCE) before it is spent; only its own client can
/// trigger the reuse revocation; of concurrent redemptions exactly one wins.
#[tokio::test]
async fn codes_are_checked_before_they_are_spent() {
    for backend in backends() {
        let f = setup(backend).await;
        let b = browser();
        let p = pkce();
        let code = signed_in(&f, &b, &p).await;
        // Another (authenticated) client presents the victim's code: refused, nothing spent.
        assert_eq!(redeem_by_web(&f, &code, &p.verifier).await, 400);
        // The right client with a wrong verifier: refused, nothing spent.
        let (status, _) = f.redeem("mobile", &code, &pkce().verifier).await;
        assert_eq!(status, 400);
        // Eight concurrent redemptions by the right client: exactly one wins.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let http = f.app.http.clone();
            let url = f.app.token_url("customers");
            let (code, verifier) = (code.clone(), p.verifier.clone());
            tasks.push(tokio::spawn(async move {
                let res = http
                    .post(url)
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
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.expect("json"))
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            let (status, body) = t.await.expect("join");
            if status == 200 {
                won.push(body);
            }
        }
        assert_eq!(won.len(), 1, "exactly one redemption wins");
        // The concurrent losers were replays by the code's own client: the family is revoked.
        let (status, _) = f
            .refresh(won[0]["refresh_token"].as_str().expect("rt"))
            .await;
        assert_eq!(
            status, 400,
            "a replay by the code's own client revokes the family"
        );

        // Another client replaying a spent code revokes nothing.
        let p = pkce();
        let code = signed_in(&f, &browser(), &p).await;
        let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(status, 200);
        assert_eq!(redeem_by_web(&f, &code, &p.verifier).await, 400);
        let (status, _) = f.refresh(body["refresh_token"].as_str().expect("rt")).await;
        assert_eq!(
            status, 200,
            "the victim's tokens survive another client's replay"
        );
    }
}

/// "Also": codes issued before a global sign-out or a disable die with the session.
#[tokio::test]
async fn codes_die_with_their_session() {
    for backend in backends() {
        let f = setup(backend).await;
        let s = f.app.store.as_ref();
        let p = pkce();
        let code = signed_in(&f, &browser(), &p).await;
        sigil::admin::users::sign_out_everywhere(s, "customers", "alice", f.clock.now(), "t")
            .await
            .expect("sign out");
        let (status, err) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let p = pkce();
        let code = signed_in(&f, &browser(), &p).await;
        sigil::admin::users::set_enabled(s, "customers", "alice", None, false, f.clock.now(), "t")
            .await
            .expect("disable");
        let (status, _) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(status, 400);
    }
}

/// Item 16: an unreadable stored sign-in policy refuses sign-in; unknown fields are tolerated.
#[tokio::test]
async fn an_unreadable_sign_in_policy_fails_closed() {
    for backend in backends() {
        let f = setup(backend).await;
        let body = tokens(&f, &browser()).await;
        exec_raw(
            &f.app,
            r#"UPDATE realms SET login_settings = '{"allow_password_fallback": false, "from_a_newer_node": 1}' WHERE name = 'customers'"#,
        )
        .await
        .expect("update");
        let b = browser();
        b.get(f.authorize_url("customers", "mobile", &pkce(), ""))
            .send()
            .await
            .expect("authorize");
        let page = b
            .get(format!("{}/login", issuer(&f)))
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("html");
        assert!(
            !page.contains(r#"name="password""#),
            "the fallback stays off despite the unknown field"
        );
        exec_raw(
            &f.app,
            r#"UPDATE realms SET login_settings = '{"allow_password_fallback": "yes"}' WHERE name = 'customers'"#,
        )
        .await
        .expect("update");
        let res = browser()
            .get(f.authorize_url("customers", "mobile", &pkce(), ""))
            .send()
            .await
            .expect("authorize");
        assert_eq!(res.status(), 503, "sign-in refused, not run on defaults");
        let (status, err) = f.refresh(body["refresh_token"].as_str().expect("rt")).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (503, Some("temporarily_unavailable"))
        );
    }
}

/// Item 17: a redirect URI with a space is one (invalid) value, never two.
#[tokio::test]
async fn a_redirect_uri_with_a_space_registers_nothing() {
    for backend in backends() {
        let f = setup(backend).await;
        let made = sigil::admin::clients::create(
            f.app.store.as_ref(),
            sigil::admin::clients::NewClient {
                realm: "customers".into(),
                client_id: "sneaky".into(),
                scopes: "balances:read".into(),
                audience: "ledger".into(),
                redirect_uris: vec!["https://app.example/cb https://evil.example/x".into()],
                public: true,
                ..Default::default()
            },
            f.clock.now(),
            "t",
        )
        .await;
        assert!(made.is_err(), "refused at registration");
        // A legacy row stored space-joined matches neither half.
        exec_raw(
            &f.app,
            "UPDATE clients SET redirect_uris = 'https://app.example/cb https://evil.example/x' WHERE client_id = 'mobile'",
        )
        .await
        .expect("legacy");
        let url = format!(
            "{}/oauth2/authorize?response_type=code&client_id=mobile&redirect_uri={}&code_challenge={}&code_challenge_method=S256",
            issuer(&f),
            urlencode("https://evil.example/x"),
            pkce().challenge
        );
        let res = browser().get(url).send().await.expect("authorize");
        assert_eq!(res.status(), 400);
        assert!(res.headers().get("location").is_none());
    }
}

/// Item 12: one passkey assertion posted many times at once opens one session.
#[tokio::test]
async fn one_assertion_opens_one_session() {
    for backend in backends() {
        let f = setup(backend).await;
        let s = f.app.store.as_ref();
        sigil::admin::users::create(
            s,
            &crate::helpers::unused_kek(),
            "customers",
            "carol",
            &[],
            &[],
            f.clock.now(),
            "t",
        )
        .await
        .expect("user");
        let mut key = crate::passkey::enrol(&f.app, &f.clock, "carol").await;
        let iss = issuer(&f);
        for trial in 0..3 {
            let b = browser();
            b.get(f.authorize_url("customers", "web", &pkce(), ""))
                .send()
                .await
                .expect("authorize");
            let page = b
                .get(format!("{iss}/login"))
                .send()
                .await
                .expect("l")
                .text()
                .await
                .expect("h");
            let csrf = field(&page, "csrf");
            let (_, options) = post_json(
                &b,
                format!("{iss}/login/passkey/options"),
                json!({"csrf": csrf}),
            )
            .await;
            let credential = key.assert(&options, &origin(&f.app));
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (b, url) = (b.clone(), format!("{iss}/login/passkey"));
                let body = json!({"csrf": csrf, "credential": credential});
                tasks.push(tokio::spawn(
                    async move { post_json(&b, url, body).await.0 },
                ));
            }
            let mut ok = 0;
            for t in tasks {
                if t.await.expect("join") == 200 {
                    ok += 1;
                }
            }
            assert_eq!(ok, 1, "trial {trial}: {ok} sessions from one assertion");
        }
        let u = s
            .user_by_name("customers", "carol")
            .await
            .expect("db")
            .expect("carol");
        assert_eq!(
            s.sessions_of("customers", &u.id).await.expect("db").len(),
            3
        );
    }
}

fn browser_from(addr: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(addr))
        .build()
        .expect("client")
}

/// Item 14: password checks flooded from rotating addresses do not shed a real user: each address
/// gets a fair share of the argon2 pool and the user waits briefly in the queue instead.
#[tokio::test]
async fn a_password_flood_from_rotating_addresses_does_not_shed_a_user() {
    for backend in backends() {
        let f = setup(backend).await;
        let iss = issuer(&f);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut flood = Vec::new();
        for i in 0..12u8 {
            let (stop, iss) = (stop.clone(), iss.clone());
            let url = f.authorize_url("customers", "web", &pkce(), "");
            flood.push(tokio::spawn(async move {
                let b = browser_from([127, 0, 1, 10 + i]);
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && statuses.len() < 60 {
                    b.get(&url).send().await.expect("authorize");
                    let page = b.get(format!("{iss}/login")).send().await.expect("l");
                    let html = page.text().await.expect("html");
                    if !html.contains(r#"name="csrf""#) {
                        statuses.push(429);
                        continue;
                    }
                    let res = b
                        .post(format!("{iss}/login"))
                        .form(&[
                            ("csrf", field(&html, "csrf").as_str()),
                            ("username", &format!("mallory{i}")),
                            ("password", "not the password"),
                            ("code", "000000"),
                        ])
                        .send()
                        .await
                        .expect("post");
                    statuses.push(res.status().as_u16());
                }
                statuses
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for attempt in 0..6 {
            let user = browser_from([127, 0, 2, 1]);
            f.clock.advance(30);
            let res = f
                .sign_in(&user, &pkce(), &totp::code_at(&f.secret, f.clock.now()))
                .await;
            assert_eq!(
                res.status(),
                303,
                "attempt {attempt} of the real user was shed"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut seen = Vec::new();
        for t in flood {
            seen.extend(t.await.expect("join"));
        }
        assert!(seen.contains(&401), "the flood did run: {seen:?}");
    }
}

/// Check-then-act on second factors, raced: one TOTP set-up confirmed by eight concurrent posts
/// is applied once; one recovery code posted by eight sign-ins at once opens one session.
#[tokio::test]
async fn second_factors_are_spent_once_under_concurrency() {
    for backend in backends() {
        let f = setup(backend).await;
        let iss = issuer(&f);
        let b = browser();
        let _ = tokens(&f, &b).await;
        let csrf = account_csrf(&f, &b).await;
        let page = b
            .post(format!("{iss}/account/totp"))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .expect("totp")
            .text()
            .await
            .expect("html");
        let secret = totp::base32_decode(crate::login::between(&page, r#"data-secret=""#, "\""))
            .expect("secret");
        let code = totp::code_at(&secret, f.clock.now());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (b, url) = (b.clone(), format!("{iss}/account/totp/confirm"));
            let form = [("csrf", csrf.clone()), ("code", code.clone())];
            tasks.push(tokio::spawn(async move {
                b.post(url)
                    .form(&form)
                    .send()
                    .await
                    .expect("confirm")
                    .status()
                    .as_u16()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.expect("join") == 200 {
                ok += 1;
            }
        }
        assert_eq!(ok, 1, "{ok} confirmations of one set-up");
        let replaced = f
            .app
            .audit()
            .await
            .iter()
            .filter(|r| r.kind == "user.totp_replaced")
            .count();
        assert_eq!(replaced, 1);

        // One recovery code, eight concurrent sign-ins (the account's fair share lets two reach
        // the check at once; of those, one spends the code).
        let rc = f.recovery[2].clone();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let b = browser();
            let url = f.authorize_url("customers", "web", &pkce(), "");
            b.get(&url).send().await.expect("authorize");
            let page = b
                .get(format!("{iss}/login"))
                .send()
                .await
                .expect("login")
                .text()
                .await
                .expect("html");
            let form = [
                ("csrf", field(&page, "csrf")),
                ("username", "alice".to_owned()),
                ("password", PASSWORD.to_owned()),
                ("code", rc.clone()),
            ];
            let url = format!("{iss}/login");
            tasks.push(tokio::spawn(async move {
                b.post(url)
                    .form(&form)
                    .send()
                    .await
                    .expect("post")
                    .status()
                    .as_u16()
            }));
        }
        let mut signed_in = 0;
        for t in tasks {
            if t.await.expect("join") == 303 {
                signed_in += 1;
            }
        }
        assert_eq!(signed_in, 1, "{signed_in} sign-ins with one recovery code");
    }
}
