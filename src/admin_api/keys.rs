//! `/admin/realms/{realm}/keys`: the realm's signing keys, and rotating now.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{AlgName, ApiError, ApiJson, ApiPath, Problem, no_store};
use crate::admin::realms::{self as ops, KeyView};
use crate::keys::Alg;
use crate::state::AppState;

#[utoipa::path(operation_id = "list_keys", get, path = "/admin/realms/{realm}/keys", tag = "keys",
    params(("realm" = String, Path)),
    responses(
        (status = 200, description = "Every key of the realm, with its state", body = Vec<KeyView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let view = ops::show(state.store.as_ref(), state.directory.base_url(), &realm).await?;
    Ok(no_store(StatusCode::OK, view.keys))
}

/// Rotate now (an emergency: validators meet the new key before it was pre-published).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// The new key's algorithm (default: the realm's).
    #[serde(default)]
    pub alg: Option<AlgName>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    /// The key that signs from now on.
    pub kid: String,
}

#[utoipa::path(operation_id = "rotate_key", post, path = "/admin/realms/{realm}/keys/rotate", tag = "keys",
    params(("realm" = String, Path)),
    request_body = RotateBody,
    responses(
        (status = 200, body = Rotated),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)
    ))]
pub async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(body): ApiJson<RotateBody>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let alg: Option<Alg> = body.alg.map(Alg::from);
    let kid = crate::keys::rotation::rotate_now(
        state.store.as_ref(),
        state.kek.as_ref(),
        &realm,
        alg,
        &caller.actor,
        state.clock.now(),
    )
    .await?;
    super::changed(&state, &realm);
    Ok(no_store(StatusCode::OK, Rotated { kid }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// The key that left the JWKS; its private half is destroyed.
    pub kid: String,
}

/// The emergency path: the key leaves the JWKS at once and its private half is destroyed (an
/// active key is replaced by the published next key, or a fresh one). Validators drop it at their
/// next JWKS fetch.
#[utoipa::path(post, operation_id = "revoke_key", path = "/admin/realms/{realm}/keys/{kid}/revoke", tag = "keys",
    params(("realm" = String, Path), ("kid" = String, Path)),
    responses(
        (status = 200, body = Revoked),
        (status = 202, description = "Filed for a second admin's approval (four-eyes)", body = crate::admin::changes::ChangeView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, kid)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let change = crate::admin::changes::Change::KeyRevoke {
        realm: realm.clone(),
        kid: kid.clone(),
    };
    if let Some(filed) = super::changes::gated(&state, &caller, &change).await? {
        return Ok(filed);
    }
    crate::keys::rotation::revoke(
        state.store.as_ref(),
        state.kek.as_ref(),
        &realm,
        &kid,
        &caller.actor,
        state.clock.now(),
    )
    .await?;
    super::changed(&state, &realm);
    Ok(no_store(StatusCode::OK, Revoked { kid }))
}
