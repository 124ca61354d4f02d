//! `sigil export` / `sigil apply`: the round trip (export → apply to an empty database → export
//! again gives the same file), `--dry-run` writing nothing, a second apply writing nothing (not an
//! audit row), and a file that contradicts the database refused before anything is written.

use std::process::Command;

use crate::helpers::{backends, count_rows_at, fresh_database};

fn sigil(db: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    crate::helpers::run_cli(db, &dir.join("kek"), &[], args)
}

/// `sigil` that must succeed: its stdout.
fn ok(db: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = sigil(db, dir, args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

/// Two fresh databases of one backend, a source (`a`) and a target (`b`), each with a directory
/// of its own (for its KEK).
struct Pair {
    dir: tempfile::TempDir,
    a: std::path::PathBuf,
    b: std::path::PathBuf,
    db_a: crate::helpers::TestDb,
    db_b: crate::helpers::TestDb,
}

impl Pair {
    async fn new(backend: crate::helpers::Backend) -> Pair {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).expect("a");
        std::fs::create_dir_all(&b).expect("b");
        let db_a = fresh_database(backend, &a).await;
        let db_b = fresh_database(backend, &b).await;
        Pair {
            dir,
            a,
            b,
            db_a,
            db_b,
        }
    }
}

#[tokio::test]
async fn export_apply_export_is_the_same_file_and_applying_twice_writes_nothing() {
    for backend in backends() {
        let Pair {
            dir,
            a,
            b,
            db_a,
            db_b,
        } = Pair::new(backend).await;
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
        // The AWS exchange of a realm, an ALLOW and a DENY binding.
        for args in [
            &[
                "aws",
                "configure",
                "--realm",
                "staff",
                "--server-id",
                "sigil.bank.example",
                "--require-challenge",
            ][..],
            &[
                "aws",
                "bind",
                "--realm",
                "staff",
                "--id",
                "payments-role",
                "--principal",
                "arn:aws:iam::123456789012:role/payments-*",
                "--scope",
                "tx:post:ach",
                "--audience",
                "ledger",
            ],
            &[
                "aws",
                "bind",
                "--realm",
                "staff",
                "--id",
                "no-sandbox",
                "--account",
                "999999999999",
                "--deny",
            ],
        ] {
            ok(&db_a.url, &a, args);
        }
        // Principal policies: a client's with an assertion, a group's, an AWS pattern's DENY.
        for args in [
            &[
                "policy",
                "create",
                "--realm",
                "staff",
                "--name",
                "ach-small",
                "--client",
                "ach",
                "--effect",
                "ALLOW",
                "--action",
                "db:Insert",
                "--resource",
                "financial.ledger.document.*",
                "--assert",
                "context.document.amount <= 10000",
                "--description",
                "ACH inserts up to 10 000",
            ][..],
            &[
                "policy",
                "create",
                "--realm",
                "customers",
                "--name",
                "retail-read",
                "--group",
                "retail",
                "--effect",
                "allow",
                "--action",
                "db:Select",
                "--resource",
                "*",
            ],
            &[
                "policy",
                "create",
                "--realm",
                "staff",
                "--name",
                "no-temp",
                "--aws-principal",
                "arn:aws:iam::123456789012:role/temp-*",
                "--effect",
                "DENY",
                "--action",
                "db:*",
                "--resource",
                "*",
            ],
        ] {
            ok(&db_a.url, &a, args);
        }

        let exported = ok(&db_a.url, &a, &["export"]);
        assert!(
            exported.contains("[[realm.policy]]") && exported.contains("name = \"ach-small\""),
            "{exported}"
        );
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

        assert!(
            exported.contains("[realm.aws]") && exported.contains("id = \"no-sandbox\""),
            "{exported}"
        );

        // A file that asks what cannot change in place (a realm's algorithm): refused, nothing
        // written, even the parts that could have been applied (a new group).
        let changed = exported.replace("alg = \"EdDSA\"", "alg = \"ES256\"") + "\n";
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
        assert!(
            err.contains("realm staff: alg is EdDSA in the database, ES256 in the file"),
            "{err}"
        );
        assert_eq!(rows(&db_b.url).await, before, "nothing applied");

        // A policy naming a client the realm will not have (another realm's): refused, nothing
        // written.
        let foreign = exported
            .replace("principal = \"retail\"", "principal = \"ach\"")
            .replace("principal_kind = \"group\"", "principal_kind = \"client\"");
        assert_ne!(foreign, exported);
        std::fs::write(&file, &foreign).expect("write");
        let (code, _, err) = sigil(&db_b.url, &b, &["apply", "-f", file_s]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("policy customers/retail-read names client \"ach\""),
            "{err}"
        );
        assert_eq!(rows(&db_b.url).await, before, "nothing applied");

        // Four-eyes: once staff is protected, a file cannot write or delete its policies (the
        // unchanged file still applies as nothing to do); `sigil policy` files requests instead.
        ok(
            &db_b.url,
            &b,
            &["realm", "set-approval", "staff", "--protected", "true"],
        );
        let before = rows(&db_b.url).await;
        for (file_text, says) in [
            (
                exported.replace("amount <= 10000", "amount <= 99999"),
                "the file writes policy ach-small",
            ),
            (
                exported.replace("name = \"no-temp\"", "name = \"no-temp-2\""),
                "the file leaves out policy no-temp",
            ),
        ] {
            assert_ne!(file_text, exported);
            std::fs::write(&file, &file_text).expect("write");
            let (code, _, err) = sigil(&db_b.url, &b, &["apply", "-f", file_s]);
            assert_eq!(code, 1, "{err}");
            assert!(err.contains(says), "{err}");
            assert_eq!(rows(&db_b.url).await, before, "nothing applied");
        }
        std::fs::write(&file, &exported).expect("write");
        assert!(ok(&db_b.url, &b, &["apply", "-f", file_s]).contains("no changes"));
        let filed = ok(
            &db_b.url,
            &b,
            &[
                "--operator",
                "alice",
                "policy",
                "delete",
                "--realm",
                "staff",
                "--name",
                "no-temp",
            ],
        );
        let filed: serde_json::Value = serde_json::from_str(&filed).expect("json");
        let id = filed["change_request"]["id"].as_str().expect("id");
        let show = ["policy", "show", "--realm", "staff", "--name", "no-temp"];
        ok(&db_b.url, &b, &show);
        ok(
            &db_b.url,
            &b,
            &["--operator", "bob", "change", "approve", id],
        );
        assert_ne!(sigil(&db_b.url, &b, &show).0, 0, "deleted once approved");

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

        std::fs::write(
            &file,
            exported.replace("alg = \"ES256\"", "alg = \"RS256\""),
        )
        .expect("write");
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
            err.contains("apply_on_start") && err.contains("realm ledger: alg is ES256"),
            "{err}"
        );
    }
}

