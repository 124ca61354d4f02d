//! The admin REST API under `/admin`, on the main listener when `admin_realm` is set: realms,
//! clients and their secrets, signing keys, groups and the audit log, through the same
//! operations the CLI calls (`crate::admin`), so every change is validated and audited the same
//! way, with the calling client or user as the actor. Its OpenAPI 3.1 document is generated from
//! these handlers (`utoipa`) and served at `/admin/openapi.json`.
//!
//! Conventions: JSON in and out; errors are RFC 9457 problem details (`problem`); lists take
//! `limit` (1-200, default 50) and `after` (the last item's name from the previous page) and
//! answer `{"items": [...], "next": "..."}`; a client carries an `ETag` (`"v{version}"`), and
//! every change to one needs `If-Match` with it (428 without, 412 when stale): the version check
//! and the change are one statement, so of two admins holding the same ETag exactly one wins.

mod audit;
pub mod auth;
mod aws;
mod changes;
mod clients;
mod keys;
mod policies;
mod problem;
mod realms;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use problem::{ApiError, Problem};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sigil admin API",
        description = "Realms, clients, keys, groups and the audit log of a Sigil issuer. \
            Authenticate with an access token of the admin realm (audience `sigil-admin`) \
            carrying `sigil:admin`, `sigil:admin:{realm}` or `sigil:read`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem)),
    tags(
        (name = "realms"), (name = "clients"), (name = "keys"), (name = "groups"), (name = "users"),
        (name = "aws"), (name = "policies"), (name = "audit"), (name = "changes")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

/// Every error response is a problem (`application/problem+json`), whatever the handler's
/// annotation wrote as its content type.
struct ProblemContentType;

impl Modify for ProblemContentType {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                for (status, response) in op.responses.responses.iter_mut() {
                    if !status.starts_with('4') && !status.starts_with('5') {
                        continue;
                    }
                    if let utoipa::openapi::RefOr::T(r) = response
                        && let Some(json) = r.content.shift_remove("application/json")
                    {
                        r.content
                            .insert("application/problem+json".to_owned(), json);
                    }
                }
            }
        }
    }
}

/// `If-Match`: one ETag this API gave.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    /// The resource's current `ETag`, such as `"v3"`.
    #[param(rename = "If-Match", pattern = r#"^"v[0-9]{1,18}"$"#)]
    #[serde(rename = "If-Match")]
    pub if_match: String,
}

/// The routes and their OpenAPI document.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(realms::list, realms::create))
        .routes(routes!(realms::show, realms::update))
        .routes(routes!(realms::login_settings, realms::set_login_settings))
        .routes(routes!(realms::set_group, realms::delete_group))
        .routes(routes!(
            realms::client_cas,
            realms::set_client_cas,
            realms::clear_client_cas
        ))
        .routes(routes!(clients::list, clients::create))
        .routes(routes!(clients::show, clients::update, clients::delete))
        .routes(routes!(clients::rotate_secret))
        .routes(routes!(clients::set_auth))
        .routes(routes!(keys::list))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::revoke))
        .routes(routes!(realms::groups, realms::create_group))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::show, users::update))
        .routes(routes!(users::add_group, users::remove_group))
        .routes(routes!(users::invite))
        .routes(routes!(users::sign_out))
        .routes(routes!(aws::show, aws::set, aws::disable))
        .routes(routes!(aws::bindings))
        .routes(routes!(aws::put_binding, aws::delete_binding))
        .routes(routes!(policies::list))
        .routes(routes!(policies::show, policies::put, policies::delete))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(changes::list))
        .routes(routes!(changes::approve))
        .routes(routes!(changes::reject))
        .split_for_parts();
    // After the routes were merged: modifiers of the base document run before there are paths.
    ProblemContentType.modify(&mut doc);
    (router, doc)
}

/// The OpenAPI document as served (also printed by `sigil admin openapi`).
pub fn openapi_json() -> String {
    api().1.to_pretty_json().unwrap_or_default()
}

/// `/admin/...` when `admin_realm` is set; nothing otherwise.
pub fn router(state: &AppState) -> Router<AppState> {
    let Some(realm) = state.config.admin_realm.clone() else {
        return Router::new();
    };
    let (routes, doc) = api();
    let doc: Arc<str> = doc.to_pretty_json().unwrap_or_default().into();
    let guard = Arc::new(auth::AdminGuard::new(realm));
    routes
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::Extension(guard))
        // Any other path under /admin: a problem too, not the issuer's OAuth-style 404.
        .route(
            "/admin/{*rest}",
            axum::routing::any(|| async {
                ApiError::NotFound("this path of the admin API".into()).into_response()
            }),
        )
        .route(
            "/admin/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    let mut res = doc.to_string().into_response();
                    res.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    res
                }
            }),
        )
}

