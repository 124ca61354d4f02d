//! `POST /realms/{realm}/oauth2/token`: parse, authenticate, run the grant, audit, answer.
//! Every outcome, issued or refused, is in the audit log before the response leaves.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::client_auth::{self, Presented};
use super::outcome::{Granted, Refusal, finish, rate_limited, read_body};
use super::{ErrorCode, OAuthError, client_credentials, form, secret};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;

pub async fn token(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    crate::oidc::RealmPath(realm_name): crate::oidc::RealmPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let realm = match state.directory.realm(&realm_name, now).await {
        Ok(Some(r)) => r,
        Ok(None) => return OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response(),
        Err(e) => {
            tracing::error!(error = %e, realm = %realm_name, "realm unavailable");
            return OAuthError::store_unavailable().into_response();
        }
    };
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(res) = rate_limited(&state, peer, now) {
        return res;
    }
    let outcome = match read_body(&headers, body, state.config.max_body_bytes).await {
        Ok(bytes) => grant(&state, &realm, &headers, &bytes, now).await,
        Err(refusal) => Err(refusal),
    };
    finish(&state, &realm, outcome, peer, now).await
}

async fn grant(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    body: &[u8],
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let params = form::parse(headers, body).map_err(|e| Refusal::new(e, "malformed_request"))?;
    let grant_type = params.get("grant_type").ok_or_else(|| {
        Refusal::new(
            OAuthError::invalid_request("grant_type is required"),
            "missing_grant_type",
        )
    })?;
    if grant_type == "authorization_code" || grant_type == "refresh_token" {
        return super::user_grants::grant(state, realm, headers, &params, grant_type, now).await;
    }
    if grant_type == crate::aws::exchange::TOKEN_EXCHANGE {
        return crate::aws::exchange::from_token_request(state, realm, &params, now).await;
    }
    if grant_type != client_credentials::GRANT_TYPE {
        return Err(Refusal::new(
            OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "supported: client_credentials, authorization_code, refresh_token, token-exchange",
            ),
            "unsupported_grant_type",
        ));
    }
    let presented = client_auth::extract(headers, &params).map_err(|e| {
        let reason = if e.code == ErrorCode::InvalidClient {
            "no_client_authentication"
        } else {
            "malformed_client_authentication"
        };
        Refusal::new(e, reason)
    })?;
    let client = authenticate(state, realm, &presented, now).await?;
    let issued =
        client_credentials::issue(realm, &client, params.get("scope"), now).map_err(|e| {
            let reason = match e.code {
                ErrorCode::InvalidScope => "invalid_scope",
                ErrorCode::UnauthorizedClient => "grant_not_allowed",
                _ => "signing_failed",
            };
            Refusal::new(e, reason)
                .client(&client.client_id)
                .authenticated()
        })?;
    Ok(Granted {
        actor: client.client_id.clone(),
        grant_type: client_credentials::GRANT_TYPE,
        token: issued.token,
        scope: issued.scope,
        expires_in: issued.expires_in,
        detail: Default::default(),
        token_exchange: false,
        response_extra: Default::default(),
        audited: false,
    })
}

/// Looks the client up and checks its secret. An unknown id, a wrong secret and a disabled client
/// get the same answer; the first two also do the same work.
pub(crate) async fn authenticate(
    state: &AppState,
    realm: &LiveRealm,
    presented: &Presented,
    now: UnixTime,
) -> Result<std::sync::Arc<crate::store::ClientRecord>, Refusal> {
    let refuse =
        |reason| Refusal::new(OAuthError::invalid_client(), reason).client(&presented.client_id);
    if !client_auth::is_valid_client_id(&presented.client_id) {
        secret::burn(&presented.secret);
        return Err(refuse("unknown_client"));
    }
    let found = state
        .directory
        .client(&realm.record.name, &presented.client_id, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "client lookup failed");
            Refusal::new(OAuthError::store_unavailable(), "store_unavailable")
        })?;
    let Some(client) = found else {
        secret::burn(&presented.secret);
        return Err(refuse("unknown_client"));
    };
    if !secret::matches(
        &client.secret_salt,
        &client.secret_verifier,
        &presented.secret,
    ) {
        return Err(refuse("bad_secret"));
    }
    if !client.enabled {
        return Err(refuse("client_disabled"));
    }
    Ok(client)
}
