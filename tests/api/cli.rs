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
            .env_remove("SIGIL_ADMIN_REALM")
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
        assert_eq!(shown["introspect"], false);
        // A resource server registered for introspection (RFC 7662).
        let rs = cli.json(&[
            "client",
            "create",
            "--realm",
            "ledger",
            "--id",
            "ledger-rs",
            "--scope",
            "balances:read",
            "--audience",
            "ledger",
            "--introspect",
        ]);
        assert_eq!(rs["introspect"], true);
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
        assert!(verify.contains("intact: 7 rows"), "{verify}");
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

/// `client create --auth ...`, `client set-auth` and `realm set-mtls`: each method registered
/// from files, refused when its material is missing or wrong, and switched without losing the
/// client.
#[tokio::test]
async fn cli_registers_each_authentication_method_and_switches_a_client() {
    let cli = cli_for(Backend::Sqlite).await;
    cli.json(&["realm", "create", "payments", "--alg", "ES256"]);
    let ca = crate::pki::Ca::new("payments client CA");
    let ca_file = cli.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("ca");
    let ca_arg = ca_file.to_str().expect("path");
    let shown = cli.json(&["realm", "set-mtls", "payments", "--ca-file", ca_arg]);
    assert_eq!(shown["client_cas"].as_array().expect("cas").len(), 1);
    assert_eq!(
        shown["client_cas"][0]["sha256"],
        sigil::clients::mtls::thumbprint(&ca.der).as_str()
    );
    // A leaf is not a CA.
    let leaf = ca.client("x", None, vec![], crate::pki::VALID);
    let leaf_file = cli.dir.path().join("leaf.pem");
    std::fs::write(&leaf_file, &leaf.cert_pem).expect("leaf");
    let out = cli.run(&[
        "realm",
        "set-mtls",
        "payments",
        "--ca-file",
        leaf_file.to_str().expect("p"),
    ]);
    assert!(!out.status.success(), "a leaf certificate as a CA");

    let base = [
        "client",
        "create",
        "--realm",
        "payments",
        "--scope",
        "tx:post:ach",
        "--audience",
        "ledger",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli.run(&refs)
    };
    let json = |args: Vec<String>| -> Value {
        let out = run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let ach = json(with(&[
        "--id",
        "ach",
        "--auth",
        "tls_client_auth",
        "--tls-san-uri",
        "spiffe://bank.example/ns/payments/sa/ach",
    ]));
    assert!(
        ach["client_secret"].is_null(),
        "no secret for an mTLS client"
    );
    assert_eq!(
        ach["token_endpoint_auth_methods"],
        serde_json::json!(["tls_client_auth"])
    );
    let selfie = crate::pki::self_signed("selfie", vec![]);
    let cert_file = cli.dir.path().join("selfie.pem");
    std::fs::write(&cert_file, &selfie.cert_pem).expect("cert");
    let s = json(with(&[
        "--id",
        "selfie",
        "--auth",
        "self_signed_tls_client_auth",
        "--cert-file",
        cert_file.to_str().expect("p"),
    ]));
    assert_eq!(
        s["auth"]["cert_thumbprints"][0],
        sigil::clients::mtls::thumbprint(&selfie.der).as_str()
    );
    let key = crate::jose::EcKey::generate("k1");
    let jwks_file = cli.dir.path().join("jwks.json");
    std::fs::write(&jwks_file, key.jwks().to_string()).expect("jwks");
    let pk = json(with(&[
        "--id",
        "pk",
        "--auth",
        "private_key_jwt",
        "--jwks-file",
        jwks_file.to_str().expect("p"),
    ]));
    assert_eq!(pk["auth"]["jwks_keys"], serde_json::json!(["k1"]));

    // Missing or wrong material is refused and nothing is written.
    let mut private_jwks = key.jwks();
    private_jwks["keys"][0]["d"] = serde_json::json!("c2VjcmV0");
    let private_file = cli.dir.path().join("private.json");
    std::fs::write(&private_file, private_jwks.to_string()).expect("jwks");
    for (what, extra) in [
        (
            "tls without a subject",
            vec!["--id", "a1", "--auth", "tls_client_auth"],
        ),
        (
            "two subjects",
            vec![
                "--id",
                "a2",
                "--auth",
                "tls_client_auth",
                "--tls-san-dns",
                "a.example",
                "--tls-san-uri",
                "spiffe://x/y",
            ],
        ),
        (
            "a JWKS with a private key",
            vec![
                "--id",
                "a3",
                "--auth",
                "private_key_jwt",
                "--jwks-file",
                private_file.to_str().expect("p"),
            ],
        ),
        (
            "a jwks_uri over plain http to another host",
            vec![
                "--id",
                "a4",
                "--auth",
                "private_key_jwt",
                "--jwks-uri",
                "http://keys.example/jwks",
            ],
        ),
        (
            "an unknown method",
            vec!["--id", "a5", "--auth", "password"],
        ),
    ] {
        let out = run(with(&extra));
        assert!(!out.status.success(), "{what}");
    }
    let listed = cli.json(&["client", "list", "--realm", "payments", "--json"]);
    assert_eq!(
        listed.as_array().expect("list").len(),
        3,
        "nothing half-written"
    );

    // set-auth replaces the whole setup, so it must name the method.
    let out = cli.run(&[
        "client",
        "set-auth",
        "--realm",
        "payments",
        "--id",
        "ach",
        "--bind-tokens",
        "false",
    ]);
    assert!(!out.status.success(), "set-auth without --auth");
    // Switching: the mTLS client moves to a secret (one is printed once), then to
    // private_key_jwt (the secret is replaced and not shown); the client stays.
    let switched = cli.json(&[
        "client",
        "set-auth",
        "--realm",
        "payments",
        "--id",
        "ach",
        "--auth",
        "client_secret_basic",
    ]);
    assert!(
        switched["client_secret"]
            .as_str()
            .is_some_and(|s| s.len() > 20)
    );
    assert_eq!(
        switched["token_endpoint_auth_methods"],
        serde_json::json!(["client_secret_basic"])
    );
    let again = cli.json(&[
        "client",
        "set-auth",
        "--realm",
        "payments",
        "--id",
        "ach",
        "--auth",
        "private_key_jwt",
        "--jwks-file",
        jwks_file.to_str().expect("p"),
    ]);
    assert!(again["client_secret"].is_null());
    assert_eq!(again["client_id"], "ach");
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&cli.db).await.expect("db");
    let kinds: Vec<(String,)> = sqlx::query_as("SELECT kind FROM audit_log")
        .fetch_all(&mut conn)
        .await
        .expect("audit");
    for kind in ["client.auth_changed", "realm.mtls_changed"] {
        assert!(kinds.iter().any(|k| k.0 == kind), "{kind}");
    }
    assert!(cli.ok(&["audit", "verify"]).contains("intact"));
}