/// `Json` whose refusals are problem details.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(|e: JsonRejection| ApiError::from(e))?;
        // Every body is an object: serde would also take a struct from an array, positionally.
        if !v.is_object() {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        if holds_nul(&v) {
            return Err(ApiError::invalid("body", "a NUL character is not allowed"));
        }
        serde_json::from_value(v)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid("body", e.to_string()))
    }
}

/// Whether a JSON value holds a NUL character in any string or key (PostgreSQL's text cannot
/// store one: refused here as bad input, never passed down to fail as a database error).
fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(holds_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A NUL in a path or query (`%00`), refused as bad input for the same reason.
fn uri_holds_nul(parts: &Parts) -> bool {
    let raw = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    raw.to_ascii_lowercase().contains("%00")
}

/// `Path` whose refusals are problem details.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if uri_holds_nul(parts) {
            return Err(ApiError::invalid("path", "a NUL character is not allowed"));
        }
        let axum::extract::Path(v) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::from(e))?;
        Ok(ApiPath(v))
    }
}

/// `Query` whose refusals are problem details.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if uri_holds_nul(parts) {
            return Err(ApiError::invalid("query", "a NUL character is not allowed"));
        }
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| ApiError::from(e))?;
        Ok(ApiQuery(v))
    }
}

/// A signing algorithm.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum AlgName {
    ES256,
    RS256,
    EdDSA,
}

impl From<AlgName> for crate::keys::Alg {
    fn from(a: AlgName) -> Self {
        match a {
            AlgName::ES256 => crate::keys::Alg::ES256,
            AlgName::RS256 => crate::keys::Alg::RS256,
            AlgName::EdDSA => crate::keys::Alg::EdDSA,
        }
    }
}

/// `?limit=&after=` of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` of the previous page: items after this name.
    pub after: Option<String>,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl PageQuery {
    /// The page size asked for (default 50), 1-200.
    pub fn limit(&self) -> Result<u32, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if (1..=200).contains(&limit) {
            Ok(limit)
        } else {
            Err(ApiError::invalid("limit", "must be 1-200"))
        }
    }

    /// Pages `items` (in name order) by `key`.
    pub fn page<T>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> Result<Page<T>, ApiError> {
        let limit = self.limit()?;
        items.sort_by(|a, b| key(a).cmp(key(b)));
        if let Some(after) = &self.after {
            items.retain(|i| key(i) > after.as_str());
        }
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next = if more {
            items.last().map(|i| key(i).to_owned())
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

/// A field that is present, even as `null` (`Some(None)`), as against absent (`None`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// 404 unless the realm exists (for lists, which would otherwise answer an empty page).
pub async fn require_realm(state: &AppState, realm: &str) -> Result<(), ApiError> {
    match state.store.realm(realm).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("realm {realm}"))),
    }
}

/// The `ETag` of a versioned resource.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"v{version}\"")).unwrap_or(HeaderValue::from_static("\"v0\""))
}

/// The version `If-Match` names: required (428 without), one strong ETag of ours (`*` is not
/// accepted: it would let a client skip reading what it overwrites).
pub fn if_match(headers: &HeaderMap) -> Result<i64, ApiError> {
    let mut values = headers.get_all(header::IF_MATCH).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return Err(ApiError::PreconditionRequired);
    };
    v.to_str()
        .ok()
        .map(str::trim)
        .and_then(|t| t.strip_prefix("\"v"))
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::invalid("If-Match", "must be one ETag this API gave, such as \"v3\"")
        })
}

/// After a change made through this node: its cached realm and clients are read afresh, so the
/// change (a rotated secret, a disabled client, a new key) holds here at once. Other nodes see it
/// within `cache_ttl_secs`.
pub fn changed(state: &AppState, realm: &str) {
    state.directory.invalidate(realm);
}

/// A JSON body with an `ETag`.
pub fn with_etag(status: axum::http::StatusCode, body: impl Serialize, version: i64) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut().insert(header::ETAG, etag(version));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A JSON body that must not be cached (secrets, or state that changes).
pub fn no_store(status: axum::http::StatusCode, body: impl Serialize) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
