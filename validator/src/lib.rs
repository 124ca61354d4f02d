//! Verifies access tokens minted by Sigil (or any RFC 9068 issuer): discovery, a JWKS cache behind a
//! lock-free swap, signature and claim checks, scope guards and an axum/tower layer that answers
//! RFC 6750 errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sigil_validator::Error> {
//! let validator = sigil_validator::Validator::builder("https://id.bank.example/realms/ledger", "ledger")
//!     .build()
//!     .await?;
//! let claims = validator.validate("eyJ...").await?;
//! assert!(claims.has_scope("balances:read"));
//! # Ok(()) }
//! ```

mod claims;
pub mod dpop;
mod error;
pub mod es256;
pub mod forwarded_cert;
pub mod jwk;
mod jwks;
mod validator;

#[cfg(feature = "axum")]
pub mod axum;

pub use claims::{Audience, Claims, Confirmation};
pub use error::{Error, ErrorKind};
pub use jwks::VerifyingKey;

/// Parses a JWKS document into `kid` → key, skipping symmetric, unknown and mislabelled keys
/// (for verifiers that hold a JWKS themselves, such as the issuer's own userinfo endpoint).
pub fn parse_jwks(body: &[u8]) -> Result<std::collections::HashMap<String, VerifyingKey>, String> {
    jwks::parse_jwks(body)
}
pub use validator::{ClientCertificate, RequestCredentials, Validator, ValidatorBuilder};
