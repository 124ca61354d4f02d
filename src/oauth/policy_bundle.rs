//! `GET /realms/{realm}/policies`: the realm's principal policies as one signed, versioned bundle
//! for resource servers that authorize with the validator crate (`Validator::authorize`). Like
//! the revocation feed, only clients registered with `--introspect` may read it, authenticated by
//! their registered method, and the answer is a JWS (`typ: policies+jwt`) signed by the realm's
//! key, addressed to the caller (`aud`) and dated (`iat`), so it cannot be altered, passed to
//! another resource server or replayed late. Its `ETag` is the bundle's version and the realm's
//! groups claim: a poll with `If-None-Match` for an unchanged bundle answers 304 without a body.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;

use super::caller;
use super::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::tls::ConnTls;

const REFUSED: &str = "policies.refused";

pub async fn bundle(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    conn: Option<Extension<ConnTls>>,
    crate::oidc::RealmPath(realm_name): crate::oidc::RealmPath,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let c = match caller::resource_server(
        &state,
        &realm_name,
        peer,
        conn,
        &headers,
        uri.query(),
        REFUSED,
        (
            "this client may not read the policy bundle",
            "policies_not_allowed",
        ),
    )
    .await
    {
        Ok(c) => c,
        Err(res) => return res,
    };
    let realm = &c.realm;
    let name = &realm.record.name;
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "policy bundle unavailable");
        OAuthError::store_unavailable().into_response()
    };
    // A realm whose sign-in settings are unusable still has a groups claim name to publish.
    let groups_claim = realm.login().map_or("groups", |l| l.groups_claim.as_str());
    let etag = |version: i64| format!("\"v{version}:{groups_claim}\"");
    // An unchanged bundle (the usual poll) costs one small read: the version.
    let current = match state.store.policy_version(name).await {
        Ok(v) => etag(v),
        Err(e) => return unavailable(&e),
    };
    let matches_etag = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == current);
    if matches_etag {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&current) {
            res.headers_mut().insert(header::ETAG, v);
        }
        return res;
    }
    // The version and the policies of one statement (a change may have landed since).
    let (version, records) = match state.store.policies(name).await {
        Ok(p) => p,
        Err(e) => return unavailable(&e),
    };
    // Stored policies were checked when written: published as stored, not parsed again.
    let mut policies = Vec::with_capacity(records.len());
    for r in &records {
        match serde_json::from_str::<&RawValue>(&r.spec) {
            Ok(p) => policies.push(p),
            Err(e) => return unavailable(&format!("policy {}: {e}", r.name)),
        }
    }
    let payload = Payload {
        iss: &realm.issuer,
        aud: &c.client.client.client_id,
        iat: c.now,
        version,
        groups_claim,
        policies,
    };
    let signed = serde_json::to_vec(&payload)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            realm
                .signing
                .sign_typed(sigil_validator::policy::TYP, &json)
                .map_err(|e| e.to_string())
        });
    let jws = match signed {
        Ok(jws) => jws,
        Err(e) => {
            tracing::error!(error = %e, "policy bundle could not be signed");
            return OAuthError::new(ErrorCode::ServerError, "the bundle could not be signed")
                .into_response();
        }
    };
    let mut res = jws.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/policies+jwt"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        h.insert(header::ETAG, v);
    }
    res
}

/// The signed payload: `sigil_validator::policy::BundlePayload`, with the policies as stored.
#[derive(serde::Serialize)]
struct Payload<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    version: i64,
    groups_claim: &'a str,
    policies: Vec<&'a RawValue>,
}