/// The CLI judges four-eyes as the server does when its own configuration names no admin realm: a
/// node records its `admin_realm` at start (audited when it changes, not on every start) and the
/// CLI takes that record. The admin realm here is made with `realm create`, its guard never set,
/// so only the admin-realm rule holds its changes; before any node ran, nothing held them.
#[tokio::test]
async fn the_cli_without_admin_realm_holds_the_realm_the_server_recorded() {
    for backend in backends() {
        let cli = cli_for(backend).await;
        for realm in ["admin", "ledger"] {
            cli.json(&["realm", "create", realm, "--alg", "ES256"]);
            cli.json(&[
                "client",
                "create",
                "--realm",
                realm,
                "--id",
                "ops",
                "--scope",
                "sigil:admin",
                "--audience",
                "sigil-admin",
            ]);
        }
        let rotate = |realm: &str| {
            cli.json(&[
                "--operator",
                "alice",
                "client",
                "rotate-secret",
                "--realm",
                realm,
                "--id",
                "ops",
            ])
        };
        // Nothing recorded yet: a CLI without admin_realm cannot know the realm is special.
        assert!(rotate("admin")["client_secret"].is_string());

        // Two starts with the same setting record it once.
        for _ in 0..2 {
            drop(crate::helpers::spawn_node(
                &cli.db,
                &cli.kek,
                &[("SIGIL_ADMIN_REALM", "admin")],
            ));
        }
        let recorded = || -> Vec<Value> {
            cli.ok(&["audit", "export"])
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
                .filter(|r| r["kind"] == "server.admin_realm_recorded")
                .collect()
        };
        let rows = recorded();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["detail"]["admin_realm"], "admin");
        assert_eq!(rows[0]["actor"], "system");

        // Now the same CLI, still without admin_realm, files requests in the admin realm: a
        // secret rotation, a principal policy, a key revocation.
        let held = rotate("admin");
        assert!(held["change_request"]["id"].is_string(), "{held}");
        assert!(held.get("client_secret").is_none(), "{held}");
        let policy = cli.json(&[
            "--operator",
            "alice",
            "policy",
            "create",
            "--realm",
            "admin",
            "--name",
            "ops-all",
            "--client",
            "ops",
            "--effect",
            "ALLOW",
            "--action",
            "db:Select",
            "--resource",
            "*",
        ]);
        assert!(policy["change_request"]["id"].is_string(), "{policy}");
        let keys = cli.json(&["key", "list", "--realm", "admin", "--json"]);
        let kid = keys[0]["kid"].as_str().expect("a kid").to_owned();
        let revoke = cli.json(&[
            "--operator",
            "alice",
            "key",
            "revoke",
            "--realm",
            "admin",
            &format!("--kid={kid}"),
        ]);
        assert!(revoke["change_request"]["id"].is_string(), "{revoke}");
        assert_eq!(
            cli.json(&["change", "list"]).as_array().map(Vec::len),
            Some(3)
        );
        // Another realm is not held.
        assert!(rotate("ledger")["client_secret"].is_string());

        // A run whose own admin_realm differs from the record is refused, not judged otherwise.
        let (code, out, err) = crate::helpers::run_cli(
            &cli.db,
            &cli.kek,
            &[("SIGIL_ADMIN_REALM", "decoy")],
            &[
                "--operator",
                "alice",
                "client",
                "rotate-secret",
                "--realm",
                "admin",
                "--id",
                "ops",
            ],
        );
        assert_ne!(code, 0, "{out}");
        assert!(
            err.contains("admin_realm is \"decoy\" here, but the server recorded \"admin\""),
            "{err}"
        );
        assert!(!out.contains("client_secret"), "{out}");

        // Bootstrapping another realm does not move a node's record.
        cli.json(&["admin", "bootstrap", "--realm", "ops2"]);
        assert!(rotate("admin")["change_request"]["id"].is_string());
        assert_eq!(recorded().len(), 1);
    }
}

