//! RFC 6749 §5.2 errors: JSON `error` / `error_description`, the right status, `no-store`.
//! Every failure of the OAuth endpoints leaves through here.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// Unknown realm: the issuer does not exist (404).
    NotFound,
    /// Request body over the limit (413).
    TooLarge,
    ServerError,
    TemporarilyUnavailable,
    /// Too many failures from this address (429).
    RateLimited,
    /// RFC 9449 §5: the DPoP proof is missing where required, malformed or does not verify.
    InvalidDpopProof,
    /// RFC 9449 §8: the DPoP proof lacks the server's current nonce; the answer carries one in
    /// `DPoP-Nonce`. A challenge, not a failure: not counted toward the address's limit.
    UseDpopNonce,
    /// An authenticated client not allowed this endpoint (introspection): 403 `unauthorized_client`.
    NotPermitted,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::NotFound | ErrorCode::TooLarge => {
                "invalid_request"
            }
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient | ErrorCode::NotPermitted => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable | ErrorCode::RateLimited => "temporarily_unavailable",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::NotPermitted => StatusCode::FORBIDDEN,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answer. `description` is shown to the caller, so it never holds a secret or an
/// internal cause (those are logged where they happen).
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        OAuthError {
            code,
            description: description.into(),
        }
    }
    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    /// The one answer for every client-authentication failure: same text whatever went wrong.
    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient, "client authentication failed")
    }
    pub fn server_error() -> Self {
        Self::new(ErrorCode::ServerError, "internal error")
    }
    /// The database did not answer (in time): 503, retry shortly. Never a 500, never a hang.
    pub fn store_unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the service is briefly unavailable; try again",
        )
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        });
        let mut res = (self.code.status(), axum::Json(body)).into_response();
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.code == ErrorCode::RateLimited {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        if self.code == ErrorCode::TemporarilyUnavailable {
            // A database or audit stall is transient: retry soon (clients back off on their own).
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.code == ErrorCode::InvalidClient {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="sigil", charset="UTF-8""#),
            );
        }
        res
    }
}
