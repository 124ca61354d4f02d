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
