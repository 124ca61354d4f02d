//! How a client authenticates at the token endpoint, and whether its tokens are bound to the
//! certificate or key it proves (RFC 8705, RFC 7523, RFC 9449). Stored per client as JSON; a
//! client with none stored uses a secret (`client_secret_basic` or `client_secret_post`), as every
//! client did before these methods existed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The token endpoint authentication methods (RFC 7591 §2 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    TlsClientAuth,
    SelfSignedTlsClientAuth,
    PrivateKeyJwt,
    /// A public client: no credential, PKCE (and DPoP when required).
    None,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 6] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::TlsClientAuth,
        AuthMethod::SelfSignedTlsClientAuth,
        AuthMethod::PrivateKeyJwt,
        AuthMethod::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<AuthMethod> {
        AuthMethod::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// Methods that prove a client certificate (their tokens are certificate-bound).
    pub fn is_mtls(self) -> bool {
        matches!(
            self,
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
        )
    }
}

/// The registered identity of a `tls_client_auth` client's certificate: exactly one
/// (RFC 8705 §2.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum TlsSubject {
    /// `tls_client_auth_subject_dn`, RFC 4514 string (`CN=ach,O=Bank,C=GB`).
    Dn(String),
    SanDns(String),
    /// A URI SAN, such as a SPIFFE ID.
    SanUri(String),
    SanIp(std::net::IpAddr),
    SanEmail(String),
}

/// A client's authentication and binding settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// `None`: a secret, with Basic or in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<AuthMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_subject: Option<TlsSubject>,
    /// SHA-256 thumbprints (base64url) of the certificates a `self_signed_tls_client_auth`
    /// client may present; several during a rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_thumbprints: Vec<String>,
    /// A `private_key_jwt` client's public keys, inline…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// …or where to fetch them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Certificate-bound access tokens for a client that authenticated with mTLS.
    #[serde(default = "yes")]
    pub bind_tokens: bool,
    /// Refuse a token request without a DPoP proof.
    #[serde(default)]
    pub require_dpop: bool,
}

fn yes() -> bool {
    true
}

impl Default for ClientAuth {
    fn default() -> Self {
        ClientAuth {
            method: None,
            tls_subject: None,
            cert_thumbprints: Vec::new(),
            jwks: None,
            jwks_uri: None,
            bind_tokens: true,
            require_dpop: false,
        }
    }
}

/// A client's stored settings, parsed: with a `private_key_jwt` client's inline keys ready to
/// verify with.
#[derive(Debug)]
pub struct ParsedAuth {
    pub auth: ClientAuth,
    /// The usable keys of the inline JWKS (empty without one).
    pub inline_keys: Arc<Vec<sigil_validator::jwk::PublicJwk>>,
}

