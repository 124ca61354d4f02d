//! `sigil export` / `sigil apply`: the round trip (export → apply to an empty database → export
//! again gives the same file), `--dry-run` writing nothing, a second apply writing nothing (not an
//! audit row), and a file that contradicts the database refused before anything is written.

use std::process::Command;

use crate::helpers::{backends, count_rows_at, fresh_database};

fn sigil(db: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    crate::helpers::run_cli(db, &dir.join("kek"), &[], args)
}

#[tokio::test]
async fn export_apply_export_is_the_same_file_and_applying_twice_writes_nothing() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).expect("a");
        std::fs::create_dir_all(&b).expect("b");
        let db_a = fresh_database(backend, &a).await;
        let db_b = fresh_database(backend, &b).await;
        let ok = |db: &str, d: &std::path::Path, args: &[&str]| {
            let (code, out, err) = sigil(db, d, args);
            assert_eq!(code, 0, "{args:?}: {out}{err}");
            out
        };
        // A realistic source: two realms, a sign-in policy, groups, clients of several kinds.
        ok(
            &db_a.url,
            &a,
            &[
                "realm",
                "create",
                "customers",
                "--display-name",
                "Example Bank",
            ],
        );
        ok(
            &db_a.url,
            &a,
            &[
                "realm",
                "create",
                "staff",
                "--alg",
                "EdDSA",
                "--token-ttl",
                "900",
            ],
        );
        ok(
            &db_a.url,
            &a,
            &[
                "realm",
                "set-login",
                "customers",
                "--groups-claim",
                "cognito:groups",
                "--attr-claim",
                "party_id=custom:party_id",
                "--session-idle",
                "1800",
            ],
        );
        ok(
            &db_a.url,
            &a,
            &[
                "group",
                "create",
                "--realm",
                "customers",
                "--name",
                "retail",
                "--scope",
                "balances:read",
            ],
        );
        ok(
            &db_a.url,
            &a,
            &[
                "client",
                "create",
                "--realm",
                "customers",
                "--id",
                "web",
                "--scope",
                "balances:read openid",
                "--default-scope",
                "balances:read",
                "--audience",
                "ledger",
                "--redirect-uri",
                "https://bank.example/cb",
                "--name",
                "Web Banking",
            ],
        );
        ok(
            &db_a.url,
            &a,
            &[
                "client",
                "create",
                "--realm",
                "customers",
                "--id",
                "app",
                "--public",
                "--scope",
                "balances:read",
                "--audience",
                "ledger",
                "--redirect-uri",
                "com.bank.app:/cb",
            ],
        );
        ok(
            &db_a.url,
            &a,
            &[
                "client",
                "create",
                "--realm",
                "staff",
                "--id",
                "ach",
                "--scope",
                "tx:post:ach",
                "--audience",
                "ledger",
                "--token-ttl",
                "300",
                "--introspect",
            ],
        );
        ok(
            &db_a.url,
            &a,
            &["client", "disable", "--realm", "staff", "--id", "ach"],
        );

        let exported = ok(&db_a.url, &a, &["export"]);
        assert!(
            !exported.contains("secret") && !exported.contains("sealed"),
            "{exported}"
        );
        let file = dir.path().join("sigil-realms.toml");
        std::fs::write(&file, &exported).expect("write");
        let file_s = file.to_str().expect("path");

        // Dry run on an empty database: says what it would do, writes nothing.
        let rows = |url: &str| {
            let url = url.to_owned();
            async move { count_rows_at(backend, &url, "SELECT COUNT(*) FROM audit_log").await }
        };
        let plan = ok(&db_b.url, &b, &["apply", "-f", file_s, "--dry-run"]);
        assert!(
            plan.contains("+ realm customers") && plan.contains("+ client staff/ach"),
            "{plan}"
        );
        assert_eq!(rows(&db_b.url).await, 0, "a dry run writes nothing");

        let applied = ok(&db_b.url, &b, &["apply", "-f", file_s]);
        assert!(
            applied.contains("\"customers/web\""),
            "secrets shown once: {applied}"
        );
        assert!(
            !applied.contains("customers/app\""),
            "a public client has no secret"
        );
        // The round trip.
        assert_eq!(ok(&db_b.url, &b, &["export"]), exported);

        // The same file again: nothing to do, not one audit row.
        let before = rows(&db_b.url).await;
        let again = ok(&db_b.url, &b, &["apply", "-f", file_s]);
        assert!(again.contains("no changes"), "{again}");
        assert_eq!(rows(&db_b.url).await, before);

        // A file that says another thing of an existing client: refused, nothing written, even
        // the parts that could have been applied (a new group).
        let changed = exported.replace("tx:post:ach", "tx:post:ach tx:post:wire") + "\n";
        let mut doc: toml::Value = toml::from_str(&changed).expect("toml");
        doc["realm"][0]["group"]
            .as_array_mut()
            .expect("groups")
            .push(
                toml::Value::try_from(serde_json::json!({"name": "new", "scopes": "x"}))
                    .expect("group"),
            );
        std::fs::write(&file, toml::to_string(&doc).expect("toml")).expect("write");
        let (code, _, err) = sigil(&db_b.url, &b, &["apply", "-f", file_s]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("client staff/ach differs"), "{err}");
        assert_eq!(rows(&db_b.url).await, before, "nothing applied");

        // Unknown keys and bad TOML are errors naming the file.
        std::fs::write(&file, "[[realm]]\nname = \"x\"\nsurprise = 1\n").expect("write");
        let (code, _, err) = sigil(&db_b.url, &b, &["apply", "-f", file_s]);
        assert_ne!(code, 0);
        assert!(
            err.contains("sigil-realms.toml") && err.contains("surprise"),
            "{err}"
        );
    }
}

