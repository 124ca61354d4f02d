//! Connection exhaustion against the real `sigil` binary, run the way systemd runs it by default
//! (`nofile` = 1024): thousands of silent connections (plain TCP that sends nothing, HTTP/2
//! prior-knowledge prefaces followed by silence) must neither starve a legitimate client nor
//! stay open past the idle timeout, and the server must never run out of file descriptors.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::helpers::{Backend, fresh_database_url};

const SERVER_NOFILE: u32 = 1024;
const SILENT: usize = 2000;
/// Every sixth of them speaks HTTP/2 (preface + SETTINGS) before falling silent.
const H2_EVERY: usize = 6;
const IDLE_TIMEOUT_SECS: u64 = 2;
/// Allowance on top of the idle timeout: the close grace (1 s) plus scheduling on a loaded
/// 2-core machine.
const CLOSE_SLACK: Duration = Duration::from_secs(4);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// The test itself holds thousands of sockets: lift its soft open-file limit to the hard one.
#[allow(unsafe_code)]
fn raise_own_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one `rlimit` through pointers to a live,
    // aligned local; raising the soft limit up to the hard limit needs no privilege.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let soft = lim.rlim_cur as u64;
    soft
}

/// The server process; killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigil(db: &str, kek: &std::path::Path, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(["--database-url", db, "--kek-file"])
        .arg(kek)
        .current_dir(dir)
        .env_remove("SIGIL_BIND")
        .env("SIGIL_LOG", "warn");
    cmd
}

