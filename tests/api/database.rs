//! The database under load and under trouble: many concurrent token requests all answered and
//! audited on one chain; a database that stops answering, or a chain head held by someone else,
//! answered with a prompt 503 `temporarily_unavailable` and recovered from; `/metrics` counting
//! the audit path.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use sigil::audit::{VerifyReport, verify_chain};
use sigil::keys::Alg;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::helpers::{Backend, TestApp, backends, decode_part, spawn_app, spawn_app_with};
use crate::on_every_backend;

fn chain_intact(rows: &[sigil::audit::AuditRecord]) {
    match verify_chain(rows) {
        VerifyReport::Intact { rows: n, .. } => assert_eq!(n as usize, rows.len()),
        VerifyReport::Broken { seq, reason } => panic!("chain broken at {seq}: {reason}"),
    }
}

/// 256 token requests at once, each on its own connection: every one answered within its own
/// timeout, every 200's token (by `jti`) in the audit log exactly once, the chain intact.
async fn concurrent_grants_all_answered_and_audited(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "tx:post:ach", "ledger")
        .await;
    const N: usize = 256;
    // One connection per request: a fresh client each, no pooling between them.
    let start = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let url = app.token_url("ledger");
        let (id, secret) = (c.id.clone(), c.secret.clone());
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            start.wait().await;
            let res = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .expect("answered within the timeout");
            let status = res.status().as_u16();
            let body: Value = res.json().await.expect("json body");
            (status, body)
        }));
    }
    let mut jtis = HashSet::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, 200, "{:?}: {body}", app.backend);
        let jwt = body["access_token"].as_str().expect("token");
        let jti = decode_part(jwt, 1)["jti"].as_str().expect("jti").to_owned();
        assert!(jtis.insert(jti), "a jti issued twice");
    }
    let rows = app.audit().await;
    let audited: Vec<String> = rows
        .iter()
        .filter(|r| r.kind == "token.issued" && r.actor == "svc")
        .filter_map(|r| {
            serde_json::from_str::<Value>(&r.detail)
                .ok()
                .and_then(|d| d["jti"].as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(audited.len(), N, "{:?}: one record per 200", app.backend);
    let audited: HashSet<String> = audited.into_iter().collect();
    assert_eq!(
        audited, jtis,
        "the audited tokens are exactly the issued ones"
    );
    chain_intact(&rows);
}
on_every_backend!(
    two_hundred_fifty_six_concurrent_grants_are_answered_and_audited,
    concurrent_grants_all_answered_and_audited
);

/// A loopback TCP proxy in front of PostgreSQL that can stop passing bytes (both ways) while
/// keeping every connection open: a database that has stopped answering, as a hung server or a
/// network partition looks to a client.
pub(crate) struct Proxy {
    pub(crate) addr: std::net::SocketAddr,
    stalled: Arc<AtomicBool>,
    /// Stall right after the next bytes from Sigil have been passed on: a statement that reached
    /// the database and whose answer never comes back.
    stall_after_next: Arc<AtomicBool>,
}

impl Proxy {
    pub(crate) async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let stall_after_next = Arc::new(AtomicBool::new(false));
        let (flag, armed) = (stalled.clone(), stall_after_next.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, flag.clone(), Some(armed.clone())));
                tokio::spawn(pump(sr, cw, flag.clone(), None));
            }
        });
        Proxy {
            addr,
            stalled,
            stall_after_next,
        }
    }

    pub(crate) fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
    stall_after_next: Option<Arc<AtomicBool>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(armed) = &stall_after_next
            && armed.swap(false, Ordering::SeqCst)
        {
            stalled.store(true, Ordering::SeqCst);
        }
    }
}

fn postgres_only() -> bool {
    let pg = backends().contains(&Backend::Postgres);
    if !pg {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
    }
    pg
}

