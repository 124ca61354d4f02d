//! `/healthz`: the process answers. `/readyz`: it can do its job: the database answers, the audit
//! writer runs and is not backed up, the KEK is loaded and every realm has an active signing key
//! this node can open. The body (JSON) says which check failed and why; 503 when one did. Nothing
//! secret is in it: realm names are in every issuer URL, and the KEK is named by its public id.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// How long the database may take to answer before the node is reported not ready.
const DATABASE_DEADLINE: Duration = Duration::from_secs(2);

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut ready = true;
    let mut checks = Map::new();
    let fail = |ready: &mut bool, checks: &mut Map<String, Value>, name: &str, why: String| {
        *ready = false;
        checks.insert(name.to_owned(), json!(why));
    };
    match tokio::time::timeout(DATABASE_DEADLINE, state.store.realms()).await {
        Ok(Ok(realms)) => {
            checks.insert("database".into(), json!("ok"));
            let now = state.clock.now();
            let mut per_realm = Map::new();
            let mut all_ok = true;
            for r in realms {
                let status = match state.directory.realm(&r.name, now).await {
                    Ok(Some(_)) => "ok".to_owned(),
                    Ok(None) => "removed while checking".to_owned(),
                    Err(e) => {
                        all_ok = false;
                        e.to_string()
                    }
                };
                per_realm.insert(r.name, json!(status));
            }
            if !all_ok {
                ready = false;
            }
            checks.insert("realms".into(), Value::Object(per_realm));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database did not answer");
            fail(&mut ready, &mut checks, "database", "unreachable".into());
        }
        Err(_) => fail(
            &mut ready,
            &mut checks,
            "database",
            format!("no answer within {} s", DATABASE_DEADLINE.as_secs()),
        ),
    }
    match state.audit.health() {
        Ok(()) => {
            checks.insert("audit_writer".into(), json!("ok"));
        }
        Err(why) => fail(&mut ready, &mut checks, "audit_writer", why),
    }
    checks.insert("kek".into(), json!(format!("loaded ({})", state.kek.id())));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
