//! The admin API's errors, and the one place they become HTTP responses: RFC 9457 problem details
//! (`application/problem+json`) with a stable `error_code` beside the status. Store failures are
//! logged here and answered in fixed words (no database text reaches a caller).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::AdminError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one the admin realm's validator refused (RFC 6750 code and description).
    #[error("{1}")]
    Unauthorized(&'static str, &'static str),
    /// The token is good but lacks the scope this operation needs.
    #[error("needs scope {0}")]
    InsufficientScope(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The change collides with the current state (the detail says how).
    #[error("{0}")]
    Conflict(String),
    /// A write without `If-Match`.
    #[error("this change needs If-Match with the resource's current ETag")]
    PreconditionRequired,
    /// `If-Match` named a version that is no longer current.
    #[error("{0} was changed since the ETag you sent; read it again")]
    PreconditionFailed(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// The admin realm is missing, or the database did not answer.
    #[error("{0}")]
    Unavailable(&'static str),
}

/// An RFC 9457 problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `status` and `error_code` say what went wrong.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// `INVALID_TOKEN`, `INSUFFICIENT_SCOPE`, `NOT_FOUND`, `CONFLICT`, `PRECONDITION_REQUIRED`,
    /// `PRECONDITION_FAILED`, `INVALID_REQUEST`, `UNAVAILABLE`.
    pub error_code: &'static str,
    /// The request field at fault (for `INVALID_REQUEST`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(..) => (StatusCode::UNAUTHORIZED, "INVALID_TOKEN"),
            ApiError::InsufficientScope(_) => (StatusCode::FORBIDDEN, "INSUFFICIENT_SCOPE"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            ApiError::PreconditionRequired => {
                (StatusCode::PRECONDITION_REQUIRED, "PRECONDITION_REQUIRED")
            }
            ApiError::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED")
            }
            ApiError::Invalid { .. } => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let field = match &self {
            ApiError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
            error_code: code,
            field,
        };
        let mut res = (status, Json(problem)).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let challenge = match &self {
            ApiError::Unauthorized("", _) => Some("Bearer realm=\"sigil-admin\"".to_owned()),
            ApiError::Unauthorized(code, desc) => Some(format!(
                "Bearer realm=\"sigil-admin\", error=\"{code}\", error_description=\"{desc}\""
            )),
            ApiError::InsufficientScope(scope) => Some(format!(
                "Bearer realm=\"sigil-admin\", error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        res
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid { field, message } => ApiError::invalid(field, message),
            AdminError::NotFound(what) => ApiError::NotFound(what),
            AdminError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            AdminError::Stale(what) => ApiError::PreconditionFailed(what),
            AdminError::Store(e) => {
                tracing::error!(error = %e, "admin API: database error");
                ApiError::Unavailable("the database did not answer; try again")
            }
            AdminError::Key(e) => {
                tracing::error!(error = %e, "admin API: key error");
                ApiError::Unavailable("a signing key could not be used on this node")
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        AdminError::from(e).into()
    }
}

impl From<crate::keys::rotation::RotationError> for ApiError {
    fn from(e: crate::keys::rotation::RotationError) -> Self {
        use crate::keys::rotation::RotationError as R;
        match e {
            R::Store(e) => e.into(),
            R::Key(e) => AdminError::Key(e).into(),
            R::NoRealm(r) => ApiError::NotFound(format!("realm {r}")),
            R::NoKey { realm, kid } => ApiError::NotFound(format!("key {kid} in realm {realm}")),
            R::Raced(r) => ApiError::Conflict(format!(
                "another change to realm {r}'s keys ran at the same moment; try again"
            )),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::invalid("body", e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::invalid("path", e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::invalid("query", e.body_text())
    }
}