async fn grant(app: &TestApp, id: &str, secret: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let res = app
        .http
        .post(app.token_url("ledger"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("answered");
    let status = res.status().as_u16();
    let retry = res.headers().get("retry-after").cloned();
    let body: Value = res.json().await.expect("json");
    if status == 503 {
        assert_eq!(retry.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
    (status, body, started.elapsed())
}

/// The database stops answering mid-flight: token requests get 503 `temporarily_unavailable`
/// within the configured deadlines (not the client's patience), and the node recovers by itself
/// once the database answers again, the chain intact.
#[tokio::test]
async fn an_unresponsive_database_is_a_prompt_503_and_the_node_recovers() {
    if !postgres_only() {
        return;
    }
    let admin = std::env::var("TEST_DATABASE_URL").expect("url");
    let upstream = {
        let u = url::Url::parse(&admin).expect("url");
        format!(
            "{}:{}",
            u.host_str().expect("host"),
            u.port().unwrap_or(5432)
        )
    };
    let proxy = Proxy::start(upstream).await;
    let via = proxy.addr;
    let app = spawn_app_with(Backend::Postgres, None, move |c| {
        let mut u = url::Url::parse(&c.database_url).expect("url");
        u.set_host(Some(&via.ip().to_string())).expect("host");
        u.set_port(Some(via.port())).expect("port");
        c.database_url = u.to_string();
        c.db.connect_timeout = Duration::from_secs(1);
        c.db.statement_timeout = Duration::from_millis(500);
        c.request_timeout_secs = 3;
        // The client and realm are read through the directory cache, as in production.
        c.cache_ttl_secs = 60;
    })
    .await;
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "tx:post:ach", "ledger")
        .await;
    let (status, _, _) = grant(&app, &c.id, &c.secret).await;
    assert_eq!(status, 200);

    // First the database stops answering mid-statement (an audit batch went out, its answer never
    // comes back: the only traffic here is the audit writer's, realm and client being cached),
    // then altogether (no connection can even be checked out).
    for phase in ["mid-statement", "stopped"] {
        if phase == "mid-statement" {
            proxy.stall_after_next.store(true, Ordering::SeqCst);
        } else {
            proxy.stall(true);
        }
        stalled_grants_are_prompt_503s(&app, &c.id, &c.secret, phase).await;
        proxy.stall(false);
        recover(&app, &c.id, &c.secret).await;
    }
    chain_intact(&app.audit().await);
}

async fn stalled_grants_are_prompt_503s(app: &TestApp, id: &str, secret: &str, phase: &str) {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (id, secret) = (id.to_owned(), secret.to_owned());
        let http = app.http.clone();
        let url = app.token_url("ledger");
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let res = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("answered");
            let status = res.status().as_u16();
            let body: Value = res.json().await.expect("json");
            (status, body, started.elapsed())
        }));
    }
    for t in tasks {
        let (status, body, took) = t.await.expect("task");
        assert_eq!(status, 503, "{phase}: {body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        // The database deadline (connect 1 s + statement 0.5 s), not the 3 s request deadline.
        assert!(
            took < Duration::from_millis(2_500),
            "{phase}: took {took:?}"
        );
    }
}

async fn recover(app: &TestApp, id: &str, secret: &str) {
    let mut recovered = false;
    for _ in 0..50 {
        if grant(app, id, secret).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "the node did not recover after the database came back"
    );
    for _ in 0..20 {
        assert_eq!(
            grant(app, id, secret).await.0,
            200,
            "every grant succeeds once the database answers"
        );
    }
}

/// Another session holds the chain's head row (a stuck node, an operator's open transaction):
/// PostgreSQL's statement timeout ends the wait and the request gets a prompt 503; once the lock
/// is released, grants flow again and nothing was half-written.
#[tokio::test]
async fn a_held_chain_head_is_a_prompt_503_not_a_hang() {
    if !postgres_only() {
        return;
    }
    let app = spawn_app_with(Backend::Postgres, None, |c| {
        c.db.statement_timeout = Duration::from_millis(500);
        c.request_timeout_secs = 10;
    })
    .await;
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "tx:post:ach", "ledger")
        .await;
    assert_eq!(grant(&app, &c.id, &c.secret).await.0, 200);
    let before = app.audit().await.len();

    let mut holder = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT seq FROM audit_heads WHERE chain = 'main' FOR UPDATE")
        .execute(&mut holder)
        .await
        .expect("lock the head");
    let (status, body, took) = grant(&app, &c.id, &c.secret).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");

    assert_eq!(grant(&app, &c.id, &c.secret).await.0, 200);
    let rows = app.audit().await;
    // The refused batch left nothing behind; the grant after it is there.
    assert_eq!(rows.len(), before + 1);
    chain_intact(&rows);
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

