//! `/admin/realms` and a realm's groups.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{AlgName, ApiError, ApiJson, ApiPath, ApiQuery, Page, PageQuery, Problem, no_store};
use crate::admin::realms::{self as ops, DEFAULT_PREPUBLISH, DEFAULT_ROTATION_PERIOD, RealmView};
use crate::admin::users;
use crate::identity::settings::LoginSettings;
use crate::keys::Alg;
use crate::state::AppState;

#[utoipa::path(operation_id = "list_realms", get, path = "/admin/realms", tag = "realms",
    params(PageQuery),
    responses(
        (status = 200, description = "The realms the caller may read, by name", body = Page<RealmView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let all = ops::list(state.store.as_ref(), state.directory.base_url()).await?;
    let readable: Vec<RealmView> = all
        .into_iter()
        .filter(|r| caller.may_read(&r.name))
        .collect();
    if readable.is_empty() && caller.read_all().is_err() {
        return Err(ApiError::InsufficientScope("sigil:read".into()));
    }
    Ok(no_store(StatusCode::OK, q.page(readable, |r| &r.name)?))
}

/// A new realm (its first signing key is made and sealed at once).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRealmBody {
    /// 1-64 of `a-z 0-9 - _`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub name: String,
    /// Default `ES256`.
    #[serde(default)]
    pub alg: Option<AlgName>,
    /// Access token lifetime, 60-86400 s (default 3600).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 86400)]
    pub access_token_ttl: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f]*$")]
    pub display_name: Option<String>,
    /// Seconds a key signs before the next takes over (default 30 days; at most two years, and
    /// at least twice `prepublish_secs`).
    #[serde(default)]
    #[schema(minimum = 2, maximum = 63_072_000)]
    pub rotation_period_secs: Option<i64>,
    /// Seconds a next key is published before it signs (default 24 h; at most 90 days, and at
    /// least the JWKS max-age).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 7_776_000)]
    pub prepublish_secs: Option<i64>,
}

#[utoipa::path(operation_id = "create_realm", post, path = "/admin/realms", tag = "realms",
    request_body = NewRealmBody,
    responses(
        (status = 201, description = "Created", body = RealmView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem)
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<NewRealmBody>,
) -> Result<Response, ApiError> {
    caller.write_all()?;
    let alg: Alg = body.alg.map_or(Alg::ES256, Alg::from);
    if body
        .display_name
        .as_ref()
        .is_some_and(|d| d.chars().count() > 128 || d.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "display_name",
            "at most 128 printable characters",
        ));
    }
    let req = ops::NewRealm {
        name: body.name,
        alg,
        access_token_ttl: body.access_token_ttl.unwrap_or(3600),
        display_name: body.display_name,
        rotation_period_secs: body.rotation_period_secs.unwrap_or(DEFAULT_ROTATION_PERIOD),
        prepublish_secs: body.prepublish_secs.unwrap_or(DEFAULT_PREPUBLISH),
        jwks_max_age_secs: state.config.jwks_max_age_secs as i64,
    };
    let view = ops::create(
        state.store.as_ref(),
        state.kek.as_ref(),
        state.directory.base_url(),
        req,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &view.name);
    Ok(no_store(StatusCode::CREATED, view))
}

/// What a PATCH of a realm may change (absent fields stay; `display_name: null` clears it). The
/// algorithm cannot change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RealmPatch {
    #[serde(default)]
    #[schema(minimum = 60, maximum = 86400)]
    pub access_token_ttl: Option<i64>,
    #[serde(default, deserialize_with = "super::present")]
    #[schema(max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f]*$")]
    pub display_name: Option<Option<String>>,
    #[serde(default)]
    #[schema(minimum = 2, maximum = 63_072_000)]
    pub rotation_period_secs: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 7_776_000)]
    pub prepublish_secs: Option<i64>,
}

