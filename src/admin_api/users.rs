//! `/admin/realms/{realm}/users`: create and read users, enable or disable them, set their
//! attributes, manage their groups, send an enrolment invite, sign them out everywhere. A user
//! carries an `ETag`; enabling, disabling and attribute changes need `If-Match` with it.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{
    ApiError, ApiJson, ApiPath, ApiQuery, IfMatch, Page, PageQuery, Problem, if_match, no_store,
    with_etag,
};
use crate::admin::users::{self as ops, UserView};
use crate::state::AppState;

#[utoipa::path(get, operation_id = "get_user", path = "/admin/realms/{realm}/users/{username}", tag = "users",
    params(("realm" = String, Path), ("username" = String, Path)),
    responses(
        (status = 200, body = UserView, headers(("ETag" = String))),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, username)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let view = ops::show(state.store.as_ref(), &realm, &username).await?;
    let version = view.version;
    Ok(with_etag(StatusCode::OK, view, version))
}

/// A user in a list (`GET .../users/{username}` has the rest).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSummary {
    pub id: String,
    pub username: String,
    pub enabled: bool,
    pub created_at: i64,
}

#[utoipa::path(get, operation_id = "list_users", path = "/admin/realms/{realm}/users", tag = "users",
    params(("realm" = String, Path), PageQuery),
    responses(
        (status = 200, description = "Users by username", body = Page<UserSummary>),
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
    let limit = q.limit()?;
    super::require_realm(&state, &realm).await?;
    // Paged in SQL (a realm may hold millions): one more than asked says whether there is more.
    let mut rows = state
        .store
        .users_page(
            &realm,
            q.after.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = more
        .then(|| rows.last().map(|u| u.username.clone()))
        .flatten();
    let items = rows
        .into_iter()
        .map(|u| UserSummary {
            id: u.id,
            username: u.username,
            enabled: u.enabled,
            created_at: u.created_at,
        })
        .collect();
    Ok(no_store(StatusCode::OK, Page { items, next }))
}

/// A new user; credentials come later, through an invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    /// 1-128 of `A-Z a-z 0-9 . _ @ + -`.
    #[schema(pattern = "^[A-Za-z0-9._@+-]{1,128}$")]
    pub username: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Groups of the realm the user joins.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[utoipa::path(post, operation_id = "create_user", path = "/admin/realms/{realm}/users", tag = "users",
    params(("realm" = String, Path)),
    request_body = NewUserBody,
    responses(
        (status = 201, body = UserView, headers(("ETag" = String))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(b): ApiJson<NewUserBody>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let attrs = checked_attributes(&b.attributes, false)?;
    let view = ops::create(
        state.store.as_ref(),
        state.kek.as_ref(),
        &realm,
        &b.username,
        &attrs,
        &b.groups,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    let version = view.version;
    Ok(with_etag(StatusCode::CREATED, view, version))
}

/// Attribute names and values an admin may set: names 1-64 of `A-Z a-z 0-9 . _ : -`, values at
/// most 1,024 printable characters (an empty value removes the attribute, on a change).
fn checked_attributes(
    attrs: &BTreeMap<String, String>,
    empty_removes: bool,
) -> Result<Vec<(String, String)>, ApiError> {
    if attrs.len() > 64 {
        return Err(ApiError::invalid("attributes", "at most 64 at once"));
    }
    for (k, v) in attrs {
        let name_ok = (1..=64).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
        if !name_ok {
            return Err(ApiError::invalid(
                "attributes",
                "names are 1-64 of A-Z a-z 0-9 . _ : -",
            ));
        }
        if v.chars().count() > 1024
            || v.chars().any(char::is_control)
            || (v.is_empty() && !empty_removes)
        {
            return Err(ApiError::invalid(
                "attributes",
                "values are 1-1024 printable characters",
            ));
        }
    }
    Ok(attrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// One change per request: `enabled`, or `attributes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Disabling ends every session and refresh token of the user at once.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Attributes to set; an empty value removes one. Others are kept.
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, String>>,
}

#[utoipa::path(patch, operation_id = "update_user", path = "/admin/realms/{realm}/users/{username}", tag = "users",
    params(("realm" = String, Path), ("username" = String, Path), IfMatch),
    request_body = UserPatch,
    responses(
        (status = 200, body = UserView, headers(("ETag" = String))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem)
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, username)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let expected = Some(if_match(&headers)?);
    let (store, now) = (state.store.as_ref(), state.clock.now());
    match (patch.enabled, patch.attributes) {
        (Some(enabled), None) => {
            ops::set_enabled(
                store,
                &realm,
                &username,
                expected,
                enabled,
                now,
                &caller.actor,
            )
            .await?;
        }
        (None, Some(attrs)) => {
            let attrs = checked_attributes(&attrs, true)?;
            ops::set_attrs(
                store,
                state.kek.as_ref(),
                &realm,
                &username,
                expected,
                &attrs,
                now,
                &caller.actor,
            )
            .await?;
        }
        _ => {
            return Err(ApiError::invalid(
                "body",
                "name exactly one of enabled, attributes",
            ));
        }
    }
    let view = ops::show(store, &realm, &username).await?;
    let version = view.version;
    Ok(with_etag(StatusCode::OK, view, version))
}

#[utoipa::path(put, operation_id = "add_user_to_group", path = "/admin/realms/{realm}/users/{username}/groups/{group}", tag = "users",
    params(("realm" = String, Path), ("username" = String, Path), ("group" = String, Path)),
    responses(
        (status = 204, description = "A member (again, if it was already)"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)
    ))]
pub async fn add_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, username, group)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.write(&realm)?;
    let store = state.store.as_ref();
    if !ops::groups(store, &realm)
        .await?
        .iter()
        .any(|(g, _)| *g == group)
    {
        return Err(ApiError::NotFound(format!(
            "group {group} in realm {realm}"
        )));
    }
    // The membership row's unique key decides: of concurrent joins one writes (and is audited),
    // the others find it there, which is the same answer.
    let now = state.clock.now();
    match ops::add_group(store, &realm, &username, &group, now, &caller.actor).await {
        Ok(()) | Err(crate::admin::AdminError::Conflict(_)) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(delete, operation_id = "remove_user_from_group", path = "/admin/realms/{realm}/users/{username}/groups/{group}", tag = "users",
    params(("realm" = String, Path), ("username" = String, Path), ("group" = String, Path)),
    responses(
        (status = 204, description = "No longer a member"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn remove_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, username, group)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.write(&realm)?;
    ops::remove_group(
        state.store.as_ref(),
        &realm,
        &username,
        &group,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// Seconds the link stays valid, 60-604800 (default 86400).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 604_800)]
    pub ttl_secs: Option<i64>,
    /// The app the user will use: offered ("Continue to {app}") when the set-up is done.
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invite {
    /// The single-use enrolment link (a credential: hand it to the user only). Shown this once.
    pub url: String,
    pub expires_in: i64,
}

#[utoipa::path(post, operation_id = "invite_user", path = "/admin/realms/{realm}/users/{username}/invite", tag = "users",
    params(("realm" = String, Path), ("username" = String, Path)),
    request_body = InviteBody,
    responses(
        (status = 201, body = Invite),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn invite(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, username)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<InviteBody>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let store = state.store.as_ref();
    let ttl = b.ttl_secs.unwrap_or(86_400);
    // The app is checked before anything is written.
    if let Some(id) = &b.client_id {
        crate::admin::clients::show(store, &realm, id).await?;
    }
    let mut url = ops::invite(
        store,
        state.config.admin_realm.as_deref(),
        state.directory.base_url(),
        &realm,
        &username,
        ttl,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    if let Some(id) = &b.client_id {
        url.push_str(&format!(
            "?client_id={}",
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
        ));
    }
    Ok(no_store(
        StatusCode::CREATED,
        Invite {
            url,
            expires_in: ttl,
        },
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignedOut {
    /// Sessions and refresh tokens ended.
    pub ended: u64,
}

#[utoipa::path(post, operation_id = "sign_out_user", path = "/admin/realms/{realm}/users/{username}/sign-out", tag = "users",
    params(("realm" = String, Path), ("username" = String, Path)),
    responses(
        (status = 200, body = SignedOut),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn sign_out(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, username)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let ended = ops::sign_out_everywhere(
        state.store.as_ref(),
        &realm,
        &username,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    Ok(no_store(StatusCode::OK, SignedOut { ended }))
}
