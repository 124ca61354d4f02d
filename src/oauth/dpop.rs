//! DPoP at the token endpoint (RFC 9449 §4–5): a client may send one `DPoP` proof; its key's
//! thumbprint becomes the token's `cnf.jkt` and the token type `DPoP`. The proof's form, key,
//! signature, method, URL and age are checked by the validator crate's `dpop::verify_proof`
//! (shared with resource servers); its `jti` is spent here in the store, so a proof replayed at
//! another node is refused too.
//!
//! Server nonces (RFC 9449 §8, §9), when `dpop_nonce_secs` is set: a proof must carry a nonce
//! this deployment issued for the realm in the current period or the one before. A nonce is the
//! period's number sealed under the KEK (AES-256-GCM, bound to the realm), so every node issues
//! and accepts them without shared state, and nobody without the KEK can make one. A proof
//! without a good nonce is answered `use_dpop_nonce` with a fresh one in `DPoP-Nonce`, before its
//! `jti` is spent; every token response to a request with a proof carries the current nonce.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sigil_validator::dpop::{DpopExpectations, IatWindow, verify_proof};

use super::outcome::Refusal;
use super::{ErrorCode, OAuthError};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::state::AppState;

/// How old a proof may be, and how far ahead of this server's clock.
pub const WINDOW: IatWindow = IatWindow {
    max_age: 60,
    max_future: 5,
};

/// The algorithms a proof may use (discovery's `dpop_signing_alg_values_supported`).
pub const ALGS: &[&str] = sigil_validator::jwk::SUPPORTED_ALGS;

fn refuse(description: &'static str, reason: &'static str) -> Refusal {
    Refusal::new(
        OAuthError::new(ErrorCode::InvalidDpopProof, description),
        reason,
    )
}

/// The thumbprint of the request's proof key, `None` without a proof.
pub async fn check(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    token_endpoint: &str,
    now: UnixTime,
) -> Result<Option<String>, Refusal> {
    let mut proofs = headers.get_all("dpop").iter();
    let Some(proof) = proofs.next() else {
        return Ok(None);
    };
    if proofs.next().is_some() {
        return Err(refuse("exactly one DPoP header", "dpop_multiple_proofs"));
    }
    let proof = proof
        .to_str()
        .map_err(|_| refuse("the DPoP proof is not a compact JWS", "dpop_malformed"))?;
    let expected = DpopExpectations::new("POST", token_endpoint).window(WINDOW);
    let verified = verify_proof(proof, &expected, now).map_err(|e| {
        tracing::debug!(error = ?e, "DPoP proof refused");
        refuse(e.description(), "dpop_proof_invalid")
    })?;
    if !nonce_ok(state, &realm.record.name, verified.nonce.as_deref(), now) {
        return Err(Refusal::new(
            OAuthError::new(ErrorCode::UseDpopNonce, "a fresh DPoP nonce is required"),
            "dpop_nonce_required",
        ));
    }
    match spend(state, realm, &verified.jkt, &verified.jti, verified.iat).await {
        Ok(true) => Ok(Some(verified.jkt)),
        Ok(false) => Err(refuse("the DPoP proof was already used", "dpop_replayed")),
        Err(()) => Err(Refusal::new(
            OAuthError::store_unavailable(),
            "store_unavailable",
        )),
    }
}

/// Spends a proof's `jti` (per key) in the store, shared by every node; `Ok(false)` = replayed.
/// Spent last, so that a proof refused for another reason does not use it up; kept for the
/// whole window in which its `iat` would still be accepted.
async fn spend(
    state: &AppState,
    realm: &LiveRealm,
    jkt: &str,
    jti: &str,
    iat: i64,
) -> Result<bool, ()> {
    let key = B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        format!("dpop\0{}\0{jkt}\0{jti}", realm.record.name).as_bytes(),
    ));
    let claim = crate::store::SingleUse {
        realm: realm.record.name.clone(),
        key,
        expires_at: iat + WINDOW.span(),
    };
    state.audit.claim(claim).await.map_err(|_| ())
}

/// Why a resource request's proof was refused (`None`: the store did not answer).
pub type ResourceRefusal = Option<&'static str>;

/// A DPoP proof at one of Sigil's own resource endpoints (userinfo): exactly one proof for this
/// method and URL, `ath` of this token, made with the key the token is bound to, never seen
/// before.
#[allow(clippy::too_many_arguments)]
pub async fn check_resource(
    state: &AppState,
    realm: &LiveRealm,
    headers: &HeaderMap,
    method: &str,
    url: &str,
    token: &str,
    bound_jkt: &str,
    now: UnixTime,
) -> Result<(), ResourceRefusal> {
    let mut proofs = headers.get_all("dpop").iter();
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err(Some("exactly one DPoP proof is required"));
    };
    let proof = proof.to_str().map_err(|_| Some("malformed DPoP proof"))?;
    let expected = DpopExpectations::new(method, url)
        .access_token(token)
        .window(WINDOW);
    let verified = verify_proof(proof, &expected, now).map_err(|e| Some(e.description()))?;
    if !nonce_ok(state, &realm.record.name, verified.nonce.as_deref(), now) {
        return Err(Some(NONCE_REQUIRED));
    }
    if verified.jkt != bound_jkt {
        return Err(Some("the DPoP proof is not made with the token's key"));
    }
    match spend(state, realm, &verified.jkt, &verified.jti, verified.iat).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Some("the DPoP proof was already used")),
        Err(()) => Err(None),
    }
}

/// The refusal a resource endpoint answers `use_dpop_nonce` (with a fresh nonce) rather than
/// `invalid_token`.
pub const NONCE_REQUIRED: &str = "a fresh DPoP nonce is required";

/// Longest nonce accepted (a sealed period number is 48 characters).
const MAX_NONCE_LEN: usize = 128;

fn nonce_aad(realm: &str) -> Vec<u8> {
    format!("dpop-nonce\0{realm}").into_bytes()
}

/// The nonce to hand out now for `realm` (`DPoP-Nonce`), `None` when nonces are off.
pub fn fresh_nonce(state: &AppState, realm: &str, now: UnixTime) -> Option<String> {
    let period = state.config.dpop_nonce_secs;
    if period == 0 {
        return None;
    }
    let current = now.div_euclid(period as i64);
    let sealed = state
        .kek
        .seal(&nonce_aad(realm), &current.to_be_bytes())
        .ok()?;
    Some(B64.encode(sealed))
}

/// Whether a proof's nonce is acceptable: always when nonces are off; otherwise it must be one
/// this deployment sealed for `realm` in the current period or the one before.
fn nonce_ok(state: &AppState, realm: &str, nonce: Option<&str>, now: UnixTime) -> bool {
    let period = state.config.dpop_nonce_secs;
    if period == 0 {
        return true;
    }
    let Some(nonce) = nonce.filter(|n| n.len() <= MAX_NONCE_LEN) else {
        return false;
    };
    let Ok(sealed) = B64.decode(nonce) else {
        return false;
    };
    let Ok(plain) = state.kek.open(&nonce_aad(realm), &sealed) else {
        return false;
    };
    let Ok(bytes) = <[u8; 8]>::try_from(plain.as_slice()) else {
        return false;
    };
    let issued = i64::from_be_bytes(bytes);
    let current = now.div_euclid(period as i64);
    issued == current || issued == current - 1
}
