//! OAuth 2.0: the token endpoint, its grants, client authentication and the error surface.

pub mod client_auth;
pub mod client_credentials;
pub mod error;
pub mod form;
pub mod outcome;
pub mod scope;
pub mod secret;
pub mod token;
pub mod token_endpoint;
pub mod user_grants;

pub use error::{ErrorCode, OAuthError};
