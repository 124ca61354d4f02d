//! `POST /realms/{realm}/oauth2/introspect` (RFC 7662), for clients registered with
//! `--introspect` (resource servers), authenticated by their registered method. A token is
//! `active` only while every rule that would refuse it elsewhere holds: signature, issuer and
//! expiry, not revoked, its client enabled, and for a user's token the user enabled and the session
//! live (the same idle and absolute timeouts as refresh and userinfo). Refresh tokens too.
//! Everything else is `{"active": false}`; answers are never cached (`no-store`).

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::OAuthError;
use super::caller;
use super::outcome::Refusal;
use super::revocation::revoked_jti_key;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::{sessions, token_hash};
use crate::oidc::userinfo::verify_own;
use crate::state::AppState;
use crate::store::StoreError;
use crate::tls::ConnTls;

const REFUSED: &str = "token.introspect_refused";

/// Why a token's state could not be read (the database or the directory did not answer).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
}

pub async fn introspect(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    conn: Option<Extension<ConnTls>>,
    crate::oidc::RealmPath(realm_name): crate::oidc::RealmPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let c = match caller::authenticate(
        &state,
        &realm_name,
        peer,
        conn,
        &headers,
        caller::Input::Body(body),
        REFUSED,
    )
    .await
    {
        Ok(c) => c,
        Err(res) => return res,
    };
    if let Err(res) = c
        .require_resource_server(
            &state,
            "this client may not introspect tokens",
            "introspection_not_allowed",
        )
        .await
    {
        return res;
    }
    let Some(token) = c.params.get("token").filter(|t| !t.is_empty()) else {
        let refusal = Refusal::new(
            OAuthError::invalid_request("token is required"),
            "missing_token",
        );
        return c.refuse(&state, refusal).await;
    };
    let found = match access_token(&state, &c.realm, token, c.now).await {
        Ok(None) => refresh_token(&state, &c.realm, token, c.now).await,
        other => other,
    };
    let body = match found {
        Ok(Some(mut active)) => {
            active.insert("active".into(), json!(true));
            Value::Object(active)
        }
        Ok(None) => json!({"active": false}),
        Err(e) => {
            tracing::error!(error = %e, "introspection failed");
            return OAuthError::store_unavailable().into_response();
        }
    };
    let mut res = axum::Json(body).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// The claims to answer for a live access token of this realm; `None` if it is not one.
async fn access_token(
    state: &AppState,
    realm: &LiveRealm,
    token: &str,
    now: UnixTime,
) -> Result<Option<Map<String, Value>>, InspectError> {
    let Some(mut claims) = verify_own(realm, token, now) else {
        return Ok(None);
    };
    if !access_token_live(state, realm, &claims, now).await? {
        return Ok(None);
    }
    claims.remove("token_use");
    let dpop = claims.get("cnf").and_then(|c| c.get("jkt")).is_some();
    claims.insert(
        "token_type".into(),
        json!(if dpop { "DPoP" } else { "Bearer" }),
    );
    Ok(Some(claims))
}

/// Whether a verified access token still stands: [`token_not_revoked`], and for a user's token
/// (one with a `sid`) the user enabled and the session live (userinfo checks those two itself, as
/// it reads the user anyway).
pub(crate) async fn access_token_live(
    state: &AppState,
    realm: &LiveRealm,
    claims: &Map<String, Value>,
    now: UnixTime,
) -> Result<bool, InspectError> {
    if !token_not_revoked(state, realm, claims, now).await? {
        return Ok(false);
    }
    match (
        claims.get("sub").and_then(Value::as_str),
        claims.get("sid").and_then(Value::as_str),
    ) {
        (Some(sub), Some(sid)) => user_and_session_live(state, realm, sub, sid, now).await,
        // A service's token: no user, no session.
        _ => Ok(true),
    }
}

/// The token-level rules: its `jti` not revoked (RFC 7009), its client enabled and not disabled or
/// deleted since the token was issued.
pub async fn token_not_revoked(
    state: &AppState,
    realm: &LiveRealm,
    claims: &Map<String, Value>,
    now: UnixTime,
) -> Result<bool, InspectError> {
    let name = &realm.record.name;
    let Some(jti) = claims.get("jti").and_then(Value::as_str) else {
        return Ok(false);
    };
    if state
        .store
        .access_token_revoked(&revoked_jti_key(name, jti), name, now)
        .await?
    {
        return Ok(false);
    }
    let client_id = claims
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !client_enabled(state, name, client_id, now).await? {
        return Ok(false);
    }
    // Disabled or deleted since the token was issued: enabling it again, or a new client under
    // the same id, does not bring the token back (the second of `iat` counts as before).
    let Some(iat) = claims.get("iat").and_then(Value::as_i64) else {
        return Ok(false);
    };
    Ok(!state
        .store
        .client_revoked_since(name, client_id, iat, now)
        .await?)
}

/// The fields of a live refresh token of this realm; `None` if it is not one.
async fn refresh_token(
    state: &AppState,
    realm: &LiveRealm,
    token: &str,
    now: UnixTime,
) -> Result<Option<Map<String, Value>>, InspectError> {
    let name = &realm.record.name;
    let Some(r) = state.store.refresh_token(&token_hash(token), name).await? else {
        return Ok(None);
    };
    if r.revoked_at.is_some() || r.used_at.is_some() || r.expires_at <= now {
        return Ok(None);
    }
    let data: Value = serde_json::from_str(&r.data).unwrap_or(Value::Null);
    let (Some(scope), Some(sid)) = (data["scope"].as_str(), data["sid"].as_str()) else {
        return Ok(None);
    };
    if !client_enabled(state, name, &r.client_id, now).await?
        || !user_and_session_live(state, realm, &r.user_id, sid, now).await?
    {
        return Ok(None);
    }
    let mut out = Map::new();
    out.insert("token_type".into(), json!("refresh_token"));
    out.insert("scope".into(), json!(scope));
    out.insert("client_id".into(), json!(r.client_id));
    out.insert("sub".into(), json!(r.user_id));
    out.insert("sid".into(), json!(sid));
    out.insert("exp".into(), json!(r.expires_at));
    out.insert("iss".into(), json!(realm.issuer));
    Ok(Some(out))
}

async fn client_enabled(
    state: &AppState,
    realm: &str,
    client_id: &str,
    now: UnixTime,
) -> Result<bool, InspectError> {
    let client = state.directory.client(realm, client_id, now).await?;
    Ok(client.is_some_and(|c| c.enabled))
}

async fn user_and_session_live(
    state: &AppState,
    realm: &LiveRealm,
    user_id: &str,
    sid: &str,
    now: UnixTime,
) -> Result<bool, InspectError> {
    let name = &realm.record.name;
    let Some(settings) = realm.login() else {
        return Ok(false);
    };
    let Some(user) = state.store.user_by_id(name, user_id).await? else {
        return Ok(false);
    };
    if !user.enabled {
        return Ok(false);
    }
    Ok(state
        .store
        .session_by_sid(name, sid)
        .await?
        .is_some_and(|s| s.user_id == user.id && sessions::is_live(settings, &s, now)))
}