/// `apply` changes and deletes in place, seen by a running node: a client's secret from a
/// `secret_file` works; a narrower scope in the file narrows what the client gets; a group's
/// scopes change and a group left out is deleted; a realm's token lifetime changes; a client
/// left out of the file is deleted (its next token request is `invalid_client`); an AWS binding
/// changes in one step. Each change is one audit record; the file exported afterwards applies
/// with nothing to do.
#[tokio::test]
async fn apply_changes_and_deletes_what_the_file_changes_and_leaves_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = fresh_database(backend, dir.path()).await;
        let secret = "s3cret-from-a-mounted-file-0123456789abcdef";
        std::fs::write(dir.path().join("svc.secret"), format!("{secret}\n")).expect("secret");
        let file = dir.path().join("realms.toml");
        let first = r#"
[[realm]]
name = "ledger"
access_token_ttl = 3600

[[realm.group]]
name = "tellers"
scopes = "balances:read"

[[realm.group]]
name = "auditors"
scopes = "audit:read"

[[realm.client]]
client_id = "svc"
scope = "tx:post:ach balances:read"
audience = "ledger"
secret_file = "svc.secret"

[[realm.client]]
client_id = "old"
scope = "balances:read"
audience = "ledger"

[realm.aws]
server_id = "sigil.bank.example"

