//! `private_key_jwt` (RFC 7523 §2.2, §3; OpenID Connect Core §9): the client signs a short-lived
//! JWT with its own private key. Checked here: an asymmetric `alg` that fits one of the client's
//! registered keys (never `none`, never HMAC), `typ` not an access token's, `iss` = `sub` = the
//! client, `aud` only this realm's issuer or its token endpoint, `exp` present and at most five
//! minutes ahead, and `jti` used once across every node until `exp`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;
use sigil_validator::jwk::{JwsError, verify_jws_compact};

use crate::clients::auth::ParsedAuth;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;
use crate::store::ClientRecord;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest lifetime an assertion may claim (`exp` - now).
pub const MAX_LIFETIME_SECS: i64 = 300;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: i64 = 30;

/// The unverified `iss` of an assertion, only to find the client's keys.
pub fn peek_issuer(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    if payload.len() > sigil_validator::jwk::MAX_JWS_BYTES {
        return None;
    }
    let raw = B64.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&raw).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Verifies the assertion for `client`; `Err` is the audit reason.
pub async fn verify(
    state: &AppState,
    realm: &LiveRealm,
    client: &ClientRecord,
    parsed: &ParsedAuth,
    jwt: &str,
    token_endpoint: &str,
    now: UnixTime,
) -> Result<(), &'static str> {
    let kid = peek_kid(jwt);
    let auth = &parsed.auth;
    let keys = match (&auth.jwks, &auth.jwks_uri) {
        (Some(_), _) => parsed.inline_keys.clone(),
        (None, Some(uri)) => state
            .client_keys
            .fetch(uri, kid.as_deref(), now)
            .await
            .map_err(|e| {
                tracing::warn!(client = %client.client_id, error = %e, "client keys unavailable");
                "client_keys_unavailable"
            })?,
        (None, None) => return Err("client_misconfigured"),
    };
    let (verified, _key) = verify_jws_compact(jwt, &keys).map_err(|e| match e {
        JwsError::UnsupportedAlgorithm => "assertion_bad_alg",
        JwsError::UnknownKey => "assertion_unknown_key",
        JwsError::BadSignature => "assertion_bad_signature",
        _ => "assertion_malformed",
    })?;
    if let Some(typ) = verified.header.get("typ") {
        let typ = typ
            .as_str()
            .ok_or("assertion_bad_typ")?
            .to_ascii_lowercase();
        let typ = typ.strip_prefix("application/").unwrap_or(&typ);
        if matches!(typ, "at+jwt" | "dpop+jwt" | "logout+jwt") {
            return Err("assertion_bad_typ");
        }
    }
    let claims = &verified.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let int = |name: &str| claims.get(name).and_then(Value::as_i64);
    if text("iss") != Some(client.client_id.as_str())
        || text("sub") != Some(client.client_id.as_str())
    {
        return Err("assertion_wrong_issuer");
    }
    if !audience_ok(claims.get("aud"), &realm.issuer, token_endpoint) {
        return Err("assertion_wrong_audience");
    }
    let exp = int("exp").ok_or("assertion_no_exp")?;
    if exp + LEEWAY_SECS <= now {
        return Err("assertion_expired");
    }
    if exp > now + MAX_LIFETIME_SECS + LEEWAY_SECS {
        return Err("assertion_lifetime_too_long");
    }
    if claims.contains_key("nbf") && int("nbf").is_none_or(|nbf| nbf > now + LEEWAY_SECS) {
        return Err("assertion_not_yet_valid");
    }
    if claims.contains_key("iat") && int("iat").is_none_or(|iat| iat > now + LEEWAY_SECS) {
        return Err("assertion_issued_in_future");
    }
    let jti = text("jti").ok_or("assertion_no_jti")?;
    if jti.is_empty() || jti.len() > 256 {
        return Err("assertion_bad_jti");
    }
    // Last, so that an assertion refused for another reason does not use up its jti.
    let key = replay_key(&realm.record.name, &client.client_id, jti);
    let claim = crate::store::SingleUse {
        realm: realm.record.name.clone(),
        key,
        expires_at: exp + LEEWAY_SECS,
    };
    match state.audit.claim(claim).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("assertion_replayed"),
        Err(_) => Err("store_unavailable"),
    }
}

fn peek_kid(jwt: &str) -> Option<String> {
    let header = jwt.split('.').next()?;
    if header.len() > 4096 {
        return None;
    }
    let raw = B64.decode(header).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v.get("kid")?.as_str().map(str::to_owned)
}

/// RFC 7523 §3: the audience identifies this server: the issuer or the token endpoint URL. A
/// list must name nothing else (an assertion meant for several servers could be replayed at the
/// others).
fn audience_ok(aud: Option<&Value>, issuer: &str, token_endpoint: &str) -> bool {
    let ok = |a: &str| a == issuer || a == token_endpoint;
    match aud {
        Some(Value::String(a)) => ok(a),
        Some(Value::Array(list)) => {
            !list.is_empty() && list.iter().all(|a| a.as_str().is_some_and(ok))
        }
        _ => false,
    }
}

/// The single-use key of an assertion's `jti` (hashed: the store sees no client text).
pub fn replay_key(realm: &str, client_id: &str, jti: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("client-assertion\0{realm}\0{client_id}\0{jti}").as_bytes(),
    );
    B64.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audience_is_this_server_only() {
        let iss = "https://id.example/realms/a";
        let te = "https://id.example/realms/a/oauth2/token";
        assert!(audience_ok(Some(&json!(iss)), iss, te));
        assert!(audience_ok(Some(&json!(te)), iss, te));
        assert!(audience_ok(Some(&json!([iss, te])), iss, te));
        assert!(!audience_ok(
            Some(&json!("https://id.example/realms/b")),
            iss,
            te
        ));
        assert!(!audience_ok(
            Some(&json!([iss, "https://other.example"])),
            iss,
            te
        ));
        assert!(!audience_ok(Some(&json!([])), iss, te));
        assert!(!audience_ok(None, iss, te));
    }
}
