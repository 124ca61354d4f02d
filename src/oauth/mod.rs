//! OAuth 2.0 over HTTP: the token endpoint, one module per grant behind its dispatch, client
//! authentication and the error surface. Scopes and client secrets are the clients domain's.

pub mod authorization_code;
pub mod caller;
pub mod ceiling;
pub mod client_assertion;
pub mod client_auth;
pub mod client_credentials;
pub mod dpop;
pub mod error;
pub mod feed_snapshot;
pub mod form;
pub mod introspection;
pub mod outcome;
pub mod policy_bundle;
pub mod refresh_token;
pub mod revocation;
pub mod revocation_feed;
pub mod token;
pub mod token_endpoint;
pub mod user_tokens;

pub use error::{ErrorCode, OAuthError};