[[realm.aws_binding]]
id = "payments"
principal = "arn:aws:iam::123456789012:role/payments"
scope = "tx:post:ach"
audience = "ledger"
"#;
        std::fs::write(&file, first).expect("write");
        let file_s = file.to_str().expect("path");
        let (code, out, err) = sigil(&db.url, dir.path(), &["apply", "-f", file_s]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            !out.contains(secret) && out.contains("\"ledger/old\""),
            "a given secret is not printed, a generated one is: {out}"
        );
        let shown: serde_json::Value =
            serde_json::from_str(&out[out.find('{').expect("json")..]).expect("secrets");
        let old_secret: &'static str = shown["client_secrets"]["ledger/old"]
            .as_str()
            .expect("old's secret")
            .to_owned()
            .leak();

        let kek = dir.path().join("kek");
        let node = crate::helpers::spawn_node(&db.url, &kek, &[("SIGIL_CACHE_TTL_SECS", "0")]);
        let http = reqwest::Client::new();
        let token = |scope: &'static str, id: &'static str, pw: &'static str| {
            let (http, base) = (http.clone(), node.1.clone());
            async move {
                let r = http
                    .post(format!("{base}/realms/ledger/oauth2/token"))
                    .basic_auth(id, Some(pw))
                    .form(&[("grant_type", "client_credentials"), ("scope", scope)])
                    .send()
                    .await
                    .expect("token");
                let status = r.status().as_u16();
                (status, r.json::<serde_json::Value>().await.expect("json"))
            }
        };
        let (status, body) = token("tx:post:ach", "svc", secret).await;
        assert_eq!(status, 200, "the secret from secret_file works: {body}");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(token("balances:read", "old", old_secret).await.0, 200);

        let second = first
            .replace("access_token_ttl = 3600", "access_token_ttl = 600")
            .replace(
                "scope = \"tx:post:ach balances:read\"",
                "scope = \"balances:read\"",
            )
            .replace("scopes = \"balances:read\"", "scopes = \"balances:read tx:read\"")
            .replace(
                "\n[[realm.group]]\nname = \"auditors\"\nscopes = \"audit:read\"\n",
                "",
            )
            .replace(
                "\n[[realm.client]]\nclient_id = \"old\"\nscope = \"balances:read\"\naudience = \"ledger\"\n",
                "",
            )
            .replace("role/payments\"", "role/payments-*\"");
        assert_ne!(second, first);
        std::fs::write(&file, &second).expect("write");
        let audit_rows =
            || async { count_rows_at(backend, &db.url, "SELECT COUNT(*) FROM audit_log").await };
        let before = audit_rows().await;
        let (code, plan, err) = sigil(&db.url, dir.path(), &["apply", "-f", file_s, "--dry-run"]);
        assert_eq!(code, 0, "{err}");
        for line in [
            "~ realm ledger: tokens 600 s",
            "~ group ledger/tellers (balances:read tx:read)",
            "- group ledger/auditors",
            "~ client ledger/svc: scope: \"tx:post:ach balances:read\" → \"balances:read\"",
            "- client ledger/old",
            "~ AWS binding ledger/payments (allow arn:aws:iam::123456789012:role/payments-*)",
        ] {
            assert!(plan.contains(line), "{line:?} not in {plan}");
        }
        assert_eq!(audit_rows().await, before, "a dry run writes nothing");
        let (code, out, err) = sigil(&db.url, dir.path(), &["apply", "-f", file_s]);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            audit_rows().await,
            before + 6,
            "one audit record a change: {out}"
        );
        for kind in [
            "realm.updated",
            "group.updated",
            "group.deleted",
            "client.updated",
            "client.deleted",
        ] {
            let q =
                format!("SELECT COUNT(*) FROM audit_log WHERE kind = '{kind}' AND actor = 'apply'");
            assert_eq!(count_rows_at(backend, &db.url, &q).await, 1, "{kind}");
        }

        // The running node sees it: the old scope is refused, the lifetime is the new one, the
        // deleted client is unknown, the kept secret still works.
        let (status, body) = token("tx:post:ach", "svc", secret).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope")),
            "{body}"
        );
        let (status, body) = token("balances:read", "svc", secret).await;
        assert_eq!(
            (status, body["expires_in"].as_i64()),
            (200, Some(600)),
            "{body}"
        );
        let (status, body) = token("balances:read", "old", old_secret).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
        let (code, shown, _) = sigil(&db.url, dir.path(), &["export"]);
        assert_eq!(code, 0);
        assert!(
            !shown.contains("client_id = \"old\"") && !shown.contains("auditors"),
            "{shown}"
        );
        assert!(shown.contains("role/payments-*"), "{shown}");

        // What export writes now applies with nothing to do.
        std::fs::write(&file, &shown).expect("write");
        let (code, out, _) = sigil(&db.url, dir.path(), &["apply", "-f", file_s]);
        assert_eq!((code, out.contains("no changes")), (0, true), "{out}");

        // The admin realm is configuration: a file naming another one is refused.
        std::fs::write(&file, format!("admin_realm = \"ledger\"\n{shown}")).expect("write");
        let (code, _, err) = sigil(&db.url, dir.path(), &["apply", "-f", file_s]);
        assert_eq!(code, 1);
        assert!(
            err.contains("admin_realm is \"ledger\" in the file"),
            "{err}"
        );
        drop(node);
    }
}

