//! `/admin/audit`: reading the log page by page, and verifying its chains.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiError, ApiQuery, Problem, no_store};
use crate::audit::{AuditRecord, VerifyReport};
use crate::state::AppState;

const MAX_AFTER: i64 = 1 << 62;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Rows with a sequence number above this (default 0: from the start).
    #[param(minimum = 0, maximum = 4_611_686_018_427_387_904_i64)]
    pub after: Option<i64>,
    /// Sequence numbers per page, 1-1000 (default 100): the rows of every chain with a `seq`
    /// in (`after`, `after + limit`].
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// The highest `seq` on this page: pass it as `after` for the next one. Absent when the page
    /// is empty (nothing after `after` yet: poll again with the same `after`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

#[utoipa::path(operation_id = "list_audit", get, path = "/admin/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    caller.read_all()?;
    let after = q.after.unwrap_or(0);
    // Bounded so that `after + limit` stays far inside a 64-bit integer (here and in SQL).
    if !(0..=MAX_AFTER).contains(&after) {
        return Err(ApiError::invalid("after", "must be 0-2^62"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1-1000"));
    }
    let rows = state.store.audit_page(after, limit).await?;
    // Every row with a seq in the range is on the page (all chains), so nothing at or below the
    // highest seq returned can be missed by continuing after it.
    let next = rows.iter().map(|r| r.seq).max();
    Ok(no_store(StatusCode::OK, AuditPage { items: rows, next }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Verified {
    /// `intact` or `broken`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The first broken row, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[utoipa::path(operation_id = "verify_audit", post, path = "/admin/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "Every chain walked (checkpoint seals checked with this node's KEK)", body = Verified),
        (status = 401, body = Problem), (status = 403, body = Problem)
    ))]
pub async fn verify(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.read_all()?;
    let report =
        crate::admin::audit::verify(state.store.as_ref(), Some(state.kek.as_ref())).await?;
    let body = match report {
        VerifyReport::Intact { rows, head } => Verified {
            status: "intact",
            rows: Some(rows),
            head: Some(head),
            seq: None,
            reason: None,
        },
        VerifyReport::Broken { seq, reason } => Verified {
            status: "broken",
            rows: None,
            head: None,
            seq: Some(seq),
            reason: Some(reason),
        },
    };
    Ok(no_store(StatusCode::OK, body))
}
