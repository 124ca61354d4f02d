//! The revocation feed end to end, on both stores: a resource server's validator reads Sigil's
//! `/realms/{realm}/revocations` in the background and refuses, within the poll interval plus a
//! second and with no call per request, (a) a customer's token after she signs out everywhere,
//! (b) after `user disable`, (c) a service's token revoked with RFC 7009, (d) every token of a
//! disabled client. Each propagation time is measured and printed. The feed itself: only for
//! clients registered with `--introspect`; a tampered, replayed or re-aimed page is refused, and a
//! feed that stops answering fails closed after the stale period.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sigil::clock::{Clock, MockClock};
use sigil::identity::totp;
use sigil_validator::{ErrorKind, Validator};
use tokio::time::Instant;

use crate::helpers::{Client, TestApp, backends};
use crate::login::{browser, location, pkce, query_param, setup};

const POLL: Duration = Duration::from_millis(250);

async fn resource_server(app: &TestApp) -> Client {
    app.create_resource_server("customers", "ledger-rs").await
}

async fn validator(
    app: &TestApp,
    clock: &MockClock,
    rs: &Client,
    feed_url: Option<&str>,
) -> Result<Validator, sigil_validator::Error> {
    let c = clock.clone();
    let mut b = Validator::builder(app.issuer("customers"), "ledger")
        .clock(move || c.now())
        .revocation_feed(&rs.id, &rs.secret)
        .revocation_poll_interval(POLL)
        .revocation_stale_period(Duration::from_secs(60));
    if let Some(url) = feed_url {
        b = b.revocation_feed_url(url);
    }
    b.build().await
}

/// Waits (bounded) until `token` is refused as revoked; returns how long that took.
async fn refused_within(v: &Validator, token: &str, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        match v.validate(token).await {
            Err(e) if *e.kind() == ErrorKind::Revoked => break,
            Err(e) => panic!("{what}: refused for another reason: {e}"),
            Ok(_) => {}
        }
        assert!(
            started.elapsed() < POLL + Duration::from_secs(1),
            "{what}: still accepted after the poll interval + 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    println!(
        "revocation feed propagation, {what}: {} ms",
        took.as_millis()
    );
    took
}

