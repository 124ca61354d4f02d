//! Two `sigil serve` nodes under steady `client_credentials` load, and the failures a deployment
//! meets: a node killed with SIGKILL mid-run, and the database gone for seconds. Every token a
//! client received has its audit row (a row for a token whose answer was cut off is fine), the
//! survivors keep serving, nothing hangs, the chain verifies. Each prints its counts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, Node, backends, fresh_database, spawn_node};

/// One answer: which node, the status (0: no answer, the connection failed), the token's `jti`.
type Outcome = (usize, u16, Option<String>);

fn cli(db: &str, kek: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = crate::helpers::run_cli(db, kek, &[], args);
    assert_eq!(code, 0, "{err}");
    out
}

/// A realm and a client on `db`; returns the client's secret.
fn provision(db: &str, kek: &std::path::Path) -> String {
    cli(db, kek, &["realm", "create", "ledger"]);
    let out = cli(
        db,
        kek,
        &[
            "client",
            "create",
            "--realm",
            "ledger",
            "--id",
            "svc",
            "--scope",
            "a",
            "--audience",
            "ledger",
        ],
    );
    serde_json::from_str::<Value>(&out).expect("json")["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned()
}

/// `workers` loops issuing grants round-robin over `bases` until `stop`.
fn load(
    bases: Vec<String>,
    secret: String,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Outcome>>>, Vec<tokio::task::JoinHandle<()>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bases, secret, stop, outcomes) = (
            bases.clone(),
            secret.clone(),
            stop.clone(),
            outcomes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client");
            let mut i = w;
            while !stop.load(Ordering::SeqCst) {
                let node = i % bases.len();
                i += 1;
                let res = http
                    .post(format!("{}/realms/ledger/oauth2/token", bases[node]))
                    .basic_auth("svc", Some(&secret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await;
                let outcome = match res {
                    Err(_) => (node, 0, None),
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        let jti = body["access_token"].as_str().map(|t| {
                            crate::helpers::decode_part(t, 1)["jti"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned()
                        });
                        (node, status, jti)
                    }
                };
                if outcome.1 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcomes.lock().expect("lock").push(outcome);
            }
        }));
    }
    (outcomes, tasks)
}

