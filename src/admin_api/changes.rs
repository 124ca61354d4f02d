//! `/admin/changes`: four-eyes requests (see `admin::changes`): list, approve, reject; and the
//! gate the API's dangerous operations pass first (answering 202 with the request it filed).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, ApiPath, Problem, no_store};
use crate::admin::changes::{self as ops, Change, ChangeView, Gate};
use crate::state::AppState;

/// A dangerous change through the API: `Some(202 with the request)` when it needs a second
/// admin's approval, `None` to go ahead.
pub(super) async fn gated(
    state: &AppState,
    caller: &Caller,
    change: &Change,
) -> Result<Option<Response>, ApiError> {
    let admin_realm = state.config.admin_realm.as_deref();
    match ops::gate(
        state.store.as_ref(),
        admin_realm,
        change,
        &caller.actor,
        state.clock.now(),
    )
    .await?
    {
        Gate::Proceed => Ok(None),
        Gate::Requested(view) => Ok(Some(no_store(StatusCode::ACCEPTED, view))),
    }
}

/// A caller may decide a request about a realm it administers; about no realm (the KEK), only a
/// global admin.
async fn may_decide(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let view = ops::show(state.store.as_ref(), id, state.clock.now()).await?;
    let change: Option<Change> = serde_json::from_value(view.change).ok();
    match change.as_ref().and_then(Change::realm) {
        Some(realm) => caller.write(realm),
        None => caller.write_all(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Approved {
    pub change: ChangeView,
    /// What applying it reported (a rotated client secret is shown here, this once).
    #[schema(value_type = Object)]
    pub outcome: serde_json::Value,
}

#[utoipa::path(operation_id = "list_changes", get, path = "/admin/changes", tag = "changes",
    responses(
        (status = 200, description = "Change requests, newest first", body = Vec<ChangeView>),
        (status = 401, body = Problem), (status = 403, body = Problem)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.read_all()?;
    let views = ops::list(state.store.as_ref(), state.clock.now()).await?;
    Ok(no_store(StatusCode::OK, views))
}

#[utoipa::path(operation_id = "approve_change", post, path = "/admin/changes/{id}/approve", tag = "changes",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Approved and applied (or failed: see state and outcome)", body = Approved),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn approve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    may_decide(&state, &caller, &id).await?;
    let (change, outcome) = ops::approve(
        state.store.as_ref(),
        state.kek.as_ref(),
        &id,
        &caller.actor,
        state.clock.now(),
    )
    .await?;
    if let Some(realm) = change
        .change
        .get("realm")
        .and_then(|r| r.as_str())
        .map(str::to_owned)
    {
        super::changed(&state, &realm);
    }
    Ok(no_store(StatusCode::OK, Approved { change, outcome }))
}

#[utoipa::path(operation_id = "reject_change", post, path = "/admin/changes/{id}/reject", tag = "changes",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Rejected", body = ChangeView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn reject(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    may_decide(&state, &caller, &id).await?;
    let view = ops::reject(state.store.as_ref(), &id, &caller.actor, state.clock.now()).await?;
    Ok(no_store(StatusCode::OK, view))
}