/// A file with one bad entry after good ones changes nothing at all (every step is checked before
/// the first write), an unreadable or oversized `secret_file` likewise; and several `sigil apply`
/// of one file at once all succeed, the realm made once.
#[tokio::test]
async fn a_bad_entry_applies_nothing_and_concurrent_applies_settle() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = fresh_database(backend, dir.path()).await;
        let file = dir.path().join("realms.toml");
        let file_s = file.to_str().expect("path").to_owned();
        let good = "[[realm]]\nname = \"ledger\"\n\n[[realm.group]]\nname = \"tellers\"\nscopes = \"balances:read\"\n\n[[realm.client]]\nclient_id = \"svc\"\nscope = \"a\"\naudience = \"ledger\"\n";
        std::fs::write(&file, good).expect("write");

        // Four at once on an empty database.
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let (url, d, f) = (db.url.clone(), dir.path().to_owned(), file_s.clone());
                std::thread::spawn(move || sigil(&url, &d, &["apply", "-f", &f]))
            })
            .collect();
        for r in runs {
            let (code, out, err) = r.join().expect("apply");
            assert_eq!(code, 0, "{out}{err}");
        }
        let made = "SELECT COUNT(*) FROM audit_log WHERE kind = 'realm.created'";
        assert_eq!(count_rows_at(backend, &db.url, made).await, 1);
        let clients = "SELECT COUNT(*) FROM audit_log WHERE kind = 'client.created'";
        assert_eq!(count_rows_at(backend, &db.url, clients).await, 1);

        let rows = "SELECT COUNT(*) FROM audit_log";
        let before = count_rows_at(backend, &db.url, rows).await;
        let (_, exported, _) = sigil(&db.url, dir.path(), &["export"]);
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).expect("symlink");
        let big = dir.path().join("big.secret");
        std::fs::write(&big, "x".repeat(100_000)).expect("write");
        for bad in [
            // A new group (valid), a changed client (valid), then a client with a bad redirect URI.
            good.replace("balances:read", "balances:read tx:read")
                + "\n[[realm.client]]\nclient_id = \"web\"\nscope = \"a\"\naudience = \"ledger\"\nredirect_uris = [\"http://evil.example/cb\"]\n",
            good.to_owned()
                + "\n[[realm.client]]\nclient_id = \"x\"\nscope = \"a\"\naudience = \"ledger\"\nsecret_file = \"missing.secret\"\n",
            good.to_owned()
                + "\n[[realm.client]]\nclient_id = \"x\"\nscope = \"a\"\naudience = \"ledger\"\nsecret_file = \"big.secret\"\n",
            good.to_owned()
                + "\n[[realm.aws_binding]]\nid = \"b\"\nscope = \"a\"\naudience = \"l\"\n",
            good.to_owned() + "\n[[realm.group]]\nname = \"bad name\"\nscopes = \"x\"\n",
            // A device behind a symlink: never read (it is endless).
            good.to_owned()
                + "\n[[realm.client]]\nclient_id = \"x\"\nscope = \"a\"\naudience = \"ledger\"\nsecret_file = \"zero\"\n",
        ] {
            std::fs::write(&file, &bad).expect("write");
            let (code, out, err) = sigil(&db.url, dir.path(), &["apply", "-f", &file_s]);
            assert_eq!(code, 1, "{bad}\n{out}{err}");
            assert!(
                err.contains("invalid:") && err.contains("nothing was applied"),
                "{err}"
            );
            assert_eq!(count_rows_at(backend, &db.url, rows).await, before, "{bad}");
            assert_eq!(sigil(&db.url, dir.path(), &["export"]).1, exported, "{bad}");
        }

        // A NUL (or any control character) in the file: refused as the file is read.
        std::fs::write(
            &file,
            good.replace(
                "name = \"ledger\"",
                "name = \"ledger\"\ndisplay_name = \"a\\u0000b\"",
            ),
        )
        .expect("write");
        let (code, _, err) = sigil(&db.url, dir.path(), &["apply", "-f", &file_s]);
        assert_ne!(code, 0);
        assert!(err.contains("control characters"), "{err}");
        assert_eq!(count_rows_at(backend, &db.url, rows).await, before);

        // The admin realm keeps a client with sigil:admin: a file that drops the last one is a
        // conflict, not a lock-out.
        let admin_env = [("SIGIL_ADMIN_REALM", "ledger")];
        let with_admin = good.replace(
            "scope = \"a\"\naudience = \"ledger\"",
            "scope = \"sigil:admin\"\naudience = \"sigil-admin\"",
        );
        assert_ne!(with_admin, good);
        std::fs::write(&file, &with_admin).expect("write");
        let (code, out, err) = crate::helpers::run_cli(
            &db.url,
            &dir.path().join("kek"),
            &admin_env,
            &["apply", "-f", &file_s],
        );
        assert_eq!(code, 0, "{out}{err}");
        std::fs::write(
            &file,
            good.replace(
                "\n[[realm.client]]\nclient_id = \"svc\"\nscope = \"a\"\naudience = \"ledger\"\n",
                "",
            ),
        )
        .expect("write");
        let (code, _, err) = crate::helpers::run_cli(
            &db.url,
            &dir.path().join("kek"),
            &admin_env,
            &["apply", "-f", &file_s],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("lock the admin API out"), "{err}");
        // Moving the last one off the admin audience locks it out as surely.
        std::fs::write(
            &file,
            with_admin.replace("audience = \"sigil-admin\"", "audience = \"other\""),
        )
        .expect("write");
        let (code, _, err) = crate::helpers::run_cli(
            &db.url,
            &dir.path().join("kek"),
            &admin_env,
            &["apply", "-f", &file_s],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("lock the admin API out"), "{err}");
    }
}

