//! Back-Channel Logout 1.0 on both stores, against a test relying party (an axum server that
//! records what it is sent): a session's end (RP-initiated logout, refresh reuse, a timeout
//! reached on use, an admin disable) sends one signed logout token to each app that had tokens in
//! that session and registered a URI, and to no other; an app that does not answer is retried with
//! back-off (the same `jti` each time) and is told once it answers; two server processes over one
//! database deliver each of many logouts exactly once.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use sigil::clock::Clock;
use sigil::identity::totp;

use crate::helpers::{
    backends, count_rows, count_rows_at, decode_part, exec_raw, exec_raw_at, spawn_node,
};
use crate::login::{Fixture, SIGNED_OUT, browser, setup};
use crate::logout::{logout_url, sign_in, signed_in};

/// What the test relying party was sent: (path, logout token), in order.
#[derive(Clone, Default)]
struct Rp {
    base: String,
    got: Arc<Mutex<Vec<(String, String)>>>,
    /// Answer 503 to this many requests first.
    fail_first: Arc<AtomicUsize>,
}

impl Rp {
    async fn start(fail_first: usize) -> Rp {
        let mut rp = Rp {
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        rp.base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .route("/bcl/{app}", post(receive))
            .with_state(rp.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rp
    }

    fn received(&self) -> Vec<(String, String)> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits (bounded) until `n` requests arrived.
    async fn wait_for(&self, n: usize) -> Vec<(String, String)> {
        for _ in 0..300 {
            if self.received().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = self.received();
        assert!(got.len() >= n, "expected {n} logout requests, got {got:?}");
        got
    }
}

async fn receive(
    State(rp): State<Rp>,
    axum::extract::Path(app): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> StatusCode {
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        "application/x-www-form-urlencoded"
    );
    let token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    rp.got.lock().expect("lock").push((app, token));
    let failing = rp
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Registers back-channel logout URIs for both of the fixture's apps (as an operator would with
/// `--backchannel-logout-uri`); only `mobile` signs users in in these tests.
async fn register(f: &Fixture, rp: &Rp) {
    for app in ["mobile", "web"] {
        exec_raw(
            &f.app,
            &format!(
                "UPDATE clients SET backchannel_logout_uri = '{}/bcl/{app}' WHERE client_id = '{app}'",
                rp.base
            ),
        )
        .await
        .expect("register");
    }
}

fn claims_of(token: &str) -> (Value, Value) {
    (decode_part(token, 0), decode_part(token, 1))
}

async fn audit_kinds(f: &Fixture, kind: &str) -> Vec<Value> {
    f.app
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == kind)
        .map(|r| serde_json::from_str(&r.detail).expect("detail"))
        .collect()
}

#[tokio::test]
async fn a_logout_tells_each_app_that_had_tokens_in_the_session_once() {
    for backend in backends() {
        let f = setup(backend).await;
        let rp = Rp::start(0).await;
        register(&f, &rp).await;
        let issuer = f.app.issuer("customers");
        let doc: Value = f
            .app
            .http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .expect("discovery")
            .json()
            .await
            .expect("json");
        assert_eq!(doc["backchannel_logout_supported"], true);
        assert_eq!(doc["backchannel_logout_session_supported"], true);

        let b = browser();
        let t = sign_in(&f, &b).await;
        let id = decode_part(&t.id, 1);
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

        let got = rp.wait_for(1).await;
        let (path, token) = &got[0];
        assert_eq!(path, "mobile", "only the app with tokens in the session");
        let (header, claims) = claims_of(token);
        assert_eq!(header["typ"], "logout+jwt");
        assert_eq!(header["alg"], "ES256");
        let kids: Vec<Value> = f
            .app
            .http
            .get(format!("{issuer}/jwks"))
            .send()
            .await
            .expect("jwks")
            .json::<Value>()
            .await
            .expect("json")["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].clone())
            .collect();
        assert!(kids.contains(&header["kid"]), "signed with a published key");
        assert_eq!(claims["iss"], issuer);
        assert_eq!(claims["aud"], "mobile");
        assert_eq!(claims["sid"], id["sid"]);
        assert_eq!(claims["sub"], id["sub"]);
        assert!(claims.get("nonce").is_none());
        assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
        assert_eq!(
            claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
            120
        );
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));

        // Settled and audited once; nothing more is sent.
        for _ in 0..100 {
            if count_rows(&f.app, "SELECT COUNT(*) FROM logout_outbox").await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(rp.received().len(), 1);
        assert_eq!(
            count_rows(&f.app, "SELECT COUNT(*) FROM logout_outbox").await,
            0
        );
        assert_eq!(
            count_rows(&f.app, "SELECT COUNT(*) FROM session_clients").await,
            0
        );
        let delivered = audit_kinds(&f, "logout.backchannel_delivered").await;
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0]["client_id"], "mobile");
        assert_eq!(delivered[0]["sid"], id["sid"]);
        let all = serde_json::to_string(
            &f.app
                .audit()
                .await
                .iter()
                .map(|r| &r.detail)
                .collect::<Vec<_>>(),
        )
        .expect("json");
        assert!(!all.contains(token.as_str()), "the token is never audited");
    }
}

#[tokio::test]
async fn an_app_that_does_not_answer_is_retried_with_backoff_until_it_does() {
    for backend in backends() {
        let f = setup(backend).await;
        let rp = Rp::start(2).await;
        register(&f, &rp).await;
        let b = browser();
        let t = sign_in(&f, &b).await;
        let sid = decode_part(&t.id, 1)["sid"]
            .as_str()
            .expect("sid")
            .to_owned();

        // A refresh token presented twice: the family is revoked and the session ends.
        let (status, _) = f.refresh(&t.refresh).await;
        assert_eq!(status, 200);
        let (status, body) = f.refresh(&t.refresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert!(!signed_in(&f, &b).await, "the reused token's session ended");
        assert_eq!(
            count_rows(
                &f.app,
                &format!("SELECT COUNT(*) FROM revocations WHERE kind = 'sid' AND value = '{sid}'")
            )
            .await,
            1,
            "and its sid is in the feed"
        );

        // First attempt: 503. The retry waits 2 s (of the server's clock), then 4 s.
        rp.wait_for(1).await;
        let mut failed = Vec::new();
        for _ in 0..100 {
            failed = audit_kinds(&f, "logout.backchannel_failed").await;
            if !failed.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rp.received().len(), 1, "not retried before it is due");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["reason"], "status_503");
        assert_eq!(
            failed[0]["next_attempt_at"].as_i64(),
            Some(f.clock.now() + 2)
        );
        f.clock.advance(2);
        rp.wait_for(2).await;
        // Advance only once the second failure is settled (received is not yet recorded): its
        // retry time is counted from the clock when it is.
        let mut failed = Vec::new();
        for _ in 0..100 {
            failed = audit_kinds(&f, "logout.backchannel_failed").await;
            if failed.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(failed.len(), 2);
        let due = failed[1]["next_attempt_at"].as_i64().expect("next attempt");
        assert_eq!(due, f.clock.now() + 4, "the second wait is twice the first");
        f.clock.advance(4);
        let got = rp.wait_for(3).await;
        let jtis: Vec<Value> = got
            .iter()
            .map(|(_, t)| claims_of(t).1["jti"].clone())
            .collect();
        assert!(
            jtis.iter().all(|j| *j == jtis[0]),
            "one logout, one jti: {jtis:?}"
        );
        for _ in 0..40 {
            if count_rows(&f.app, "SELECT COUNT(*) FROM logout_outbox").await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            count_rows(&f.app, "SELECT COUNT(*) FROM logout_outbox").await,
            0
        );
        assert_eq!(audit_kinds(&f, "logout.backchannel_failed").await.len(), 2);
        let delivered = audit_kinds(&f, "logout.backchannel_delivered").await;
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0]["attempts"], 3);
        f.clock.advance(600);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rp.received().len(), 3, "delivered means done");
    }
}

