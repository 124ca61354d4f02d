//! `POST /realms/{realm}/oauth2/token`: parse, authenticate, run the grant, audit, answer.
//! Every outcome, issued or refused, is in the audit log before the response leaves.

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::client_auth::{self, Presented};
use super::{ErrorCode, OAuthError, client_credentials, form, secret};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;

/// Why a request was refused, for the audit log (never shown to the caller).
struct Refusal {
    error: OAuthError,
    reason: &'static str,
    client_id: Option<String>,
}

impl Refusal {
    fn new(error: OAuthError, reason: &'static str) -> Self {
        Refusal {
            error,
            reason,
            client_id: None,
        }
    }
    fn client(mut self, id: &str) -> Self {
        self.client_id = Some(if client_auth::is_valid_client_id(id) {
            id.to_owned()
        } else {
            "(malformed)".to_owned()
        });
        self
    }
}

pub async fn token(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path(realm_name)) = path else {
        return OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response();
    };
    let now = state.clock.now();
    let realm = match state.directory.realm(&realm_name, now).await {
        Ok(Some(r)) => r,
        Ok(None) => return OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response(),
        Err(e) => {
            tracing::error!(error = %e, realm = %realm_name, "realm unavailable");
            return OAuthError::server_error().into_response();
        }
    };
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let outcome = if declared.is_some_and(|n| n > limit as u64) {
        Err(Refusal::new(
            OAuthError::new(ErrorCode::TooLarge, "request body too large"),
            "body_too_large",
        ))
    } else {
        match to_bytes(body, limit).await {
            Ok(bytes) => grant(&state, &realm, &headers, &bytes, now).await,
            Err(_) => Err(Refusal::new(
                OAuthError::new(ErrorCode::TooLarge, "request body too large or unreadable"),
                "body_unreadable",
            )),
        }
    };
    match outcome {
        Ok((client_id, issued)) => {
            let draft = AuditDraft::new(now, Some(&realm.record.name), "token.issued", &client_id)
                .subject(&client_id)
                .signed_with(realm.signing.kid(), issued.token.exp)
                .detail(json!({
                    "grant_type": client_credentials::GRANT_TYPE,
                    "jti": issued.token.jti,
                    "scope": issued.scope,
                    "exp": issued.token.exp,
                    "kid": realm.signing.kid(),
                }));
            // The token leaves only once its audit record is durable.
            if state.audit.record(draft).await.is_err() {
                return OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the token could not be recorded; try again",
                )
                .into_response();
            }
            token_response(&issued)
        }
        Err(refusal) => {
            let actor = refusal.client_id.as_deref().unwrap_or("(anonymous)");
            let draft = AuditDraft::new(now, Some(&realm.record.name), "token.refused", actor)
                .detail(json!({
                    "error": refusal.error.code.as_str(),
                    "reason": refusal.reason,
                }));
            if state.audit.record(draft).await.is_err() {
                tracing::error!(realm = %realm.record.name, "refusal could not be audited");
            }
            refusal.error.into_response()
        }
    }
}

async fn grant(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    body: &[u8],
    now: UnixTime,
) -> Result<(String, client_credentials::Issued), Refusal> {
    let params = form::parse(headers, body).map_err(|e| Refusal::new(e, "malformed_request"))?;
    let grant_type = params.get("grant_type").ok_or_else(|| {
        Refusal::new(
            OAuthError::invalid_request("grant_type is required"),
            "missing_grant_type",
        )
    })?;
    if grant_type != client_credentials::GRANT_TYPE {
        return Err(Refusal::new(
            OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "this server supports grant_type=client_credentials",
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
            Refusal::new(e, reason).client(&client.client_id)
        })?;
    Ok((client.client_id.clone(), issued))
}

/// Looks the client up and checks its secret. An unknown id, a wrong secret and a disabled client
/// get the same answer; the first two also do the same work.
async fn authenticate(
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
            Refusal::new(OAuthError::server_error(), "store_unavailable")
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

fn token_response(issued: &client_credentials::Issued) -> Response {
    let body = json!({
        "access_token": issued.token.jwt,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    let mut res = axum::Json(body).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}
