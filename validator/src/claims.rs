//! The claims of a verified access token.

use serde::Deserialize;

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// `cnf`: what the token is bound to. A `cnf` with neither member is a binding this crate
/// cannot check, and such a token is refused.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    /// base64url SHA-256 of the client certificate's DER (mTLS, RFC 8705 §3.1).
    #[serde(rename = "x5t#S256", default)]
    pub x5t_s256: Option<String>,
    /// RFC 7638 thumbprint of the client's DPoP key (RFC 9449 §6.1).
    #[serde(default)]
    pub jkt: Option<String>,
    /// Other confirmation members (`jwk`, `kid`, ...), which are not enforced.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A verified token's claims. Unknown claims are kept in `extra`.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_use: Option<String>,
    /// The confirmation claim of a sender-constrained token (RFC 7800), if any.
    #[serde(default)]
    pub cnf: Option<Confirmation>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }
}
