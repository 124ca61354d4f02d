//! `/admin/realms/{realm}/clients`: register, read, enable or disable, rotate the secret of, and
//! delete clients. A secret is in the answer to its creation or rotation only.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::{
    ApiError, ApiJson, ApiPath, ApiQuery, IfMatch, Page, PageQuery, Problem, if_match, with_etag,
};
use crate::admin::clients::{self as ops, ClientView, NewClient, WithSecret};
use crate::clients::auth::ClientAuth;
use crate::state::AppState;

#[utoipa::path(operation_id = "list_clients", get, path = "/admin/realms/{realm}/clients", tag = "clients",
    params(("realm" = String, Path), PageQuery),
    responses(
        (status = 200, body = Page<ClientView>),
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
    let items = ops::list(state.store.as_ref(), &realm).await?;
    Ok(super::no_store(
        StatusCode::OK,
        q.page(items, |c| &c.client_id)?,
    ))
}

/// A new client. Without `auth` it authenticates with a secret (returned once).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    /// 1-128 of `A-Z a-z 0-9 . _ ~ -`.
    #[schema(pattern = "^[A-Za-z0-9._~-]{1,128}$")]
    pub client_id: String,
    /// The scopes it may ask for, space-separated.
    #[schema(pattern = r"^[!#-\[\]-~]+( [!#-\[\]-~]+)*$")]
    pub scope: String,
    /// Granted when a request names none (default: all of `scope`).
    #[serde(default)]
    #[schema(pattern = r"^[!#-\[\]-~]+( [!#-\[\]-~]+)*$")]
    pub default_scope: Option<String>,
    /// The `aud` of its access tokens (1-256 printable characters).
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f]+$"
    )]
    pub audience: String,
    /// 60-86400 s (default: the realm's).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 86400)]
    pub access_token_ttl: Option<i64>,
    /// Exact redirect URIs: a sign-in (authorization code) client.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// A public client (mobile app): no secret, PKCE.
    #[serde(default)]
    pub public: bool,
    /// Its name on the hosted pages (at most 64 characters).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub client_uri: Option<String>,
    /// May call introspection and read the revocation feed (a resource server).
    #[serde(default)]
    pub introspect: bool,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    /// How it authenticates, as `auth` in a client's view: `method` (`tls_client_auth`,
    /// `self_signed_tls_client_auth`, `private_key_jwt`; absent = a secret), `tls_subject`,
    /// `cert_thumbprints`, `jwks` or `jwks_uri`, `bind_tokens`, `require_dpop`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub auth: Option<serde_json::Map<String, serde_json::Value>>,
}

