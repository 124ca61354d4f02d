//! OpenID Connect surfaces: discovery and the published JWKS.

pub mod backchannel_logout;
pub mod discovery;
pub mod jwks;
pub mod userinfo;

/// Endpoint paths below an issuer; discovery is built from these.
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const REVOCATION_PATH: &str = "/oauth2/revoke";
pub const INTROSPECTION_PATH: &str = "/oauth2/introspect";
pub const REVOCATION_FEED_PATH: &str = "/revocations";
pub const POLICIES_PATH: &str = "/policies";
pub const END_SESSION_PATH: &str = "/oauth2/logout";
pub const AUTHORIZE_PATH: &str = "/oauth2/authorize";
pub const JWKS_PATH: &str = "/jwks";
pub const USERINFO_PATH: &str = "/oauth2/userinfo";
pub const AWS_EXCHANGE_PATH: &str = "/aws/token";
pub const AWS_CHALLENGE_PATH: &str = "/aws/challenge";

/// The `{realm}` path segment; a segment that does not decode answers a JSON 404, like an
/// unknown realm, instead of axum's plain-text rejection.
pub struct RealmPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RealmPath {
    type Rejection = crate::oauth::OAuthError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(r)| RealmPath(r))
            .map_err(|_| {
                crate::oauth::OAuthError::new(crate::oauth::ErrorCode::NotFound, "unknown realm")
            })
    }
}
