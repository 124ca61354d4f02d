//! Session rules: idle and absolute timeouts per realm, and how recent a sign-in must be to change
//! credentials. The browser, refresh, userinfo and code redemption all apply the same rules.

use super::settings::LoginSettings;
use crate::clock::UnixTime;
use crate::store::login::SessionRecord;

/// How long after its sign-in a session may change credentials without signing in again.
pub const RECENT_AUTH_SECS: i64 = 300;

/// The one rule for whether a session is still alive: within the realm's idle and absolute
/// timeouts. The browser, refresh, userinfo and code redemption all apply it.
pub fn is_live(settings: &LoginSettings, s: &SessionRecord, now: UnixTime) -> bool {
    now - s.last_seen <= settings.session_idle_secs
        && now - s.created_at <= settings.session_absolute_secs
}

/// When the session ends however active it is: refresh tokens never outlive it.
pub fn absolute_end(settings: &LoginSettings, s: &SessionRecord) -> UnixTime {
    s.created_at + settings.session_absolute_secs
}

/// Whether the session signed in recently enough to change credentials.
pub fn is_recent(s: &SessionRecord, now: UnixTime) -> bool {
    now - s.auth_time <= RECENT_AUTH_SECS
}

pub fn has_passkey_auth(s: &SessionRecord) -> bool {
    s.amr.split(' ').any(|a| a == "hwk")
}

/// Ends a session found past its idle or absolute timeout when it was used (audited
/// `session.expired`): like a sign-out, its `sid` goes into the revocation feed and its apps get
/// a back-channel logout. A failure is logged; the caller refuses the session either way.
pub async fn end_timed_out(
    state: &crate::state::AppState,
    realm: &str,
    s: &SessionRecord,
    now: UnixTime,
) {
    let audit = [
        crate::audit::AuditDraft::new(now, Some(realm), "session.expired", "system")
            .subject(&s.user_id)
            .detail(serde_json::json!({"sid": s.sid})),
    ];
    match state
        .store
        .end_session(&s.id_hash, realm, now, &audit)
        .await
    {
        Ok(true) => state.logout_outbox.wake(),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "an expired session could not be ended"),
    }
}

/// Sessions ended per realm per sweep; the rest wait for the next one.
const SWEEP_LIMIT: i64 = 500;

/// Ends every session past its realm's idle or absolute timeout that nothing used since (the
/// housekeeping sweep): a session nobody comes back to still reaches the revocation feed and its
/// apps' back-channel logout. Returns how many ended.
pub async fn end_lapsed(state: &crate::state::AppState, now: UnixTime) -> usize {
    let realms = match state.store.realms().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "lapsed sessions: realms unavailable");
            return 0;
        }
    };
    let mut ended = 0;
    for r in realms {
        let Ok(settings) = LoginSettings::parse(&r.login_settings) else {
            continue;
        };
        let lapsed = match state
            .store
            .lapsed_sessions(
                &r.name,
                now - settings.session_idle_secs,
                now - settings.session_absolute_secs,
                SWEEP_LIMIT,
            )
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "lapsed sessions unavailable");
                continue;
            }
        };
        for s in lapsed.iter().filter(|s| !is_live(&settings, s, now)) {
            end_timed_out(state, &r.name, s, now).await;
            ended += 1;
        }
    }
    ended
}
