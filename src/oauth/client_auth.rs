//! Client authentication at the token endpoint: `client_secret_basic` or `client_secret_post`,
//! exactly one per request. Every failure gives the same `invalid_client` answer and costs the same.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use std::sync::Arc;

use super::OAuthError;
use super::form::Params;
use super::outcome::Refusal;
use crate::clients::secret;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;
use crate::store::ClientRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// What the caller presented. `Debug` leaves the secret out.
pub struct Presented {
    pub client_id: String,
    pub secret: String,
    pub method: AuthMethod,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("client_id", &self.client_id)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

pub use crate::clients::is_valid_client_id;

const MAX_SECRET_LEN: usize = 512;

/// Extracts the credentials; `Err` for malformed or doubled authentication.
pub fn extract(headers: &HeaderMap, params: &Params) -> Result<Presented, OAuthError> {
    let mut auth_headers = headers.get_all(header::AUTHORIZATION).iter();
    let basic = auth_headers.next();
    if auth_headers.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let post_secret = params.get("client_secret");
    let presented = match (basic, post_secret) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use exactly one client authentication method",
            ));
        }
        (Some(value), None) => {
            let (id, secret) = decode_basic(value.as_bytes())?;
            if let Some(body_id) = params.get("client_id")
                && body_id != id
            {
                return Err(OAuthError::invalid_request(
                    "client_id does not match the Authorization header",
                ));
            }
            Presented {
                client_id: id,
                secret,
                method: AuthMethod::ClientSecretBasic,
            }
        }
        (None, Some(secret)) => {
            let Some(id) = params.get("client_id") else {
                return Err(OAuthError::invalid_request(
                    "client_secret without client_id",
                ));
            };
            Presented {
                client_id: id.to_owned(),
                secret: secret.to_owned(),
                method: AuthMethod::ClientSecretPost,
            }
        }
        (None, None) => return Err(OAuthError::invalid_client()),
    };
    if presented.secret.len() > MAX_SECRET_LEN || presented.client_id.len() > 256 {
        return Err(OAuthError::invalid_client());
    }
    Ok(presented)
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn decode_basic(value: &[u8]) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_request("malformed Basic authorization header");
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (scheme, rest) = text.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_request(
            "unsupported Authorization scheme at the token endpoint",
        ));
    }
    let raw = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = raw.split_once(':').ok_or_else(bad)?;
    Ok((
        form_decode(id).ok_or_else(bad)?,
        form_decode(secret).ok_or_else(bad)?,
    ))
}

fn form_decode(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Looks the client up and checks its secret. An unknown id, a wrong secret and a disabled client
/// get the same answer; the first two also do the same work.
pub async fn authenticate(
    state: &AppState,
    realm: &LiveRealm,
    presented: &Presented,
    now: UnixTime,
) -> Result<Arc<ClientRecord>, Refusal> {
    let refuse =
        |reason| Refusal::new(OAuthError::invalid_client(), reason).client(&presented.client_id);
    if !is_valid_client_id(&presented.client_id) {
        secret::burn(&presented.secret);
        return Err(refuse("unknown_client"));
    }
    let found = state
        .directory
        .client(&realm.record.name, &presented.client_id, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "client lookup failed");
            Refusal::new(OAuthError::store_unavailable(), "store_unavailable")
        })?;
    let Some(client) = found else {
        secret::burn(&presented.secret);
        return Err(refuse("unknown_client"));
    };
    if !secret::matches(
        &client.secret_salt,
        &client.secret_verifier,
        &presented.secret,
    ) {
        return Err(refuse("bad_secret"));
    }
    if !client.enabled {
        return Err(refuse("client_disabled"));
    }
    Ok(client)
}

/// Confidential clients authenticate as at `client_credentials`; a public client names itself
/// with `client_id` and nothing else (its proof is PKCE).
pub async fn for_user_grant(
    state: &AppState,
    realm: &LiveRealm,
    headers: &axum::http::HeaderMap,
    params: &Params,
    now: UnixTime,
) -> Result<Arc<ClientRecord>, Refusal> {
    let presents_secret = headers.contains_key(axum::http::header::AUTHORIZATION)
        || params.get("client_secret").is_some();
    if presents_secret {
        let presented = extract(headers, params)
            .map_err(|e| Refusal::new(e, "malformed_client_authentication"))?;
        return authenticate(state, realm, &presented, now).await;
    }
    let id = params
        .get("client_id")
        .ok_or_else(|| Refusal::new(OAuthError::invalid_client(), "no_client_authentication"))?;
    let refuse = || Refusal::new(OAuthError::invalid_client(), "public_client_required").client(id);
    if !is_valid_client_id(id) {
        secret::burn(id);
        return Err(refuse());
    }
    match state.directory.client(&realm.record.name, id, now).await {
        Ok(Some(c)) if c.public_client && c.enabled => Ok(c),
        Ok(_) => Err(refuse()),
        Err(e) => {
            tracing::error!(error = %e, "client lookup failed");
            Err(Refusal::new(
                OAuthError::store_unavailable(),
                "store_unavailable",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(id: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&v).expect("hv"),
        );
        h
    }

    fn params(body: &str) -> Params {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        super::super::form::parse(&h, body.as_bytes()).expect("form")
    }

    #[test]
    fn one_method_only() {
        let p = extract(&basic("a%2Eb", "s%3As"), &params("grant_type=x")).expect("basic");
        assert_eq!((p.client_id.as_str(), p.secret.as_str()), ("a.b", "s:s"));
        assert_eq!(p.method, AuthMethod::ClientSecretBasic);
        let p = extract(&HeaderMap::new(), &params("client_id=a&client_secret=s")).expect("post");
        assert_eq!(p.method, AuthMethod::ClientSecretPost);
        let both = extract(&basic("a", "s"), &params("client_id=a&client_secret=s"));
        assert_eq!(
            both.expect_err("must fail").code,
            super::super::ErrorCode::InvalidRequest
        );
        let none = extract(&HeaderMap::new(), &params("grant_type=x"));
        assert_eq!(
            none.expect_err("must fail").code,
            super::super::ErrorCode::InvalidClient
        );
        let mismatch = extract(&basic("a", "s"), &params("client_id=b"));
        assert_eq!(
            mismatch.expect_err("must fail").code,
            super::super::ErrorCode::InvalidRequest
        );
        assert!(
            format!(
                "{:?}",
                extract(&basic("a", "topsecret"), &params("")).expect("ok")
            )
            .find("topsecret")
            .is_none()
        );
    }
}
