//! An example ledger service protected by the validator:
//! `cargo run -p sigil-validator --example ledger -- --issuer URL --audience ledger --bind 127.0.0.1:PORT`
//! `GET /balances` needs `balances:read`; `POST /transactions/ach` needs `tx:post:ach`.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sigil_validator::{Claims, Validator};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(issuer), Some(audience)) = (arg(&args, "--issuer"), arg(&args, "--audience")) else {
        eprintln!("usage: ledger --issuer URL --audience AUD [--bind HOST:PORT]");
        std::process::exit(2);
    };
    let bind = arg(&args, "--bind").unwrap_or_else(|| "127.0.0.1:8081".into());
    let validator = match Validator::builder(issuer, audience).build().await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ledger: {e}");
            std::process::exit(1);
        }
    };
    let app = Router::new()
        .route(
            "/balances",
            get(balances).route_layer(validator.require_scope("balances:read")),
        )
        .route(
            "/transactions/ach",
            post(post_ach).route_layer(validator.require_scope("tx:post:ach")),
        );
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ledger: cannot bind {bind}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => eprintln!("ledger: {e}"),
    }
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("ledger: {e}");
    }
}
