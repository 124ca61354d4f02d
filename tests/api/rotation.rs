//! Key lifecycle: 180 simulated days of scheduled rotation that no validator notices, emergency
//! revocation, several nodes racing to rotate, and KEK rotation.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sigil::clock::{Clock, MockClock};
use sigil::keys::Alg;
use sigil::keys::rotation::{revoke, rotate_now, tick};
use sigil_validator::{ErrorKind, Validator};

use crate::helpers::{Backend, Node, TestApp, backends, decode_part, spawn_app_with, spawn_node};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

#[tokio::test]
async fn half_a_year_of_scheduled_rotation_rejects_no_valid_token() {
    let clock = MockClock::new(1_800_000_000);
    let app = spawn_app_with(Backend::Sqlite, Some(clock.clone()), |c| {
        c.jwks_max_age_secs = 3600
    })
    .await;
    app.create_realm("ledger", Alg::ES256).await; // rotation every 30 days, next key 24 h ahead
    let mut clients = Vec::new();
    for (id, ttl) in [("five-min", 300), ("one-hour", 3600), ("one-day", 86_400)] {
        clients.push(
            app.create_client_ttl("ledger", id, "balances:read", None, "ledger", Some(ttl))
                .await,
        );
    }
    let vc = clock.clone();
    // Caches for the full max-age; refetches only when it runs out (or on an unknown kid).
    let v = Validator::builder(app.issuer("ledger"), "ledger")
        .clock(move || vc.now())
        .build()
        .await
        .expect("validator");

    let step = 2 * HOUR;
    let mut live: Vec<(String, i64)> = Vec::new();
    let (mut verified, mut rejected, mut max_published) = (0u64, Vec::new(), 0usize);
    let mut kids_seen = HashSet::new();
    for _ in 0..(180 * DAY / step) {
        clock.advance(step);
        let now = clock.now();
        tick(app.store.as_ref(), app.kek.as_ref(), "ledger", now)
            .await
            .expect("tick");
        for c in &clients {
            let jwt = app.token("ledger", c, None).await;
            kids_seen.insert(
                decode_part(&jwt, 0)["kid"]
                    .as_str()
                    .expect("kid")
                    .to_owned(),
            );
            let exp = decode_part(&jwt, 1)["exp"].as_i64().expect("exp");
            live.push((jwt, exp));
        }
        live.retain(|(_, exp)| *exp > now);
        for (jwt, _) in &live {
            match v.validate(jwt).await {
                Ok(_) => verified += 1,
                Err(e) => rejected.push(e.to_string()),
            }
        }
        max_published =
            max_published.max(app.store.realm_keys("ledger").await.expect("keys").len());
        tokio::task::yield_now().await;
    }
    assert!(
        rejected.is_empty(),
        "{} valid tokens rejected: {:?}",
        rejected.len(),
        &rejected[..rejected.len().min(3)]
    );
    assert_eq!(
        v.unknown_kid_fetches(),
        0,
        "every key was known before it signed"
    );
    assert!(verified > 20_000, "{verified}");
    assert!(
        kids_seen.len() >= 6,
        "about six rotations in 180 days: {}",
        kids_seen.len()
    );
    assert!(
        max_published <= 3,
        "next + active + retired at most: {max_published}"
    );
    let audit = app.audit().await;
    let removed = audit.iter().filter(|r| r.kind == "key.removed").count();
    assert!(
        removed >= kids_seen.len() - 2,
        "retired keys are removed once their tokens expire"
    );
}