#[utoipa::path(operation_id = "update_realm", patch, path = "/admin/realms/{realm}", tag = "realms",
    params(("realm" = String, Path)),
    request_body = RealmPatch,
    responses(
        (status = 200, body = RealmView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(patch): ApiJson<RealmPatch>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let Some(current) = state.store.realm(&realm).await? else {
        return Err(ApiError::NotFound(format!("realm {realm}")));
    };
    let settings = ops::RealmSettings {
        access_token_ttl: patch.access_token_ttl.unwrap_or(current.access_token_ttl),
        display_name: patch.display_name.unwrap_or(current.display_name),
        rotation_period_secs: patch
            .rotation_period_secs
            .unwrap_or(current.rotation_period_secs),
        prepublish_secs: patch.prepublish_secs.unwrap_or(current.prepublish_secs),
    };
    let view = ops::update(
        state.store.as_ref(),
        state.directory.base_url(),
        &realm,
        settings,
        state.config.jwks_max_age_secs as i64,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(no_store(StatusCode::OK, view))
}

#[utoipa::path(operation_id = "get_login_settings", get, path = "/admin/realms/{realm}/login-settings", tag = "realms",
    params(("realm" = String, Path)),
    responses(
        (status = 200, description = "The realm's sign-in policy (as `sigil realm set-login` sets it)", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn login_settings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let Some(r) = state.store.realm(&realm).await? else {
        return Err(ApiError::NotFound(format!("realm {realm}")));
    };
    let settings: LoginSettings = serde_json::from_str(&r.login_settings).unwrap_or_default();
    Ok(no_store(StatusCode::OK, settings))
}

#[utoipa::path(operation_id = "set_login_settings", put, path = "/admin/realms/{realm}/login-settings", tag = "realms",
    params(("realm" = String, Path)),
    request_body(content = Object, description = "The whole policy; absent fields take their defaults"),
    responses(
        (status = 200, body = Object),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn set_login_settings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    // The stored form tolerates fields a newer node wrote; a request names only known ones (a
    // misspelt field would otherwise reset the setting it meant to its default).
    if let Ok(serde_json::Value::Object(known)) = serde_json::to_value(LoginSettings::default())
        && let Some(unknown) = body.keys().find(|k| !known.contains_key(*k))
    {
        return Err(ApiError::invalid(
            "body",
            format!("unknown field {unknown:?}"),
        ));
    }
    let settings: LoginSettings = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::invalid("body", e.to_string()))?;
    users::set_login_settings(
        state.store.as_ref(),
        &realm,
        &settings,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(no_store(StatusCode::OK, settings))
}

#[utoipa::path(operation_id = "get_realm", get, path = "/admin/realms/{realm}", tag = "realms",
    params(("realm" = String, Path)),
    responses(
        (status = 200, body = RealmView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let view = ops::show(state.store.as_ref(), state.directory.base_url(), &realm).await?;
    Ok(no_store(StatusCode::OK, view))
}

/// A group of users and the scopes its members get.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// 1-64 of `A-Z a-z 0-9 . _ : -`.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,64}$")]
    pub name: String,
    /// Space-separated scopes.
    #[schema(pattern = r"^[!#-\[\]-~]+( [!#-\[\]-~]+)*$")]
    pub scopes: String,
}

#[utoipa::path(operation_id = "list_groups", get, path = "/admin/realms/{realm}/groups", tag = "groups",
    params(("realm" = String, Path), PageQuery),
    responses(
        (status = 200, body = Page<Group>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn groups(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    super::require_realm(&state, &realm).await?;
    let items = users::groups(state.store.as_ref(), &realm)
        .await?
        .into_iter()
        .map(|(name, scopes)| Group { name, scopes })
        .collect();
    Ok(no_store(StatusCode::OK, q.page(items, |g| &g.name)?))
}

#[utoipa::path(operation_id = "create_group", post, path = "/admin/realms/{realm}/groups", tag = "groups",
    params(("realm" = String, Path)),
    request_body = Group,
    responses(
        (status = 201, body = Group),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)
    ))]
pub async fn create_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(body): ApiJson<Group>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    users::create_group(
        state.store.as_ref(),
        &realm,
        &body.name,
        &body.scopes,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    let scopes = users::groups(state.store.as_ref(), &realm)
        .await?
        .into_iter()
        .find(|(n, _)| *n == body.name)
        .map(|(_, s)| s)
        .unwrap_or(body.scopes);
    Ok(no_store(
        StatusCode::CREATED,
        Group {
            name: body.name,
            scopes,
        },
    ))
}

/// A group's scopes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupScopes {
    /// Space-separated scopes.
    #[schema(pattern = r"^[!#-\[\]-~]+( [!#-\[\]-~]+)*$")]
    pub scopes: String,
}

#[utoipa::path(operation_id = "set_group_scopes", put, path = "/admin/realms/{realm}/groups/{name}", tag = "groups",
    params(("realm" = String, Path), ("name" = String, Path)),
    request_body = GroupScopes,
    responses(
        (status = 200, body = Group),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn set_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<GroupScopes>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    users::set_group_scopes(
        state.store.as_ref(),
        &realm,
        &name,
        &body.scopes,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    let scopes = users::groups(state.store.as_ref(), &realm)
        .await?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .unwrap_or(body.scopes);
    Ok(no_store(StatusCode::OK, Group { name, scopes }))
}

#[utoipa::path(operation_id = "delete_group", delete, path = "/admin/realms/{realm}/groups/{name}", tag = "groups",
    params(("realm" = String, Path), ("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted; its members left it"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The group has policies, and the realm's policies change only through four-eyes", body = Problem)
    ))]
pub async fn delete_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.write(&realm)?;
    let store = state.store.as_ref();
    let admin_realm = state.config.admin_realm.as_deref();
    let keep_policies = crate::admin::changes::policies_guarded(store, admin_realm, &realm).await?;
    users::delete_group(
        store,
        &realm,
        &name,
        keep_policies,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(StatusCode::NO_CONTENT)
}

/// A realm's client CAs (`tls_client_auth` clients chain to one of them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCasBody {
    /// PEM, one or more CA certificates; replaces the current set.
    pub pem: String,
}

