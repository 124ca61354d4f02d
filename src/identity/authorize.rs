//! The authorization request (RFC 6749 §4.1 with PKCE, S256 only) and what it leads to: a
//! pending sign-in, or, with a usable session, a code at once.

use serde::{Deserialize, Serialize};

use super::ACR_PASSKEY;
use crate::clients::scope;
use crate::clock::UnixTime;
use crate::store::ClientRecord;

/// Scopes any sign-in client may ask for.
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "offline_access"];
pub const FLOW_TTL: i64 = 600;
pub const CODE_TTL: i64 = 60;

/// The query of `GET /authorize`.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub acr_values: Option<String>,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code must be redeemed with.
    pub dpop_jkt: Option<String>,
}

/// A validated authorization request, kept server-side while the user signs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthz {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub force_login: bool,
    /// `prompt=none`: answer at once, with an error if the user would have to interact.
    #[serde(default)]
    pub no_prompt: bool,
    /// `prompt=consent`, or a public client: the user confirms the app before a code is issued.
    #[serde(default)]
    pub force_consent: bool,
    #[serde(default)]
    pub public_client: bool,
    /// The app's name as the pages show it (its registered name, else its id).
    #[serde(default)]
    pub client_name: Option<String>,
    pub max_age: Option<i64>,
    pub require_passkey: bool,
    pub csrf: String,
    pub created_at: UnixTime,
    /// The DPoP key (RFC 7638 thumbprint) the request bound its code to (`dpop_jkt`).
    #[serde(default)]
    pub dpop_jkt: Option<String>,
}

/// What an authorization code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeData {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub user_id: String,
    pub sid: String,
    pub auth_time: UnixTime,
    pub amr: Vec<String>,
    pub acr: String,
    /// Links the code to the refresh tokens it leads to, so a reused code revokes them.
    pub family: String,
    /// Only a token request with a DPoP proof made with this key may redeem the code.
    #[serde(default)]
    pub dpop_jkt: Option<String>,
}

/// Failures before the redirect URI is known to be the client's: shown on a page, never redirected.
#[derive(Debug, PartialEq, Eq)]
pub enum Untrusted {
    UnknownClient,
    BadRedirectUri,
}

/// Failures reported to the client by redirect (RFC 6749 §4.1.2.1).
#[derive(Debug, PartialEq, Eq)]
pub struct Redirected {
    pub error: &'static str,
    pub description: &'static str,
}

fn redirect_error(error: &'static str, description: &'static str) -> Redirected {
    Redirected { error, description }
}

/// Checks the client and its exact redirect URI first (nothing may redirect before that), then
/// the rest.
pub fn validate(
    q: &AuthorizeQuery,
    client: Option<&ClientRecord>,
    csrf: String,
    now: UnixTime,
) -> Result<Result<PendingAuthz, (String, Redirected)>, Untrusted> {
    let client = client
        .filter(|c| c.enabled)
        .ok_or(Untrusted::UnknownClient)?;
    let redirect_uri = q.redirect_uri.as_deref().ok_or(Untrusted::BadRedirectUri)?;
    if !client.redirect_uris().iter().any(|r| r == redirect_uri) {
        return Err(Untrusted::BadRedirectUri);
    }
    let fail = |r: Redirected| Ok(Err((redirect_uri.to_owned(), r)));
    if q.response_type.as_deref() != Some("code") {
        return fail(redirect_error(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    if !client
        .grant_types
        .split(' ')
        .any(|g| g == "authorization_code")
    {
        return fail(redirect_error(
            "unauthorized_client",
            "this client may not sign users in",
        ));
    }
    // A SHA-256 digest in base64url: 43 characters of its alphabet.
    let digest_b64 = |v: &str| {
        v.len() == 43
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if q.dpop_jkt.as_deref().is_some_and(|j| !digest_b64(j)) {
        return fail(redirect_error("invalid_request", "malformed dpop_jkt"));
    }
    match (
        q.code_challenge.as_deref(),
        q.code_challenge_method.as_deref(),
    ) {
        (Some(c), Some("S256")) if digest_b64(c) => {}
        (Some(_), Some("S256")) => {
            return fail(redirect_error(
                "invalid_request",
                "malformed code_challenge",
            ));
        }
        (_, Some("plain")) => {
            return fail(redirect_error(
                "invalid_request",
                "PKCE method plain is not allowed; use S256",
            ));
        }
        _ => {
            return fail(redirect_error(
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            ));
        }
    }
    let requested = q.scope.as_deref().unwrap_or("openid");
    let Ok(parsed) = scope::parse(requested) else {
        return fail(redirect_error("invalid_scope", "malformed scope"));
    };
    let allowed: Vec<&str> = client.allowed_scopes.split(' ').collect();
    if parsed
        .iter()
        .any(|s| !OIDC_SCOPES.contains(s) && !allowed.contains(s))
    {
        return fail(redirect_error(
            "invalid_scope",
            "a requested scope is not allowed for this client",
        ));
    }
    let bounded = |v: &Option<String>, n: usize| v.as_ref().is_none_or(|s| s.len() <= n);
    if !bounded(&q.state, 512) || !bounded(&q.nonce, 512) {
        return fail(redirect_error("invalid_request", "state or nonce too long"));
    }
    let max_age = match q.max_age.as_deref() {
        None => None,
        Some(m) => match m.parse::<i64>() {
            Ok(v) if v >= 0 => Some(v),
            _ => {
                return fail(redirect_error(
                    "invalid_request",
                    "max_age must be a non-negative integer",
                ));
            }
        },
    };
    let prompts: Vec<&str> = q
        .prompt
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|p| !p.is_empty())
        .collect();
    if prompts
        .iter()
        .any(|p| !matches!(*p, "none" | "login" | "consent" | "select_account"))
    {
        return fail(redirect_error(
            "invalid_request",
            "unsupported prompt value",
        ));
    }
    let no_prompt = prompts.contains(&"none");
    if no_prompt && prompts.len() > 1 {
        return fail(redirect_error(
            "invalid_request",
            "prompt=none cannot be combined with another value",
        ));
    }
    Ok(Ok(PendingAuthz {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope: parsed.join(" "),
        state: q.state.clone(),
        nonce: q.nonce.clone(),
        code_challenge: q.code_challenge.clone().unwrap_or_default(),
        force_login: prompts.contains(&"login"),
        no_prompt,
        force_consent: prompts.contains(&"consent"),
        public_client: client.public_client,
        client_name: client.client_name.clone(),
        max_age,
        require_passkey: q
            .acr_values
            .as_deref()
            .is_some_and(|a| a.split(' ').any(|v| v == ACR_PASSKEY)),
        csrf,
        created_at: now,
        dpop_jkt: q.dpop_jkt.clone(),
    }))
}

/// `redirect_uri` with the code (or error), `state` and `iss` (RFC 9207) appended.
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => redirect_uri.to_owned(),
    }
}

/// PKCE: `BASE64URL(SHA256(verifier)) == challenge`, with the verifier's RFC 7636 shape enforced.
pub fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let shape = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    shape
        && computed.len() == challenge.len()
        && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

impl PendingAuthz {
    /// The app's name for the pages.
    pub fn app_name(&self) -> &str {
        self.client_name.as_deref().unwrap_or(&self.client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_example() {
        assert!(pkce_ok(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_ok(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_ok(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn redirects_keep_the_clients_own_query() {
        assert_eq!(
            redirect_with(
                "https://app.example/cb?x=1",
                &[("code", "abc"), ("state", "s t")]
            ),
            "https://app.example/cb?x=1&code=abc&state=s+t"
        );
    }
}