/// `/metrics` is served only on `metrics_bind` and counts audit batches, records, commit time
/// and head-row waits as tokens are issued.
#[tokio::test]
async fn metrics_count_the_audit_path() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app = spawn_app_with(Backend::Sqlite, None, move |c| {
        c.metrics_bind = Some(([127, 0, 0, 1], port).into());
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let scrape = || async {
        let res = reqwest::get(&url).await.expect("scrape");
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain; version=0.0.4")
        );
        res.text().await.expect("text")
    };
    let before = scrape().await;
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "tx:post:ach", "ledger")
        .await;
    for _ in 0..5 {
        app.token("ledger", &c, None).await;
    }
    let after = scrape().await;
    // Other tests in this process write to their own chains too: the counters only grow.
    for name in [
        "sigil_audit_records_total",
        "sigil_audit_batches_total",
        "sigil_audit_commit_seconds_count",
        "sigil_audit_head_wait_seconds_count",
    ] {
        assert!(
            sample(&after, name) >= sample(&before, name) + 1.0,
            "{name} did not move"
        );
    }
    assert!(
        sample(&after, "sigil_audit_records_total")
            >= sample(&before, "sigil_audit_records_total") + 5.0
    );
    assert!(sample(&after, "sigil_audit_commit_seconds_sum") > 0.0);
    assert_eq!(sample(&after, "sigil_db_pool_max_connections"), 4.0);
    // Not on the public listener.
    let res = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
}

/// The default application answers `/metrics` nowhere.
#[tokio::test]
async fn metrics_are_off_by_default() {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
}

/// Two nodes on one database, each on an audit chain of its own: grants on both, every record on
/// its node's chain, both chains intact; the checkpoint a node writes on its own names both heads
/// and binds them, so removing the other node's whole chain (triggers dropped, rows and head
/// deleted: each remaining chain still verifies on its own) is found.
async fn per_node_chains_verify_together(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "tx:post:ach", "ledger")
        .await;
    let kek_path = app._dir.path().join("keys/kek");
    let mut config = sigil::config::Config::for_tests(&app.database_url, &kek_path);
    config.db.audit_chain = "node-b".into();
    config.audit_checkpoint_secs = 1;
    let b = sigil::Application::build(config).await.expect("node b");
    let b_token = format!("{}/realms/ledger/oauth2/token", b.base_url());
    let b_store = b.state().store.clone();
    tokio::spawn(b.run_until_stopped());

    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            app.token_url("ledger")
        } else {
            b_token.clone()
        };
        let (http, id, secret) = (app.http.clone(), c.id.clone(), c.secret.clone());
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .expect("answered")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    // Each node checkpoints every second: wait (bounded) for both to have written one after the
    // traffic, each naming both chains' heads.
    let cp = sigil::audit::checkpoint::KIND;
    let mut rows = app.audit().await;
    for _ in 0..60 {
        let written = |chain: &str| rows.iter().any(|r| r.chain == chain && r.kind == cp);
        if written("node-a") && written("node-b") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        rows = app.audit().await;
    }
    let on = |chain: &str, kind: &str| {
        rows.iter()
            .filter(|r| r.chain == chain && r.kind == kind)
            .count()
    };
    assert_eq!(on("node-a", "token.issued"), 20, "{:?}", app.backend);
    assert_eq!(on("node-b", "token.issued"), 20);
    let checkpoints = on("node-b", sigil::audit::checkpoint::KIND);
    assert!(checkpoints >= 1, "node b wrote a checkpoint");
    chain_intact(&rows);
    let verified = sigil::admin::audit::verify(app.store.as_ref(), Some(app.kek.as_ref()))
        .await
        .expect("verify");
    assert!(
        matches!(verified, VerifyReport::Intact { .. }),
        "{verified:?}"
    );
    // Idle: only checkpoints were appended since, so the nodes stop writing them (each naming the
    // other's latest checkpoint would go on for ever, one a second): within a bounded time the
    // count holds still for over two periods.
    let count = |rows: &[sigil::audit::AuditRecord]| rows.iter().filter(|r| r.kind == cp).count();
    let mut settled = false;
    for _ in 0..8 {
        let before = count(&app.audit().await);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        if count(&app.audit().await) == before {
            settled = true;
            break;
        }
    }
    assert!(settled, "the nodes kept checkpointing while idle");
    // Node a checkpoints too (as its own timer would), naming node b's head.
    let heads = app.store.audit_heads().await.expect("heads");
    assert!(heads.iter().any(|h| h.0 == "node-b"));
    let draft = sigil::audit::checkpoint::draft(&heads, app.kek.as_ref(), app.now()).expect("seal");
    app.store.append_audit(&[draft]).await.expect("append");
    drop(b_store);

    // An operator with DDL rights removes node b's chain altogether.
    let unguard = match app.backend {
        Backend::Sqlite => "DROP TRIGGER audit_log_no_delete",
        Backend::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
    };
    crate::helpers::exec_raw(app, unguard)
        .await
        .expect("unguard");
    crate::helpers::exec_raw(app, "DELETE FROM audit_log WHERE chain = 'node-b'")
        .await
        .expect("delete rows");
    crate::helpers::exec_raw(app, "DELETE FROM audit_heads WHERE chain = 'node-b'")
        .await
        .expect("delete head");
    // Each remaining chain is intact on its own...
    let rows = app.audit().await;
    chain_intact(&rows);
    // ...but node a's checkpoint names node b's head.
    match sigil::admin::audit::verify(app.store.as_ref(), Some(app.kek.as_ref()))
        .await
        .expect("verify")
    {
        VerifyReport::Broken { reason, .. } => {
            assert!(reason.contains("checkpoint"), "{reason}");
            assert!(reason.contains("node-b"), "{reason}");
        }
        other => panic!("removal not found: {other:?}"),
    }
}

