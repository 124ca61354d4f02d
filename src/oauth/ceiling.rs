//! The benchmark ceiling (`bench/`): a route that does only what every grant must do at least:
//! read the request, find the realm, sign an access token of the same shape and size, and answer
//! the same JSON. No client authentication, no audit record. It exists only when
//! `SIGIL_BENCH_CEILING=1` and signs with a throwaway key of the realm's algorithm made at start,
//! so its tokens verify nowhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::outcome::read_body;
use super::token::{AccessSpec, mint_access_token};
use super::{ErrorCode, OAuthError, form};
use crate::keys::{Alg, SigningKey};
use crate::state::AppState;

/// One throwaway key per algorithm, made on first use.
#[derive(Default)]
pub struct ThrowawayKeys(Mutex<HashMap<&'static str, Arc<SigningKey>>>);

impl ThrowawayKeys {
    fn get(&self, alg: Alg) -> Option<Arc<SigningKey>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = map.get(alg.as_str()) {
            return Some(k.clone());
        }
        let made = SigningKey::generate(alg).ok()?;
        let key = Arc::new(SigningKey::from_pkcs8(alg, "bench-ceiling".into(), &made.pkcs8).ok()?);
        map.insert(alg.as_str(), key.clone());
        Some(key)
    }
}

pub async fn ceiling(
    State(state): State<AppState>,
    axum::extract::Path(realm_name): axum::extract::Path<String>,
    axum::Extension(keys): axum::Extension<Arc<ThrowawayKeys>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = state.clock.now();
    let Ok(Some(realm)) = state.directory.realm(&realm_name, now).await else {
        return OAuthError::new(ErrorCode::NotFound, "unknown realm").into_response();
    };
    let Ok(bytes) = read_body(&headers, body, state.config.max_body_bytes).await else {
        return OAuthError::invalid_request("body").into_response();
    };
    let Ok(params) = form::parse(&headers, &bytes) else {
        return OAuthError::invalid_request("form").into_response();
    };
    let Some(key) = keys.get(realm.signing.alg()) else {
        return OAuthError::server_error().into_response();
    };
    let scope = params.get("scope").unwrap_or("tx:post:ach");
    let ttl = realm.record.access_token_ttl;
    let Ok(token) = mint_access_token(
        &key,
        AccessSpec {
            issuer: &realm.issuer,
            subject: "bench",
            audience: "ledger",
            client_id: "bench",
            scope,
            ttl,
            now,
            cnf: None,
            extra: None,
        },
    ) else {
        return OAuthError::server_error().into_response();
    };
    let mut res = axum::Json(json!({
        "access_token": token.jwt,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scope,
    }))
    .into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}
