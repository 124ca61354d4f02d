//! The hosted pages' languages: every user-facing string comes from a message catalogue
//! (`locales/*.toml`, compiled into the binary), chosen per request from `Accept-Language`, then
//! the realm's default locale, then English. A key missing from a catalogue falls back to English
//! (a test keeps the catalogues complete). Strings take named `{placeholders}`.
//!
//! The request's preferences (languages, the browser's time zone from the `sigil_tz` cookie the
//! pages' script sets) are read once by `preferences` and kept in a task-local for the handler,
//! so the page helpers need no extra arguments.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

/// The languages Sigil's pages speak, English first (the last fallback).
pub use crate::identity::settings::SUPPORTED_LOCALES as LOCALES;
pub const TZ_COOKIE: &str = "sigil_tz";

type Catalogue = HashMap<String, String>;

fn flatten(prefix: &str, table: &toml::Table, out: &mut Catalogue) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            _ => {}
        }
    }
}

fn parse(source: &str) -> Catalogue {
    let mut out = Catalogue::new();
    // The catalogues are part of the binary and covered by tests; a broken one is a build bug.
    let table: toml::Table = toml::from_str(source).expect("valid message catalogue");
    flatten("", &table, &mut out);
    out
}

static CATALOGUES: LazyLock<HashMap<&'static str, Catalogue>> = LazyLock::new(|| {
    HashMap::from([
        ("en", parse(include_str!("../../locales/en.toml"))),
        ("de", parse(include_str!("../../locales/de.toml"))),
    ])
});

/// The supported locale for a tag (`de-CH` → `de`), if any.
pub fn supported(tag: &str) -> Option<&'static str> {
    let primary = tag.split(['-', '_']).next()?.trim().to_ascii_lowercase();
    LOCALES.iter().copied().find(|l| *l == primary)
}

/// The best supported language of an `Accept-Language` header (RFC 9110 §12.5.4: by weight, `q=0`
/// refuses), else `default` if supported, else English.
pub fn negotiate(accept_language: Option<&str>, default: Option<&str>) -> &'static str {
    let mut best: Option<(u16, &'static str)> = None;
    for item in accept_language.unwrap_or("").split(',').take(32) {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let Some(locale) = supported(tag) else {
            continue;
        };
        // Weight first, then order in the header.
        let score = (q.clamp(0.0, 1.0) * 1000.0) as u16;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, locale));
        }
    }
    best.map(|(_, l)| l)
        .or_else(|| default.and_then(supported))
        .unwrap_or("en")
}

/// The message `key` in `lang`, English if that catalogue lacks it, the key itself if none has
/// it; `{name}` placeholders replaced from `args`.
pub fn tr(lang: &str, key: &str, args: &[(&str, &str)]) -> String {
    let text = CATALOGUES
        .get(lang)
        .and_then(|c| c.get(key))
        .or_else(|| CATALOGUES.get("en").and_then(|c| c.get(key)))
        .map(String::as_str)
        .unwrap_or(key);
    let mut out = text.to_owned();
    for (name, value) in args {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Every key of a catalogue (for the completeness test and the pages' script strings).
pub fn keys(lang: &str) -> Vec<String> {
    let mut k: Vec<String> = CATALOGUES
        .get(lang)
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// What the browser asked for, for the handler of this request.
#[derive(Debug, Clone, Default)]
pub struct Preferences {
    pub accept_language: Option<String>,
    pub time_zone: Option<String>,
}

tokio::task_local! {
    static PREFERENCES: Preferences;
}

/// `f` of this request's preferences (empty outside a request, e.g. in unit tests), without
/// copying them: pages call this once per date they show.
pub fn with_current<R>(f: impl FnOnce(&Preferences) -> R) -> R {
    if PREFERENCES.try_with(|_| ()).is_ok() {
        PREFERENCES.with(f)
    } else {
        f(&Preferences::default())
    }
}

/// Middleware: reads `Accept-Language` and the time zone cookie into the request's task-local.
pub async fn preferences(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let accept_language = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 256)
        .map(str::to_owned);
    let time_zone = super::pages_support::read_cookie(headers, TZ_COOKIE)
        .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
        .filter(|v| v.len() <= 64 && super::when::valid_time_zone(v))
        .map(|v| v.into_owned());
    let prefs = Preferences {
        accept_language,
        time_zone,
    };
    PREFERENCES.scope(prefs, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_has_every_english_key_with_the_same_placeholders() {
        let en = &CATALOGUES["en"];
        for lang in LOCALES {
            let c = &CATALOGUES[lang];
            for (k, v) in en {
                let other = c.get(k).unwrap_or_else(|| panic!("{lang} lacks {k}"));
                let names = |s: &str| {
                    let mut n: Vec<String> = s
                        .split('{')
                        .skip(1)
                        .filter_map(|p| p.split_once('}').map(|(a, _)| a.to_owned()))
                        .collect();
                    n.sort();
                    n
                };
                assert_eq!(names(v), names(other), "{lang} {k}: placeholders differ");
            }
            assert_eq!(c.len(), en.len(), "{lang} has keys English lacks");
        }
    }

    #[test]
    fn negotiation_follows_weights_then_the_realm_default() {
        assert_eq!(negotiate(Some("de-DE,de;q=0.9,en;q=0.8"), None), "de");
        assert_eq!(negotiate(Some("fr-FR, en;q=0.5, de;q=0.7"), None), "de");
        assert_eq!(negotiate(Some("fr"), Some("de")), "de");
        assert_eq!(negotiate(Some("de;q=0, en"), Some("de")), "en");
        assert_eq!(negotiate(None, Some("xx")), "en");
        assert_eq!(negotiate(Some("*"), Some("de")), "de");
    }

    #[test]
    fn placeholders_are_filled_and_missing_keys_fall_back() {
        assert_eq!(
            tr("en", "login.title", &[("realm", "Example Bank")]),
            "Sign in to Example Bank"
        );
        assert_eq!(tr("de", "no.such.key", &[]), "no.such.key");
    }
}