#[tokio::test]
async fn a_timeout_reached_on_use_and_an_admin_disable_end_the_session_for_the_app_too() {
    for backend in backends() {
        let f = setup(backend).await;
        let rp = Rp::start(0).await;
        register(&f, &rp).await;
        let b = browser();

        // Idle past the realm's timeout (an hour), then the app refreshes: the session ends.
        let t = sign_in(&f, &b).await;
        let first_sid = decode_part(&t.id, 1)["sid"].clone();
        f.clock.advance(3601);
        let (status, body) = f.refresh(&t.refresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let got = rp.wait_for(1).await;
        assert_eq!(claims_of(&got[0].1).1["sid"], first_sid);
        assert_eq!(audit_kinds(&f, "session.expired").await.len(), 1);

        // An operator disables her: every session ends, and the app is told without any request
        // to this node (the delivery task looks at the outbox on its own).
        let t = sign_in(&f, &browser()).await;
        let second_sid = decode_part(&t.id, 1)["sid"].clone();
        sigil::admin::users::set_enabled(
            f.app.store.as_ref(),
            "customers",
            "alice",
            None,
            false,
            f.clock.now(),
            "cli",
        )
        .await
        .expect("disable");
        let got = rp.wait_for(2).await;
        assert_eq!(claims_of(&got[1].1).1["sid"], second_sid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rp.received().len(), 2);
    }
}

#[tokio::test]
async fn a_code_redeemed_after_its_session_ended_issues_nothing() {
    for backend in backends() {
        let f = setup(backend).await;
        let b = browser();
        f.clock.advance(31);
        let p = crate::login::pkce();
        let res = f
            .sign_in(&b, &p, &totp::code_at(&f.secret, f.clock.now()))
            .await;
        let code = crate::login::query_param(&crate::login::location(&res), "code").expect("code");
        // The session ends between the code's issue and its redemption.
        let hash = count_rows(&f.app, "SELECT COUNT(*) FROM sessions").await;
        assert_eq!(hash, 1);
        exec_raw(&f.app, "DELETE FROM sessions").await.expect("end");
        let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(
            count_rows(&f.app, "SELECT COUNT(*) FROM refresh_tokens").await,
            0
        );
        assert_eq!(
            count_rows(&f.app, "SELECT COUNT(*) FROM session_clients").await,
            0
        );
    }
}

fn sigil(db: &str, kek: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["--database-url", db, "--kek-file"])
        .arg(kek)
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn two_server_processes_deliver_each_of_many_logouts_exactly_once() {
    const SESSIONS: usize = 60;
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let fresh = crate::helpers::fresh_database(backend, dir.path()).await;
        let db = fresh.url.clone();
        let kek = dir.path().join("kek");
        let rp = Rp::start(0).await;
        sigil(&db, &kek, &["realm", "create", "customers"]);
        for app in ["web", "portal"] {
            sigil(
                &db,
                &kek,
                &[
                    "client",
                    "create",
                    "--realm",
                    "customers",
                    "--id",
                    app,
                    "--scope",
                    "balances:read",
                    "--audience",
                    "ledger",
                    "--redirect-uri",
                    "https://app.example/cb",
                    "--backchannel-logout-uri",
                    &format!("{}/bcl/{app}", rp.base),
                ],
            );
        }
        sigil(
            &db,
            &kek,
            &[
                "user",
                "create",
                "--realm",
                "customers",
                "--username",
                "carol",
            ],
        );
        // Sessions as sign-ins leave them (the sign-in pages are tested elsewhere): each with
        // tokens for both apps.
        for i in 0..SESSIONS {
            exec_raw_at(
                backend,
                &db,
                &format!(
                    "INSERT INTO sessions (id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr) \
                     SELECT 'h{i}', realm, id, 's{i}', 1, 1, 1, 'pwd otp', 'x' FROM users WHERE username = 'carol'"
                ),
            )
            .await
            .expect("session");
            for app in ["web", "portal"] {
                exec_raw_at(
                    backend,
                    &db,
                    &format!(
                        "INSERT INTO session_clients (realm, sid, client_id, created_at) VALUES ('customers', 's{i}', '{app}', 1)"
                    ),
                )
                .await
                .expect("session client");
            }
        }
        let _a = spawn_node(&db, &kek, &[("SIGIL_LOGOUT_POLL_MS", "50")]);
        let _b = spawn_node(&db, &kek, &[("SIGIL_LOGOUT_POLL_MS", "50")]);
        // The CLI ends every session; both nodes find the outbox on their own and race for it.
        sigil(
            &db,
            &kek,
            &[
                "user",
                "disable",
                "--realm",
                "customers",
                "--username",
                "carol",
            ],
        );
        let got = rp.wait_for(2 * SESSIONS).await;
        for _ in 0..100 {
            if count_rows_at(backend, &db, "SELECT COUNT(*) FROM logout_outbox").await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        let got_after = rp.received();
        assert_eq!(got_after.len(), got.len(), "nothing arrives twice later");
        let mut per: HashMap<(String, String), usize> = HashMap::new();
        for (app, token) in &got_after {
            let sid = claims_of(token).1["sid"].as_str().expect("sid").to_owned();
            *per.entry((app.clone(), sid)).or_default() += 1;
        }
        assert_eq!(per.len(), 2 * SESSIONS, "every (session, app) told");
        assert!(
            per.values().all(|n| *n == 1),
            "each exactly once: {:?}",
            per.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
        assert_eq!(
            count_rows_at(backend, &db, "SELECT COUNT(*) FROM logout_outbox").await,
            0
        );
        assert_eq!(
            count_rows_at(
                backend,
                &db,
                "SELECT COUNT(*) FROM audit_log WHERE kind = 'logout.backchannel_delivered'"
            )
            .await,
            2 * SESSIONS as i64
        );
    }
}

#[tokio::test]
async fn concurrent_claims_never_hand_one_logout_to_two_nodes() {
    for backend in backends() {
        // The server's own delivery task stays out of the way (it looks once, at start).
        let app =
            crate::helpers::spawn_app_with(backend, None, |c| c.logout_poll_ms = 60_000).await;
        let now = app.now();
        for i in 0..200 {
            exec_raw(
                &app,
                &format!(
                    "INSERT INTO logout_outbox (realm, client_id, uri, sid, sub, created_at, next_attempt_at) \
                     VALUES ('r', 'c', 'https://rp.example/bcl', 's{i}', 'u', {now}, {now})"
                ),
            )
            .await
            .expect("insert");
        }
        let mut seen: HashMap<i64, String> = HashMap::new();
        for round in 0..40 {
            let claims = (0..16).map(|n| {
                let store = app.store.clone();
                let owner = format!("node-{round}-{n}");
                tokio::spawn(async move {
                    let got = store
                        .claim_logouts(&owner, now, 60, 8)
                        .await
                        .expect("claim");
                    (owner, got)
                })
            });
            for handle in claims.collect::<Vec<_>>() {
                let (owner, got) = handle.await.expect("task");
                for d in got {
                    assert_eq!(d.attempts, 1, "claimed once");
                    if let Some(first) = seen.insert(d.id, owner.clone()) {
                        panic!("logout {} claimed by {first} and {owner}", d.id);
                    }
                }
            }
            if seen.len() == 200 {
                break;
            }
        }
        assert_eq!(seen.len(), 200, "every due logout is claimed");
        // Leased: not claimable again until the lease ends.
        let again = app
            .store
            .claim_logouts("late", now, 60, 500)
            .await
            .expect("claim");
        assert!(again.is_empty());
        let after_lease = app
            .store
            .claim_logouts("late", now + 60, 60, 500)
            .await
            .expect("claim");
        assert_eq!(after_lease.len(), 200);
    }
}

/// A code redeemed at the moment its session ends: either the redemption loses (nothing issued)
/// or the ending session sees the app and tells it. Never tokens issued to an app that is not
/// told.
#[tokio::test]
async fn a_redemption_racing_the_end_of_its_session_is_never_left_untold() {
    use sigil::store::login::{CodeSpend, RefreshRecord};
    const PAIRS: usize = 40;
    for backend in backends() {
        let app =
            crate::helpers::spawn_app_with(backend, None, |c| c.logout_poll_ms = 60_000).await;
        let now = app.now();
        let s = app.store.as_ref();
        app.create_realm("customers", sigil::keys::Alg::ES256).await;
        sign_in_client(&app, "web", "https://app.example/bcl").await;
        let user = sigil::admin::users::create(
            s,
            &crate::helpers::unused_kek(),
            "customers",
            "dave",
            &[],
            &[],
            now,
            "t",
        )
        .await
        .expect("user");
        for i in 0..PAIRS {
            exec_raw(
                &app,
                &format!(
                    "INSERT INTO sessions (id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr) \
                     VALUES ('h{i}', 'customers', '{}', 's{i}', {now}, {now}, {now}, 'pwd otp', 'x')",
                    user.id
                ),
            )
            .await
            .expect("session");
            s.put_code(
                &format!("c{i}"),
                "customers",
                "{}",
                &format!("f{i}"),
                now + 60,
            )
            .await
            .expect("code");
        }
        let mut tasks = Vec::new();
        for i in 0..PAIRS {
            let store = app.store.clone();
            let uid = user.id.clone();
            tasks.push(tokio::spawn(async move {
                let refresh = RefreshRecord {
                    token_hash: format!("r{i}"),
                    realm: "customers".into(),
                    family: format!("f{i}"),
                    user_id: uid,
                    client_id: "web".into(),
                    data: format!(r#"{{"sid":"s{i}"}}"#),
                    expires_at: now + 3600,
                    used_at: None,
                    revoked_at: None,
                };
                let spent = store
                    .consume_code(
                        &format!("c{i}"),
                        "customers",
                        now,
                        &refresh,
                        &format!("s{i}"),
                        &[],
                    )
                    .await
                    .expect("consume");
                (i, Some(spent))
            }));
            let store = app.store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .end_session(&format!("h{i}"), "customers", now, &[])
                    .await
                    .expect("end");
                (i, None)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        let mut issued = 0;
        for (i, spent) in results {
            let Some(spent) = spent else { continue };
            let told = count_rows(
                &app,
                &format!(
                    "SELECT COUNT(*) FROM logout_outbox WHERE sid = 's{i}' AND client_id = 'web'"
                ),
            )
            .await;
            let tokens = count_rows(
                &app,
                &format!("SELECT COUNT(*) FROM refresh_tokens WHERE family = 'f{i}'"),
            )
            .await;
            match spent {
                CodeSpend::Issued => {
                    issued += 1;
                    assert_eq!((told, tokens), (1, 1), "pair {i}: issued, so told");
                }
                CodeSpend::SessionEnded => {
                    assert_eq!((told, tokens), (0, 0), "pair {i}: nothing issued")
                }
                CodeSpend::Spent => panic!("pair {i}: a fresh code was spent"),
            }
        }
        assert_eq!(count_rows(&app, "SELECT COUNT(*) FROM sessions").await, 0);
        assert_eq!(
            count_rows(&app, "SELECT COUNT(*) FROM session_clients").await,
            0
        );
        println!("{backend:?}: {issued} of {PAIRS} redemptions won the race");
    }
}

/// Creates `user` with `n` sessions (as sign-ins leave them), each with tokens for `app`.
async fn sessions_with_tokens(app: &crate::helpers::TestApp, user: &str, client: &str, n: usize) {
    let s = app.store.as_ref();
    let u = sigil::admin::users::create(
        s,
        &crate::helpers::unused_kek(),
        "customers",
        user,
        &[],
        &[],
        app.now(),
        "t",
    )
    .await
    .expect("user");
    let now = app.now();
    let series =
        format!("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n})");
    exec_raw(
        app,
        &format!(
            "{series} INSERT INTO sessions (id_hash, realm, user_id, sid, created_at, last_seen, auth_time, amr, acr) \
             SELECT '{user}-h' || i, 'customers', '{}', '{user}-s' || i, {now}, {now}, {now}, 'pwd otp', 'x' FROM c",
            u.id
        ),
    )
    .await
    .expect("sessions");
    exec_raw(
        app,
        &format!(
            "{series} INSERT INTO session_clients (realm, sid, client_id, created_at) \
             SELECT 'customers', '{user}-s' || i, '{client}', {now} FROM c"
        ),
    )
    .await
    .expect("session clients");
}

async fn sign_in_client(app: &crate::helpers::TestApp, id: &str, backchannel: &str) {
    sigil::admin::clients::create(
        app.store.as_ref(),
        sigil::admin::clients::NewClient {
            realm: "customers".into(),
            client_id: id.into(),
            scopes: "balances:read".into(),
            audience: "ledger".into(),
            redirect_uris: vec!["https://app.example/cb".into()],
            backchannel_logout_uri: Some(backchannel.into()),
            ..Default::default()
        },
        app.now(),
        "t",
    )
    .await
    .expect("client");
}

/// An app that accepts connections and never answers holds up nobody else: after its first
/// logouts time out, its others wait for its retry time unsent, and another app's logout goes out
/// within a timeout or so.
#[tokio::test]
async fn a_hung_app_does_not_hold_up_the_others() {
    for backend in backends() {
        let app = crate::helpers::spawn_app_with(backend, None, |c| c.logout_poll_ms = 100).await;
        app.create_realm("customers", sigil::keys::Alg::ES256).await;
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hung_at = hung.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = hung.accept().await {
                held.push(sock);
            }
        });
        let rp = Rp::start(0).await;
        sign_in_client(&app, "slow", &format!("http://{hung_at}/bcl")).await;
        sign_in_client(&app, "fast", &format!("{}/bcl/fast", rp.base)).await;
        sessions_with_tokens(&app, "bob", "slow", 150).await;
        sessions_with_tokens(&app, "carol", "fast", 1).await;
        let s = app.store.as_ref();
        sigil::admin::users::set_enabled(s, "customers", "bob", None, false, app.now(), "t")
            .await
            .expect("disable bob");
        let started = tokio::time::Instant::now();
        sigil::admin::users::set_enabled(s, "customers", "carol", None, false, app.now(), "t")
            .await
            .expect("disable carol");
        rp.wait_for(1).await;
        let took = started.elapsed();
        println!(
            "{backend:?}: the healthy app was told after {took:?}, behind 150 logouts to a hung one"
        );
        assert!(
            took < Duration::from_secs(12),
            "the healthy app waited {took:?}"
        );
        // The hung app's logouts were deferred, not spent: none used up its attempts.
        assert_eq!(
            count_rows(
                &app,
                "SELECT COUNT(*) FROM logout_outbox WHERE client_id = 'slow' AND attempts > 2"
            )
            .await,
            0
        );
    }
}

/// A realm's revocation entries commit in sequence order (PostgreSQL serialises their writers
/// per realm), so a validator's cursor can never pass an entry that commits later: an entry
/// written while a long sign-out is in flight gets a sequence number after all of that sign-out's.
#[tokio::test]
async fn entries_of_a_realm_commit_in_sequence_order() {
    for backend in backends() {
        let app =
            crate::helpers::spawn_app_with(backend, None, |c| c.logout_poll_ms = 60_000).await;
        app.create_realm("customers", sigil::keys::Alg::ES256).await;
        sign_in_client(&app, "web", "https://app.example/bcl").await;
        sessions_with_tokens(&app, "bob", "web", 1500).await;
        let store = app.store.clone();
        let now = app.now();
        let long = tokio::spawn(async move {
            sigil::admin::users::set_enabled(
                store.as_ref(),
                "customers",
                "bob",
                None,
                false,
                now,
                "t",
            )
            .await
            .expect("disable bob")
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        app.store
            .revoke_access_token("jti-hash", "jti-carol", "customers", now + 600, now, &[])
            .await
            .expect("revoke");
        long.await.expect("task");
        let carol = count_rows(
            &app,
            "SELECT seq FROM revocations WHERE value = 'jti-carol'",
        )
        .await;
        let bob_max = count_rows(
            &app,
            "SELECT MAX(seq) FROM revocations WHERE kind IN ('sid', 'sub')",
        )
        .await;
        let bob_min = count_rows(&app, "SELECT MIN(seq) FROM revocations WHERE kind = 'sid'").await;
        println!(
            "{backend:?}: sign-out entries {bob_min}..={bob_max}, the revocation in between: {carol}"
        );
        assert!(
            carol > bob_max || carol < bob_min,
            "an entry committed first but numbered inside a later commit: {carol} in {bob_min}..={bob_max}"
        );
    }
}

/// Sessions nobody comes back to after their realm's idle timeout are ended by the sweep: their
/// `sid`s reach the feed and their apps are told, while live sessions stay.
#[tokio::test]
async fn lapsed_sessions_are_swept_and_their_apps_told() {
    for backend in backends() {
        let clock = sigil::clock::MockClock::new(1_800_000_000);
        let app = crate::helpers::spawn_app_with(backend, Some(clock.clone()), |c| {
            c.session_sweep_secs = 1;
            c.logout_poll_ms = 100;
        })
        .await;
        app.create_realm("customers", sigil::keys::Alg::ES256).await;
        let rp = Rp::start(0).await;
        sign_in_client(&app, "web", &format!("{}/bcl/web", rp.base)).await;
        sessions_with_tokens(&app, "frank", "web", 3).await;
        clock.advance(3601); // past the default idle timeout (an hour)
        sessions_with_tokens(&app, "erin", "web", 2).await; // fresh: stay
        let got = rp.wait_for(3).await;
        let mut sids: Vec<String> = got
            .iter()
            .map(|(_, t)| claims_of(t).1["sid"].as_str().expect("sid").to_owned())
            .collect();
        sids.sort();
        assert_eq!(sids, ["frank-s1", "frank-s2", "frank-s3"]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(rp.received().len(), 3, "the live sessions are not ended");
        assert_eq!(count_rows(&app, "SELECT COUNT(*) FROM sessions").await, 2);
        assert_eq!(
            count_rows(
                &app,
                "SELECT COUNT(*) FROM revocations WHERE kind = 'sid' AND value LIKE 'frank-%'"
            )
            .await,
            3
        );
        let expired = app
            .audit()
            .await
            .into_iter()
            .filter(|r| r.kind == "session.expired")
            .count();
        assert_eq!(expired, 3);
    }
}