/// A realm's four-eyes guard travels in the file: exported where it was set, applied to an empty
/// database as it was, raised by a file at once, never lowered by one (a conflict, nothing
/// written); a guard never set that a file states as it is gets recorded, so the round trip holds.
#[tokio::test]
async fn the_four_eyes_guard_travels_in_the_file_and_a_file_only_raises_it() {
    use sigil::admin::declarative::{ApprovalSpec, Document};
    for backend in backends() {
        let Pair {
            dir,
            a,
            b,
            db_a,
            db_b,
        } = Pair::new(backend).await;
        let file = dir.path().join("realms.toml");
        let file_s = file.to_str().expect("path");
        let write = |doc: &Document| {
            std::fs::write(&file, toml::to_string(doc).expect("toml")).expect("write")
        };
        let approval = |doc: &Document, realm: &str| {
            doc.realms
                .iter()
                .find(|r| r.name == realm)
                .expect("realm")
                .approval
        };
        let set = |doc: &mut Document, realm: &str, a: Option<ApprovalSpec>| {
            doc.realms
                .iter_mut()
                .find(|r| r.name == realm)
                .expect("realm")
                .approval = a;
        };
        let guard = |require_approval, protected| {
            Some(ApprovalSpec {
                require_approval,
                protected,
            })
        };
        for realm in ["ops", "staff"] {
            ok(&db_a.url, &a, &["realm", "create", realm]);
        }
        ok(
            &db_a.url,
            &a,
            &[
                "realm",
                "set-approval",
                "staff",
                "--require-approval",
                "true",
            ],
        );
        let exported = ok(&db_a.url, &a, &["export"]);
        let doc: Document = toml::from_str(&exported).expect("parse");
        assert_eq!(approval(&doc, "staff"), guard(true, false));
        assert_eq!(approval(&doc, "ops"), None, "never set: not exported");
        std::fs::write(&file, &exported).expect("write");
        let applied = ok(&db_b.url, &b, &["apply", "-f", file_s]);
        assert!(
            applied.contains("~ realm staff: four-eyes require_approval on"),
            "{applied}"
        );
        assert_eq!(ok(&db_b.url, &b, &["export"]), exported);
        assert!(ok(&db_b.url, &b, &["apply", "-f", file_s]).contains("no changes"));

        // Raised by a file at once.
        let mut raised = doc.clone();
        set(&mut raised, "staff", guard(true, true));
        write(&raised);
        let applied = ok(&db_b.url, &b, &["apply", "-f", file_s]);
        assert!(
            applied.contains("~ realm staff: four-eyes protected on"),
            "{applied}"
        );
        let now: serde_json::Value =
            serde_json::from_str(&ok(&db_b.url, &b, &["realm", "set-approval", "staff"]))
                .expect("json");
        assert_eq!(
            (&now["require_approval"], &now["protected"]),
            (&true.into(), &true.into())
        );

        // Never lowered by one: a conflict, nothing written.
        let audit_rows = count_rows_at(backend, &db_b.url, "SELECT COUNT(*) FROM audit_log").await;
        for lower in [guard(true, false), guard(false, true), guard(false, false)] {
            let mut lowered = raised.clone();
            set(&mut lowered, "staff", lower);
            write(&lowered);
            let (code, _, err) = sigil(&db_b.url, &b, &["apply", "-f", file_s]);
            assert_eq!(code, 1, "{err}");
            assert!(
                err.contains("realm staff: the file lowers its four-eyes guard"),
                "{err}"
            );
            assert_eq!(
                count_rows_at(backend, &db_b.url, "SELECT COUNT(*) FROM audit_log").await,
                audit_rows,
                "nothing applied"
            );
        }
        // A file without the guard leaves it as it is.
        let mut silent = raised.clone();
        set(&mut silent, "staff", None);
        write(&silent);
        assert!(ok(&db_b.url, &b, &["apply", "-f", file_s]).contains("no changes"));

        // A never-set guard stated as it is (ops: off) is recorded, then exported.
        let mut stated = raised.clone();
        set(&mut stated, "ops", guard(false, false));
        write(&stated);
        let applied = ok(&db_b.url, &b, &["apply", "-f", file_s]);
        assert!(
            applied.contains("~ realm ops: four-eyes guard recorded as it is"),
            "{applied}"
        );
        let after: Document = toml::from_str(&ok(&db_b.url, &b, &["export"])).expect("parse");
        assert_eq!(approval(&after, "ops"), guard(false, false));
        assert!(ok(&db_b.url, &b, &["apply", "-f", file_s]).contains("no changes"));
    }
}

