//! OpenID Connect surfaces: discovery and the published JWKS.

pub mod discovery;
pub mod jwks;

/// Endpoint paths below an issuer; discovery is built from these.
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const AUTHORIZE_PATH: &str = "/oauth2/authorize";
pub const JWKS_PATH: &str = "/jwks";
pub const AWS_EXCHANGE_PATH: &str = "/aws/token";
pub const AWS_CHALLENGE_PATH: &str = "/aws/challenge";
