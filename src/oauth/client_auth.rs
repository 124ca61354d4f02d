//! Client authentication at the token endpoint, with the client's registered method only:
//! a secret (`client_secret_basic` / `client_secret_post`), a client certificate
//! (`tls_client_auth`, `self_signed_tls_client_auth`, RFC 8705), a signed assertion
//! (`private_key_jwt`, RFC 7523), or nothing for a public client. At most one credential per
//! request. Every failure gives the same `invalid_client` answer; the audit log has the reason.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use std::sync::Arc;

use super::OAuthError;
use super::client_assertion;
use super::form::Params;
use super::outcome::Refusal;
use crate::clients::auth::{AuthMethod, ParsedAuth};
use crate::clients::{mtls, secret};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;
use crate::store::ClientRecord;
use crate::tls::ClientCertChain;

/// What the caller presented. `Debug` leaves secrets and assertions out.
pub struct Presented {
    pub client_id: String,
    pub credential: Credential,
}

pub enum Credential {
    Secret {
        secret: String,
        method: AuthMethod,
    },
    /// A `private_key_jwt` assertion.
    Assertion(String),
    /// No credential in the request: a public client, or one that proves a client certificate.
    Nothing,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.credential {
            Credential::Secret { method, .. } => method.as_str(),
            Credential::Assertion(_) => "private_key_jwt",
            Credential::Nothing => "none",
        };
        f.debug_struct("Presented")
            .field("client_id", &self.client_id)
            .field("credential", &kind)
            .finish()
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
    let assertion = params.get("client_assertion");
    let assertion_type = params.get("client_assertion_type");
    let offered = usize::from(basic.is_some())
        + usize::from(post_secret.is_some())
        + usize::from(assertion.is_some());
    if offered > 1 {
        return Err(OAuthError::invalid_request(
            "use exactly one client authentication method",
        ));
    }
    if assertion.is_some() != assertion_type.is_some() {
        return Err(OAuthError::invalid_request(
            "client_assertion and client_assertion_type go together",
        ));
    }
    let body_id = params.get("client_id");
    let presented = if let Some(value) = basic {
        let (id, secret) = decode_basic(value.as_bytes())?;
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request(
                "client_id does not match the Authorization header",
            ));
        }
        Presented {
            client_id: id,
            credential: Credential::Secret {
                secret,
                method: AuthMethod::ClientSecretBasic,
            },
        }
    } else if let Some(secret) = post_secret {
        let Some(id) = body_id else {
            return Err(OAuthError::invalid_request(
                "client_secret without client_id",
            ));
        };
        Presented {
            client_id: id.to_owned(),
            credential: Credential::Secret {
                secret: secret.to_owned(),
                method: AuthMethod::ClientSecretPost,
            },
        }
    } else if let Some(jwt) = assertion {
        if assertion_type != Some(client_assertion::JWT_BEARER) {
            return Err(OAuthError::invalid_request(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        // The client is named by `client_id` or, failing that, by the assertion's `iss` (read
        // here only to find the keys; the signature and `iss` = `sub` = client are checked).
        let Some(id) = body_id
            .map(str::to_owned)
            .or_else(|| client_assertion::peek_issuer(jwt))
        else {
            return Err(OAuthError::invalid_client());
        };
        Presented {
            client_id: id,
            credential: Credential::Assertion(jwt.to_owned()),
        }
    } else {
        let Some(id) = body_id else {
            return Err(OAuthError::invalid_client());
        };
        Presented {
            client_id: id.to_owned(),
            credential: Credential::Nothing,
        }
    };
    let too_long = match &presented.credential {
        Credential::Secret { secret, .. } => secret.len() > MAX_SECRET_LEN,
        Credential::Assertion(jwt) => jwt.len() > sigil_validator::jwk::MAX_JWS_BYTES,
        Credential::Nothing => false,
    };
    if too_long || presented.client_id.len() > 256 {
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

/// A client that proved who it is.
#[derive(Debug)]
pub struct Authenticated {
    pub client: Arc<ClientRecord>,
    /// Its authentication settings, as parsed on the cached record.
    pub auth: Arc<ParsedAuth>,
    pub method: AuthMethod,
    /// The client certificate's thumbprint, when its tokens are to be bound to it.
    pub cert_thumbprint: Option<String>,
}

/// Where the request's client certificate (if any) and endpoint come from.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub cert: Option<&'a ClientCertChain>,
    /// The token endpoint URL as this request addressed it (main or mutual-TLS listener).
    pub token_endpoint: &'a str,
}

/// Looks the client up and checks the credential against its registered method. An unknown id,
/// a wrong credential, a method the client is not registered for and a disabled client get the
/// same answer.
pub async fn authenticate(
    state: &AppState,
    realm: &LiveRealm,
    presented: &Presented,
    ctx: Context<'_>,
    now: UnixTime,
) -> Result<Authenticated, Refusal> {
    let refuse =
        |reason| Refusal::new(OAuthError::invalid_client(), reason).client(&presented.client_id);
    let burn = || {
        if let Credential::Secret { secret, .. } = &presented.credential {
            secret::burn(secret);
        }
    };
    if !is_valid_client_id(&presented.client_id) {
        burn();
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
        burn();
        return Err(refuse("unknown_client"));
    };
    let parsed = client.auth().map_err(|e| {
        tracing::error!(client = %client.client_id, error = %e, "client authentication settings unusable");
        refuse("client_misconfigured")
    })?;
    let auth = &parsed.auth;
    let method = match &presented.credential {
        Credential::Secret { method, .. } => *method,
        Credential::Assertion(_) => AuthMethod::PrivateKeyJwt,
        Credential::Nothing if client.public_client => AuthMethod::None,
        Credential::Nothing => match auth.method {
            Some(m) if m.is_mtls() => m,
            _ => {
                return Err(refuse("no_client_authentication"));
            }
        },
    };
    if !auth.allows(method, client.public_client) {
        burn();
        return Err(refuse("auth_method_not_registered"));
    }
    match (&presented.credential, method) {
        (Credential::Secret { secret, .. }, _) => {
            if !secret::matches(&client.secret_salt, &client.secret_verifier, secret) {
                return Err(refuse("bad_secret"));
            }
        }
        (Credential::Assertion(jwt), _) => {
            client_assertion::verify(state, realm, &client, &parsed, jwt, ctx.token_endpoint, now)
                .await
                .map_err(|reason| match reason {
                    // The replay store did not answer: the service's fault, not the client's.
                    "store_unavailable" => {
                        Refusal::new(OAuthError::store_unavailable(), "store_unavailable")
                    }
                    other => refuse(other),
                })?;
        }
        (Credential::Nothing, AuthMethod::TlsClientAuth) => {
            let chain = ctx.cert.ok_or_else(|| refuse("no_client_certificate"))?;
            let subject = auth
                .tls_subject
                .as_ref()
                .ok_or_else(|| refuse("client_misconfigured"))?;
            mtls::verify_tls_client_auth(&chain.0, &realm.mtls_anchors, subject, now).map_err(
                |e| {
                    tracing::info!(client = %client.client_id, error = %e, "client certificate refused");
                    refuse(match e {
                        mtls::MtlsError::WrongSubject => "certificate_subject_mismatch",
                        mtls::MtlsError::NoTrustedCa => "realm_has_no_client_ca",
                        _ => "certificate_untrusted",
                    })
                },
            )?;
        }
        (Credential::Nothing, AuthMethod::SelfSignedTlsClientAuth) => {
            let chain = ctx.cert.ok_or_else(|| refuse("no_client_certificate"))?;
            mtls::verify_self_signed(&chain.0, &auth.cert_thumbprints)
                .map_err(|_| refuse("certificate_not_registered"))?;
        }
        (Credential::Nothing, _) => {}
    }
    if !client.enabled {
        return Err(refuse("client_disabled"));
    }
    let cert_thumbprint = if method.is_mtls() && auth.bind_tokens {
        ctx.cert.and_then(|c| c.leaf()).map(|l| mtls::thumbprint(l))
    } else {
        None
    };
    Ok(Authenticated {
        client,
        auth: parsed,
        method,
        cert_thumbprint,
    })
}

/// Authentication for any grant: extract, then authenticate (public clients included; the grant
/// decides whether it takes them).
pub async fn from_request(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    params: &Params,
    ctx: Context<'_>,
    now: UnixTime,
) -> Result<Authenticated, Refusal> {
    let presented = extract(headers, params).map_err(|e| {
        let reason = if e.code == super::ErrorCode::InvalidClient {
            "no_client_authentication"
        } else {
            "malformed_client_authentication"
        };
        Refusal::new(e, reason)
    })?;
    authenticate(state, realm, &presented, ctx, now).await
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
        let Credential::Secret { secret, method } = &p.credential else {
            panic!("a secret")
        };
        assert_eq!((p.client_id.as_str(), secret.as_str()), ("a.b", "s:s"));
        assert_eq!(*method, AuthMethod::ClientSecretBasic);
        let p = extract(&HeaderMap::new(), &params("client_id=a&client_secret=s")).expect("post");
        assert!(matches!(
            p.credential,
            Credential::Secret {
                method: AuthMethod::ClientSecretPost,
                ..
            }
        ));
        let both = extract(
            &HeaderMap::new(),
            &params(
                "client_id=a&client_secret=s&client_assertion=x.y.z&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer",
            ),
        );
        assert_eq!(
            both.expect_err("must fail").code,
            super::super::ErrorCode::InvalidRequest
        );
        let wrong_type = extract(
            &HeaderMap::new(),
            &params("client_id=a&client_assertion=x.y.z&client_assertion_type=saml"),
        );
        assert_eq!(
            wrong_type.expect_err("must fail").code,
            super::super::ErrorCode::InvalidRequest
        );
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