impl ParsedAuth {
    pub fn parse(column: Option<&str>) -> Result<ParsedAuth, String> {
        let auth = ClientAuth::parse_stored(column).map_err(|e| e.to_string())?;
        let inline_keys = Arc::new(
            auth.jwks
                .as_ref()
                .map(crate::clients::keys::parse_client_jwks)
                .unwrap_or_default(),
        );
        Ok(ParsedAuth { auth, inline_keys })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthConfigError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> AuthConfigError {
    AuthConfigError::Invalid(m.into())
}

impl ClientAuth {
    /// The stored form (`None` = a client secret and nothing else set: the column stays NULL).
    pub fn parse_stored(column: Option<&str>) -> Result<ClientAuth, AuthConfigError> {
        match column {
            None | Some("") => Ok(ClientAuth::default()),
            Some(json) => serde_json::from_str(json)
                .map_err(|e| invalid(format!("stored authentication settings: {e}"))),
        }
    }

    pub fn to_stored(&self) -> Option<String> {
        if *self == ClientAuth::default() {
            None
        } else {
            serde_json::to_string(self).ok()
        }
    }

    /// Whether a request that authenticated with `used` fits the registered method.
    pub fn allows(&self, used: AuthMethod, public_client: bool) -> bool {
        match self.method {
            None if public_client => used == AuthMethod::None,
            None => matches!(
                used,
                AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
            ),
            Some(m) => m == used,
        }
    }

    /// The method names a client's settings let it use (for `client show`).
    pub fn methods(&self, public_client: bool) -> Vec<&'static str> {
        match self.method {
            None if public_client => vec!["none"],
            None => vec!["client_secret_basic", "client_secret_post"],
            Some(m) => vec![m.as_str()],
        }
    }

    /// Checks that the settings fit together: each method has exactly what it needs.
    pub fn validate(&self, public_client: bool) -> Result<(), AuthConfigError> {
        let method = self.method;
        if public_client && !matches!(method, None | Some(AuthMethod::None)) {
            return Err(invalid("a public client has no credential: --auth none"));
        }
        if !public_client && method == Some(AuthMethod::None) {
            return Err(invalid("--auth none is for public clients (--public)"));
        }
        let has_subject = self.tls_subject.is_some();
        let has_thumbprints = !self.cert_thumbprints.is_empty();
        let has_keys = self.jwks.is_some() || self.jwks_uri.is_some();
        match method {
            Some(AuthMethod::TlsClientAuth) if !has_subject => {
                return Err(invalid(
                    "tls_client_auth needs exactly one of --tls-subject-dn, --tls-san-dns, --tls-san-uri, --tls-san-ip, --tls-san-email",
                ));
            }
            Some(AuthMethod::SelfSignedTlsClientAuth) if !has_thumbprints => {
                return Err(invalid(
                    "self_signed_tls_client_auth needs --cert-file (one or more)",
                ));
            }
            Some(AuthMethod::PrivateKeyJwt) if self.jwks.is_some() == self.jwks_uri.is_some() => {
                return Err(invalid(
                    "private_key_jwt needs exactly one of --jwks-file and --jwks-uri",
                ));
            }
            _ => {}
        }
        if has_subject && method != Some(AuthMethod::TlsClientAuth) {
            return Err(invalid("a certificate subject is only for tls_client_auth"));
        }
        if has_thumbprints && method != Some(AuthMethod::SelfSignedTlsClientAuth) {
            return Err(invalid(
                "certificate files are only for self_signed_tls_client_auth",
            ));
        }
        if has_keys && method != Some(AuthMethod::PrivateKeyJwt) {
            return Err(invalid("a JWKS is only for private_key_jwt"));
        }
        if let Some(TlsSubject::Dn(dn)) = &self.tls_subject
            && crate::clients::mtls::parse_dn(dn).is_none()
        {
            return Err(invalid(format!(
                "{dn:?} is not a distinguished name (CN=...,O=...)"
            )));
        }
        if let Some(TlsSubject::SanDns(v) | TlsSubject::SanUri(v) | TlsSubject::SanEmail(v)) =
            &self.tls_subject
            && (v.is_empty() || v.len() > 512 || v.chars().any(|c| c.is_control()))
        {
            return Err(invalid("the certificate name is empty or malformed"));
        }
        if let Some(uri) = &self.jwks_uri {
            let ok = url::Url::parse(uri).is_ok_and(|u| {
                // No credentials in it: the URI is shown by `client show` and audited.
                let no_credentials = u.username().is_empty() && u.password().is_none();
                no_credentials
                    && (u.scheme() == "https"
                        || (u.scheme() == "http"
                            && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))))
            });
            if !ok || uri.len() > 512 {
                return Err(invalid(
                    "--jwks-uri must be an https URL (http only on loopback) without credentials",
                ));
            }
        }
        if let Some(jwks) = &self.jwks {
            let parsed = sigil_validator::jwk::parse_jwk_set(jwks)
                .map_err(|e| invalid(format!("the JWKS: {e}")))?;
            if parsed.is_empty() {
                return Err(invalid(
                    "the JWKS has no usable public signing key (EC P-256, RSA or Ed25519)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_defaults_to_null() {
        assert_eq!(ClientAuth::default().to_stored(), None);
        let a = ClientAuth {
            method: Some(AuthMethod::TlsClientAuth),
            tls_subject: Some(TlsSubject::SanUri(
                "spiffe://bank.example/ns/payments/sa/ach".into(),
            )),
            ..ClientAuth::default()
        };
        let stored = a.to_stored().expect("stored");
        assert_eq!(ClientAuth::parse_stored(Some(&stored)).expect("parse"), a);
        assert!(a.validate(false).is_ok());
        assert!(a.allows(AuthMethod::TlsClientAuth, false));
        assert!(!a.allows(AuthMethod::ClientSecretBasic, false));
        let secret = ClientAuth::default();
        assert!(secret.allows(AuthMethod::ClientSecretPost, false));
        assert!(!secret.allows(AuthMethod::TlsClientAuth, false));
        assert!(secret.allows(AuthMethod::None, true));
    }

    #[test]
    fn each_method_needs_its_own_material() {
        let tls = ClientAuth {
            method: Some(AuthMethod::TlsClientAuth),
            ..ClientAuth::default()
        };
        assert!(tls.validate(false).is_err());
        let pk = ClientAuth {
            method: Some(AuthMethod::PrivateKeyJwt),
            jwks_uri: Some("http://evil.example/jwks".into()),
            ..ClientAuth::default()
        };
        assert!(pk.validate(false).is_err());
        let with_credentials = ClientAuth {
            method: Some(AuthMethod::PrivateKeyJwt),
            jwks_uri: Some("https://user:pass@keys.example/jwks".into()),
            ..ClientAuth::default()
        };
        assert!(with_credentials.validate(false).is_err());
        let stray = ClientAuth {
            method: Some(AuthMethod::ClientSecretBasic),
            cert_thumbprints: vec!["x".into()],
            ..ClientAuth::default()
        };
        assert!(stray.validate(false).is_err());
    }
}