#[tokio::test]
async fn revocations_reach_a_validator_within_the_poll_interval() {
    for backend in backends() {
        let f = setup(backend).await;
        let app = &f.app;
        let rs = resource_server(app).await;
        let svc = app
            .create_client("customers", "svc", "balances:read", "ledger")
            .await;
        let v = validator(app, &f.clock, &rs, None)
            .await
            .expect("validator");
        let sign_in = || async {
            f.clock.advance(31);
            let p = pkce();
            let res = f
                .sign_in(&browser(), &p, &totp::code_at(&f.secret, f.clock.now()))
                .await;
            let code = query_param(&location(&res), "code").expect("code");
            let (status, body) = f.redeem("mobile", &code, &p.verifier).await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().expect("at").to_owned()
        };
        let s = app.store.as_ref();

        // (a) Sign out everywhere.
        let token = sign_in().await;
        v.validate(&token).await.expect("accepted before");
        sigil::admin::users::sign_out_everywhere(s, "customers", "alice", f.clock.now(), "t")
            .await
            .expect("sign out");
        refused_within(&v, &token, "global sign-out").await;

        // (b) The user disabled (then enabled again: her next sign-in works).
        let token = sign_in().await;
        v.validate(&token).await.expect("a new session is fine");
        sigil::admin::users::set_enabled(s, "customers", "alice", None, false, f.clock.now(), "t")
            .await
            .expect("disable");
        refused_within(&v, &token, "user disabled").await;
        assert_eq!(
            crate::helpers::count_rows(
                app,
                "SELECT COUNT(*) FROM revocations WHERE kind = 'sub' AND value = \
                 (SELECT id FROM users WHERE username = 'alice')"
            )
            .await,
            1,
            "the user's every token, with or without a session"
        );
        sigil::admin::users::set_enabled(s, "customers", "alice", None, true, f.clock.now(), "t")
            .await
            .expect("enable");

        // (c) A service's token revoked by its client (RFC 7009); another token of it still works.
        let revoked = app.token("customers", &svc, None).await;
        let kept = app.token("customers", &svc, None).await;
        v.validate(&revoked).await.expect("accepted before");
        let res = app
            .http
            .post(format!("{}/oauth2/revoke", app.issuer("customers")))
            .basic_auth(&svc.id, Some(&svc.secret))
            .form(&[("token", revoked.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(res.status(), 200);
        refused_within(&v, &revoked, "RFC 7009 revocation").await;
        v.validate(&kept).await.expect("the other token");

        // (d) The client disabled: every token it had; once enabled again, new tokens work.
        sigil::admin::clients::set_enabled(s, "customers", "svc", None, false, f.clock.now(), "t")
            .await
            .expect("disable");
        refused_within(&v, &kept, "client disabled").await;
        sigil::admin::clients::set_enabled(s, "customers", "svc", None, true, f.clock.now(), "t")
            .await
            .expect("enable");
        f.clock.advance(1);
        let fresh = app.token("customers", &svc, None).await;
        tokio::time::sleep(POLL * 2).await;
        v.validate(&fresh)
            .await
            .expect("a token issued after the client came back");
        let (entries, cursor) = v.revocations();
        assert!(entries >= 4, "{entries} entries, cursor {cursor}");

        // Who may read the feed.
        let feed = format!("{}/revocations", app.issuer("customers"));
        let status = |req: reqwest::RequestBuilder| async move {
            req.send().await.expect("feed").status().as_u16()
        };
        assert_eq!(status(app.http.get(&feed)).await, 401);
        assert_eq!(
            status(app.http.get(&feed).basic_auth(&svc.id, Some(&svc.secret))).await,
            403
        );
        assert_eq!(
            status(app.http.get(&feed).basic_auth(&rs.id, Some("wrong"))).await,
            401
        );
        assert_eq!(
            status(
                app.http
                    .get(format!("{feed}?after=-1"))
                    .basic_auth(&rs.id, Some(&rs.secret))
            )
            .await,
            400
        );
        // Credentials in the URL (proxies and access logs keep URLs) are refused.
        let in_url = format!("{feed}?client_id={}&client_secret={}", rs.id, rs.secret);
        assert_eq!(status(app.http.get(in_url)).await, 400);

        // A backlog of more entries than a page still settling (young) does not hold back a
        // revocation behind it: the validator reads on by sequence number.
        let token = sign_in().await;
        tokio::time::sleep(POLL * 3).await;
        v.validate(&token).await.expect("accepted before");
        let young = f.clock.now();
        crate::helpers::exec_raw(
            app,
            &format!(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 25000) \
                 INSERT INTO revocations (realm, kind, value, not_before, created_at, expires_at) \
                 SELECT 'customers', 'jti', 'backlog-' || i, {young}, {young}, {} FROM c",
                young + 3600
            ),
        )
        .await
        .expect("backlog");
        sigil::admin::users::sign_out_everywhere(s, "customers", "alice", f.clock.now(), "t")
            .await
            .expect("sign out");
        refused_within(&v, &token, "behind 25,000 unsettled entries").await;
        let page = app
            .http
            .get(&feed)
            .basic_auth(&rs.id, Some(&rs.secret))
            .send()
            .await
            .expect("feed");
        assert_eq!(page.headers()["cache-control"], "no-store");
        let jws = page.text().await.expect("page");
        assert_eq!(
            crate::helpers::decode_part(&jws, 0)["typ"],
            "revocations+jwt"
        );

        // Pages through a hostile middlebox: tampered, replayed later, answering another cursor,
        // or not answering at all.
        tampered_and_replayed_pages_are_refused(app, &f.clock, &rs, &feed).await;
    }
}

/// 0 = pass through, 1 = flip a payload byte, 2 = replay the first page seen, 3 = 503.
struct Middlebox {
    upstream: String,
    mode: AtomicU8,
    first: std::sync::Mutex<Option<String>>,
    http: reqwest::Client,
}

async fn middlebox(
    State(m): State<Arc<Middlebox>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let url = format!("{}?{}", m.upstream, uri.query().unwrap_or(""));
    let mut req = m.http.get(url);
    if let Some(a) = headers.get("authorization") {
        req = req.header("authorization", a.clone());
    }
    let body = req
        .send()
        .await
        .expect("upstream")
        .text()
        .await
        .expect("body");
    let mut first = m.first.lock().expect("lock");
    let first = first.get_or_insert_with(|| body.clone()).clone();
    match m.mode.load(Ordering::SeqCst) {
        1 => {
            let (h, rest) = body.split_once('.').expect("jws");
            let (p, sig) = rest.split_once('.').expect("jws");
            let mut p = p.to_owned().into_bytes();
            p[10] = if p[10] == b'A' { b'B' } else { b'A' };
            format!("{h}.{}.{sig}", String::from_utf8(p).expect("ascii")).into_response()
        }
        2 => first.into_response(),
        3 => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
        _ => body.into_response(),
    }
}

async fn tampered_and_replayed_pages_are_refused(
    app: &TestApp,
    clock: &MockClock,
    rs: &Client,
    feed: &str,
) {
    let m = Arc::new(Middlebox {
        upstream: feed.to_owned(),
        mode: AtomicU8::new(1),
        first: std::sync::Mutex::new(None),
        http: reqwest::Client::new(),
    });
    let router = Router::new()
        .route("/feed", get(middlebox))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/feed", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });

    // A tampered page does not verify: the validator is not built on it.
    let err = validator(app, clock, rs, Some(&url))
        .await
        .expect_err("tampered");
    assert!(matches!(err.kind(), ErrorKind::Feed(_)), "{err}");
    // Passed through, it works; a service token validates.
    m.mode.store(0, Ordering::SeqCst);
    *m.first.lock().expect("lock") = None;
    let v = validator(app, clock, rs, Some(&url))
        .await
        .expect("validator");
    // The first page replayed later (to hide what came since): refused as stale or for another
    // cursor, and the list held so far is kept meanwhile.
    m.mode.store(2, Ordering::SeqCst);
    clock.advance(61);
    let err = v.poll_revocations().await.expect_err("replayed");
    assert!(matches!(err.kind(), ErrorKind::Feed(_)), "{err}");
    // The feed stops answering: after the stale period (60 s here) every token is refused.
    m.mode.store(3, Ordering::SeqCst);
    assert!(v.poll_revocations().await.is_err());
    clock.advance(61);
    let token_of_anyone = app
        .token(
            "customers",
            &app.create_client("customers", "svc2", "balances:read", "ledger")
                .await,
            None,
        )
        .await;
    let err = v.validate(&token_of_anyone).await.expect_err("stale list");
    assert_eq!(*err.kind(), ErrorKind::RevocationsUnavailable);
    // It answers again: the validator recovers by itself (at its next successful poll; a poll
    // here carries some 25,000 entries through the middlebox, so allow for a loaded machine).
    m.mode.store(0, Ordering::SeqCst);
    let started = Instant::now();
    while let Err(e) = v.validate(&token_of_anyone).await {
        assert_eq!(*e.kind(), ErrorKind::RevocationsUnavailable, "{e}");
        assert!(started.elapsed() < Duration::from_secs(15), "not recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every page from `after` on; the entries' sequence numbers and the last cursor.
async fn read_all(app: &TestApp, rs: &Client, mut after: i64) -> (Vec<i64>, i64) {
    let feed = format!("{}/revocations", app.issuer("customers"));
    let mut seqs = Vec::new();
    for _ in 0..20 {
        let jws = app
            .http
            .get(format!("{feed}?after={after}"))
            .basic_auth(&rs.id, Some(&rs.secret))
            .send()
            .await
            .expect("feed")
            .text()
            .await
            .expect("page");
        let page = crate::helpers::decode_part(&jws, 1);
        assert_eq!(page["after"], after);
        let entries = page["entries"].as_array().expect("entries");
        assert!(entries.len() <= 20_000);
        seqs.extend(entries.iter().map(|e| e["seq"].as_i64().expect("seq")));
        let next = page["next"].as_i64().expect("next");
        if !page["more"].as_bool().expect("more") || next == after {
            return (seqs, next);
        }
        after = next;
    }
    panic!("the feed never ended");
}

/// The settled bulk is served from memory and the young tail from the database: paged from
/// nothing, every live entry comes once and in order, expired ones never; entries added later
/// (young, then settled, then expired) come exactly as the database says across refreshes.
#[tokio::test]
async fn a_large_feed_pages_every_live_entry_once_in_order_across_refreshes() {
    for backend in backends() {
        let clock = MockClock::new(1_800_000_000);
        let app = crate::helpers::spawn_app_with(backend, Some(clock.clone()), |_| {}).await;
        app.create_realm("customers", sigil::keys::Alg::ES256).await;
        let rs = resource_server(&app).await;
        let now = clock.now();
        let insert = |from: i64, to: i64, created: i64, exp_of: &'static str| {
            format!(
                "WITH RECURSIVE c(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM c WHERE i < {to}) \
                 INSERT INTO revocations (realm, kind, value, not_before, created_at, expires_at) \
                 SELECT 'customers', 'jti', 'e-' || i, {created}, {created}, {exp_of} FROM c"
            )
        };
        // 45,000 settled entries; every seventh already expired.
        crate::helpers::exec_raw(
            &app,
            &insert(
                1,
                45_000,
                now - 60,
                "CASE WHEN i % 7 = 0 THEN 1 ELSE 1900000000 END",
            ),
        )
        .await
        .expect("bulk");
        // Every seventh of the bulk expired; none of the young entries (above 45,000) yet.
        let live = |seqs: &[i64]| -> Vec<i64> {
            seqs.iter()
                .copied()
                .filter(|s| *s > 45_000 || s % 7 != 0)
                .collect()
        };
        let (seqs, next) = read_all(&app, &rs, 0).await;
        let want: Vec<i64> = live(&(1..=45_000).collect::<Vec<_>>());
        assert_eq!(seqs, want);
        assert_eq!(next, 45_000);
        // From the middle of the snapshot.
        let (seqs, _) = read_all(&app, &rs, 30_001).await;
        assert_eq!(seqs, live(&(30_002..=45_000).collect::<Vec<_>>()));

        // Young entries come from the database, and the cursor stays before them.
        // Every tenth expires 50 s from now (the clock starts at 1,800,000,000).
        crate::helpers::exec_raw(
            &app,
            &insert(
                45_001,
                45_100,
                now,
                "CASE WHEN i % 10 = 0 THEN 1800000050 ELSE 1900000000 END",
            ),
        )
        .await
        .expect("young");
        let (seqs, next) = read_all(&app, &rs, 44_990).await;
        assert_eq!(seqs, live(&(44_991..=45_100).collect::<Vec<_>>()));
        assert_eq!(next, 45_000, "young entries are read again next time");

        // Settled later, after the snapshot refreshed: in it now, same answer.
        clock.advance(20);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (seqs, next) = read_all(&app, &rs, 44_990).await;
        assert_eq!(seqs, live(&(44_991..=45_100).collect::<Vec<_>>()));
        assert_eq!(next, 45_100);
        let (seqs, _) = read_all(&app, &rs, 0).await;
        assert_eq!(seqs.len(), live(&(1..=45_100).collect::<Vec<_>>()).len());

        // Entries that expire drop out at the next refresh.
        clock.advance(40);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (seqs, _) = read_all(&app, &rs, 45_000).await;
        let want: Vec<i64> = (45_001..=45_100).filter(|s| s % 10 != 0).collect();
        assert_eq!(seqs, want);
        let (seqs, _) = read_all(&app, &rs, 0).await;
        assert_eq!(seqs.len(), 45_000 - 45_000 / 7 + want.len());
    }
}
