//! `sigil serve` with TLS: TLS 1.2 and 1.3, the certificate re-read when its files change without
//! dropping open connections, a half-written pair never taken, and a stalled handshake closed.

use std::time::Duration;

use crate::helpers::{Backend, spawn_app_with};
use crate::pki::{self, Ca};

fn tls12_only(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(pki::rustls_client_for(ca, None, &[&rustls::version::TLS12]))
        .build()
        .expect("client")
}

#[tokio::test]
async fn tls_serves_1_2_and_1_3_and_picks_up_a_rotated_certificate_without_dropping_connections() {
    let first_ca = Ca::new("first server CA");
    let second_ca = Ca::new("second server CA");
    let dir = tempfile::tempdir().expect("dir");
    let files = pki::server_files(dir.path(), &first_ca.server());
    let app = spawn_app_with(Backend::Sqlite, None, |c| {
        c.tls = Some(files.clone());
        c.header_read_timeout_secs = 2;
    })
    .await;
    let health = format!("{}/healthz", app.base);
    assert!(health.starts_with("https://localhost:"), "{health}");

    // TLS 1.3 (the default client) and TLS 1.2.
    let kept = pki::https_client(&first_ca, None);
    assert_eq!(kept.get(&health).send().await.expect("1.3").status(), 200);
    let old = tls12_only(&first_ca);
    assert_eq!(old.get(&health).send().await.expect("1.2").status(), 200);
    // Plain HTTP on the TLS port is refused, not served.
    let plain = reqwest::Client::new();
    let served_plain = plain
        .get(health.replace("https://", "http://"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(!served_plain, "plain HTTP on the TLS port");

    // A certificate manager writes the certificate first and the key a moment later: the
    // mismatched pair in between is not taken.
    let second = second_ca.server();
    std::fs::write(&files.cert_file, &second.cert_pem).expect("new cert");
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let fresh_first = pki::https_client(&first_ca, None);
    assert_eq!(
        fresh_first
            .get(&health)
            .send()
            .await
            .expect("old pair kept")
            .status(),
        200,
        "a half-written pair is not taken"
    );
    std::fs::write(&files.key_file, &second.key_pem).expect("new key");
    // Within a few seconds new handshakes get the new certificate.
    let fresh = pki::https_client(&second_ca, None);
    let mut ok = false;
    for _ in 0..50 {
        if fresh
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the rotated certificate is served");
    let stale = pki::https_client(&first_ca, None);
    assert!(
        stale.get(&health).send().await.is_err(),
        "a new connection no longer gets the old certificate"
    );
    // The connection opened before the rotation is still open and serving.
    assert_eq!(
        kept.get(&health).send().await.expect("kept alive").status(),
        200
    );

    // A peer that connects and never says hello is closed after the header-read timeout.
    let addr = health
        .trim_start_matches("https://localhost:")
        .split('/')
        .next()
        .expect("port")
        .to_owned();
    let mut silent = tokio::net::TcpStream::connect(format!("127.0.0.1:{addr}"))
        .await
        .expect("connect");
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS peer is closed: {closed:?}"
    );
}

/// At the connection cap, peers that connected and never finished a TLS handshake are evicted to
/// make room for a real client, as silent plain-HTTP connections are.
#[tokio::test]
async fn silent_tls_peers_at_the_cap_make_room_for_a_real_client() {
    let ca = Ca::new("server CA");
    let dir = tempfile::tempdir().expect("dir");
    let files = pki::server_files(dir.path(), &ca.server());
    let app = spawn_app_with(Backend::Sqlite, None, |c| {
        c.tls = Some(files.clone());
        c.max_connections = 8;
        c.header_read_timeout_secs = 60;
        c.idle_timeout_secs = 60;
    })
    .await;
    let port = app
        .base
        .rsplit(':')
        .next()
        .expect("port")
        .parse::<u16>()
        .expect("number");
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = pki::https_client(&ca, None);
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client.get(format!("{}/healthz", app.base)).send(),
    )
    .await
    .expect("served within 5 s although every slot held a silent TLS peer")
    .expect("request");
    assert_eq!(res.status(), 200);
}