#[utoipa::path(operation_id = "get_client_cas", get, path = "/admin/realms/{realm}/client-cas", tag = "realms",
    params(("realm" = String, Path)),
    responses(
        (status = 200, body = ops::MtlsView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn client_cas(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let view = ops::show_mtls(state.store.as_ref(), &realm).await?;
    Ok(no_store(StatusCode::OK, view))
}

#[utoipa::path(operation_id = "set_client_cas", put, path = "/admin/realms/{realm}/client-cas", tag = "realms",
    params(("realm" = String, Path)),
    request_body = ClientCasBody,
    responses(
        (status = 200, body = ops::MtlsView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "The realm is protected (four-eyes): its CAs are not replaced by one admin", body = Problem)
    ))]
pub async fn set_client_cas(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(body): ApiJson<ClientCasBody>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    protected_cas(&state, &realm).await?;
    let view = ops::set_mtls(
        state.store.as_ref(),
        &realm,
        Some(&body.pem),
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(no_store(StatusCode::OK, view))
}

#[utoipa::path(operation_id = "clear_client_cas", delete, path = "/admin/realms/{realm}/client-cas", tag = "realms",
    params(("realm" = String, Path)),
    responses(
        (status = 204, description = "No CAs: the realm's tls_client_auth clients are refused until some are set"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The realm is protected (four-eyes): its CAs are not removed by one admin", body = Problem)
    ))]
pub async fn clear_client_cas(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.write(&realm)?;
    protected_cas(&state, &realm).await?;
    ops::set_mtls(
        state.store.as_ref(),
        &realm,
        None,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(StatusCode::NO_CONTENT)
}

/// A protected realm's client CAs are credentials: not replaced or removed by one admin.
async fn protected_cas(state: &AppState, realm: &str) -> Result<(), ApiError> {
    if crate::admin::changes::credential_change_needs_approval(
        state.store.as_ref(),
        state.config.admin_realm.as_deref(),
        realm,
        "",
    )
    .await?
    {
        return Err(ApiError::Conflict(format!(
            "realm {realm} is protected: its client CAs are not replaced by one admin (lower the \
             guard through a four-eyes request first)"
        )));
    }
    Ok(())
}
