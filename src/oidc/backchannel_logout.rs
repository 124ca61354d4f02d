//! OpenID Connect Back-Channel Logout 1.0: when a session ends, each client that had tokens in it
//! and registered a `backchannel_logout_uri` is sent a signed logout token.
//!
//! The session's end writes one outbox row per client in its own transaction (see the store's
//! `after_sessions_ended`), so nothing is lost when a node dies before sending. Every node runs
//! [`deliver_forever`]: it claims due rows with a lease (a claimed row is not taken by another
//! node before the lease ends), POSTs the token, and settles the row with its audit record:
//! delivered (2xx), retried with exponential back-off, or abandoned after [`MAX_ATTEMPTS`] or
//! [`MAX_AGE_SECS`]. A node that dies between sending and settling leaves the row to be sent
//! again after its lease: the token then has the same `jti` (derived from the row), so the
//! relying party's replay check sees a repeat, never a new logout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use tokio::sync::Notify;

use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::state::AppState;
use crate::store::login::LogoutDelivery;

/// The `typ` of a logout token (Back-Channel Logout 1.0 §2.4, as amended for explicit typing).
pub const TYP: &str = "logout+jwt";
/// The event that makes a JWT a logout token.
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How long a logout token is valid: enough for a slow relying party, short enough that a
/// captured token is soon useless.
pub const TOKEN_TTL_SECS: i64 = 120;
/// Attempts before a logout is abandoned (audited).
pub const MAX_ATTEMPTS: i64 = 10;
/// Age after which a logout is abandoned whatever its attempts: by then every token of the
/// session has expired or is refused by the revocation feed anyway.
pub const MAX_AGE_SECS: i64 = 24 * 3600;
/// Longest wait between two attempts.
pub const MAX_BACKOFF_SECS: i64 = 300;
/// How long one node holds a claimed logout: far beyond the request timeout, so a live node
/// always settles what it claimed before anyone else may take it.
const LEASE_SECS: i64 = 60;
/// Logouts claimed at once; each is sent on its own task, so one slow client does not hold up
/// the others.
const BATCH: i64 = 32;

/// This node's side of the outbox: its lease owner name, HTTP client and wake-up signal.
pub struct LogoutOutbox {
    owner: String,
    http: reqwest::Client,
    wake: Notify,
    poll: Duration,
    /// Apps (by origin) that last timed out or could not be reached, until when: their other
    /// logouts wait until then instead of each costing a timeout, so one hung app does not hold
    /// up the others.
    down: Mutex<HashMap<String, i64>>,
}

/// Most origins remembered as down (a bound; past it the map starts over).
const MAX_DOWN: usize = 10_000;

fn origin_of(uri: &str) -> String {
    url::Url::parse(uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| uri.to_owned())
}

impl LogoutOutbox {
    /// `poll`: how often the outbox is looked at when nothing woke the task (another node or the
    /// CLI ended a session, a retry came due).
    pub fn new(poll: Duration) -> LogoutOutbox {
        // No redirects: the logout goes to the registered URI or nowhere.
        let http = crate::outbound::client();
        let id: [u8; 9] = crate::random::random_bytes();
        LogoutOutbox {
            owner: B64.encode(id),
            http,
            wake: Notify::new(),
            poll,
            down: Mutex::new(HashMap::new()),
        }
    }

    /// Looks at the outbox now (this node just ended a session).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn down_until(&self, origin: &str, now: UnixTime) -> Option<i64> {
        let map = self.down.lock().unwrap_or_else(|p| p.into_inner());
        map.get(origin).copied().filter(|until| *until > now)
    }

    fn mark(&self, origin: String, down_until: Option<i64>) {
        let mut map = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match down_until {
            Some(until) => {
                if map.len() >= MAX_DOWN {
                    map.clear();
                }
                let at = map.entry(origin).or_insert(until);
                *at = (*at).max(until);
            }
            None => {
                map.remove(&origin);
            }
        }
    }
}

/// The delivery loop every node runs.
pub async fn deliver_forever(state: AppState) {
    loop {
        deliver_due(&state).await;
        let outbox = &state.logout_outbox;
        let _ = tokio::time::timeout(outbox.poll, outbox.wake.notified()).await;
    }
}

/// Sends every logout that is due now (several batches if need be); returns how many were
/// claimed.
pub async fn deliver_due(state: &AppState) -> usize {
    let mut claimed = 0;
    loop {
        let now = state.clock.now();
        let batch = match state
            .store
            .claim_logouts(&state.logout_outbox.owner, now, LEASE_SECS, BATCH)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "back-channel logouts could not be claimed");
                return claimed;
            }
        };
        if batch.is_empty() {
            return claimed;
        }
        claimed += batch.len();
        let mut sends = tokio::task::JoinSet::new();
        for d in batch {
            // An app that just timed out or could not be reached: its logouts wait for its retry
            // time, unsent and uncounted, instead of each costing a timeout.
            if let Some(until) = state.logout_outbox.down_until(&origin_of(&d.uri), now) {
                if let Err(e) = state
                    .store
                    .defer_logout(d.id, &state.logout_outbox.owner, until)
                    .await
                {
                    tracing::warn!(error = %e, "a back-channel logout could not be deferred");
                }
                continue;
            }
            let state = state.clone();
            sends.spawn(async move { deliver_one(&state, d).await });
        }
        while sends.join_next().await.is_some() {}
    }
}