#[utoipa::path(operation_id = "create_client", post, path = "/admin/realms/{realm}/clients", tag = "clients",
    params(("realm" = String, Path)),
    request_body = NewClientBody,
    responses(
        (status = 201, description = "Created; `client_secret` is shown this once", body = WithSecret,
            headers(("ETag" = String))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(b): ApiJson<NewClientBody>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let auth: ClientAuth = match b.auth {
        None => ClientAuth::default(),
        Some(m) => serde_json::from_value(serde_json::Value::Object(m))
            .map_err(|e| ApiError::invalid("auth", e.to_string()))?,
    };
    let req = NewClient {
        secret: None,
        realm,
        client_id: b.client_id,
        scopes: b.scope,
        default_scopes: b.default_scope,
        audience: b.audience,
        access_token_ttl: b.access_token_ttl,
        redirect_uris: b.redirect_uris,
        public: b.public,
        name: b.name,
        client_uri: b.client_uri,
        auth,
        introspect: b.introspect,
        post_logout_redirect_uris: b.post_logout_redirect_uris,
        backchannel_logout_uri: b.backchannel_logout_uri,
    };
    let made = ops::create(state.store.as_ref(), req, state.clock.now(), &caller.actor).await?;
    super::changed(&state, &made.client.realm);
    let version = made.client.version;
    Ok(with_etag(StatusCode::CREATED, made, version))
}

#[utoipa::path(operation_id = "get_client", get, path = "/admin/realms/{realm}/clients/{client_id}", tag = "clients",
    params(("realm" = String, Path), ("client_id" = String, Path)),
    responses(
        (status = 200, body = ClientView, headers(("ETag" = String))),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let view = ops::show(state.store.as_ref(), &realm, &id).await?;
    let version = view.version;
    Ok(with_etag(StatusCode::OK, view, version))
}

/// What a PATCH may change: `enabled` on its own, or any of the description's fields (those
/// absent stay; `null` clears an optional one). Authentication changes through `PUT .../auth`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    /// Disabling revokes every token the client holds (they enter the revocation feed).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Space-separated allowed scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// Space-separated default scopes (`null`: all the allowed ones).
    #[serde(default, deserialize_with = "super::present")]
    pub default_scope: Option<Option<String>>,
    #[serde(default)]
    pub audience: Option<String>,
    /// 60-86400 s (`null`: the realm's).
    #[serde(default, deserialize_with = "super::present")]
    #[schema(minimum = 60, maximum = 86400)]
    pub access_token_ttl: Option<Option<i64>>,
    #[serde(default)]
    pub redirect_uris: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::present")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::present")]
    pub client_uri: Option<Option<String>>,
    #[serde(default)]
    pub introspect: Option<bool>,
    #[serde(default)]
    pub post_logout_redirect_uris: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::present")]
    pub backchannel_logout_uri: Option<Option<String>>,
}

impl ClientPatch {
    fn describes(&self) -> bool {
        self.scope.is_some()
            || self.default_scope.is_some()
            || self.audience.is_some()
            || self.access_token_ttl.is_some()
            || self.redirect_uris.is_some()
            || self.name.is_some()
            || self.client_uri.is_some()
            || self.introspect.is_some()
            || self.post_logout_redirect_uris.is_some()
            || self.backchannel_logout_uri.is_some()
    }

    fn apply_to(self, c: &mut NewClient) {
        if let Some(v) = self.scope {
            c.scopes = v;
        }
        if let Some(v) = self.default_scope {
            c.default_scopes = v;
        }
        if let Some(v) = self.audience {
            c.audience = v;
        }
        if let Some(v) = self.access_token_ttl {
            c.access_token_ttl = v;
        }
        if let Some(v) = self.redirect_uris {
            c.redirect_uris = v;
        }
        if let Some(v) = self.name {
            c.name = v;
        }
        if let Some(v) = self.client_uri {
            c.client_uri = v;
        }
        if let Some(v) = self.introspect {
            c.introspect = v;
        }
        if let Some(v) = self.post_logout_redirect_uris {
            c.post_logout_redirect_uris = v;
        }
        if let Some(v) = self.backchannel_logout_uri {
            c.backchannel_logout_uri = v;
        }
    }
}

#[utoipa::path(operation_id = "update_client", patch, path = "/admin/realms/{realm}/clients/{client_id}", tag = "clients",
    params(("realm" = String, Path), ("client_id" = String, Path),
        IfMatch),
    request_body = ClientPatch,
    responses(
        (status = 200, body = ClientView, headers(("ETag" = String))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem)
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<ClientPatch>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let expected = if_match(&headers)?;
    match (patch.enabled, patch.describes()) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "enabled",
                "change enabled on its own, not with the description",
            ));
        }
        (None, false) => return Err(ApiError::invalid("body", "nothing to change")),
        (Some(enabled), false) => {
            ops::set_enabled(
                state.store.as_ref(),
                &realm,
                &id,
                Some(expected),
                enabled,
                state.clock.now(),
                &caller.actor,
            )
            .await?;
        }
        (None, true) => {
            let Some(current) = state.store.client(&realm, &id).await? else {
                return Err(ApiError::NotFound(format!("client {id} in realm {realm}")));
            };
            let mut req = ops::as_new(&current);
            patch.apply_to(&mut req);
            // The version read with `current` is checked again in the write: a change made
            // in between makes this one 412, never a merge over it.
            ops::update(
                state.store.as_ref(),
                req,
                Some(expected),
                state.clock.now(),
                &caller.actor,
            )
            .await?;
        }
    }
    super::changed(&state, &realm);
    let view = ops::show(state.store.as_ref(), &realm, &id).await?;
    let version = view.version;
    Ok(with_etag(StatusCode::OK, view, version))
}