/// Admins raising different bits of one guard at once, each deciding from the guard it read:
/// both bits end up on, every time (a write of the whole guard from an earlier read would undo
/// the other's raise, lowering it without a second admin).
#[tokio::test]
async fn concurrent_raises_of_a_guard_never_undo_each_other() {
    use sigil::admin::changes;
    use sigil::store::{GuardBits, RealmGuard};
    for backend in backends() {
        let app = crate::helpers::spawn_app(backend).await;
        app.create_realm("staff", sigil::keys::Alg::ES256).await;
        for round in 0..6 {
            let off = RealmGuard::default();
            changes::set_guard(app.store.as_ref(), "staff", off, app.now(), "t")
                .await
                .expect("reset");
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..8 {
                let store = app.store.clone();
                let now = app.now();
                tasks.spawn(async move {
                    let was = changes::guard(store.as_ref(), None, "staff").await?;
                    let bits = if i % 2 == 0 {
                        GuardBits {
                            require_approval: (!was.require_approval).then_some(true),
                            protected: None,
                        }
                    } else {
                        GuardBits {
                            require_approval: None,
                            protected: (!was.protected).then_some(true),
                        }
                    };
                    if bits.is_empty() {
                        return Ok(was);
                    }
                    changes::change_guard(store.as_ref(), "staff", bits, was, now, "t").await
                });
            }
            for r in tasks.join_all().await {
                r.expect("raise");
            }
            let g = changes::guard(app.store.as_ref(), None, "staff")
                .await
                .expect("guard");
            assert_eq!(
                g,
                RealmGuard {
                    require_approval: true,
                    protected: true
                },
                "{backend:?} round {round}"
            );
        }
    }
}