/// Why an attempt did not deliver (audited; never the token or the response body).
fn failure_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    }
}

async fn deliver_one(state: &AppState, d: LogoutDelivery) {
    let now = state.clock.now();
    let outcome = match state.directory.realm(&d.realm, now).await {
        Ok(Some(realm)) => match logout_token(&realm.issuer, &realm.signing, &d, now) {
            Ok(token) => send(&state.logout_outbox.http, &d.uri, &token).await,
            Err(e) => {
                tracing::error!(error = %e, "a logout token could not be signed");
                Err("signing".to_owned())
            }
        },
        Ok(None) => Err("realm_gone".to_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "realm unavailable for a back-channel logout");
            Err("realm_unavailable".to_owned())
        }
    };
    let now = state.clock.now();
    let mut detail = json!({"client_id": d.client_id, "sid": d.sid, "attempts": d.attempts});
    let (kind, next) = match outcome {
        Ok(status) => {
            state.logout_outbox.mark(origin_of(&d.uri), None);
            detail["status"] = json!(status);
            ("logout.backchannel_delivered", None)
        }
        Err(reason) if d.attempts >= MAX_ATTEMPTS || now - d.created_at >= MAX_AGE_SECS => {
            detail["reason"] = json!(reason);
            ("logout.backchannel_abandoned", None)
        }
        Err(reason) => {
            let at = now + backoff(d.attempts);
            if reason == "timeout" || reason == "connect" {
                state.logout_outbox.mark(origin_of(&d.uri), Some(at));
            }
            detail["reason"] = json!(reason);
            detail["next_attempt_at"] = json!(at);
            ("logout.backchannel_failed", Some(at))
        }
    };
    let draft = AuditDraft::new(now, Some(&d.realm), kind, "system")
        .subject(&d.sub)
        .detail(detail);
    match state
        .store
        .settle_logout(d.id, &state.logout_outbox.owner, next, &[draft])
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            id = d.id,
            "a back-channel logout's lease ended before it was settled"
        ),
        Err(e) => tracing::warn!(error = %e, "a back-channel logout could not be settled"),
    }
}

/// POSTs the token (`application/x-www-form-urlencoded`, §2.5); the status when it was 2xx.
async fn send(http: &reqwest::Client, uri: &str, token: &str) -> Result<u16, String> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish();
    let res = http
        .post(uri)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::CACHE_CONTROL, "no-store")
        .body(body)
        .send()
        .await
        .map_err(|e| failure_reason(&e).to_owned())?;
    let status = res.status().as_u16();
    if res.status().is_success() {
        Ok(status)
    } else {
        Err(format!("status_{status}"))
    }
}

/// Seconds to wait after `attempts` failed attempts: 2, 4, 8, ... up to [`MAX_BACKOFF_SECS`].
pub fn backoff(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 16) as u32;
    2_i64.saturating_pow(exp).min(MAX_BACKOFF_SECS)
}

/// The logout token's `jti`: derived from the outbox row, so a repeated delivery of the same
/// logout (after a node died before settling it) carries the same `jti`.
pub fn jti_of(d: &LogoutDelivery) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        "sigil-backchannel-logout",
        &d.realm,
        &d.client_id,
        &d.sid,
        &d.id.to_string(),
        &d.created_at.to_string(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    B64.encode(&ctx.finish().as_ref()[..16])
}

/// The signed logout token (§2.4): `iss`, `aud` (the client), `iat`, `exp`, `jti`, `sub`, `sid`,
/// `events`; never a `nonce`.
pub fn logout_token(
    issuer: &str,
    key: &Arc<crate::keys::SigningKey>,
    d: &LogoutDelivery,
    now: UnixTime,
) -> Result<String, crate::keys::KeyError> {
    let claims = json!({
        "iss": issuer,
        "aud": d.client_id,
        "iat": now,
        "exp": now + TOKEN_TTL_SECS,
        "jti": jti_of(d),
        "sub": d.sub,
        "sid": d.sid,
        "events": {EVENT: {}},
    });
    key.sign_typed(TYP, claims.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), 2);
        assert_eq!(backoff(2), 4);
        assert_eq!(backoff(5), 32);
        assert_eq!(backoff(9), MAX_BACKOFF_SECS);
        assert_eq!(backoff(i64::MAX), MAX_BACKOFF_SECS);
    }

    #[test]
    fn jti_is_stable_per_row_and_differs_between_rows() {
        let d = LogoutDelivery {
            id: 7,
            realm: "customers".into(),
            client_id: "web".into(),
            uri: "https://app.example/logout".into(),
            sid: "s1".into(),
            sub: "u1".into(),
            created_at: 100,
            attempts: 1,
        };
        let again = LogoutDelivery {
            attempts: 2,
            ..d.clone()
        };
        let other = LogoutDelivery { id: 8, ..d.clone() };
        assert_eq!(jti_of(&d), jti_of(&again));
        assert_ne!(jti_of(&d), jti_of(&other));
    }
}
