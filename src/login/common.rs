//! What every page handler shares: the realm of a page (or the page to show instead), the common
//! refusals, redirects, the client address, audit records and anonymous refusal counting.

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pages_support::message;
use crate::audit::AuditDraft;
use crate::audit::tally::Refused;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::settings::LoginSettings;
use crate::login::pages_support::message_with;
use crate::state::AppState;

pub(crate) fn unavailable(state: &AppState, realm: Option<&LiveRealm>) -> Response {
    message(
        &state.templates,
        realm,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
}

/// The realm of a page, with a usable sign-in policy, or the page to show instead.
pub(crate) async fn realm_or_page(
    state: &AppState,
    name: &str,
    now: UnixTime,
) -> Result<std::sync::Arc<LiveRealm>, Response> {
    match state.directory.realm(name, now).await {
        // A stored policy that cannot be read refuses sign-in (fail closed); logged by the
        // directory when it loads the realm.
        Ok(Some(r)) if r.login().is_none() => Err(unavailable(state, Some(&r))),
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(message(
            &state.templates,
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        )),
        Err(e) => {
            tracing::error!(error = %e, "realm unavailable");
            Err(unavailable(state, None))
        }
    }
}

/// The policy of a realm `realm_or_page` returned (which refuses realms whose stored policy is
/// unusable). Should another caller ever pass such a realm, it gets the closed policy (no password
/// fallback, nothing remembered), never the defaults.
pub(crate) fn settings(realm: &LiveRealm) -> &LoginSettings {
    static CLOSED: std::sync::OnceLock<LoginSettings> = std::sync::OnceLock::new();
    realm.login().unwrap_or_else(|| {
        CLOSED.get_or_init(|| LoginSettings {
            allow_password_fallback: false,
            remember_consent: false,
            ..LoginSettings::default()
        })
    })
}

pub(crate) fn csrf_refused(state: &AppState, realm: &LiveRealm) -> Response {
    message(&state.templates, Some(realm), StatusCode::FORBIDDEN, "csrf")
}

pub(crate) fn too_many(state: &AppState, realm: &LiveRealm) -> Response {
    let wait = crate::ratelimit::seconds_until_reset(state.clock.now());
    let mut res = message_with(
        &state.templates,
        Some(realm),
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
        minijinja::context! { wait => wait },
    );
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

pub(crate) fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    super::pages_support::secure_page_headers(res.headers_mut());
    res
}

pub(crate) fn peer_ip(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    peer.map(|Extension(ConnectInfo(a))| a.ip())
}

/// One audit record of something a known user did (written at once, never aggregated).
pub(crate) async fn audit(
    state: &AppState,
    realm: &LiveRealm,
    kind: &'static str,
    actor: &str,
    subject: Option<&str>,
    detail: serde_json::Value,
    now: UnixTime,
) {
    let mut d = AuditDraft::new(now, Some(&realm.record.name), kind, actor).detail(detail);
    if let Some(s) = subject {
        d = d.subject(s);
    }
    if state.audit.record(d).await.is_err() {
        tracing::error!(kind, "audit record lost");
    }
}

/// An anonymous refusal on a page: counted toward the address's limit and tallied into the
/// audit log (one row per address and reason per period, not one per request).
pub(crate) fn refused_anonymous(
    state: &AppState,
    realm: &LiveRealm,
    ip: Option<IpAddr>,
    reason: &str,
    now: UnixTime,
) {
    if let Some(ip) = ip {
        state.login_ip_failures.record_failure(ip, now);
    }
    crate::metrics::refusal(&realm.record.name, "login.refused", reason);
    state.refusals.add(
        Refused {
            realm: Some(&realm.record.name),
            kind: "login.refused",
            address: crate::oauth::outcome::address(ip),
            reason,
            actor: "(browser)",
        },
        now,
    );
}

pub(crate) fn ip_blocked(state: &AppState, ip: Option<IpAddr>, now: UnixTime) -> bool {
    let blocked = ip.is_some_and(|ip| state.login_ip_failures.is_blocked(ip, now));
    if blocked {
        crate::metrics::rate_limited("sign_in_per_ip");
    }
    blocked
}
