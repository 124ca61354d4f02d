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
//!
//! Sender-constrained tokens (a `cnf` claim): [`Validator::validate_request`] takes the whole
//! request's credentials and enforces mTLS binding (`cnf.x5t#S256`, RFC 8705) and DPoP binding
//! (`cnf.jkt`, RFC 9449) with a replay cache of proofs; [`Validator::validate`] refuses bound
//! tokens, whose binding it cannot check. The axum layer does this per request, reading the
//! client certificate from the [`ClientCertificate`] extension or a trusted proxy's header.
//!
//! ```no_run
//! # async fn demo(validator: sigil_validator::Validator, proof: &str, der: &[u8]) -> Result<(), sigil_validator::Error> {
//! use sigil_validator::RequestCredentials;
//! let claims = validator
//!     .validate_request(
//!         &RequestCredentials::new("GET", "https://ledger.bank.example/balances")
//!             .authorization("DPoP eyJ...")
//!             .dpop_proof(proof)
//!             .client_certificate(der),
//!     )
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! For the issuer: [`jwk`] (client public keys, RFC 7638 thumbprints, client-assertion JWS
//! verification), [`dpop`] (proof verification, separate from replay detection) and
//! [`forwarded_cert`] (certificates forwarded by TLS-terminating proxies).

mod claims;
pub mod dpop;
mod error;
pub mod es256;
pub mod forwarded_cert;
pub mod jwk;
mod jwks;
pub mod observe;
pub mod policy;
mod revocations;
mod step_up;
mod validator;

#[cfg(feature = "axum")]
pub mod axum;

pub use claims::{Audience, Claims, Confirmation};
pub use error::{Error, ErrorKind};
pub use jwks::VerifyingKey;
pub use step_up::StepUp;

/// Parses a JWKS document into `kid` → key, skipping symmetric, unknown and mislabelled keys
/// (for verifiers that hold a JWKS themselves, such as the issuer's own userinfo endpoint).
pub fn parse_jwks(body: &[u8]) -> Result<std::collections::HashMap<String, VerifyingKey>, String> {
    jwks::parse_jwks(body)
}
pub use validator::{
    ClientCertificate, JwksFetch, JwksSource, RequestCredentials, Validator, ValidatorBuilder,
};
