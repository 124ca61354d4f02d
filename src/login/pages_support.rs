//! Rendering the hosted pages (templates compiled into the binary), their errors, cookies and
//! CSRF tokens.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::value::Kwargs;
use minijinja::{Environment, State, Value, context};
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
        ("logout.html", include_str!("../../templates/logout.html")),
        ("reauth.html", include_str!("../../templates/reauth.html")),
        ("done.html", include_str!("../../templates/done.html")),
        (
            "totp_setup.html",
            include_str!("../../templates/totp_setup.html"),
        ),
    ] {
        // The templates are part of the binary and covered by tests; a broken one is a build bug.
        env.add_template(name, source).expect("valid template");
    }
    env.add_function("t", translate);
    Arc::new(env)
}

/// `{{ t("key", name=value) }}` in a template: the message in the page's language (`lang`).
fn translate(state: &State, key: &str, args: Kwargs) -> Result<String, minijinja::Error> {
    let lang = state
        .lookup("lang")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "en".into());
    let mut pairs: Vec<(String, String)> = Vec::new();
    for name in args.args() {
        let v: Value = args.get(name)?;
        let text = if v.is_undefined() || v.is_none() {
            String::new()
        } else {
            v.to_string()
        };
        pairs.push((name.to_owned(), text));
    }
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    Ok(super::i18n::tr(&lang, key, &refs))
}

/// The language of this request's page in `realm`: the browser's choice among the catalogues,
/// else the realm's default, else English.
pub fn lang_for(realm: Option<&LiveRealm>) -> &'static str {
    let default = realm
        .and_then(|r| r.login())
        .map(|s| s.default_locale.as_str());
    super::i18n::with_current(|p| super::i18n::negotiate(p.accept_language.as_deref(), default))
}

/// `ts` in words, in this request's language and time zone (the browser's, else the realm's).
pub fn when(realm: &LiveRealm, ts: i64) -> String {
    let lang = lang_for(Some(realm));
    super::i18n::with_current(|p| {
        let zone = p
            .time_zone
            .as_deref()
            .or_else(|| realm.login().map(|s| s.default_time_zone.as_str()))
            .unwrap_or("UTC");
        super::when::in_words(ts, lang, zone)
    })
}

/// The text colour that reads on `bg` (`#rrggbb`): black or white, whichever contrasts more
/// (WCAG relative luminance); either way at least 4.5:1.
pub fn on_color(bg: &str) -> &'static str {
    let channel = |i: usize| {
        let v =
            u8::from_str_radix(bg.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0) as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    if (1.05 / (l + 0.05)) >= ((l + 0.05) / 0.05) {
        "#ffffff"
    } else {
        "#000000"
    }
}

/// Common page context: realm name, logo, brand colour and language.
pub fn realm_context(realm: &LiveRealm) -> Value {
    let settings = realm.login();
    let primary = settings
        .and_then(|s| s.primary_color.clone())
        .filter(|c| crate::identity::settings::valid_color(c))
        .unwrap_or_else(|| "#0b57d0".into());
    context! {
        realm_name => realm.record.display_name.clone().unwrap_or_else(|| realm.record.name.clone()),
        logo_url => settings.and_then(|s| s.logo_url.clone()),
        on_primary => on_color(&primary),
        primary => primary,
        lang => lang_for(Some(realm)),
    }
}

/// The strings the pages' script shows, in the page's language: JSON for a
/// `<script type="application/json">` block, with `<`, `>` and `&` escaped so nothing in it can
/// end the block.
fn script_strings(lang: &str) -> Value {
    static CACHE: std::sync::OnceLock<std::collections::HashMap<&'static str, String>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        super::i18n::LOCALES
            .iter()
            .map(|l| {
                let map: std::collections::BTreeMap<String, String> = super::i18n::keys("en")
                    .into_iter()
                    .filter_map(|k| {
                        let short = k.strip_prefix("js.")?.to_owned();
                        Some((short, super::i18n::tr(l, &k, &[])))
                    })
                    .collect();
                let json = serde_json::to_string(&map)
                    .unwrap_or_else(|_| "{}".into())
                    .replace('<', "\\u003c")
                    .replace('>', "\\u003e")
                    .replace('&', "\\u0026");
                (*l, json)
            })
            .collect()
    });
    Value::from_safe_string(cache.get(lang).cloned().unwrap_or_else(|| "{}".into()))
}

pub fn render(env: &Environment<'static>, name: &str, ctx: Value, status: StatusCode) -> Response {
    // A page without a realm (unknown realm) still speaks the browser's language.
    let lang = ctx
        .get_attr("lang")
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| lang_for(None).to_owned());
    // Left wins in `context!`: the page's own values, then the defaults.
    let ctx = context! { ..ctx, ..context! { lang => lang.clone(), js_strings => script_strings(&lang), primary => "#0b57d0", on_primary => "#ffffff" } };
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

/// A message page (errors never redirect anywhere): `key` names the catalogue's `msg.KEY.title`
/// and `msg.KEY.body`.
pub fn message(
    env: &Environment<'static>,
    realm: Option<&LiveRealm>,
    status: StatusCode,
    key: &str,
) -> Response {
    message_with(env, realm, status, key, context! {})
}

/// `message` with more context: `wait`, `minutes` (placeholders of the text) and `links`, a list
/// of `{href, label}` ways forward (labels already in the page's language).
pub fn message_with(
    env: &Environment<'static>,
    realm: Option<&LiveRealm>,
    status: StatusCode,
    key: &str,
    extra: Value,
) -> Response {
    let base = realm
        .map(realm_context)
        .unwrap_or_else(|| context! { realm_name => "Sigil" });
    let ctx = context! { ..base, ..extra, ..context! {
        title => format!("msg.{key}.title"),
        message => format!("msg.{key}.body"),
        message_key => key,
        is_error => status.is_client_error() || status.is_server_error(),
    } };
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
