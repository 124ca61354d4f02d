//! `/metrics` in the Prometheus text format (version 0.0.4), on its own listener (`metrics_bind`,
//! off by default) so it is never reachable where the token endpoint is: token grants and
//! refusals, sign-ins, rate-limit hits, request latency per endpoint, the audit chain's write
//! path, signing-key age and time to the next rotation per realm, and the database pool.
//!
//! Labels are bounded: a realm label only ever names a realm that exists (requests for unknown
//! realms are refused before anything is counted), an endpoint label is a route template
//! (`/realms/{realm}/oauth2/token`), and reasons, grant types and methods are words from the code.
//! No label carries a user, a client, an address or a secret.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, RwLock};

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
    let mut res = render(&state).await.into_response();
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

/// Counters keyed by their label values, in a stable order for the exposition.
type Family = LazyLock<Mutex<BTreeMap<Vec<String>, u64>>>;

static GRANTS: Family = LazyLock::new(Default::default);
static REFUSALS: Family = LazyLock::new(Default::default);
static SIGN_INS: Family = LazyLock::new(Default::default);
static RATE_LIMITED: Family = LazyLock::new(Default::default);

fn bump(family: &Family, labels: &[&str]) {
    let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
    *family
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(0) += 1;
}

/// A token grant ended: `issued`, or `unavailable` (its audit record could not be written).
pub fn grant(realm: &str, grant_type: &str, outcome: &str) {
    bump(&GRANTS, &[realm, grant_type, outcome]);
}

/// A refusal at a service endpoint or a sign-in page (`kind` as in the audit log).
pub fn refusal(realm: &str, kind: &str, reason: &str) {
    bump(&REFUSALS, &[realm, kind, reason]);
}

/// A sign-in ended: method `passkey` or `password_otp`, outcome `succeeded` or `failed`.
pub fn sign_in(realm: &str, method: &str, outcome: &str) {
    bump(&SIGN_INS, &[realm, method, outcome]);
}

/// A request was answered 429, or an address reached its limit (`limiter` names which).
pub fn rate_limited(limiter: &str) {
    bump(&RATE_LIMITED, &[limiter]);
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts per bucket are computed at exposition; these are per bucket (the last
    /// is +Inf).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// Per route template: read-locked on the hot path, written once per new template.
static LATENCY: LazyLock<RwLock<BTreeMap<String, std::sync::Arc<Histogram>>>> =
    LazyLock::new(Default::default);

/// One answered request of `endpoint` (a route template) that took `nanos`.
pub fn observe(endpoint: &str, nanos: u64) {
    let found = LATENCY
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(endpoint)
        .cloned();
    let h = match found {
        Some(h) => h,
        None => LATENCY
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint.to_owned())
            .or_default()
            .clone(),
    };
    let secs = nanos as f64 / 1e9;
    let i = BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(BUCKETS.len());
    h.buckets[i].fetch_add(1, Ordering::Relaxed);
    h.count.fetch_add(1, Ordering::Relaxed);
    h.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
}

/// The middleware (on matched routes only) that times every request by its route template.
pub async fn time_requests(
    path: axum::extract::MatchedPath,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = tokio::time::Instant::now();
    let res = next.run(req).await;
    observe(
        path.as_str(),
        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    );
    res
}

/// Writes one labelled counter family.
fn family(out: &mut String, name: &str, help: &str, labels: &[&str], f: &Family) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (values, n) in f.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let pairs: Vec<String> = labels
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {n}", pairs.join(","));
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histograms(out: &mut String) {
    let name = "sigil_http_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a request's arrival at its route to its response, per route template."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (endpoint, h) in LATENCY.read().unwrap_or_else(|p| p.into_inner()).iter() {
        let ep = escape(endpoint);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{endpoint=\"{ep}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{endpoint=\"{ep}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{endpoint=\"{ep}\"}} {:.6}",
            h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{endpoint=\"{ep}\"}} {count}");
    }
}

/// Per realm: the active key's age and the time until the next one takes over (negative when
/// the rotation is overdue: the scheduler has not run).
async fn key_gauges(state: &AppState, out: &mut String) {
    let now = state.clock.now();
    let Ok(realms) = state.store.realms().await else {
        return;
    };
    let mut ages = Vec::new();
    let mut next = Vec::new();
    for realm in realms {
        let Ok(keys) = state.store.realm_keys(&realm.name).await else {
            continue;
        };
        if let Some(active) = keys.iter().find(|k| k.state == "active") {
            let since = active.activated_at.unwrap_or(active.created_at);
            ages.push((realm.name.clone(), now - since));
            next.push((realm.name.clone(), since + realm.rotation_period_secs - now));
        }
    }
    for (name, help, values) in [
        (
            "sigil_signing_key_age_seconds",
            "Seconds since the realm's active signing key began to sign.",
            ages,
        ),
        (
            "sigil_signing_key_next_rotation_seconds",
            "Seconds until the realm's next scheduled key rotation (negative: overdue).",
            next,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (realm, v) in values {
            let _ = writeln!(out, "{name}{{realm=\"{}\"}} {v}", escape(&realm));
        }
    }
}

/// The exposition text. Summaries carry `_sum` and `_count` (mean = sum / count); rates and
/// means over a window come from the scraper's deltas.
pub async fn render(state: &AppState) -> String {
    let mut out = render_counters(state);
    key_gauges(state, &mut out).await;
    out
}

fn render_counters(state: &AppState) -> String {
    let a = STATS.snapshot();
    let pool = state.store.pool_status();
    let mut out = String::new();
    family(
        &mut out,
        "sigil_token_grants_total",
        "Token grants by realm, grant type and outcome (issued; unavailable: not audited, so not returned).",
        &["realm", "grant_type", "outcome"],
        &GRANTS,
    );
    family(
        &mut out,
        "sigil_refusals_total",
        "Refused requests by realm, kind (as in the audit log) and reason.",
        &["realm", "kind", "reason"],
        &REFUSALS,
    );
    family(
        &mut out,
        "sigil_sign_ins_total",
        "Sign-ins on the hosted pages by realm, method and outcome.",
        &["realm", "method", "outcome"],
        &SIGN_INS,
    );
    family(
        &mut out,
        "sigil_rate_limited_total",
        "Requests answered 429, and addresses that reached their failure limit, by limiter.",
        &["limiter"],
        &RATE_LIMITED,
    );
    histograms(&mut out);
    metric(
        &mut out,
        "sigil_audit_batch_records",
        "summary",
        "Records per committed audit batch (mean = sum / count).",
        &[
            ("_sum", a.records.to_string()),
            ("_count", a.batches.to_string()),
        ],
    );
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
