//! Values a browser carries for Sigil without being able to read or change them: JSON sealed with
//! AES-256-GCM under the KEK, bound by `aad` to what they belong to, base64url, and small enough
//! for a cookie. The pending authorization request and a passkey sign-in's ceremony travel so.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::AppState;

/// Browsers keep cookies up to 4 KiB; a larger value is refused before it is sealed.
pub const MAX_VALUE: usize = 3_800;

/// `value` sealed for a cookie, or `None` if it cannot be sealed or is too large.
pub fn seal<T: Serialize>(state: &AppState, aad: &[u8], value: &T) -> Option<String> {
    let json = serde_json::to_vec(value).ok()?;
    let sealed = B64.encode(state.kek.seal(aad, &json).ok()?);
    (sealed.len() <= MAX_VALUE).then_some(sealed)
}

/// The value `sealed` carries, if it was sealed by this KEK with this `aad` and is a `T`.
pub fn open<T: DeserializeOwned>(state: &AppState, aad: &[u8], sealed: &str) -> Option<T> {
    if sealed.is_empty() || sealed.len() > MAX_VALUE {
        return None;
    }
    let json = state.kek.open(aad, &B64.decode(sealed).ok()?).ok()?;
    serde_json::from_slice(&json).ok()
}
