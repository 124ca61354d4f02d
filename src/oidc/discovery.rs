//! OpenID Connect Discovery 1.0 / RFC 8414 metadata for one realm.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use super::{AUTHORIZE_PATH, JWKS_PATH, TOKEN_PATH};
use crate::directory::LiveRealm;
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;

/// The metadata document (pure: the handler adds only the realm lookup).
pub fn metadata(
    realm: &LiveRealm,
    scopes: &[String],
    aws: Option<&crate::store::AwsSettingsRecord>,
) -> Value {
    let iss = &realm.issuer;
    let mut doc = json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}{JWKS_PATH}"),
        "token_endpoint": format!("{iss}{TOKEN_PATH}"),
        // Listed because OpenID Discovery requires it; interactive sign-in is not built yet, so
        // no response type is offered and the endpoint answers with an explanatory page.
        "authorization_endpoint": format!("{iss}{AUTHORIZE_PATH}"),
        "response_types_supported": [],
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [realm.signing.alg().as_str()],
        "access_token_signing_alg_values_supported": [realm.signing.alg().as_str()],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "nbf", "jti",
            "client_id", "azp", "scope", "token_use"
        ],
    });
    if let Some(aws) = aws {
        doc["grant_types_supported"] =
            json!(["client_credentials", crate::aws::exchange::TOKEN_EXCHANGE]);
        doc["aws_sts_exchange_endpoint"] = json!(format!("{iss}{}", super::AWS_EXCHANGE_PATH));
        doc["aws_sts_challenge_endpoint"] = json!(format!("{iss}{}", super::AWS_CHALLENGE_PATH));
        doc["aws_sts_subject_token_type"] = json!(crate::aws::exchange::AWS_SUBJECT_TOKEN_TYPE);
        // Not a secret: it binds a signed request to this server, as Vault's server ID does.
        doc["aws_sts_server_id"] = json!(aws.server_id);
        doc["aws_sts_challenge_required"] = json!(aws.require_challenge);
    }
    doc
}

pub async fn openid_configuration(
    State(state): State<AppState>,
    crate::oidc::RealmPath(realm): crate::oidc::RealmPath,
) -> Response {
    let now = state.clock.now();
    let live = match state.directory.realm(&realm, now).await {
        Ok(Some(r)) => r,
        Ok(None) => return OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response(),
        Err(e) => {
            tracing::error!(error = %e, %realm, "realm unavailable");
            return OAuthError::server_error().into_response();
        }
    };
    let scopes = match state.store.clients(&realm).await {
        Ok(clients) => {
            let mut all: Vec<String> = clients
                .iter()
                .flat_map(|c| c.allowed_scopes.split(' ').map(str::to_owned))
                .filter(|s| !s.is_empty())
                .collect();
            all.sort();
            all.dedup();
            all
        }
        Err(e) => {
            tracing::error!(error = %e, %realm, "scopes unavailable");
            return OAuthError::server_error().into_response();
        }
    };
    let aws = match state.store.aws_settings(&live.record.name).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, %realm, "AWS settings unavailable");
            return OAuthError::server_error().into_response();
        }
    };
    let mut res = axum::Json(metadata(&live, &scopes, aws.as_ref())).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

/// Placeholder for the hosted sign-in (not built yet): an explanatory page, never a redirect.
pub async fn authorize_unavailable() -> Response {
    (
        axum::http::StatusCode::NOT_IMPLEMENTED,
        Html("<!doctype html><title>Sign-in unavailable</title><h1>Sign-in is not available</h1><p>This Sigil server does not offer interactive sign-in yet.</p>"),
    )
        .into_response()
}
