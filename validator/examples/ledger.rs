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
//! Principal policies (the realm's bundle, read as that same kind of resource server):
//! `--policy-client-id ID --policy-secret-file FILE [--policy-interval-ms N]`. Ledger documents
//! (transactions, kept in memory) are then guarded per action and record:
//! - `POST /documents` (body: the document) is `db:Insert` on `financial.ledger.document.transaction`
//!   with the document as `context.document`;
//! - `GET /documents/{id}` is `db:Select` on `financial.ledger.document.transaction`;
//! - `PATCH /documents/{id}/{field}` (body `{"value": ...}`) is `db:Update` on
//!   `financial.ledger.document.{field}`, with the document as it would be after the change;
//! - `DELETE /documents/{id}` is `db:Delete` on `financial.ledger.document.transaction`;
//! - `GET /documents` is `db:Select` on `financial.ledger.document.*`, checked by the
//!   `require_policy` layer (no single document).
//!
//! A denied request is 403 `POLICY_DENIED` with one fixed description; with `--explain-denials`
//! the answer says why and names the deciding policy (`policy`), for development and tests.
//! Allowed answers name the policy that allowed them.
//!
//! Other options: `--require-sender-constrained` (refuse bearer tokens without `cnf`),
//! `--public-url https://ledger.bank.example` (the URL DPoP proofs must name), and behind a
//! TLS-terminating proxy `--trusted-proxy CIDR[,CIDR...] --client-cert-header NAME
//! --client-cert-format envoy|nginx`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
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

/// The ledger's documents, in memory.
#[derive(Clone)]
struct Ledger {
    validator: Validator,
    /// `--explain-denials`: say why and which policy (development and tests).
    explain: bool,
    documents: Arc<Mutex<HashMap<u64, Value>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

const RECORD: &str = "financial.ledger.document.transaction";

impl Ledger {
    /// The policy decision for this request, as a 403 when denied.
    fn authorize(
        &self,
        claims: &Claims,
        action: &str,
        resource: &str,
        doc: &Value,
    ) -> Result<String, Box<Response>> {
        let decision = self.validator.authorize(claims, action, resource, doc);
        if decision.is_allowed() {
            Ok(decision.policy().unwrap_or_default().to_owned())
        } else {
            Err(Box::new(sigil_validator::axum::policy_denied(
                &decision,
                self.explain,
            )))
        }
    }

    /// The stored document `id`. A missing one is first checked as an empty document: a caller
    /// that no policy lets near such records gets the same 403 as for one that exists (unless
    /// denials are explained), not a 404, and so learns nothing about which exist.
    fn get(
        &self,
        claims: &Claims,
        action: &str,
        resource: &str,
        id: u64,
    ) -> Result<Value, Box<Response>> {
        let stored = self
            .documents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        match stored {
            Some(doc) => Ok(doc),
            None => {
                self.authorize(claims, action, resource, &json!({}))?;
                Err(Box::new(
                    (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))).into_response(),
                ))
            }
        }
    }
}

async fn insert_document(
    State(ledger): State<Ledger>,
    claims: Claims,
    Json(doc): Json<Value>,
) -> Result<Response, Response> {
    let policy = ledger
        .authorize(&claims, "db:Insert", RECORD, &doc)
        .map_err(|e| *e)?;
    let id = ledger
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ledger
        .documents
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, doc);
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "policy": policy})),
    )
        .into_response())
}

async fn select_document(
    State(ledger): State<Ledger>,
    claims: Claims,
    Path(id): Path<u64>,
) -> Result<Response, Response> {
    let doc = ledger
        .get(&claims, "db:Select", RECORD, id)
        .map_err(|e| *e)?;
    let policy = ledger
        .authorize(&claims, "db:Select", RECORD, &doc)
        .map_err(|e| *e)?;
    Ok(Json(json!({"id": id, "document": doc, "policy": policy})).into_response())
}

async fn update_field(
    State(ledger): State<Ledger>,
    claims: Claims,
    Path((id, field)): Path<(u64, String)>,
    Json(body): Json<Value>,
) -> Result<Response, Response> {
    let resource = format!("financial.ledger.document.{field}");
    let mut doc = ledger
        .get(&claims, "db:Update", &resource, id)
        .map_err(|e| *e)?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if let Some(o) = doc.as_object_mut() {
        o.insert(field.clone(), value);
    }
    let policy = ledger
        .authorize(&claims, "db:Update", &resource, &doc)
        .map_err(|e| *e)?;
    ledger
        .documents
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, doc.clone());
    Ok(Json(json!({"id": id, "document": doc, "policy": policy})).into_response())
}

async fn delete_document(
    State(ledger): State<Ledger>,
    claims: Claims,
    Path(id): Path<u64>,
) -> Result<Response, Response> {
    let doc = ledger
        .get(&claims, "db:Delete", RECORD, id)
        .map_err(|e| *e)?;
    let policy = ledger
        .authorize(&claims, "db:Delete", RECORD, &doc)
        .map_err(|e| *e)?;
    ledger
        .documents
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    Ok(Json(json!({"id": id, "deleted": true, "policy": policy})).into_response())
}

async fn list_documents(State(ledger): State<Ledger>) -> Json<Value> {
    let docs = ledger.documents.lock().unwrap_or_else(|p| p.into_inner());
    let mut ids: Vec<u64> = docs.keys().copied().collect();
    ids.sort_unstable();
    Json(json!({"ids": ids}))
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
    // Warnings and errors to stderr: a revocation feed or policy bundle that stops answering.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let (Some(issuer), Some(audience)) = (arg(&args, "--issuer"), arg(&args, "--audience")) else {
        eprintln!(
            "usage: ledger --issuer URL --audience AUD [--bind HOST:PORT] \
             [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--require-sender-constrained] \
             [--public-url URL] [--trusted-proxy CIDR[,CIDR...] --client-cert-header NAME \
             --client-cert-format envoy|nginx] [--revocation-client-id ID \
             --revocation-secret-file FILE [--revocation-interval-ms N]] \
             [--policy-client-id ID --policy-secret-file FILE [--policy-interval-ms N] \
             [--explain-denials]]"
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
    if let Some(id) = arg(&args, "--policy-client-id") {
        let file = arg(&args, "--policy-secret-file")
            .unwrap_or_else(|| fail("--policy-client-id needs --policy-secret-file"));
        let secret = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| fail(format!("cannot read {file}: {e}")));
        builder = builder.policy_bundle(id, secret.trim());
        if let Some(ms) = arg(&args, "--policy-interval-ms") {
            let ms: u64 = ms.parse().unwrap_or_else(|e| fail(e));
            builder = builder.policy_poll_interval(Duration::from_millis(ms));
        }
    }
    let validator = builder.build().await.unwrap_or_else(|e| fail(e));
    let ledger = Ledger {
        validator: validator.clone(),
        explain: args.iter().any(|a| a == "--explain-denials"),
        documents: Arc::default(),
        next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
    };
    let auth = validator.layer();
    let documents = Router::new()
        .route(
            "/documents",
            post(insert_document).route_layer(auth.clone()).merge(
                get(list_documents).route_layer(
                    validator.require_policy("db:Select", "financial.ledger.document.*"),
                ),
            ),
        )
        .route(
            "/documents/{id}",
            get(select_document)
                .delete(delete_document)
                .route_layer(auth.clone()),
        )
        .route(
            "/documents/{id}/{field}",
            patch(update_field).route_layer(auth),
        )
        .with_state(ledger);
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
        )
        .merge(documents);
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