async fn revoked_key_stops_verifying_and_the_validator_recovers(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    app.create_realm("payments", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    let p = app
        .create_client("payments", "svc", "balances:read", "ledger")
        .await;
    let old = app.token("ledger", &c, None).await;
    let now = app.now();
    rotate_now(
        app.store.as_ref(),
        app.kek.as_ref(),
        "ledger",
        None,
        "test",
        now,
    )
    .await
    .expect("rotate");
    let current = app.token("ledger", &c, None).await;
    let other_realm = app.token("payments", &p, None).await;
    assert_ne!(decode_part(&old, 0)["kid"], decode_part(&current, 0)["kid"]);
    let v = Validator::builder(app.issuer("ledger"), "ledger")
        .build()
        .await
        .expect("v");
    let vp = Validator::builder(app.issuer("payments"), "ledger")
        .build()
        .await
        .expect("v");
    v.validate(&old).await.expect("retired key still verifies");
    v.validate(&current).await.expect("active key verifies");

    let old_kid = decode_part(&old, 0)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    revoke(
        app.store.as_ref(),
        app.kek.as_ref(),
        "ledger",
        &old_kid,
        "test",
        now,
    )
    .await
    .expect("revoke");
    let jwks: Value = app
        .http
        .get(format!("{}/jwks", app.issuer("ledger")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(
        !jwks.to_string().contains(&old_kid),
        "revoked key left the JWKS at once"
    );
    // What a resource server does on a revocation alert: refresh, no restart.
    v.refresh().await;
    assert_eq!(
        v.validate(&old).await.expect_err("revoked").kind(),
        &ErrorKind::UnknownKey
    );
    v.validate(&current).await.expect("other keys unaffected");
    v.validate(&app.token("ledger", &c, None).await)
        .await
        .expect("new tokens verify");
    vp.validate(&other_realm)
        .await
        .expect("other realms unaffected");

    // Revoking the active key hands signing to a fresh key at once.
    let active = decode_part(&current, 0)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    revoke(
        app.store.as_ref(),
        app.kek.as_ref(),
        "ledger",
        &active,
        "test",
        now,
    )
    .await
    .expect("revoke active");
    let after = app.token("ledger", &c, None).await;
    assert_ne!(decode_part(&after, 0)["kid"], active.as_str());
    v.refresh().await;
    assert!(v.validate(&current).await.is_err());
    v.validate(&after).await.expect("fresh key verifies");
}
crate::on_every_backend!(
    revoke_key,
    revoked_key_stops_verifying_and_the_validator_recovers
);

async fn racing_nodes_apply_each_rotation_once(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    // A second "node": its own connection pool to the same database.
    let other = sigil::store::connect(&app.database_url)
        .await
        .expect("second pool");
    let due = app.now() + 29 * DAY; // the next key is due
    for round in 0..3 {
        let at = due + round * 30 * DAY;
        let (a, b) = tokio::join!(
            tick(app.store.as_ref(), app.kek.as_ref(), "ledger", at),
            tick(other.as_ref(), app.kek.as_ref(), "ledger", at)
        );
        let applied = [a.expect("a"), b.expect("b")];
        assert_eq!(
            applied.iter().filter(|x| !x.is_empty()).count(),
            1,
            "exactly one node applied the step"
        );
        assert!(
            applied
                .iter()
                .flatten()
                .any(|x| *x == sigil::keys::rotation::Action::CreateNext)
        );
        let (a, b) = tokio::join!(
            tick(app.store.as_ref(), app.kek.as_ref(), "ledger", at + DAY),
            tick(other.as_ref(), app.kek.as_ref(), "ledger", at + DAY)
        );
        let applied = [a.expect("a"), b.expect("b")];
        assert_eq!(
            applied.iter().filter(|x| !x.is_empty()).count(),
            1,
            "one promotion"
        );
    }
    let keys = app.store.realm_keys("ledger").await.expect("keys");
    assert_eq!(keys.iter().filter(|k| k.state == "active").count(), 1);
    let created = app
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == "key.created")
        .count();
    assert_eq!(created, 4, "the first key and one per rotation");
}
crate::on_every_backend!(racing_nodes, racing_nodes_apply_each_rotation_once);

fn start_node(db: &str, kek: &std::path::Path) -> Node {
    start_node_with(db, kek, "1")
}

fn start_node_with(db: &str, kek: &std::path::Path, rotation_check_secs: &str) -> Node {
    spawn_node(
        db,
        kek,
        &[
            ("SIGIL_ROTATION_CHECK_SECS", rotation_check_secs),
            ("SIGIL_CACHE_TTL_SECS", "1"),
            ("SIGIL_JWKS_MAX_AGE_SECS", "1"),
        ],
    )
}

#[tokio::test]
async fn two_server_processes_on_one_database_rotate_once_and_agree() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let fresh = crate::helpers::fresh_database(backend, dir.path()).await;
        let db = fresh.url.clone();
        let kek = dir.path().join("kek");
        let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["--database-url", &db, "--kek-file"])
            .arg(&kek)
            .args([
                "realm",
                "create",
                "ledger",
                "--rotation-period",
                "4",
                "--prepublish",
                "2",
            ])
            .env("SIGIL_JWKS_MAX_AGE_SECS", "1")
            .output()
            .expect("cli");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let a = start_node(&db, &kek);
        let b = start_node(&db, &kek);
        tokio::time::sleep(Duration::from_secs(9)).await;
        let store = sigil::store::connect(&db).await.expect("store");
        let audit = store.audit_page(0, 10_000).await.expect("audit");
        let created: Vec<&str> = audit
            .iter()
            .filter(|r| r.kind == "key.created")
            .filter_map(|r| r.subject.as_deref())
            .collect();
        let activated: Vec<&str> = audit
            .iter()
            .filter(|r| r.kind == "key.activated")
            .filter_map(|r| r.subject.as_deref())
            .collect();
        assert!(
            !activated.is_empty(),
            "the schedulers rotated at least once"
        );
        assert_eq!(created.len(), created.iter().collect::<HashSet<_>>().len());
        assert_eq!(
            activated.len(),
            activated.iter().collect::<HashSet<_>>().len(),
            "no key activated twice"
        );
        // Each rotation step landed once: one key created per activation (+ the first, + maybe a next).
        assert!(
            created.len() <= activated.len() + 2,
            "{created:?} vs {activated:?}"
        );
        // Both nodes serve the same JWKS within the cache TTL.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let mut seen = Vec::new();
        for node in [&a, &b] {
            let body: Value = http
                .get(format!("{}/realms/ledger/jwks", node.1))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            let mut kids: Vec<String> = body["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .map(|k| k["kid"].as_str().expect("kid").to_owned())
                .collect();
            kids.sort();
            seen.push(kids);
        }
        // The schedulers may rotate between the two reads; at least the sets overlap heavily.
        assert!(
            seen[0].iter().filter(|k| seen[1].contains(k)).count() >= 1,
            "{seen:?}"
        );
        drop((a, b));
    }
}