#[utoipa::path(operation_id = "set_client_auth", put, path = "/admin/realms/{realm}/clients/{client_id}/auth", tag = "clients",
    params(("realm" = String, Path), ("client_id" = String, Path), IfMatch),
    request_body(content = Object, description = "As `auth` at registration: `method` \
        (absent = a secret), `tls_subject`, `cert_thumbprints`, `jwks` or `jwks_uri`, \
        `bind_tokens`, `require_dpop`"),
    responses(
        (status = 200, description = "Switched; a client moved to a secret method gets a new \
            secret, shown this once", body = WithSecret, headers(("ETag" = String))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem),
        (status = 409, description = "The realm is protected (four-eyes): a client's authentication is not replaced by one admin", body = Problem)
    ))]
pub async fn set_auth(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let expected = if_match(&headers)?;
    if crate::admin::changes::credential_change_needs_approval(
        state.store.as_ref(),
        state.config.admin_realm.as_deref(),
        &realm,
        &id,
    )
    .await?
    {
        return Err(ApiError::Conflict(format!(
            "realm {realm} is protected: a client's authentication is not replaced by one admin \
             (POST .../secret files a four-eyes request)"
        )));
    }
    let auth: ClientAuth = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::invalid("auth", e.to_string()))?;
    let made = ops::set_auth(
        state.store.as_ref(),
        &realm,
        &id,
        Some(expected),
        auth,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    let version = made.client.version;
    Ok(with_etag(StatusCode::OK, made, version))
}

#[utoipa::path(operation_id = "delete_client", delete, path = "/admin/realms/{realm}/clients/{client_id}", tag = "clients",
    params(("realm" = String, Path), ("client_id" = String, Path),
        IfMatch),
    responses(
        (status = 204, description = "Deleted; its tokens are revoked"),
        (status = 202, description = "Filed for a second admin's approval (four-eyes)", body = crate::admin::changes::ChangeView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem)
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let expected = if_match(&headers)?;
    let change = crate::admin::changes::Change::ClientDelete {
        realm: realm.clone(),
        client_id: id.clone(),
    };
    if let Some(filed) = super::changes::gated(&state, &caller, &change).await? {
        return Ok(filed);
    }
    ops::delete(
        state.store.as_ref(),
        &realm,
        &id,
        Some(expected),
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(operation_id = "rotate_client_secret", post, path = "/admin/realms/{realm}/clients/{client_id}/secret", tag = "clients",
    params(("realm" = String, Path), ("client_id" = String, Path),
        IfMatch),
    responses(
        (status = 200, description = "The new secret, shown this once; the old one stops working",
            body = WithSecret, headers(("ETag" = String))),
        (status = 202, description = "Filed for a second admin's approval (four-eyes)", body = crate::admin::changes::ChangeView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem)
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let expected = if_match(&headers)?;
    let change = crate::admin::changes::Change::ClientRotateSecret {
        realm: realm.clone(),
        client_id: id.clone(),
    };
    if let Some(filed) = super::changes::gated(&state, &caller, &change).await? {
        return Ok(filed);
    }
    let made = ops::rotate_secret(
        state.store.as_ref(),
        &realm,
        &id,
        Some(expected),
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    let version = made.client.version;
    Ok(with_etag(StatusCode::OK, made, version))
}
