//! Browser sessions: an opaque cookie whose hash keys a row; idle and absolute timeouts per realm.

use axum::http::HeaderMap;

use super::pages_support::read_cookie;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::sessions::is_live;
use crate::identity::token_hash;
use crate::state::AppState;
use crate::store::login::{SessionRecord, UserRecord};

pub const SESSION_COOKIE: &str = "sigil_session";
pub const FLOW_COOKIE: &str = "sigil_flow";
pub const ENROL_COOKIE: &str = "sigil_enrol";

/// Cookies are scoped to the realm's path, and rows are looked up within the realm, so a
/// session of one realm means nothing in another.
pub fn cookie_path(realm: &LiveRealm) -> String {
    format!("/realms/{}/", realm.record.name)
}

pub fn secure_cookies(realm: &LiveRealm) -> bool {
    realm.issuer.starts_with("https://")
}

pub struct Current {
    pub token: String,
    pub session: SessionRecord,
    pub user: UserRecord,
}

/// The signed-in user of this browser in this realm, if the session is live.
pub async fn current(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    now: UnixTime,
) -> Option<Current> {
    let token = read_cookie(headers, SESSION_COOKIE)?.to_owned();
    let hash = token_hash(&token);
    let session = state
        .store
        .session(&hash, &realm.record.name)
        .await
        .ok()??;
    let settings = realm.login()?;
    if !is_live(settings, &session, now) {
        crate::identity::sessions::end_timed_out(state, &realm.record.name, &session, now).await;
        return None;
    }
    let user = state
        .store
        .user_by_id(&realm.record.name, &session.user_id)
        .await
        .ok()??;
    if !user.enabled {
        return None;
    }
    let _ = state.store.touch_session(&hash, now).await;
    Some(Current {
        token,
        session,
        user,
    })
}

/// The server-side flow (`kind`: `authz`, `enrol`) named by this browser's `cookie`, with the
/// hash that keys it. `None` if the cookie is missing, the flow expired, or its data is not a `T`.
pub async fn read_flow<T: serde::de::DeserializeOwned>(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    cookie: &str,
    kind: &str,
    now: UnixTime,
) -> Option<(String, T)> {
    let hash = token_hash(read_cookie(headers, cookie)?);
    let data = state
        .store
        .flow(&hash, &realm.record.name, kind, now)
        .await
        .ok()??;
    Some((hash, serde_json::from_str(&data).ok()?))
}

/// A CSRF token for session-bound forms: derived from the session cookie, which a cross-site
/// attacker cannot read.
pub fn session_csrf(session_token: &str) -> String {
    token_hash(&format!("csrf:{session_token}"))
}
