//! Strict `application/x-www-form-urlencoded` parsing for OAuth endpoints: a parameter may appear
//! once (RFC 6749 §3.2), values are bounded, anything else is `invalid_request`.

use std::collections::{HashMap, HashSet};

use axum::http::{HeaderMap, header};

use super::OAuthError;

/// Parsed parameters, each present at most once.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

pub const MAX_PARAMS: usize = 32;

/// Checks the content type is a form and parses `body`.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ctype.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the request body must be application/x-www-form-urlencoded",
        ));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(OAuthError::invalid_request("the request body is not UTF-8"));
    }
    pairs(body)
}

/// A request's query string (`GET` endpoints), by the same rules as a form body.
pub fn parse_query(query: Option<&str>) -> Result<Params, OAuthError> {
    pairs(query.unwrap_or("").as_bytes())
}

fn pairs(body: &[u8]) -> Result<Params, OAuthError> {
    let mut map = HashMap::new();
    let mut seen = HashSet::new();
    for (k, v) in form_urlencoded::parse(body) {
        if seen.len() >= MAX_PARAMS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        if !seen.insert(k.clone()) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {:?} is repeated",
                truncate(&k, 40)
            )));
        }
        // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
        if !v.is_empty() {
            map.insert(k.into_owned(), v.into_owned());
        }
    }
    Ok(Params(map))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        h
    }

    #[test]
    fn parses_and_refuses_repeats_and_json() {
        let p = parse(&form(), b"grant_type=client_credentials&scope=a+b").expect("ok");
        assert_eq!(p.get("scope"), Some("a b"));
        assert!(parse(&form(), b"scope=a&scope=b").is_err());
        assert!(parse(&form(), b"scope=&scope=b").is_err());
        let mut json = HeaderMap::new();
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(parse(&json, br#"{"grant_type":"client_credentials"}"#).is_err());
        assert!(parse(&form(), b"a=\xff").is_err());
        assert_eq!(parse(&form(), b"scope=").expect("ok").get("scope"), None);
    }
}
