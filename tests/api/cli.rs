//! The `sigil` binary: administration against the same database a running server uses, JSON
//! output, `audit verify`, and start-up errors that name their cause.

use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::{Backend, TestDb, backends, fresh_database};

struct Cli {
    db: String,
    _fresh: TestDb,
    kek: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["--database-url", &self.db, "--kek-file"])
            .arg(&self.kek)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("SIGIL_BIND")
            .env("SIGIL_LOG", "warn")
            .output()
            .expect("run sigil")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sigil {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("json output")
    }
}

async fn cli_for(backend: Backend) -> Cli {
    let dir = tempfile::tempdir().expect("tmp");
    let fresh = fresh_database(backend, dir.path()).await;
    let kek = dir.path().join("keys/kek");
    Cli {
        db: fresh.url.clone(),
        _fresh: fresh,
        kek,
        dir,
    }
}

#[tokio::test]
async fn cli_manages_realms_and_clients_and_verifies_the_audit_chain() {
    for backend in backends() {
        let cli = cli_for(backend).await;
        let realm = cli.json(&["realm", "create", "ledger", "--alg", "ES256"]);
        assert_eq!(realm["name"], "ledger");
        assert_eq!(realm["keys"][0]["state"], "active");
        let created = cli.json(&[
            "client",
            "create",
            "--realm",
            "ledger",
            "--id",
            "ach-processor",
            "--scope",
            "tx:post:ach balances:read",
            "--audience",
            "ledger",
        ]);
        assert_eq!(created["client_id"], "ach-processor");
        let secret = created["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned();
        assert_eq!(secret.len(), 43);
        let listed = cli.json(&["client", "list", "--realm", "ledger", "--json"]);
        assert_eq!(listed[0]["client_id"], "ach-processor");
        let shown = cli.json(&[
            "client",
            "show",
            "--realm",
            "ledger",
            "--id",
            "ach-processor",
            "--json",
        ]);
        assert_eq!(
            shown["allowed_scopes"],
            serde_json::json!(["tx:post:ach", "balances:read"])
        );
        // Neither listing nor showing ever prints a secret or its verifier.
        let all_output = format!("{listed}{shown}");
        assert!(!all_output.contains(&secret) && !all_output.contains("verifier"));
        let rotated = cli.json(&[
            "client",
            "rotate-secret",
            "--realm",
            "ledger",
            "--id",
            "ach-processor",
            "--json",
        ]);
        assert_ne!(rotated["client_secret"].as_str(), Some(secret.as_str()));
        cli.ok(&[
            "client",
            "disable",
            "--realm",
            "ledger",
            "--id",
            "ach-processor",
        ]);
        cli.ok(&[
            "client",
            "delete",
            "--realm",
            "ledger",
            "--id",
            "ach-processor",
        ]);
        let missing = cli.run(&[
            "client",
            "show",
            "--realm",
            "ledger",
            "--id",
            "ach-processor",
        ]);
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
        let dup = cli.run(&["realm", "create", "ledger"]);
        assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
        let bad = cli.run(&[
            "client",
            "create",
            "--realm",
            "ledger",
            "--id",
            "x y",
            "--scope",
            "a",
            "--audience",
            "l",
        ]);
        assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid id"));

        let verify = cli.ok(&["audit", "verify"]);
        assert!(verify.contains("intact: 6 rows"), "{verify}");
    }
}

#[tokio::test]
async fn bad_configuration_fails_at_start_naming_the_option() {
    let cli = cli_for(Backend::Sqlite).await;
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["serve"])
        .env("SIGIL_BIND", "not-an-address")
        .current_dir(cli.dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bind"));

    let cfg = cli.dir.path().join("sigil.toml");
    std::fs::write(&cfg, "bind = \"127.0.0.1:0\"\nunknown_option = 1\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["--config"])
        .arg(&cfg)
        .arg("migrate")
        .current_dir(cli.dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_option"));
}

#[tokio::test]
async fn a_wrong_or_missing_kek_is_a_clear_error_never_a_new_key() {
    let cli = cli_for(Backend::Sqlite).await;
    cli.json(&["realm", "create", "ledger"]);
    let original = std::fs::read(&cli.kek).expect("kek");
    // Missing: refused, and no new KEK file appears.
    std::fs::remove_file(&cli.kek).expect("rm");
    let out = cli.run(&["realm", "create", "other"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cli.kek.exists());
    // Wrong: another valid KEK is refused too.
    sigil::keys::FileKek::create(&cli.kek).expect("another kek");
    let out = cli.run(&["realm", "create", "other"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the one"));
    std::fs::remove_file(&cli.kek).expect("rm");
    std::fs::write(&cli.kek, original).expect("restore");
    cli.json(&["realm", "create", "other"]);
}

#[tokio::test]
async fn cli_manages_users_groups_and_login_settings() {
    for backend in backends() {
        let cli = cli_for(backend).await;
        cli.json(&["realm", "create", "staff"]);
        cli.ok(&[
            "group",
            "create",
            "--realm",
            "staff",
            "--name",
            "compliance_officer",
            "--scope",
            "bank-admin/compliance",
        ]);
        let user = cli.json(&[
            "user",
            "create",
            "--realm",
            "staff",
            "--username",
            "alice@bank.example",
            "--attr",
            "user_id=u-1",
            "--attr",
            "jurisdiction=GB",
            "--group",
            "compliance_officer",
        ]);
        assert_eq!(user["groups"], serde_json::json!(["compliance_officer"]));
        assert_eq!(user["attributes"]["jurisdiction"], "GB");
        assert_eq!(user["has_password"], false);
        let user = cli.json(&[
            "user",
            "set-attr",
            "--realm",
            "staff",
            "--username",
            "alice@bank.example",
            "--attr",
            "party_id=p-9",
            "--attr",
            "jurisdiction=",
        ]);
        assert_eq!(
            user["attributes"],
            serde_json::json!({"party_id": "p-9", "user_id": "u-1"})
        );
        let unknown_group = cli.run(&[
            "user",
            "add-group",
            "--realm",
            "staff",
            "--username",
            "alice@bank.example",
            "--group",
            "nope",
        ]);
        assert!(!unknown_group.status.success());
        let invite = cli.ok(&[
            "user",
            "invite",
            "--realm",
            "staff",
            "--username",
            "alice@bank.example",
        ]);
        assert!(invite.trim().contains("/realms/staff/enrol/"), "{invite}");
        let settings = cli.json(&[
            "realm",
            "set-login",
            "staff",
            "--refresh-ttl",
            "28800",
            "--groups-claim",
            "cognito:groups",
            "--attr-claim",
            "party_id=custom:party_id",
        ]);
        assert_eq!(settings["groups_claim"], "cognito:groups");
        let bad = cli.run(&[
            "realm",
            "set-login",
            "staff",
            "--attr-claim",
            "party_id=sub",
        ]);
        assert!(!bad.status.success(), "a reserved claim cannot be mapped");
        cli.ok(&[
            "user",
            "disable",
            "--realm",
            "staff",
            "--username",
            "alice@bank.example",
        ]);
        let shown = cli.json(&[
            "user",
            "show",
            "--realm",
            "staff",
            "--username",
            "alice@bank.example",
        ]);
        assert_eq!(shown["enabled"], false);
        let verify = cli.ok(&["audit", "verify"]);
        assert!(verify.contains("intact"), "{verify}");
    }
}