#[tokio::test]
async fn audit_chains_per_node_verify_together() {
    for backend in backends() {
        let app = spawn_app_with(backend, None, |c| {
            c.db.audit_chain = "node-a".into();
            c.audit_checkpoint_secs = 1;
        })
        .await;
        per_node_chains_verify_together(&app).await;
    }
}

/// The audit writer remembers the head it wrote last and appends after it without reading it
/// again; another writer of the same chain (a CLI command on the same database, here the store's
/// own append on another connection) moves the head in between. Alternating one by one (each
/// grant's batch then finds its remembered head stale), then both at once: every record is in the
/// log exactly once and the chain is intact.
async fn another_writer_on_the_same_chain(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "tx:post:ach", "ledger")
        .await;
    let other = |i: usize| {
        sigil::audit::AuditDraft::new(app.now(), Some("ledger"), "client.updated", "cli")
            .subject("svc")
            .detail(serde_json::json!({ "n": i }))
    };
    let mut jtis = HashSet::new();
    for i in 0..5 {
        let (status, body, _) = grant(app, &c.id, &c.secret).await;
        assert_eq!(status, 200, "{body}");
        let claims = decode_part(body["access_token"].as_str().expect("token"), 1);
        jtis.insert(claims["jti"].as_str().expect("jti").to_owned());
        app.store.append_audit(&[other(i)]).await.expect("append");
    }
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (http, url, id, secret) = (
            app.http.clone(),
            app.token_url("ledger"),
            c.id.clone(),
            c.secret.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .expect("answered");
            assert_eq!(res.status(), 200);
            let body: Value = res.json().await.expect("json");
            decode_part(body["access_token"].as_str().expect("token"), 1)["jti"]
                .as_str()
                .expect("jti")
                .to_owned()
        }));
    }
    for i in 5..35 {
        app.store.append_audit(&[other(i)]).await.expect("append");
    }
    for t in tasks {
        jtis.insert(t.await.expect("task"));
    }
    assert_eq!(jtis.len(), 65);
    let rows = app.audit().await;
    chain_intact(&rows);
    let issued: Vec<String> = rows
        .iter()
        .filter(|r| r.kind == "token.issued")
        .filter_map(|r| serde_json::from_str::<Value>(&r.detail).ok())
        .filter_map(|d| d["jti"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(issued.len(), 65, "each token recorded once");
    assert!(issued.iter().all(|j| jtis.contains(j)));
    assert_eq!(
        rows.iter().filter(|r| r.kind == "client.updated").count(),
        35
    );
}

on_every_backend!(
    another_writer_on_the_same_chain_interleaves,
    another_writer_on_the_same_chain
);
