//! `/admin/realms/{realm}/policies`: principal policies for resource servers, through the same
//! operations as `sigil policy`.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, Page, PageQuery, Problem, no_store};
use crate::admin::policies::{self as ops, PolicyView};
use crate::state::AppState;

/// Whom a policy is for.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A client acting for itself (client_credentials), by client id.
    Client,
    /// A user, by `sub`.
    User,
    /// The users of a group.
    Group,
    /// AWS principals from the STS exchange: an IAM ARN or a `*`/`?` glob over one.
    Aws,
    /// Every token of an issuer (its URL).
    Issuer,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PolicyEffect {
    Allow,
    Deny,
}

/// A policy: `effect` on `actions` × `resources` (both with `*` and `?`) for one principal, when
/// every CEL assertion over `context.auth.claims` and `context.document` holds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    pub principal_kind: PrincipalKind,
    /// The client id, user `sub`, group name, ARN pattern or issuer URL.
    pub principal: String,
    pub effect: PolicyEffect,
    /// `db:Insert`, `db:*`, ...
    pub actions: Vec<String>,
    /// `financial.ledger.document.*`, ...
    pub resources: Vec<String>,
    #[serde(default)]
    pub assertions: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[utoipa::path(operation_id = "list_policies", get, path = "/admin/realms/{realm}/policies", tag = "policies",
    params(("realm" = String, Path), PageQuery),
    responses(
        (status = 200, body = Page<PolicyView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let (_, items) = ops::list(state.store.as_ref(), &realm).await?;
    Ok(no_store(StatusCode::OK, q.page(items, |p| &p.name)?))
}

#[utoipa::path(operation_id = "get_policy", get, path = "/admin/realms/{realm}/policies/{name}", tag = "policies",
    params(("realm" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, body = PolicyView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let view = ops::show(state.store.as_ref(), &realm, &name).await?;
    Ok(no_store(StatusCode::OK, view))
}

#[utoipa::path(operation_id = "put_policy", put, path = "/admin/realms/{realm}/policies/{name}", tag = "policies",
    params(("realm" = String, Path), ("name" = String, Path)),
    request_body = PolicyBody,
    responses(
        (status = 200, description = "Created, or replaced in one step; or already so (an identical policy: nothing written, nothing filed)", body = PolicyView),
        (status = 202, description = "Filed for a second admin's approval (four-eyes; a protected realm)", body = crate::admin::changes::ChangeView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)
    ))]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, name)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<PolicyBody>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let kind = match b.principal_kind {
        PrincipalKind::Client => "client",
        PrincipalKind::User => "user",
        PrincipalKind::Group => "group",
        PrincipalKind::Aws => "aws",
        PrincipalKind::Issuer => "issuer",
    };
    let effect = match b.effect {
        PolicyEffect::Allow => "ALLOW",
        PolicyEffect::Deny => "DENY",
    };
    let req = ops::NewPolicy {
        realm: realm.clone(),
        name,
        principal_kind: kind.into(),
        principal: b.principal,
        effect: effect.into(),
        actions: b.actions,
        resources: b.resources,
        assertions: b.assertions,
        description: b.description,
    };
    let change = match ops::put_change(state.store.as_ref(), &req, true).await? {
        ops::Put::Unchanged(same) => return Ok(no_store(StatusCode::OK, same)),
        ops::Put::Change(change) => change,
    };
    if let Some(filed) = super::changes::gated(&state, &caller, &change).await? {
        return Ok(filed);
    }
    let view = ops::create(
        state.store.as_ref(),
        req,
        true,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    Ok(no_store(StatusCode::OK, view))
}

#[utoipa::path(operation_id = "delete_policy", delete, path = "/admin/realms/{realm}/policies/{name}", tag = "policies",
    params(("realm" = String, Path), ("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 202, description = "Filed for a second admin's approval (four-eyes; a protected realm)", body = crate::admin::changes::ChangeView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let change = ops::delete_change(state.store.as_ref(), &realm, &name).await?;
    if let Some(filed) = super::changes::gated(&state, &caller, &change).await? {
        return Ok(filed);
    }
    ops::delete(
        state.store.as_ref(),
        &realm,
        &name,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
