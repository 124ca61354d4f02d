//! Interactive sign-in for customers and staff: realm policy, users' credentials (password,
//! TOTP, recovery codes), sessions, the authorization request and the hosted pages.

pub mod account;
pub mod consent;
pub mod enrol;
pub mod flow;
pub mod pages;
pub mod pages_support;
pub mod passkeys;
pub mod password;
pub mod pending;
pub mod recovery;
pub mod session;
pub mod settings;
pub mod totp;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// A bearer value handed to a browser or client (session cookie, code, invite, refresh token):
/// 256 random bits, base64url.
pub fn new_token() -> String {
    B64.encode(crate::oauth::secret::random_bytes::<32>())
}

/// What the database keeps of such a value: its SHA-256, hex. A database leak reveals no usable
/// session, code, invite or refresh token.
pub fn token_hash(token: &str) -> String {
    crate::keys::kek::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}
