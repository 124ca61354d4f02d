//! Rendering the hosted pages (templates compiled into the binary), their errors, cookies and
//! CSRF tokens.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value, context};
use subtle::ConstantTimeEq;

use crate::directory::LiveRealm;

/// The page templates, parsed once at start.
pub fn environment() -> Arc<Environment<'static>> {
    let mut env = Environment::new();
    // HTML auto-escaping applies to every template name ending in .html.
    for (name, source) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("login.html", include_str!("../../templates/login.html")),
        ("enrol.html", include_str!("../../templates/enrol.html")),
        (
            "recovery.html",
            include_str!("../../templates/recovery.html"),
        ),
        ("account.html", include_str!("../../templates/account.html")),
        ("totp.html", include_str!("../../templates/totp.html")),
        ("message.html", include_str!("../../templates/message.html")),
        ("consent.html", include_str!("../../templates/consent.html")),
        ("reauth.html", include_str!("../../templates/reauth.html")),
    ] {
        // The templates are part of the binary and covered by tests; a broken one is a build bug.
        env.add_template(name, source).expect("valid template");
    }
    Arc::new(env)
}

/// Common page context: realm name and logo.
pub fn realm_context(realm: &LiveRealm) -> Value {
    context! {
        realm_name => realm.record.display_name.clone().unwrap_or_else(|| realm.record.name.clone()),
        logo_url => realm.login().and_then(|s| s.logo_url.clone()),
    }
}

pub fn render(env: &Environment<'static>, name: &str, ctx: Value, status: StatusCode) -> Response {
    match env.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => {
            let mut res = (status, Html(html)).into_response();
            secure_page_headers(res.headers_mut());
            res
        }
        Err(e) => {
            tracing::error!(error = %e, template = name, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Every hosted page's policy; a page whose form may be answered with a redirect to the client
/// widens `form-action` by that one target (`pending::allow_redirect_to`).
pub const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// No caching, no framing, no referrer for every hosted page.
pub fn secure_page_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
}

/// A message page (errors never redirect anywhere).
pub fn message(
    env: &Environment<'static>,
    realm: Option<&LiveRealm>,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Response {
    let base = realm
        .map(realm_context)
        .unwrap_or_else(|| context! { realm_name => "Sigil" });
    let ctx = context! { ..base, ..context! { title => title, message => text, is_error => status.is_client_error() || status.is_server_error() } };
    render(env, "message.html", ctx, status)
}

/// `Secure` unless the issuer is plain-HTTP development.
pub fn cookie(
    name: &str,
    value: &str,
    path: &str,
    secure: bool,
    max_age: Option<i64>,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The value of cookie `name` (exactly one occurrence; several mean tampering: none).
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        for part in v.to_str().ok()?.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(val);
            }
        }
    }
    found
}

pub fn csrf_ok(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| {
        p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes()))
    })
}
