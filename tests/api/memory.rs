//! Memory of the real `sigil` binary: a password check allocates argon2's 19 MiB block, and glibc
//! used to keep each one in the heap (its dynamic mmap threshold rose to fit it), so every failed
//! sign-in left ~20 MB behind. `main` fixes the mmap threshold, so the blocks go back to the OS.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::helpers::{Backend, TestDb, backends, fresh_database};

const REDIRECT: &str = "https://app.example/cb";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigil(db: &str, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(["--database-url", db, "--kek-file"])
        .arg(dir.join("keys/kek"))
        .current_dir(dir)
        .env_remove("SIGIL_BIND")
        .env("SIGIL_LOG", "warn");
    cmd
}

fn run_ok(mut cmd: Command) {
    let out = cmd.output().expect("run sigil");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Resident memory of `pid` in MB, from /proc.
fn rss_mb(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("rss line");
    kb / 1024.0
}

fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("csrf field") + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

/// One failed password sign-in the way a browser does it: authorize → sign-in page → submit.
/// The user is unknown, which costs the same argon2 work as a wrong password.
async fn failed_sign_in(base: &str, i: usize) {
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let issuer = format!("{base}/realms/customers");
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let res = b
        .get(format!(
            "{issuer}/oauth2/authorize?response_type=code&client_id=mobile&redirect_uri={}&scope=openid&state=s&code_challenge={challenge}&code_challenge_method=S256",
            url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(res.status(), 303);
    let form = b
        .get(format!("{issuer}/login"))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("html");
    let res = b
        .post(format!("{issuer}/login"))
        .form(&[
            ("csrf", csrf_of(&form)),
            ("username", format!("nobody-{i}")),
            ("password", "not the password at all".into()),
            ("code", "123456".into()),
        ])
        .send()
        .await
        .expect("submit");
    let status = res.status().as_u16();
    let html = res.text().await.expect("html");
    // Refused for the credentials (401), not shed (503) or throttled (429): those skip argon2.
    assert_eq!(status, 401);
    assert!(html.contains(r#"role="alert""#), "a failure page");
}

#[tokio::test]
async fn memory_comes_back_after_failed_password_sign_ins() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let fresh: Option<TestDb> = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_database(backend, tmp.path()).await),
        };
        let db = match &fresh {
            Some(f) => f.url.clone(),
            None => format!("sqlite://{}", tmp.path().join("sigil.db").display()),
        };
        let mut cmd = sigil(&db, tmp.path());
        cmd.args(["realm", "create", "customers"]);
        run_ok(cmd);
        let mut cmd = sigil(&db, tmp.path());
        cmd.args([
            "client",
            "create",
            "--realm",
            "customers",
            "--id",
            "mobile",
            "--public",
            "--scope",
            "balances:read",
            "--audience",
            "ledger",
            "--redirect-uri",
            REDIRECT,
        ]);
        run_ok(cmd);
        let mut child = sigil(&db, tmp.path())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        let server = Server(child);
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening")
            .to_owned();
        let pid = server.0.id();
        let before = rss_mb(pid, "VmRSS");
        // 20 stays under the per-address throttle (30 failures a minute), which skips argon2.
        for i in 0..20 {
            failed_sign_in(&base, i).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let after = rss_mb(pid, "VmRSS");
        let peak = rss_mb(pid, "VmHWM");
        eprintln!(
            "{backend:?}: RSS {before:.1} MB before, {after:.1} MB after 20 failed sign-ins (peak {peak:.1} MB)"
        );
        assert!(
            after < 80.0,
            "{backend:?}: RSS {after:.1} MB after 20 failed password sign-ins (was {before:.1} MB)"
        );
    }
}
