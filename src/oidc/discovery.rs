//! OpenID Connect Discovery 1.0 / RFC 8414 metadata for one realm.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{
    AUTHORIZE_PATH, INTROSPECTION_PATH, JWKS_PATH, REVOCATION_PATH, TOKEN_PATH, USERINFO_PATH,
};
use crate::clients::auth::AuthMethod;
use crate::directory::LiveRealm;
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;

/// The metadata document (pure: the handler adds only the realm lookup).
pub fn metadata(
    realm: &LiveRealm,
    scopes: &[String],
    aws: Option<&crate::store::AwsSettingsRecord>,
    mtls_base_url: Option<&str>,
) -> Value {
    let iss = &realm.issuer;
    let mut doc = json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}{JWKS_PATH}"),
        "token_endpoint": realm.token_endpoint,
        "authorization_endpoint": format!("{iss}{AUTHORIZE_PATH}"),
        "userinfo_endpoint": format!("{iss}{USERINFO_PATH}"),
        "revocation_endpoint": format!("{iss}{REVOCATION_PATH}"),
        "introspection_endpoint": format!("{iss}{INTROSPECTION_PATH}"),
        "revocation_feed_endpoint": format!("{iss}{}", super::REVOCATION_FEED_PATH),
        "policy_bundle_endpoint": format!("{iss}{}", super::POLICIES_PATH),
        "end_session_endpoint": format!("{iss}{}", super::END_SESSION_PATH),
        // Back-Channel Logout 1.0: logout tokens always carry `sid` (and `sub`).
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "revocation_endpoint_auth_methods_supported": AuthMethod::ALL.map(AuthMethod::as_str),
        "introspection_endpoint_auth_methods_supported": AuthMethod::ALL.map(AuthMethod::as_str),
        "revocation_endpoint_auth_signing_alg_values_supported": sigil_validator::jwk::SUPPORTED_ALGS,
        "introspection_endpoint_auth_signing_alg_values_supported": sigil_validator::jwk::SUPPORTED_ALGS,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": AuthMethod::ALL.map(AuthMethod::as_str),
        "token_endpoint_auth_signing_alg_values_supported": sigil_validator::jwk::SUPPORTED_ALGS,
        "tls_client_certificate_bound_access_tokens": true,
        "dpop_signing_alg_values_supported": crate::oauth::dpop::ALGS,
        "prompt_values_supported": ["login"],
        "acr_values_supported": [crate::identity::ACR_PASSKEY, crate::identity::ACR_PASSWORD_OTP],
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [realm.signing.alg().as_str()],
        "access_token_signing_alg_values_supported": [realm.signing.alg().as_str()],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "azp", "scope",
            "token_use", "auth_time", "amr", "acr", "sid", "nonce", "at_hash", "preferred_username"
        ],
    });
    if let Some(aws) = aws {
        // AWS adds a grant; the realm's other grants stay supported.
        if let Some(grants) = doc["grant_types_supported"].as_array_mut() {
            grants.push(json!(crate::aws::exchange::TOKEN_EXCHANGE));
        }
        doc["aws_sts_exchange_endpoint"] = json!(format!("{iss}{}", super::AWS_EXCHANGE_PATH));
        doc["aws_sts_challenge_endpoint"] = json!(format!("{iss}{}", super::AWS_CHALLENGE_PATH));
        doc["aws_sts_subject_token_type"] = json!(crate::aws::exchange::AWS_SUBJECT_TOKEN_TYPE);
        // Not a secret: it binds a signed request to this server, as Vault's server ID does.
        doc["aws_sts_server_id"] = json!(aws.server_id);
        doc["aws_sts_challenge_required"] = json!(aws.require_challenge);
    }
    if let Some(base) = mtls_base_url {
        // RFC 8705 §5: where a client that authenticates with a certificate sends its requests.
        let at = |path: &str| format!("{base}/realms/{}{path}", realm.record.name);
        let mut aliases = json!({
            "token_endpoint": at(TOKEN_PATH),
            "userinfo_endpoint": at(USERINFO_PATH),
            "revocation_endpoint": at(REVOCATION_PATH),
            "introspection_endpoint": at(INTROSPECTION_PATH),
        });
        if aws.is_some() {
            aliases["aws_sts_exchange_endpoint"] = json!(at(super::AWS_EXCHANGE_PATH));
            aliases["aws_sts_challenge_endpoint"] = json!(at(super::AWS_CHALLENGE_PATH));
        }
        doc["mtls_endpoint_aliases"] = aliases;
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
            return OAuthError::store_unavailable().into_response();
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
            return OAuthError::store_unavailable().into_response();
        }
    };
    let aws = match state.store.aws_settings(&live.record.name).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, %realm, "AWS settings unavailable");
            return OAuthError::store_unavailable().into_response();
        }
    };
    let mut res = axum::Json(metadata(
        &live,
        &scopes,
        aws.as_ref(),
        state.mtls_base_url.as_deref(),
    ))
    .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}