/// `apply_on_start`: a node applies the file before it serves (an empty database ends up as the
/// file says), starts again on it with nothing to do, and refuses to start on a conflicting file,
/// naming the conflict. A created client's secret is never logged.
#[tokio::test]
async fn a_node_applies_its_file_before_it_serves() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = fresh_database(backend, dir.path()).await;
        let file = dir.path().join("realms.toml");
        std::fs::write(
            &file,
            "[[realm]]\nname = \"ledger\"\n\n[[realm.client]]\nclient_id = \"svc\"\nscope = \"a\"\naudience = \"ledger\"\n",
        )
        .expect("write");
        let file_s = file.to_str().expect("path");
        let kek = dir.path().join("kek");
        let node = crate::helpers::spawn_node(&db.url, &kek, &[("SIGIL_APPLY_ON_START", file_s)]);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let jwks = reqwest::get(format!("{}/realms/ledger/jwks", node.1))
            .await
            .expect("jwks");
        assert_eq!(jwks.status(), 200, "the realm exists once the node listens");
        drop(node);
        let (code, exported, _) = sigil(&db.url, dir.path(), &["export"]);
        assert_eq!(code, 0);
        assert!(exported.contains("client_id = \"svc\""), "{exported}");
        let before = count_rows_at(backend, &db.url, "SELECT COUNT(*) FROM audit_log").await;
        drop(crate::helpers::spawn_node(
            &db.url,
            &kek,
            &[("SIGIL_APPLY_ON_START", file_s)],
        ));
        assert_eq!(
            count_rows_at(backend, &db.url, "SELECT COUNT(*) FROM audit_log").await,
            before,
            "a second start has nothing to apply"
        );

        // Two nodes started at once on another empty database with the same file: both serve,
        // and the file was applied once.
        let db2 = fresh_database(backend, &dir.path().join("two")).await;
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let (url, kek, file) = (db2.url.clone(), kek.clone(), file_s.to_owned());
                std::thread::spawn(move || {
                    crate::helpers::spawn_node(&url, &kek, &[("SIGIL_APPLY_ON_START", &file)])
                })
            })
            .collect();
        let nodes: Vec<_> = starts
            .into_iter()
            .map(|t| t.join().expect("node starts"))
            .collect();
        let (code, twice, _) = sigil(&db2.url, dir.path(), &["export"]);
        assert_eq!(
            (code, twice.matches("[[realm]]").count()),
            (0, 1),
            "{twice}"
        );
        let created = "SELECT COUNT(*) FROM audit_log WHERE kind = 'realm.created'";
        assert_eq!(count_rows_at(backend, &db2.url, created).await, 1);
        drop(nodes);

        std::fs::write(&file, exported.replace("scope = \"a\"", "scope = \"b\"")).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["--database-url", &db.url, "--kek-file"])
            .arg(&kek)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("SIGIL_APPLY_ON_START", file_s)
            .env("SIGIL_LOG", "info")
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("apply_on_start") && err.contains("client ledger/svc differs"),
            "{err}"
        );
    }
}
