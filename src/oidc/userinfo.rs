//! `GET|POST /realms/{realm}/oauth2/userinfo`: the signed-in user's claims for a valid user
//! access token whose session is still alive (a global sign-out ends it here too).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Map, Value, json};

use super::RealmPath;
use crate::directory::LiveRealm;
use crate::identity::sessions as session;
use crate::state::AppState;
use crate::tls::{ConnTls, Listener};

fn unauthorized(description: &str) -> Response {
    refusal("Bearer", "invalid_token", description)
}

/// 401 with an RFC 6750 or RFC 9449 challenge (`scheme` `Bearer` or `DPoP`).
fn refusal(scheme: &str, error: &str, description: &str) -> Response {
    let mut res = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    let algs = if scheme == "DPoP" {
        format!(r#", algs="{}""#, crate::oauth::dpop::ALGS.join(" "))
    } else {
        String::new()
    };
    let challenge = format!(r#"{scheme} error="{error}", error_description="{description}"{algs}"#);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Verifies one of this realm's own access tokens: signature by a published key (algorithm from
/// the key), issuer, expiry, `token_use: access`.
pub fn verify_own(realm: &LiveRealm, token: &str, now: i64) -> Option<Map<String, Value>> {
    let claims = verify_signed_by_realm(realm, token, "at+jwt", "access")?;
    claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|e| e > now)
        .then_some(claims)
}

/// A JWT this realm signed: at most 16 KiB, a published key's signature (the algorithm from the
/// key, never the header), header `typ`, this issuer and `token_use`. Expiry is the caller's
/// rule (an ID token hint may have expired). Its claims, or `None`.
pub fn verify_signed_by_realm(
    realm: &LiveRealm,
    token: &str,
    typ: &str,
    token_use: &str,
) -> Option<Map<String, Value>> {
    if token.len() > 16 * 1024 {
        return None;
    }
    let (signed, sig) = token.rsplit_once('.')?;
    let (header_b64, payload_b64) = signed.split_once('.')?;
    let header: Value = serde_json::from_slice(&B64.decode(header_b64).ok()?).ok()?;
    let key = realm.jwks.keys.get(header["kid"].as_str()?)?;
    if header["alg"].as_str() != Some(key.alg()) || header["typ"].as_str() != Some(typ) {
        return None;
    }
    if !key.verify(signed.as_bytes(), &B64.decode(sig).ok()?) {
        return None;
    }
    let claims: Map<String, Value> = serde_json::from_slice(&B64.decode(payload_b64).ok()?).ok()?;
    let ok = claims.get("iss").and_then(Value::as_str) == Some(realm.issuer.as_str())
        && claims.get("token_use").and_then(Value::as_str) == Some(token_use);
    ok.then_some(claims)
}

pub async fn userinfo(
    State(state): State<AppState>,
    RealmPath(name): RealmPath,
    method: axum::http::Method,
    conn: Option<axum::Extension<ConnTls>>,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let realm = match state.directory.realm(&name, now).await {
        Ok(Some(r)) => r,
        _ => return unauthorized("unknown realm"),
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // RFC 9110 §11.1: the scheme is case-insensitive.
            let (scheme, token) = v.split_once(' ')?;
            if scheme.eq_ignore_ascii_case("bearer") {
                Some((false, token))
            } else if scheme.eq_ignore_ascii_case("dpop") {
                Some((true, token))
            } else {
                None
            }
        });
    let Some((dpop_scheme, token)) = presented else {
        // RFC 6750 §3.1: a request without credentials gets a challenge with no error code.
        let mut res = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_request", "error_description": "a bearer token is required"})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!(r#"Bearer realm="{}""#, realm.issuer)) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return res;
    };
    let token = token.trim();
    let Some(claims) = verify_own(&realm, token, now) else {
        return unauthorized("invalid token");
    };
    // A bound token works only with what it is bound to (RFC 8705 §3, RFC 9449 §7).
    let cnf = claims.get("cnf");
    let jkt = cnf.and_then(|c| c.get("jkt")).and_then(Value::as_str);
    let x5t = cnf.and_then(|c| c.get("x5t#S256")).and_then(Value::as_str);
    let conn = conn.map(|axum::Extension(c)| c);
    match (jkt, dpop_scheme) {
        (Some(_), false) => {
            return refusal(
                "DPoP",
                "invalid_token",
                "a DPoP-bound token needs the DPoP scheme",
            );
        }
        (None, true) => return unauthorized("the token is not DPoP-bound"),
        (Some(bound), true) => {
            let url = match (&conn, &state.mtls_base_url) {
                (Some(c), Some(base)) if c.listener == Listener::MutualTls => {
                    format!("{base}/realms/{name}{}", super::USERINFO_PATH)
                }
                _ => format!("{}{}", realm.issuer, super::USERINFO_PATH),
            };
            match crate::oauth::dpop::check_resource(
                &state,
                &realm,
                &headers,
                method.as_str(),
                &url,
                token,
                bound,
                now,
            )
            .await
            {
                Ok(()) => {}
                Err(Some(crate::oauth::dpop::NONCE_REQUIRED)) => {
                    // RFC 9449 §9: 401 `use_dpop_nonce` with the nonce to use.
                    let mut res =
                        refusal("DPoP", "use_dpop_nonce", crate::oauth::dpop::NONCE_REQUIRED);
                    if let Some(nonce) = crate::oauth::dpop::fresh_nonce(&state, &name, now)
                        && let Ok(v) = HeaderValue::from_str(&nonce)
                    {
                        res.headers_mut().insert("dpop-nonce", v);
                    }
                    return res;
                }
                Err(Some(why)) => return refusal("DPoP", "invalid_dpop_proof", why),
                Err(None) => return crate::oauth::OAuthError::store_unavailable().into_response(),
            }
        }
        (None, false) => {}
    }
    if let Some(want) = x5t {
        let seen = conn
            .as_ref()
            .and_then(|c| c.client_chain.as_ref())
            .and_then(|c| c.leaf())
            .map(|l| crate::clients::mtls::thumbprint(l));
        let same = seen
            .is_some_and(|s| subtle::ConstantTimeEq::ct_eq(s.as_bytes(), want.as_bytes()).into());
        if !same {
            return unauthorized("the token is bound to another client certificate");
        }
    }
    let (Some(sub), Some(sid)) = (
        claims.get("sub").and_then(Value::as_str),
        claims.get("sid").and_then(Value::as_str),
    ) else {
        return unauthorized("not a user token");
    };
    // Revoked (RFC 7009) or its client disabled; the user and the session are checked below, as
    // introspection checks them.
    match crate::oauth::introspection::token_not_revoked(&state, &realm, &claims, now).await {
        Ok(true) => {}
        Ok(false) => return unauthorized("the token is no longer valid"),
        Err(e) => {
            tracing::error!(error = %e, "userinfo: token state unavailable");
            return crate::oauth::OAuthError::store_unavailable().into_response();
        }
    }
    let user = match state.store.user_by_id(&name, sub).await {
        Ok(Some(user)) => user,
        Ok(None) => return unauthorized("unknown user"),
        Err(e) => {
            tracing::error!(error = %e, "userinfo: user lookup failed");
            return crate::oauth::OAuthError::store_unavailable().into_response();
        }
    };
    let Some(settings) = realm.login() else {
        return unauthorized("sign-in is unavailable in this realm");
    };
    // The same idle and absolute timeouts as the browser and refresh paths.
    let live = match state.store.session_by_sid(&name, sid).await {
        Ok(Some(s)) => s.user_id == user.id && session::is_live(settings, &s, now),
        Ok(None) => false,
        Err(e) => {
            tracing::error!(error = %e, "userinfo: session lookup failed");
            return crate::oauth::OAuthError::store_unavailable().into_response();
        }
    };
    if !user.enabled || !live {
        return unauthorized("the session has ended");
    }
    let mut out = Map::new();
    out.insert("sub".into(), json!(user.id));
    out.insert("preferred_username".into(), json!(user.username));
    if let Some(g) = claims.get(&settings.groups_claim) {
        out.insert(settings.groups_claim.clone(), g.clone());
    }
    for claim in settings.attribute_claims.values() {
        if let Some(v) = claims.get(claim) {
            out.insert(claim.clone(), v.clone());
        }
    }
    let mut res = axum::Json(Value::Object(out)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