/// Every 200's `jti` has its `token.issued` row; prints the counts; returns them.
async fn account(
    db: &str,
    kek: &std::path::Path,
    what: &str,
    outcomes: &[Outcome],
) -> (usize, usize, usize) {
    let store = sigil::store::connect(db).await.expect("store");
    let rows = store.audit_page(0, 1_000_000).await.expect("audit");
    let audited: HashSet<String> = rows
        .iter()
        .filter(|r| r.kind == "token.issued")
        .filter_map(|r| {
            serde_json::from_str::<Value>(&r.detail).ok()?["jti"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.1 == 200).collect();
    let lost = ok
        .iter()
        .filter(|o| !o.2.as_ref().is_some_and(|j| audited.contains(j)))
        .count();
    let unavailable = outcomes.iter().filter(|o| o.1 == 503).count();
    let cut = outcomes.iter().filter(|o| o.1 == 0).count();
    let other = outcomes.len() - ok.len() - unavailable - cut;
    println!(
        "{what}: requests {}, 200 {}, 503 {unavailable}, no answer {cut}, other {other}, token rows {}, lost {lost}",
        outcomes.len(),
        ok.len(),
        audited.len()
    );
    assert_eq!(lost, 0, "every token a client received is audited");
    assert_eq!(other, 0, "only 200, 503 or no answer");
    assert!(cli(db, kek, &["audit", "verify"]).contains("intact"));
    (ok.len(), unavailable, cut)
}

/// (a) A node killed with SIGKILL mid-run: its in-flight requests get no answer, every token it
/// did return is audited, and the other node keeps serving.
#[tokio::test]
async fn a_node_killed_mid_run_loses_no_audited_token() {
    let _turn = crate::helpers::HEAVY.lock().await;
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = fresh_database(backend, dir.path()).await;
        let kek = dir.path().join("kek");
        let secret = provision(&db.url, &kek);
        let mut a = spawn_node(&db.url, &kek, &[]);
        let b = spawn_node(&db.url, &kek, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let (outcomes, tasks) = load(vec![a.1.clone(), b.1.clone()], secret, 8, stop.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        a.0.kill().expect("SIGKILL");
        let killed_at = outcomes.lock().expect("lock").len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.expect("worker");
        }
        let outcomes = outcomes.lock().expect("lock").clone();
        let after_b = outcomes[killed_at..]
            .iter()
            .filter(|o| o.0 == 1 && o.1 == 200)
            .count();
        assert!(
            after_b > 10,
            "the survivor kept serving ({after_b} tokens after the kill)"
        );
        assert!(
            outcomes[killed_at..]
                .iter()
                .all(|o| o.0 == 1 || o.1 != 200 || o.2.is_some()),
            "nothing odd from the dead node"
        );
        let (ok, _, _) = account(&db.url, &kek, &format!("{backend:?} kill -9"), &outcomes).await;
        assert!(ok > 20);
        drop((a, b));
    }
}

/// (b) The database gone for 4 s under load (PostgreSQL behind a proxy that stops passing bytes):
/// both nodes answer 503 `temporarily_unavailable` promptly, never a token without its audit row;
/// `/readyz` reports the database; both recover by themselves within seconds.
// Several threads: the proxy's tasks must run while `spawn_node` waits for a node to listen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_ride_through_a_database_outage() {
    let _turn = crate::helpers::HEAVY.lock().await;
    if !backends().contains(&Backend::Postgres) {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let db = fresh_database(Backend::Postgres, dir.path()).await;
    let kek = dir.path().join("kek");
    let secret = provision(&db.url, &kek);
    let mut u = url::Url::parse(&db.url).expect("url");
    let upstream = format!(
        "{}:{}",
        u.host_str().expect("host"),
        u.port().unwrap_or(5432)
    );
    let proxy = crate::database::Proxy::start(upstream).await;
    u.set_host(Some("127.0.0.1")).expect("host");
    u.set_port(Some(proxy.addr.port())).expect("port");
    let via = u.to_string();
    let env = [
        ("SIGIL_DATABASE_CONNECT_TIMEOUT_SECS", "1"),
        ("SIGIL_DATABASE_STATEMENT_TIMEOUT_MS", "500"),
        ("SIGIL_REQUEST_TIMEOUT_SECS", "3"),
    ];
    let nodes: Vec<Node> = (0..2).map(|_| spawn_node(&via, &kek, &env)).collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.1.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, tasks) = load(bases.clone(), secret, 8, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    proxy.stall(true);
    let outage_began = outcomes.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let http = reqwest::Client::new();
    for base in &bases {
        let r = http
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("readyz");
        assert_eq!(r.status(), 503, "readiness reports the outage");
        let body: Value = r.json().await.expect("json");
        assert!(body.to_string().contains("database"), "{body}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.stall(false);
    let outage_ended = outcomes.lock().expect("lock").len();

    // Recovery: both nodes issue tokens again within a few seconds, with no restart.
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let recent: Vec<Outcome> = outcomes.lock().expect("lock")[outage_ended..].to_vec();
        if (0..2).all(|n| recent.iter().rev().take(40).any(|o| o.0 == n && o.1 == 200)) {
            recovered = true;
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("worker");
    }
    assert!(recovered, "both nodes serve again without a restart");
    let outcomes = outcomes.lock().expect("lock").clone();
    let during = &outcomes[outage_began..outage_ended];
    assert!(during.iter().any(|o| o.1 == 503), "503s during the outage");
    let (_, unavailable, cut) = account(&db.url, &kek, "PostgreSQL outage", &outcomes).await;
    assert!(unavailable > 0);
    assert_eq!(cut, 0, "no connection dropped: every request was answered");
    for base in &bases {
        let r = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(r.status(), 200);
    }
    drop(nodes);
}

/// A small tmpfs mounted for one test, unmounted when dropped (root only).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// (c) SQLite's disk full under load: grants are 503 (never a token without its row), the
/// database is not corrupted, and the node recovers by itself once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_without_corruption_and_recovers() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("tmp");
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "8m") else {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    let db = format!("sqlite://{}", disk.0.join("sigil.db").display());
    let kek = dir.path().join("kek");
    let secret = provision(&db, &kek);
    let node = spawn_node(&db, &kek, &[("SIGIL_REQUEST_TIMEOUT_SECS", "3")]);
    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, tasks) = load(vec![node.1.clone()], secret, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Fill the disk: 64 KiB at a time until the filesystem says no.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
    }
    let full_began = outcomes.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full_ended = outcomes.lock().expect("lock").len();
    std::fs::remove_file(&filler).expect("free the space");

    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if outcomes.lock().expect("lock")[full_ended..]
            .iter()
            .rev()
            .take(20)
            .any(|o| o.1 == 200)
        {
            recovered = true;
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("worker");
    }
    assert!(recovered, "the node serves again once space returns");
    let outcomes = outcomes.lock().expect("lock").clone();
    assert!(
        outcomes[full_began..full_ended].iter().any(|o| o.1 == 503),
        "503s while the disk is full"
    );
    account(&db, &kek, "SQLite disk full", &outcomes).await;
    drop(node);
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .expect("open");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("check");
    assert_eq!(check, "ok");
}

/// A node started while its database does not answer (a container started before PostgreSQL)
/// waits with `database_start_wait_secs` and serves once the database answers; without it, the
/// start fails at once, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_for_its_database_at_start() {
    if !backends().contains(&Backend::Postgres) {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let db = fresh_database(Backend::Postgres, dir.path()).await;
    let kek = dir.path().join("kek");
    let mut u = url::Url::parse(&db.url).expect("url");
    let upstream = format!(
        "{}:{}",
        u.host_str().expect("host"),
        u.port().unwrap_or(5432)
    );
    let proxy = crate::database::Proxy::start(upstream).await;
    u.set_host(Some("127.0.0.1")).expect("host");
    u.set_port(Some(proxy.addr.port())).expect("port");
    let via = u.to_string();
    proxy.stall(true);

    let (code, _, err) = crate::helpers::run_cli(
        &via,
        &kek,
        &[("SIGIL_DATABASE_CONNECT_TIMEOUT_SECS", "1")],
        &["migrate"],
    );
    assert_ne!(code, 0, "no wait: the start fails");
    assert!(
        err.contains("database") || err.contains("timed out"),
        "{err}"
    );

    let (via2, kek2) = (via.clone(), kek.clone());
    let start = std::thread::spawn(move || {
        spawn_node(
            &via2,
            &kek2,
            &[
                ("SIGIL_DATABASE_CONNECT_TIMEOUT_SECS", "1"),
                ("SIGIL_DATABASE_START_WAIT_SECS", "60"),
            ],
        )
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !start.is_finished(),
        "the node waits while the database does not answer"
    );
    proxy.stall(false);
    let node = tokio::task::spawn_blocking(move || start.join().expect("node"))
        .await
        .expect("join");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ready = reqwest::get(format!("{}/readyz", node.1))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
}