/// Nodes starting at once with the same `admin_realm`: one records it, one audit row.
#[tokio::test]
async fn nodes_recording_the_admin_realm_at_once_record_it_once() {
    for backend in backends() {
        let app = crate::helpers::spawn_app(backend).await;
        let recorded = async || app.store.recorded_admin_realm().await.expect("read");
        for round in ["admin", "ops"] {
            let mut attempts = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (store, now) = (app.store.clone(), app.now());
                attempts.spawn(async move {
                    sigil::admin::changes::record_admin_realm(
                        store.as_ref(),
                        round,
                        true,
                        now,
                        "system",
                    )
                    .await
                    .map_err(|e| e.to_string())
                });
            }
            let changed = attempts.join_all().await;
            let won = changed.iter().filter(|c| matches!(c, Ok(true))).count();
            assert_eq!(won, 1, "{backend:?} {round}: {changed:?}");
            assert!(changed.iter().all(Result::is_ok), "{changed:?}");
            assert_eq!(recorded().await.as_deref(), Some(round));
        }
        // Bootstrap's record does not replace one.
        let replaced =
            sigil::admin::changes::record_admin_realm(app.store.as_ref(), "x", false, 0, "cli")
                .await
                .expect("record");
        assert!(!replaced);
        assert_eq!(recorded().await.as_deref(), Some("ops"));
        let rows: Vec<_> = app
            .audit()
            .await
            .into_iter()
            .filter(|r| r.kind == "server.admin_realm_recorded")
            .collect();
        assert_eq!(rows.len(), 2, "{backend:?}");
    }
}

/// `realm set-approval` with a raise and a lowering at once: the raise takes effect now, the
/// lowering is a request of its own (approved by another operator, it lowers only its bit).
#[tokio::test]
async fn a_raise_beside_a_lowering_takes_effect_at_once() {
    for backend in backends() {
        let cli = cli_for(backend).await;
        cli.json(&["realm", "create", "st", "--alg", "ES256"]);
        let guard = |cli: &Cli| {
            let g = cli.json(&["realm", "set-approval", "st"]);
            (g["require_approval"].clone(), g["protected"].clone())
        };
        cli.json(&[
            "--operator",
            "alice",
            "realm",
            "set-approval",
            "st",
            "--require-approval",
            "true",
        ]);
        let filed = cli.json(&[
            "--operator",
            "alice",
            "realm",
            "set-approval",
            "st",
            "--require-approval",
            "false",
            "--protected",
            "true",
        ]);
        let id = filed["change_request"]["id"].as_str().expect("filed");
        assert_eq!(
            filed["change_request"]["change"],
            serde_json::json!({"kind": "realm_guard", "realm": "st", "require_approval": false})
        );
        assert_eq!(guard(&cli), (true.into(), true.into()), "raised at once");
        let done = cli.json(&["--operator", "bob", "change", "approve", id]);
        assert_eq!(done["change"]["state"], "applied", "{done}");
        assert_eq!(guard(&cli), (false.into(), true.into()));
    }
}

/// `policy create --replace` of the policy as stored answers with it and writes nothing: no
/// audit record, no new bundle version.
#[tokio::test]
async fn writing_a_policy_as_it_is_writes_nothing() {
    for backend in backends() {
        let cli = cli_for(backend).await;
        cli.json(&["realm", "create", "ledger", "--alg", "ES256"]);
        cli.json(&[
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
        ]);
        let policy = [
            "policy",
            "create",
            "--realm",
            "ledger",
            "--name",
            "p",
            "--client",
            "svc",
            "--effect",
            "ALLOW",
            "--action",
            "db:Select",
            "--resource",
            "*",
        ];
        let created = cli.json(&policy);
        let audit_rows = || cli.ok(&["audit", "export"]).lines().count();
        let (rows, version) = (
            audit_rows(),
            cli.json(&["policy", "list", "--realm", "ledger"])["version"].clone(),
        );
        let again = cli.json(&[&policy[..], &["--replace"]].concat());
        assert_eq!(again, created);
        assert_eq!(audit_rows(), rows);
        assert_eq!(
            cli.json(&["policy", "list", "--realm", "ledger"])["version"],
            version
        );
        // Another effect is a write.
        let mut deny = policy.to_vec();
        deny[9] = "DENY";
        deny.push("--replace");
        assert_eq!(cli.json(&deny)["effect"], "DENY");
        assert_eq!(audit_rows(), rows + 1);
    }
}
