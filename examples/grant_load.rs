//! A load generator for `client_credentials` grants against a running `sigil serve`, for what wrk
//! cannot do: client certificates (mutual TLS), a fresh `private_key_jwt` assertion per request,
//! and a full TLS handshake per grant (session resumption off, as a new pod would connect). Plain
//! HTTP and TLS with keep-alive work too, so a variant and its baseline come from one generator.
//! `bench/tls.sh` builds, starts the server and runs it.
//!
//!   grant_load --url URL [--seconds 10] [--connections 64] [--threads 2] [--new-connection]
//!              [--ca PEM] [--cert PEM --key PEM] [--basic ID:SECRET | --client-id ID]
//!              [--assertion-key PKCS8-PEM --kid KID --aud AUD]
//!
//! Prints `grants_per_sec`, `ok`, `failed`, `p50_ms`, `p99_ms` on one line each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::time::Instant;

struct Opts {
    url: url::Url,
    seconds: u64,
    connections: usize,
    threads: usize,
    new_connection: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    basic: Option<String>,
    client_id: Option<String>,
    assertion: Option<(EcdsaKeyPair, String, String)>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn die(msg: &str) -> ! {
    eprintln!("grant_load: {msg}");
    std::process::exit(2)
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let url = url::Url::parse(&arg(&args, "--url").unwrap_or_else(|| die("--url is required")))
        .unwrap_or_else(|e| die(&e.to_string()));
    let num = |name: &str, default: u64| {
        arg(&args, name).map_or(default, |v| v.parse().unwrap_or_else(|_| die(name)))
    };
    let new_connection = args.iter().any(|a| a == "--new-connection");
    let tls = (url.scheme() == "https").then(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let ca = arg(&args, "--ca").unwrap_or_else(|| die("https needs --ca"));
        for c in CertificateDer::pem_file_iter(&ca).unwrap_or_else(|e| die(&e.to_string())) {
            roots
                .add(c.unwrap_or_else(|e| die(&e.to_string())))
                .unwrap_or_else(|e| die(&e.to_string()));
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut config = match (arg(&args, "--cert"), arg(&args, "--key")) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(&cert)
                        .unwrap_or_else(|e| die(&e.to_string()))
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap_or_else(|e| die(&e.to_string())),
                    PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| die(&e.to_string())),
                )
                .unwrap_or_else(|e| die(&e.to_string())),
            _ => builder.with_no_client_auth(),
        };
        if new_connection {
            // Every grant pays a full handshake, as a fresh client would.
            config.resumption = rustls::client::Resumption::disabled();
        }
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    });
    let assertion = arg(&args, "--assertion-key").map(|path| {
        let der = PrivateKeyDer::from_pem_file(&path).unwrap_or_else(|e| die(&e.to_string()));
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap_or_else(|e| die(&e.to_string()));
        (
            key,
            arg(&args, "--kid").unwrap_or_else(|| die("--kid")),
            arg(&args, "--aud").unwrap_or_else(|| die("--aud")),
        )
    });
    Opts {
        url,
        seconds: num("--seconds", 10),
        connections: num("--connections", 64) as usize,
        threads: num("--threads", 2) as usize,
        new_connection,
        tls,
        basic: arg(&args, "--basic").map(|b| format!("Basic {}", STANDARD.encode(b))),
        client_id: arg(&args, "--client-id"),
        assertion,
    }
}

/// The form of one grant (a fresh assertion each time for `private_key_jwt`).
fn body(o: &Opts, n: u64) -> String {
    let mut form = String::from("grant_type=client_credentials&scope=tx%3Apost%3Aach");
    if let Some(id) = &o.client_id {
        form.push_str("&client_id=");
        form.push_str(id);
    }
    if let Some((key, kid, aud)) = &o.assertion {
        let id = o.client_id.as_deref().unwrap_or_else(|| die("--client-id"));
        let now = sigil::clock::Clock::now(&sigil::clock::SystemClock);
        let header = B64.encode(format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#));
        let claims = B64.encode(format!(
            r#"{{"iss":"{id}","sub":"{id}","aud":"{aud}","iat":{now},"exp":{},"jti":"{}-{n}"}}"#,
            now + 60,
            std::process::id()
        ));
        let input = format!("{header}.{claims}");
        let sig = key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap_or_else(|_| die("sign"));
        form.push_str("&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=");
        form.push_str(&input);
        form.push('.');
        form.push_str(&B64.encode(sig.as_ref()));
    }
    form
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(o: &Opts) -> Option<Sender> {
    let host = o.url.host_str()?.to_owned();
    let port = o.url.port_or_known_default()?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .ok()?;
    let _ = tcp.set_nodelay(true);
    let sender = match &o.tls {
        None => {
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(conn);
            s
        }
        Some(config) => {
            let name = ServerName::try_from(host).ok()?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .ok()?;
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .ok()?;
            tokio::spawn(conn);
            s
        }
    };
    Some(sender)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    seq: AtomicU64,
}

async fn worker(o: Arc<Opts>, tally: Arc<Tally>, deadline: Instant) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut sender: Option<Sender> = None;
    let authority = o.url[url::Position::BeforeHost..url::Position::AfterPort].to_owned();
    while Instant::now() < deadline {
        let started = Instant::now();
        if sender.is_none() || o.new_connection {
            sender = connect(&o).await;
        }
        let Some(s) = sender.as_mut() else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let n = tally.seq.fetch_add(1, Ordering::Relaxed);
        let mut req = hyper::Request::post(o.url.path())
            .header("host", &authority)
            .header("content-type", "application/x-www-form-urlencoded");
        if o.new_connection {
            req = req.header("connection", "close");
        }
        if let Some(b) = &o.basic {
            req = req.header("authorization", b);
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body(&o, n)))) else {
            die("request")
        };
        let ok = match s.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                let read = res.into_body().collect().await.is_ok();
                status == 200 && read
            }
            Err(_) => false,
        };
        if ok {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            latencies.push(started.elapsed().as_micros() as u32);
        } else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            sender = None;
        }
    }
    latencies
}

fn main() {
    let o = Arc::new(opts());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads.max(1))
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&e.to_string()));
    runtime.block_on(async {
        let tally = Arc::new(Tally::default());
        let started = Instant::now();
        let deadline = started + Duration::from_secs(o.seconds);
        let tasks: Vec<_> = (0..o.connections)
            .map(|_| tokio::spawn(worker(o.clone(), tally.clone(), deadline)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |us| f64::from(*us) / 1000.0)
        };
        let ok = tally.ok.load(Ordering::Relaxed);
        println!("grants_per_sec {:.0}", ok as f64 / elapsed);
        println!("ok {ok}");
        println!("failed {}", tally.failed.load(Ordering::Relaxed));
        println!("p50_ms {:.2}", pct(0.50));
        println!("p99_ms {:.2}", pct(0.99));
    });
}
