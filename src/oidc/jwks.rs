//! The realm's JWKS: public keys only, precomputed bytes, cacheable for `jwks_max_age_secs`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;

pub async fn jwks(
    State(state): State<AppState>,
    crate::oidc::RealmPath(realm): crate::oidc::RealmPath,
) -> Response {
    let now = state.clock.now();
    match state.directory.realm(&realm, now).await {
        Ok(Some(live)) => {
            let mut res = Response::new(Body::from(live.jwks.body.to_vec()));
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let cc = format!("public, max-age={}", state.config.jwks_max_age_secs);
            if let Ok(v) = HeaderValue::from_str(&cc) {
                h.insert(header::CACHE_CONTROL, v);
            }
            res
        }
        Ok(None) => OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response(),
        Err(e) => {
            tracing::error!(error = %e, %realm, "realm unavailable");
            OAuthError::store_unavailable().into_response()
        }
    }
}
