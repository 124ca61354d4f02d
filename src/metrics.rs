//! `/metrics` in the Prometheus text format (version 0.0.4), on its own listener (`metrics_bind`,
//! off by default) so it is never reachable where the token endpoint is. What it exposes so far:
//! the audit chain's write path and the database pool. No label carries a user, a client or a
//! secret.

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::audit::stats::STATS;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut res = render(&state).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (suffix, value) in samples {
        let _ = writeln!(out, "{name}{suffix} {value}");
    }
}

/// The exposition text. Summaries carry `_sum` and `_count` (mean = sum / count); rates and
/// means over a window come from the scraper's deltas.
pub fn render(state: &AppState) -> String {
    let a = STATS.snapshot();
    let pool = state.store.pool_status();
    let mut out = String::new();
    metric(
        &mut out,
        "sigil_audit_batches_total",
        "counter",
        "Audit batches committed (one transaction each).",
        &[("", a.batches.to_string())],
    );
    metric(
        &mut out,
        "sigil_audit_records_total",
        "counter",
        "Audit records committed.",
        &[("", a.records.to_string())],
    );
    metric(
        &mut out,
        "sigil_audit_batch_failures_total",
        "counter",
        "Audit batches that failed or passed the database deadline (their requests got 503).",
        &[("", a.failed_batches.to_string())],
    );
    metric(
        &mut out,
        "sigil_audit_commit_seconds",
        "summary",
        "Time from an audit batch's first statement to its durable commit.",
        &[
            ("_sum", format!("{:.6}", a.commit_seconds)),
            ("_count", a.batches.to_string()),
        ],
    );
    metric(
        &mut out,
        "sigil_audit_head_wait_seconds",
        "summary",
        "Time an append waited to lock its audit chain's head row (shared by every node on that chain).",
        &[
            ("_sum", format!("{:.6}", a.head_wait_seconds)),
            ("_count", a.head_waits.to_string()),
        ],
    );
    metric(
        &mut out,
        "sigil_audit_queue_depth",
        "gauge",
        "Audit records waiting for the group-commit writer.",
        &[("", a.queued.to_string())],
    );
    metric(
        &mut out,
        "sigil_db_pool_connections",
        "gauge",
        "Database pool connections by state.",
        &[
            ("{state=\"idle\"}", pool.idle.to_string()),
            (
                "{state=\"in_use\"}",
                (pool.open as usize).saturating_sub(pool.idle).to_string(),
            ),
        ],
    );
    metric(
        &mut out,
        "sigil_db_pool_max_connections",
        "gauge",
        "The pool's configured size.",
        &[("", pool.max.to_string())],
    );
    out
}
