//! Connection-level limits: a client trickling its headers is cut off; a huge head is refused.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, spawn_app_with};

async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = spawn_app_with(Backend::Sqlite, None, |c| c.header_read_timeout_secs = 1).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"POST /realms/ledger/oauth2/token HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // The server must close the connection long before this generous bound.
    let closed =
        tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut stream)).await;
    let seen = closed.expect("server closed the slow connection");
    assert!(!String::from_utf8_lossy(&seen).contains("200 OK"));
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let app = spawn_app_with(Backend::Sqlite, None, |_| {}).await;
    let res = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-padding", "a".repeat(200 * 1024))
        .send()
        .await;
    match res {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
}

/// Reads HTTP/2 frames until the server's first SETTINGS frame; returns its (id, value) pairs.
async fn server_settings(stream: &mut TcpStream) -> Vec<(u16, u32)> {
    let mut head = [0u8; 9];
    loop {
        stream.read_exact(&mut head).await.expect("frame head");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .expect("frame payload");
        if head[3] == 4 && head[4] & 1 == 0 {
            return payload
                .chunks(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_between_requests_and_before_the_first() {
    let app = spawn_app_with(Backend::Sqlite, None, |c| c.idle_timeout_secs = 1).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Kept alive after one request, then silent.
    let mut kept = TcpStream::connect(&addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Never a byte.
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    // HTTP/2 with prior knowledge, answering nothing but keeping the peer busy with PINGs: a
    // live-looking connection with no request is idle all the same.
    let mut h2 = TcpStream::connect(&addr).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let settings = server_settings(&mut h2).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) is advertised and bounded.
    assert!(
        settings.iter().any(|&(id, v)| id == 3 && v == 64),
        "{settings:?}"
    );
    let started = tokio::time::Instant::now();
    let pinger = tokio::spawn(async move {
        let mut ping = b"\0\0\x08\x06\0\0\0\0\0".to_vec();
        ping.extend_from_slice(b"12345678");
        loop {
            if h2.write_all(&ping).await.is_err() {
                return started.elapsed();
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(200), h2.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                _ => {}
            }
            assert!(started.elapsed() < Duration::from_secs(10), "h2 left open");
        }
    });
    for (stream, answered) in [(&mut kept, true), (&mut silent, false)] {
        let seen = tokio::time::timeout(Duration::from_secs(5), read_until_closed(stream))
            .await
            .expect("the server closed the idle connection");
        // Closed for idleness (1 s), not at once; the kept-alive one had its answer first.
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(
            String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"),
            answered
        );
    }
    let h2_closed = pinger.await.expect("pinger");
    assert!(h2_closed < Duration::from_secs(5), "{h2_closed:?}");
}

#[tokio::test]
async fn at_the_connection_cap_the_oldest_idle_connections_make_room() {
    let app = spawn_app_with(Backend::Sqlite, None, |c| {
        c.max_connections = 20;
        c.idle_timeout_secs = 60;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // A newcomer is served at once although the cap is long reached and nothing times out.
    let started = tokio::time::Instant::now();
    let res = app
        .http
        .get(format!("{}/healthz", app.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served");
    assert_eq!(res.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The oldest silent connections were the ones closed.
    let first =
        tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut silent[0])).await;
    assert!(first.is_ok(), "the oldest idle connection was closed");
}
