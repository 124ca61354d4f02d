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
mod error;
mod jwks;
mod validator;

#[cfg(feature = "axum")]
pub mod axum;

pub use claims::{Audience, Claims};
pub use error::{Error, ErrorKind};
pub use jwks::VerifyingKey;
pub use validator::{Validator, ValidatorBuilder};
