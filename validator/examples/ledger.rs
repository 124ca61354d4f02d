//! An example ledger service protected by the validator:
//! `cargo run -p sigil-validator --example ledger -- --issuer URL --audience ledger --bind 127.0.0.1:PORT`
//! `GET /balances` needs `balances:read`; `POST /transactions/ach` needs `tx:post:ach`;
//! `POST /transfers/high-value` needs `tx:post:ach` and a passkey sign-in at most 5 minutes old
//! (RFC 9470 step-up: anything less is 401 `insufficient_user_authentication` with `acr_values`
//! and `max_age` in the challenge, for the app to pass on to `/authorize`).
//!
//! HTTPS with client certificates (for mTLS-bound tokens, RFC 8705):
//! `--tls-cert server.pem --tls-key server.key [--client-ca ca.pem]`. With `--client-ca`, the
//! server asks for a client certificate and verifies it against that CA, but also lets clients
//! without one connect (DPoP and bearer clients); the certificate of each connection is handed to
//! the validator as a `ClientCertificate` request extension.
//!
//! Revocations within seconds: `--revocation-client-id ID --revocation-secret-file FILE
//! [--revocation-interval-ms N]` reads the issuer's revocation feed as that resource server (a
//! client created with `--introspect`): revoked tokens, ended sessions and disabled clients are
//! refused within the interval (default 5 000 ms), with no call to the issuer per request.
//!
//! Other options: `--require-sender-constrained` (refuse bearer tokens without `cnf`),
//! `--public-url https://ledger.bank.example` (the URL DPoP proofs must name), and behind a
//! TLS-terminating proxy `--trusted-proxy CIDR[,CIDR...] --client-cert-header NAME
//! --client-cert-format envoy|nginx`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use sigil_validator::axum::ServedOverTls;
use sigil_validator::forwarded_cert::{Cidr, Format};
use sigil_validator::{Claims, ClientCertificate, Validator};
use tower::Service;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("ledger: {message}");
    std::process::exit(1);
}

async fn balances(claims: Claims) -> Json<Value> {
    Json(json!({
        "client_id": claims.client_id,
        "sub": claims.sub,
        "balances": [{"account": "ACC-001", "currency": "USD", "available": "1250.00"}],
    }))
}

async fn post_ach(claims: Claims) -> Json<Value> {
    Json(json!({
        "client_id": claims.client_id,
        "sub": claims.sub,
        "status": "accepted",
    }))
}

async fn post_high_value(claims: Claims) -> Json<Value> {
    Json(json!({
        "sub": claims.sub,
        "acr": claims.extra.get("acr"),
        "status": "accepted",
    }))
}

/// The sign-in class a high-value transfer demands.
const ACR_PASSKEY: &str = "urn:sigil:acr:passkey";

/// A rustls server configuration: TLS 1.2 and 1.3 with ring, ALPN h2 and http/1.1, and client
/// certificates requested (verified against `client_ca`, optional) when a CA is given.
fn tls_config(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
                let c = c.map_err(|e| format!("{ca}: {e}"))?;
                roots.add(c).map_err(|e| format!("{ca}: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{ca}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves HTTPS: per connection, the handshake, then every request with the connection's peer
/// address, the TLS marker and the client certificate (if any) as extensions.
async fn serve_tls(listener: tokio::net::TcpListener, app: Router, config: rustls::ServerConfig) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ledger: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    _ => return, // failed or stalled handshake
                };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| ClientCertificate(Arc::new(leaf.as_ref().to_vec())));
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let ext = req.extensions_mut();
                    ext.insert(ConnectInfo(peer));
                    ext.insert(ServedOverTls);
                    if let Some(c) = &cert {
                        ext.insert(c.clone());
                    }
                    let mut app = app.clone();
                    async move { app.call(req).await }
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(issuer), Some(audience)) = (arg(&args, "--issuer"), arg(&args, "--audience")) else {
        eprintln!(
            "usage: ledger --issuer URL --audience AUD [--bind HOST:PORT] \
             [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--require-sender-constrained] \
             [--public-url URL] [--trusted-proxy CIDR[,CIDR...] --client-cert-header NAME \
             --client-cert-format envoy|nginx] [--revocation-client-id ID \
             --revocation-secret-file FILE [--revocation-interval-ms N]]"
        );
        std::process::exit(2);
    };
    let bind = arg(&args, "--bind").unwrap_or_else(|| "127.0.0.1:8081".into());
    let mut builder = Validator::builder(issuer, audience);
    if args.iter().any(|a| a == "--require-sender-constrained") {
        builder = builder.require_sender_constrained();
    }
    if let Some(url) = arg(&args, "--public-url") {
        builder = builder.public_base_url(url);
    }
    if let Some(ranges) = arg(&args, "--trusted-proxy") {
        let cidrs: Vec<Cidr> = ranges
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| fail(e));
        let header = arg(&args, "--client-cert-header")
            .unwrap_or_else(|| fail("--trusted-proxy needs --client-cert-header"));
        let format: Format = arg(&args, "--client-cert-format")
            .unwrap_or_else(|| fail("--trusted-proxy needs --client-cert-format"))
            .parse()
            .unwrap_or_else(|e| fail(e));
        builder = builder.trusted_proxies(cidrs, header, format);
    }
    let tls = match (arg(&args, "--tls-cert"), arg(&args, "--tls-key")) {
        (Some(cert), Some(key)) => Some(
            tls_config(&cert, &key, arg(&args, "--client-ca").as_deref())
                .unwrap_or_else(|e| fail(e)),
        ),
        (None, None) => None,
        _ => fail("--tls-cert and --tls-key go together"),
    };
    if let Some(id) = arg(&args, "--revocation-client-id") {
        let file = arg(&args, "--revocation-secret-file")
            .unwrap_or_else(|| fail("--revocation-client-id needs --revocation-secret-file"));
        let secret = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| fail(format!("cannot read {file}: {e}")));
        builder = builder.revocation_feed(id, secret.trim());
        if let Some(ms) = arg(&args, "--revocation-interval-ms") {
            let ms: u64 = ms.parse().unwrap_or_else(|e| fail(e));
            builder = builder.revocation_poll_interval(Duration::from_millis(ms));
        }
    }
    let validator = builder.build().await.unwrap_or_else(|e| fail(e));
    let app = Router::new()
        .route(
            "/balances",
            get(balances).route_layer(validator.require_scope("balances:read")),
        )
        .route(
            "/transactions/ach",
            post(post_ach).route_layer(validator.require_scope("tx:post:ach")),
        )
        .route(
            "/transfers/high-value",
            post(post_high_value).route_layer(
                validator
                    .require_scope("tx:post:ach")
                    .require_acr([ACR_PASSKEY])
                    .max_age(Duration::from_secs(300)),
            ),
        );
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .unwrap_or_else(|e| fail(format!("cannot bind {bind}: {e}")));
    let scheme = if tls.is_some() { "https" } else { "http" };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {scheme}://{addr}"),
        Err(e) => eprintln!("ledger: {e}"),
    }
    match tls {
        Some(config) => serve_tls(listener, app, config).await,
        None => {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                eprintln!("ledger: {e}");
            }
        }
    }
}