/// Attribute declarations travel in the file: exported when a realm has some, applied to an
/// empty database (a `pii_high` one encrypted there too), left alone where a file has none,
/// replaced where it has them; an attribute holding encrypted values stays `pii_high` (a file
/// saying otherwise is a conflict, nothing written).
#[tokio::test]
async fn attribute_declarations_travel_in_the_file() {
    use sigil::admin::declarative::Document;
    for backend in backends() {
        let Pair {
            dir,
            a,
            b,
            db_a,
            db_b,
        } = Pair::new(backend).await;
        let file = dir.path().join("realms.toml");
        let file_s = file.to_str().expect("path");
        ok(&db_a.url, &a, &["realm", "create", "customers"]);
        ok(
            &db_a.url,
            &a,
            &[
                "realm",
                "set-attributes",
                "customers",
                "--attr",
                "party_id:pii_high",
                "--attr",
                "segment:internal",
            ],
        );
        let exported = ok(&db_a.url, &a, &["export"]);
        let doc: Document = toml::from_str(&exported).expect("parse");
        let declared = doc.realms[0].attributes.clone().expect("exported");
        assert_eq!(declared["party_id"], "pii_high");
        assert_eq!(declared["segment"], "internal");
        std::fs::write(&file, &exported).expect("write");
        let applied = ok(&db_b.url, &b, &["apply", "-f", file_s]);
        assert!(
            applied.contains("~ realm customers: attributes party_id:pii_high segment:internal"),
            "{applied}"
        );
        assert_eq!(ok(&db_b.url, &b, &["export"]), exported);
        assert!(ok(&db_b.url, &b, &["apply", "-f", file_s]).contains("no changes"));

        // A user's pii_high value is encrypted; a file without declarations leaves them.
        ok(
            &db_b.url,
            &b,
            &[
                "user",
                "create",
                "--realm",
                "customers",
                "--username",
                "dave",
                "--attr",
                "party_id=P-991",
            ],
        );
        let pii = "SELECT COUNT(*) FROM user_pii";
        assert_eq!(count_rows_at(backend, &db_b.url, pii).await, 1);
        let mut none = doc.clone();
        none.realms[0].attributes = None;
        std::fs::write(&file, toml::to_string(&none).expect("toml")).expect("write");
        assert!(ok(&db_b.url, &b, &["apply", "-f", file_s]).contains("no changes"));

        // It stays pii_high: a file making it internal, or dropping it, is a conflict.
        let audit = "SELECT COUNT(*) FROM audit_log";
        let rows = count_rows_at(backend, &db_b.url, audit).await;
        for class in [Some("internal"), None] {
            let mut lowered = doc.clone();
            let attrs = lowered.realms[0].attributes.as_mut().expect("attrs");
            match class {
                Some(c) => {
                    attrs.insert("party_id".into(), c.into());
                }
                None => {
                    attrs.remove("party_id");
                }
            }
            std::fs::write(&file, toml::to_string(&lowered).expect("toml")).expect("write");
            let (code, _, err) = sigil(&db_b.url, &b, &["apply", "-f", file_s]);
            assert_eq!(code, 1, "{err}");
            assert!(
                err.contains("attribute party_id holds encrypted values, so it stays pii_high"),
                "{err}"
            );
            assert_eq!(count_rows_at(backend, &db_b.url, audit).await, rows);
        }
        // Replaced where the file has them: segment goes, tier comes.
        let mut changed = doc.clone();
        let attrs = changed.realms[0].attributes.as_mut().expect("attrs");
        attrs.remove("segment");
        attrs.insert("tier".into(), "internal".into());
        std::fs::write(&file, toml::to_string(&changed).expect("toml")).expect("write");
        ok(&db_b.url, &b, &["apply", "-f", file_s]);
        let after: Document = toml::from_str(&ok(&db_b.url, &b, &["export"])).expect("parse");
        assert_eq!(after.realms[0].attributes, changed.realms[0].attributes);
        assert_eq!(count_rows_at(backend, &db_b.url, pii).await, 1);

        // A bad class is refused before anything is written.
        let mut bad = changed.clone();
        bad.realms[0]
            .attributes
            .as_mut()
            .expect("attrs")
            .insert("tier".into(), "secret".into());
        std::fs::write(&file, toml::to_string(&bad).expect("toml")).expect("write");
        let (code, _, err) = sigil(&db_b.url, &b, &["apply", "-f", file_s]);
        assert_ne!(code, 0);
        assert!(err.contains("internal or pii_high"), "{err}");
    }
}