#[tokio::test]
async fn kek_rotation_re_encrypts_every_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = format!("sqlite://{}", dir.path().join("sigil.db").display());
    let kek = dir.path().join("kek");
    let new_kek = dir.path().join("kek.new");
    let run = |kek_file: &std::path::Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["--database-url", &db, "--kek-file"])
            .arg(kek_file)
            .args(args)
            .env("SIGIL_LOG", "warn")
            .output()
            .expect("cli")
    };
    assert!(run(&kek, &["realm", "create", "ledger"]).status.success());
    assert!(
        run(&kek, &["realm", "create", "payments", "--alg", "RS256"])
            .status
            .success()
    );
    sigil::keys::FileKek::create(&new_kek).expect("new kek");
    let out = run(
        &kek,
        &[
            "kek",
            "rotate",
            "--new-kek",
            new_kek.to_str().expect("utf8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-encrypted 2 signing keys"));
    // The old KEK no longer opens anything; the new one does, and signing still works.
    let out = run(&kek, &["key", "rotate", "--realm", "ledger"]);
    assert!(!out.status.success());
    let out = run(&new_kek, &["key", "rotate", "--realm", "ledger"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = run(&new_kek, &["key", "list", "--realm", "ledger", "--json"]);
    let keys: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(keys.as_array().expect("array").len(), 2);
    let audit = sigil::store::connect(&db)
        .await
        .expect("store")
        .audit_page(0, 100)
        .await
        .expect("audit");
    assert!(audit.iter().any(|r| r.kind == "kek.rotated"));
}

async fn algorithm_changes_at_a_rotation(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    let v = Validator::builder(app.issuer("ledger"), "ledger")
        .build()
        .await
        .expect("v");
    let es = app.token("ledger", &c, None).await;
    let now = app.now();
    rotate_now(
        app.store.as_ref(),
        app.kek.as_ref(),
        "ledger",
        Some(Alg::EdDSA),
        "test",
        now,
    )
    .await
    .expect("rotate to EdDSA");
    let ed = app.token("ledger", &c, None).await;
    assert_eq!(decode_part(&ed, 0)["alg"], "EdDSA");
    v.validate(&es)
        .await
        .expect("the retired ES256 key still verifies");
    v.validate(&ed).await.expect("the EdDSA key verifies");
    // Keys generated by the schedule from now on use the new algorithm.
    tick(
        app.store.as_ref(),
        app.kek.as_ref(),
        "ledger",
        now + 29 * DAY,
    )
    .await
    .expect("tick");
    let keys = app.store.realm_keys("ledger").await.expect("keys");
    assert_eq!(
        keys.iter()
            .find(|k| k.state == "next")
            .map(|k| k.alg.as_str()),
        Some("EdDSA")
    );
}
crate::on_every_backend!(alg_change, algorithm_changes_at_a_rotation);

async fn jwks_kids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let body: Value = http
        .get(format!("{base}/realms/ledger/jwks"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let mut kids: Vec<String> = body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect();
    kids.sort();
    kids
}

#[tokio::test]
async fn a_rotation_on_one_node_reaches_every_node_within_the_cache_ttl() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let fresh = crate::helpers::fresh_database(backend, dir.path()).await;
        let db = fresh.url.clone();
        let kek = dir.path().join("kek");
        let cli = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
                .args(["--database-url", &db, "--kek-file"])
                .arg(&kek)
                .args(args)
                .env("SIGIL_LOG", "warn")
                .output()
                .expect("cli");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("utf8")
        };
        cli(&["realm", "create", "ledger"]);
        let (a, b) = (
            start_node_with(&db, &kek, "0"),
            start_node_with(&db, &kek, "0"),
        );
        let before = jwks_kids(&http, &a.1).await;
        assert_eq!(before, jwks_kids(&http, &b.1).await);
        let new_kid = cli(&["key", "rotate", "--realm", "ledger"])
            .split_whitespace()
            .next()
            .expect("kid")
            .to_owned();
        // SIGIL_CACHE_TTL_SECS=1: both nodes must publish the new key within ~1 s (6 s bound, for
        // a loaded CI machine).
        let mut converged = false;
        for _ in 0..60 {
            let (ka, kb) = (jwks_kids(&http, &a.1).await, jwks_kids(&http, &b.1).await);
            if ka.contains(&new_kid) && kb.contains(&new_kid) && ka == kb {
                converged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(converged, "both nodes publish {new_kid} within 6 s");
        drop((a, b));
    }
}
