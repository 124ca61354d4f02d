//! A sign-in's WebAuthn ceremony travels in a sealed cookie (AES-256-GCM under the KEK, bound to
//! the realm and to the pending sign-in it was started from), not in a database row: starting a
//! passkey sign-in writes nothing. It is spent once, in the transaction that opens the session
//! (`SessionExtras::claim`: a row keyed by the ceremony's id), so of concurrent posts of one
//! assertion exactly one signs in.

use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::DiscoverableAuthentication;

use super::CEREMONY_TTL;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::{new_token, token_hash};
use crate::login::pages_support::{cookie, read_cookie};
use crate::login::session::{cookie_path, secure_cookies};
use crate::state::AppState;

pub(super) const CEREMONY_COOKIE: &str = "sigil_passkey";

#[derive(Serialize, Deserialize)]
pub(super) struct Ceremony {
    /// Names the ceremony when it is spent (its hash keys the claim row).
    pub id: String,
    pub expires_at: UnixTime,
    pub state: DiscoverableAuthentication,
}

fn aad(realm: &LiveRealm, flow_hash: &str) -> Vec<u8> {
    format!("sigil-passkey-ceremony/{}/{flow_hash}", realm.record.name).into_bytes()
}

/// The `Set-Cookie` carrying a new ceremony for the pending sign-in `flow_hash`.
pub(super) fn seal(
    state: &AppState,
    realm: &LiveRealm,
    flow_hash: &str,
    auth: DiscoverableAuthentication,
    now: UnixTime,
) -> Option<HeaderValue> {
    let ceremony = Ceremony {
        id: new_token(),
        expires_at: now + CEREMONY_TTL,
        state: auth,
    };
    let value = crate::login::sealed::seal(state, &aad(realm, flow_hash), &ceremony)?;
    Some(cookie(
        CEREMONY_COOKIE,
        &value,
        &cookie_path(realm),
        secure_cookies(realm),
        Some(CEREMONY_TTL),
    ))
}

/// This browser's ceremony for the pending sign-in `flow_hash`, unexpired; `None` if missing,
/// forged, of another realm or sign-in, or expired.
pub(super) fn read(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    flow_hash: &str,
    now: UnixTime,
) -> Option<Ceremony> {
    let value = read_cookie(headers, CEREMONY_COOKIE)?;
    let ceremony: Ceremony = crate::login::sealed::open(state, &aad(realm, flow_hash), value)?;
    (now < ceremony.expires_at).then_some(ceremony)
}

/// The claim that spends `ceremony`: `(key, expires_at)` for `SessionExtras::claim`.
pub(super) fn claim(ceremony: &Ceremony) -> (String, UnixTime) {
    (
        token_hash(&format!("passkey-ceremony:{}", ceremony.id)),
        ceremony.expires_at,
    )
}

/// The cookie that ends the ceremony in this browser.
pub(super) fn clear(realm: &LiveRealm) -> HeaderValue {
    cookie(
        CEREMONY_COOKIE,
        "",
        &cookie_path(realm),
        secure_cookies(realm),
        Some(0),
    )
}
