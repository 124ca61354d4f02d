//! `/healthz`: the process answers. `/readyz`: it can do its job: the database answers, the audit
//! writer runs and is not backed up, every realm has an active signing key this node can open
//! (which also shows the KEK is the right one), and no signing key in the database is sealed under
//! a KEK this node does not hold. The body (JSON) says which check failed, in fixed
//! words (the detail goes to the log, not to an anonymous caller); 503 when one did. The answer is
//! computed at most once per clock second, so polling it costs the database nothing more.

use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::clock::UnixTime;
use crate::directory::DirectoryError;
use crate::state::AppState;

/// How long the database may take to answer before the node is reported not ready.
const DATABASE_DEADLINE: Duration = Duration::from_secs(2);

/// The last readiness answer and the clock second it was computed in.
#[derive(Default)]
pub struct ReadinessCache(Mutex<Option<(UnixTime, bool, Value)>>);

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let cached = state
        .readiness
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .filter(|(at, _, _)| *at == now);
    let (ready, body) = match cached {
        Some((_, ready, body)) => (ready, body),
        None => {
            let (ready, body) = check(&state, now).await;
            *state.readiness.0.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((now, ready, body.clone()));
            (ready, body)
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Why a realm cannot serve, in words fit for an anonymous caller.
fn realm_problem(e: &DirectoryError) -> &'static str {
    match e {
        DirectoryError::NoActiveKey(_) => "no active signing key",
        DirectoryError::Key(_) => "its signing key cannot be opened with this node's KEK",
        DirectoryError::Store(_) => "the database did not answer",
    }
}

async fn check(state: &AppState, now: UnixTime) -> (bool, Value) {
    let mut ready = true;
    let mut checks = Map::new();
    match tokio::time::timeout(DATABASE_DEADLINE, state.store.realms()).await {
        Ok(Ok(realms)) => {
            checks.insert("database".into(), json!("ok"));
            let mut per_realm = Map::new();
            for r in realms {
                let status = match state.directory.realm(&r.name, now).await {
                    Ok(Some(_)) => "ok",
                    Ok(None) => "removed while checking",
                    Err(e) => {
                        tracing::warn!(realm = %r.name, error = %e, "readiness: realm cannot serve");
                        ready = false;
                        realm_problem(&e)
                    }
                };
                per_realm.insert(r.name, json!(status));
            }
            checks.insert("realms".into(), Value::Object(per_realm));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database did not answer");
            ready = false;
            checks.insert("database".into(), json!("unreachable"));
        }
        Err(_) => {
            ready = false;
            checks.insert(
                "database".into(),
                json!(format!(
                    "no answer within {} s",
                    DATABASE_DEADLINE.as_secs()
                )),
            );
        }
    }
    match state.audit.health() {
        Ok(()) => {
            checks.insert("audit_writer".into(), json!("ok"));
        }
        Err(why) => {
            ready = false;
            checks.insert("audit_writer".into(), json!(why));
        }
    }
    // A node without its KEK does not start, but another node may re-seal the keys under a KEK
    // this one lacks (a rotation that skipped the rolling steps): the keys it holds in memory
    // still sign, the next one it loads would not. Read from the database, not the realm cache.
    let kek = match tokio::time::timeout(DATABASE_DEADLINE, state.store.kek_ids_in_use()).await {
        Ok(Ok(ids)) => match ids.iter().find(|id| !state.kek.can_open(id)) {
            None => json!(format!("loaded ({})", state.kek.id())),
            Some(missing) => {
                tracing::warn!(kek = %missing, "readiness: signing keys are sealed under a KEK this node does not hold");
                ready = false;
                json!("signing keys are sealed under a KEK this node does not hold")
            }
        },
        // The database check above already says it did not answer.
        _ => json!(format!("loaded ({})", state.kek.id())),
    };
    checks.insert("kek".into(), kek);
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    (ready, body)
}