fn cli_json(db: &str, kek: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> Value {
    let out = sigil(db, kek, dir).args(args).output().expect("run sigil");
    assert!(
        out.status.success(),
        "sigil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// Opens one connection that will never send a request.
async fn connect_silent(addr: &str, h2: bool) -> (TcpStream, Instant) {
    let mut stream = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(addr))
        .await
        .expect("connect within 15 s")
        .expect("connect");
    let connected = Instant::now();
    if h2 {
        // The server may already have closed it; that counts as closed.
        let _ = stream.write_all(H2_PREFACE).await;
        let _ = stream.write_all(H2_SETTINGS).await;
    }
    (stream, connected)
}

/// How long after connecting the server closed the connection (`None`: still open after
/// `give_up`).
async fn closed_after(
    mut stream: TcpStream,
    connected: Instant,
    give_up: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(give_up, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // HTTP/2: the server's SETTINGS, acks and, at the end, GOAWAY.
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| connected.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_never_starve_a_real_client() {
    let _turn = crate::helpers::HEAVY.lock().await;
    let limit = raise_own_nofile_limit();
    assert!(
        limit > SILENT as u64 + 200,
        "this test needs an open-file hard limit above {} (have {limit})",
        SILENT + 200
    );
    let dir = tempfile::tempdir().expect("tmp");
    let db = fresh_database_url(Backend::Sqlite, dir.path()).await;
    let kek = dir.path().join("keys/kek");
    cli_json(&db, &kek, dir.path(), &["realm", "create", "ledger"]);
    let client = cli_json(
        &db,
        &kek,
        dir.path(),
        &[
            "client",
            "create",
            "--realm",
            "ledger",
            "--id",
            "ach-processor",
            "--scope",
            "tx:post:ach",
            "--audience",
            "ledger",
        ],
    );
    let secret = client["client_secret"].as_str().expect("secret").to_owned();

    // `sh` lowers the limit (soft and hard) and then becomes sigil, so the pid is sigil's.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(r#"ulimit -n {SERVER_NOFILE} && exec "$0" "$@""#))
        .arg(env!("CARGO_BIN_EXE_sigil"))
        .args(["--database-url", &db, "--kek-file"])
        .arg(&kek)
        .arg("serve")
        .current_dir(dir.path())
        .env("SIGIL_BIND", "127.0.0.1:0")
        .env("SIGIL_IDLE_TIMEOUT_SECS", IDLE_TIMEOUT_SECS.to_string())
        .env("SIGIL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).expect("log file"),
        ));
    let mut server = Server(cmd.spawn().expect("start sigil serve"));
    let stdout = server.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read the listening line");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let addr = format!("127.0.0.1:{port}");
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", server.0.id())).expect("server limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files")
                && l.split_whitespace().nth(3) == Some("1024")),
        "{limits}"
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    // Two legitimate clients, used in turn: one keeps its connection alive between requests,
    // the other connects afresh for every request (a new client arriving mid-flood).
    let pooled = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let token_url = format!("http://{addr}/realms/ledger/oauth2/token");
    let get_token = move |n: usize| {
        let http = if n.is_multiple_of(2) { &pooled } else { &fresh };
        let req = http
            .post(&token_url)
            .basic_auth("ach-processor", Some(&secret))
            .form(&[("grant_type", "client_credentials")]);
        async move {
            let started = Instant::now();
            let res = req.send().await;
            let ok = matches!(&res, Ok(r) if r.status() == 200);
            (ok, started.elapsed(), res.map(|r| r.status().as_u16()))
        }
    };
    for n in 0..2 {
        let (ok, _, status) = get_token(n).await;
        assert!(ok, "a token before the flood: {status:?}");
    }

    // The flood: every connection opened as fast as the test can, at most 256 connecting at once.
    let give_up = Duration::from_secs(IDLE_TIMEOUT_SECS) + CLOSE_SLACK;
    let connecting = Arc::new(Semaphore::new(256));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..SILENT {
        let addr = addr.clone();
        let connecting = connecting.clone();
        flood.spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            let h2 = i.is_multiple_of(H2_EVERY);
            let (stream, connected) = connect_silent(&addr, h2).await;
            // Connected: let the next one start while this one sits silent.
            drop(permit);
            (
                h2,
                closed_after(stream, connected, give_up + Duration::from_secs(5)).await,
            )
        });
    }

    // Meanwhile a legitimate client asks for tokens, one after the other.
    let legit = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut failures = Vec::new();
        let until = Instant::now() + Duration::from_secs(IDLE_TIMEOUT_SECS + 6);
        while Instant::now() < until {
            let (ok, took, status) = get_token(latencies.len()).await;
            latencies.push(took);
            if !ok {
                failures.push(format!("{status:?} after {took:?}"));
            }
        }
        // Still serving after the flood, on both kinds of connection.
        for n in 0..2 {
            let (ok, _, status) = get_token(n).await;
            assert!(ok, "a token after the flood: {status:?}");
        }
        (latencies, failures)
    });

    let mut late = Vec::new();
    let mut closed_h2 = 0;
    let mut closed_plain = 0;
    while let Some(r) = flood.join_next().await {
        let (h2, closed) = r.expect("flood task");
        match closed {
            Some(after) if after <= give_up => {
                if h2 {
                    closed_h2 += 1;
                } else {
                    closed_plain += 1;
                }
            }
            other => late.push((h2, other)),
        }
    }
    let (latencies, failures) = legit.await.expect("legit client");
    let mut sorted = latencies.clone();
    sorted.sort();
    eprintln!(
        "{} tokens during the flood, p50 {:?}, max {:?}; silent connections closed: {closed_plain} plain, {closed_h2} HTTP/2",
        sorted.len(),
        sorted.get(sorted.len() / 2),
        sorted.last()
    );
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();

    assert!(
        failures.is_empty(),
        "{} of {} token requests failed during the flood: {:?}",
        failures.len(),
        latencies.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(latencies.len() >= 10, "only {} tokens", latencies.len());
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_secs(3),
        "a token took {worst:?} during the flood"
    );
    assert!(
        late.is_empty(),
        "{} silent connections were not closed within {give_up:?} (h2, closed after): {:?}\n{}",
        late.len(),
        &late[..late.len().min(5)],
        &log[..log.len().min(3000)]
    );
    assert_eq!(closed_plain + closed_h2, SILENT);
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of descriptors:\n{}",
        &log[..log.len().min(2000)]
    );
}
