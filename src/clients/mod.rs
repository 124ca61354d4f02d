//! The clients domain: what a client id may look like, the grants a client may be allowed, its
//! scopes and its secret. No HTTP here: the token endpoint (`oauth`) and the admin commands both
//! use these rules.

pub mod auth;
pub mod keys;
pub mod mtls;
pub mod scope;
pub mod secret;

/// The grant a service uses for itself.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// The grants that carry a signed-in user.
pub const AUTHORIZATION_CODE: &str = "authorization_code";
pub const REFRESH_TOKEN: &str = "refresh_token";

/// A client id as Sigil issues them: 1-128 of `A-Z a-z 0-9 . _ ~ -`.
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}
