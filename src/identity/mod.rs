//! The identity domain: a realm's sign-in policy, users' credentials (password, TOTP, recovery
//! codes, passkeys), sessions and their rules, the authorization request and the codes it leads
//! to. Nothing here knows HTTP: the hosted pages (`login`), the token endpoint (`oauth`), userinfo
//! (`oidc`) and the admin commands use these rules.

pub mod authenticators;
pub mod authorize;
pub mod fallback;
pub mod password;
pub mod pii;
pub mod recovery;
pub mod sessions;
pub mod settings;
pub mod totp;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// Authentication context classes (`acr`) a sign-in may reach.
pub const ACR_PASSKEY: &str = "urn:sigil:acr:passkey";
pub const ACR_PASSWORD_OTP: &str = "urn:sigil:acr:password-otp";

/// A bearer value handed to a browser or client (session cookie, code, invite, refresh token):
/// 256 random bits, base64url.
pub fn new_token() -> String {
    B64.encode(crate::random::random_bytes::<32>())
}

/// What the database keeps of such a value: its SHA-256, hex. A database leak reveals no usable
/// session, code, invite or refresh token.
pub fn token_hash(token: &str) -> String {
    crate::keys::kek::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}
