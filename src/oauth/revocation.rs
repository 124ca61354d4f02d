//! `POST /realms/{realm}/oauth2/revoke` (RFC 7009), for a client authenticated by its registered
//! method (a public client names itself). An access token's `jti` is kept as revoked until the
//! token's `exp`; a refresh token revokes its whole family (and the codes of that family). Only the
//! token's own client may revoke it: anyone else's, an unknown or expired token answers 200 with no
//! effect (RFC 7009 §2.2), and the attempt is audited.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::OAuthError;
use super::caller::{self, Caller};
use super::outcome::Refusal;
use crate::audit::AuditDraft;
use crate::identity::token_hash;
use crate::oidc::userinfo::verify_own;
use crate::state::AppState;
use crate::tls::ConnTls;

/// The audit kind of a refused revocation request.
const REFUSED: &str = "token.revoke_refused";

/// The `flows` key under which a revoked access token's `jti` is kept: per realm, apart from every
/// other kind of flow.
pub fn revoked_jti_key(realm: &str, jti: &str) -> String {
    token_hash(&format!("revoked-access-token\n{realm}\n{jti}"))
}

pub async fn revoke(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    conn: Option<Extension<ConnTls>>,
    crate::oidc::RealmPath(realm_name): crate::oidc::RealmPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let c = match caller::authenticate(
        &state,
        &realm_name,
        peer,
        conn,
        &headers,
        caller::Input::Body(body),
        REFUSED,
    )
    .await
    {
        Ok(c) => c,
        Err(res) => return res,
    };
    let Some(token) = c.params.get("token").filter(|t| !t.is_empty()) else {
        let refusal = Refusal::new(
            OAuthError::invalid_request("token is required"),
            "missing_token",
        );
        return c.refuse(&state, refusal).await;
    };
    // The hint only orders the lookups (RFC 7009 §2.1): an access token is a signed JWT of this
    // realm, a refresh token a stored hash.
    let outcome = match revoke_access_token(&state, &c, token).await {
        Ok(Some(done)) => Ok(done),
        Ok(None) => revoke_refresh_token(&state, &c, token).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(done) => {
            tracing::debug!(?done, client = %c.client.client.client_id, "revocation");
            let mut res = StatusCode::OK.into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation failed");
            OAuthError::store_unavailable().into_response()
        }
    }
}

/// What a revocation request did (all answered 200).
#[derive(Debug)]
enum Revoked {
    Access,
    Refresh,
    /// Another client's token: nothing changed.
    Foreign,
    /// Not a live token of this realm.
    Unknown,
}

/// `None` when `token` is not a live access token of this realm.
async fn revoke_access_token(
    state: &AppState,
    c: &Caller,
    token: &str,
) -> Result<Option<Revoked>, RevokeError> {
    let Some(claims) = verify_own(&c.realm, token, c.now) else {
        return Ok(None);
    };
    let (Some(jti), Some(exp)) = (
        claims.get("jti").and_then(Value::as_str),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Ok(None);
    };
    let name = &c.realm.record.name;
    let me = &c.client.client.client_id;
    let owner = claims.get("client_id").and_then(Value::as_str);
    if owner != Some(me.as_str()) {
        ignored(state, c, "foreign_access_token").await?;
        return Ok(Some(Revoked::Foreign));
    }
    let mut draft = AuditDraft::new(c.now, Some(name), "token.revoked", me).detail(json!({
        "token_type": "access_token",
        "jti": jti,
        "exp": exp,
    }));
    if let Some(sub) = claims.get("sub").and_then(Value::as_str) {
        draft = draft.subject(sub);
    }
    state
        .store
        .revoke_access_token(&revoked_jti_key(name, jti), jti, name, exp, c.now, &[draft])
        .await?;
    Ok(Some(Revoked::Access))
}

async fn revoke_refresh_token(
    state: &AppState,
    c: &Caller,
    token: &str,
) -> Result<Revoked, RevokeError> {
    let name = &c.realm.record.name;
    let me = &c.client.client.client_id;
    let Some(record) = state.store.refresh_token(&token_hash(token), name).await? else {
        ignored(state, c, "unknown_token").await?;
        return Ok(Revoked::Unknown);
    };
    if &record.client_id != me {
        ignored(state, c, "foreign_refresh_token").await?;
        return Ok(Revoked::Foreign);
    }
    let draft = AuditDraft::new(c.now, Some(name), "token.revoked", me)
        .subject(&record.user_id)
        .detail(json!({"token_type": "refresh_token", "action": "family_revoked"}));
    state
        .store
        .revoke_family(&record.family, None, c.now, &[draft])
        .await?;
    Ok(Revoked::Refresh)
}

/// A revocation without effect, audited with why (never the token).
async fn ignored(state: &AppState, c: &Caller, reason: &'static str) -> Result<(), RevokeError> {
    let draft = AuditDraft::new(
        c.now,
        Some(&c.realm.record.name),
        "token.revoke_ignored",
        &c.client.client.client_id,
    )
    .detail(json!({ "reason": reason }));
    state
        .audit
        .record(draft)
        .await
        .map(|_| ())
        .map_err(|_| RevokeError::Audit)
}

#[derive(Debug, thiserror::Error)]
enum RevokeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the audit log could not be written")]
    Audit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_keys_are_per_realm_and_never_the_jti_itself() {
        let a = revoked_jti_key("retail", "abc");
        assert_ne!(a, revoked_jti_key("staff", "abc"));
        assert_ne!(a, revoked_jti_key("retail", "abd"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("abc"));
    }
}
