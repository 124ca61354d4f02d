//! Starting the real `sigil` binary: the files it creates are private, open ones are warned
//! about, and processes started together on a fresh database (server and CLI alike) all succeed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::helpers::{Backend, backends, fresh_database};

fn sigil(db: &str, kek: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(["--database-url", db, "--kek-file"])
        .arg(kek)
        .args(args)
        .current_dir(dir)
        .env_remove("SIGIL_BIND")
        .env("SIGIL_LOG", "warn");
    cmd
}

/// A `sigil serve` that is killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(mut cmd: Command) -> Server {
    Server(
        cmd.args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sigil serve"),
    )
}

impl Server {
    /// Waits for "listening on ..."; on failure, returns what the server wrote to stderr.
    fn wait_listening(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let stdout = self.0.stdout.take().expect("stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        match line.strip_prefix("listening on ") {
            Some(base) => Ok(base.trim().to_owned()),
            None => {
                let _ = self.0.kill();
                let mut err = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                Err(err)
            }
        }
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `sigil.db` holds password hashes and the KEK opens every private key: on a fresh start the
/// data and keys directories are 0700 and every file in them 0600, whatever the umask; a later
/// start warns about a database or KEK file that group or others can read.
#[cfg(unix)]
#[test]
fn a_fresh_start_creates_private_files_and_warns_about_open_ones() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let db_file = data.join("sigil.db");
    let db = format!("sqlite://{}", db_file.display());
    let kek = tmp.path().join("keys/kek");
    let mut server = spawn_server(sigil(&db, &kek, tmp.path(), &[]));
    server.wait_listening().expect("server starts");
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&tmp.path().join("keys")), 0o700, "keys directory");
    assert_eq!(mode(&kek), 0o600, "KEK");
    // While the server runs, WAL mode keeps the -wal and -shm files beside the database.
    for name in ["sigil.db", "sigil.db-wal", "sigil.db-shm", "sigil.db.lock"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    let out = sigil(&db, &kek, tmp.path(), &["realm", "create", "ledger"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe("realm create", &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("accessible to group or others"),
        "{stderr}"
    );
    drop(server);

    // Files opened up by hand are warned about at the next start (and the -wal/-shm files that
    // SQLite creates with the database's mode are restricted again).
    for p in [&db_file, &kek] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut server = spawn_server(sigil(&db, &kek, tmp.path(), &[]));
    server.wait_listening().expect("server starts");
    assert_eq!(mode(&data.join("sigil.db-wal")), 0o600);
    assert_eq!(mode(&data.join("sigil.db-shm")), 0o600);
    drop(server);
    let out = sigil(&db, &kek, tmp.path(), &["realm", "create", "second"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe("realm create", &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("database file is accessible to group or others")
            && stderr.contains(&db_file.display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("key-encryption key file is accessible to group or others"),
        "{stderr}"
    );
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Servers and CLI commands started at the same moment on a database nobody has migrated yet
/// take turns migrating (a lock file beside the SQLite database, an advisory lock on
/// PostgreSQL) and share the one KEK the first of them creates: every process succeeds.
#[tokio::test]
async fn processes_started_together_on_a_fresh_database_all_succeed() {
    for backend in backends() {
        for trial in 0..3 {
            let tmp = tempfile::tempdir().expect("tmp");
            let fresh = match backend {
                // A data directory that does not exist yet, as on a new machine.
                Backend::Sqlite => None,
                Backend::Postgres => Some(fresh_database(backend, tmp.path()).await),
            };
            let db = match &fresh {
                Some(f) => f.url.clone(),
                None => format!("sqlite://{}", tmp.path().join("data/sigil.db").display()),
            };
            let kek = tmp.path().join("keys/kek");
            let run = |args: &[&str]| {
                sigil(&db, &kek, tmp.path(), args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            };
            // Eight processes, spawned back to back.
            let mut servers = vec![
                spawn_server(sigil(&db, &kek, tmp.path(), &[])),
                spawn_server(sigil(&db, &kek, tmp.path(), &[])),
            ];
            let cli = vec![
                ("migrate", run(&["migrate"])),
                ("realm create a", run(&["realm", "create", "a"])),
                ("realm list", run(&["realm", "list"])),
                ("migrate", run(&["migrate"])),
                ("realm create b", run(&["realm", "create", "b"])),
                ("audit verify", run(&["audit", "verify"])),
            ];
            let mut failures = Vec::new();
            for (what, child) in cli {
                let out = child.wait_with_output().expect("wait");
                if !out.status.success() {
                    failures.push(describe(what, &out));
                }
            }
            for s in &mut servers {
                if let Err(stderr) = s.wait_listening() {
                    failures.push(format!("serve: {stderr}"));
                }
            }
            drop(servers);
            assert!(
                failures.is_empty(),
                "{backend:?} trial {trial}:\n{}",
                failures.join("\n")
            );
            let out = sigil(&db, &kek, tmp.path(), &["realm", "list"])
                .output()
                .expect("run");
            let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split('\t').next().map(str::to_owned))
                .collect();
            assert_eq!(names, ["a", "b"]);
            let out = sigil(&db, &kek, tmp.path(), &["audit", "verify"])
                .output()
                .expect("run");
            assert!(out.status.success(), "{}", describe("audit verify", &out));
        }
    }
}

/// `/readyz` checks what a node needs to serve: the database, the audit writer, the KEK (no
/// signing key sealed under one it lacks) and an active signing key it can open for every realm;
/// a realm without one makes it 503, named.
async fn readiness_names_what_is_wrong(app: &crate::helpers::TestApp) {
    app.create_realm("payments", sigil::keys::Alg::ES256).await;
    let get = || async {
        let res = app
            .http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .expect("readyz");
        let status = res.status().as_u16();
        assert_eq!(res.headers()["cache-control"], "no-store");
        (status, res.json::<serde_json::Value>().await.expect("json"))
    };
    let (status, body) = get().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["audit_writer"], "ok");
    assert_eq!(body["checks"]["realms"]["payments"], "ok");
    assert!(
        body["checks"]["kek"]
            .as_str()
            .is_some_and(|k| k.starts_with("loaded"))
    );

    // Keys re-sealed elsewhere under a KEK this node lacks (a rotation that skipped the rolling
    // steps): the keys it holds still sign, but it is not ready, and says why.
    let kek_of =
        |id: &str| format!("UPDATE signing_keys SET kek_id = '{id}' WHERE realm = 'payments'");
    let own: String = {
        let ids = app.store.kek_ids_in_use().await.expect("ids");
        ids.into_iter().next().expect("one kek")
    };
    crate::helpers::exec_raw(app, &kek_of("file:elsewhere"))
        .await
        .expect("re-seal");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = get().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["checks"]["kek"],
        "signing keys are sealed under a KEK this node does not hold"
    );
    assert_eq!(body["checks"]["realms"]["payments"], "ok", "{body}");
    crate::helpers::exec_raw(app, &kek_of(&own))
        .await
        .expect("back");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get().await.0, 200);

    crate::helpers::exec_raw(
        app,
        "UPDATE signing_keys SET state = 'retired' WHERE realm = 'payments'",
    )
    .await
    .expect("retire");
    // The answer is computed at most once per clock second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = get().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["realms"]["payments"]
            .as_str()
            .is_some_and(|why| why.contains("no active signing key")),
        "{body}"
    );
}
crate::on_every_backend!(readiness, readiness_names_what_is_wrong);
