//! The pending authorization request travels in a sealed cookie (AES-256-GCM under the KEK, bound
//! to the realm), not in a database row: an anonymous `/authorize` writes nothing, so a flood of
//! them costs the database nothing. The cookie expires with the request (`FLOW_TTL`).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::pages_support::{cookie, read_cookie};
use super::session::{FLOW_COOKIE, cookie_path, secure_cookies};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::authorize::{FLOW_TTL, PendingAuthz};
use crate::identity::token_hash;
use crate::state::AppState;

fn aad(realm: &LiveRealm) -> Vec<u8> {
    format!("sigil-authz-cookie/{}", realm.record.name).into_bytes()
}

/// The `Set-Cookie` value carrying `pending`, or `None` if it cannot be sealed or is too large.
pub fn seal(state: &AppState, realm: &LiveRealm, pending: &PendingAuthz) -> Option<HeaderValue> {
    let value = super::sealed::seal(state, &aad(realm), pending)?;
    Some(cookie(
        FLOW_COOKIE,
        &value,
        &cookie_path(realm),
        secure_cookies(realm),
        Some(FLOW_TTL),
    ))
}

/// The cookie that ends the pending request in this browser.
pub fn clear(realm: &LiveRealm) -> HeaderValue {
    cookie(
        FLOW_COOKIE,
        "",
        &cookie_path(realm),
        secure_cookies(realm),
        Some(0),
    )
}

/// The pending request of this browser, with a key naming it (the hash of the cookie, for the
/// WebAuthn ceremony started from it). `None` if missing, forged, of another realm, or expired.
pub fn read(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    now: UnixTime,
) -> Option<(String, PendingAuthz)> {
    let value = read_cookie(headers, FLOW_COOKIE)?;
    let pending: PendingAuthz = super::sealed::open(state, &aad(realm), value)?;
    (pending.created_at <= now && now < pending.created_at + FLOW_TTL)
        .then(|| (token_hash(value), pending))
}

/// The source a page's `form-action` must allow so that a form posted to Sigil may be answered
/// with a redirect to the client (browsers apply `form-action` to that redirect too): the redirect
/// URI's origin, or its private-use scheme for a native app.
pub fn form_action_source(redirect_uri: &str) -> Option<String> {
    let u = url::Url::parse(redirect_uri).ok()?;
    let src = match u.scheme() {
        "http" | "https" => u.origin().ascii_serialization(),
        scheme => format!("{scheme}:"),
    };
    src.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":/.-+[]".contains(&b))
        .then_some(src)
}

/// Widens the page's CSP `form-action` by the pending request's redirect target only.
pub fn allow_redirect_to(res: &mut Response, redirect_uri: &str) {
    let Some(src) = form_action_source(redirect_uri) else {
        return;
    };
    let csp = super::pages_support::CSP
        .replace("form-action 'self'", &format!("form-action 'self' {src}"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_action_sources() {
        assert_eq!(
            form_action_source("https://app.example:8443/cb?x=1").as_deref(),
            Some("https://app.example:8443")
        );
        assert_eq!(
            form_action_source("com.bank.app:/oauth").as_deref(),
            Some("com.bank.app:")
        );
        assert_eq!(
            form_action_source("http://localhost:9/cb").as_deref(),
            Some("http://localhost:9")
        );
    }
}
