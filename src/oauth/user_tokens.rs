//! What the grants that carry a signed-in user share: the facts a refresh token carries forward,
//! the live-user-and-session rule, reuse revocation, and minting access, ID and refresh tokens
//! (the user's groups, mapped attributes, `auth_time`, `amr`, `acr`, `sid`; an ID token when
//! `openid` was asked for).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::outcome::{Granted, Refusal};
use super::token::{AccessSpec, Cnf, mint_access_token};
use super::{ErrorCode, OAuthError};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::authorize::OIDC_SCOPES;
use crate::identity::sessions;
use crate::identity::settings::LoginSettings;
use crate::keys::Alg;
use crate::state::AppState;
use crate::store::ClientRecord;
use crate::store::login::{SessionRecord, UserRecord};

/// What a refresh token carries forward.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RefreshData {
    pub scope: String,
    pub sid: String,
    pub auth_time: UnixTime,
    pub amr: Vec<String>,
    pub acr: String,
    /// A public client's refresh tokens are bound to the DPoP key it first used (RFC 9449 §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

pub(super) fn invalid_grant(description: &'static str, reason: &'static str) -> Refusal {
    Refusal::new(
        OAuthError::new(ErrorCode::InvalidGrant, description),
        reason,
    )
}

pub(super) fn store_down(e: crate::store::StoreError) -> Refusal {
    tracing::error!(error = %e, "store error in a user grant");
    Refusal::new(OAuthError::store_unavailable(), "store_unavailable")
}

/// The user, if still enabled, and the session the grant belongs to, if still live (idle and
/// absolute timeouts): the same rule the browser path applies.
pub(super) async fn live_user_and_session(
    state: &AppState,
    realm: &LiveRealm,
    settings: &LoginSettings,
    user_id: &str,
    sid: &str,
    now: UnixTime,
) -> Result<(UserRecord, SessionRecord), Refusal> {
    let name = &realm.record.name;
    let user = match state
        .store
        .user_by_id(name, user_id)
        .await
        .map_err(store_down)?
    {
        Some(u) if u.enabled => u,
        _ => return Err(invalid_grant("the user is disabled", "user_disabled")),
    };
    match state
        .store
        .session_by_sid(name, sid)
        .await
        .map_err(store_down)?
    {
        Some(s) if s.user_id == user.id && sessions::is_live(settings, &s, now) => Ok((user, s)),
        Some(s) if s.user_id == user.id => {
            // A timeout reached on use ends the session for everyone (feed, back-channel logout).
            sessions::end_timed_out(state, name, &s, now).await;
            Err(invalid_grant("the session has ended", "session_ended"))
        }
        _ => Err(invalid_grant("the session has ended", "session_ended")),
    }
}

/// What was presented again.
#[derive(Clone, Copy)]
pub(super) enum Reused {
    Code,
    Refresh,
}

/// A code or refresh token presented again by its own client: its whole family is revoked and
/// its session (`sid`) ended (audited), and this is the refusal to answer with.
#[allow(clippy::too_many_arguments)]
pub(super) async fn reused(
    state: &AppState,
    realm: &LiveRealm,
    client: &ClientRecord,
    family: &str,
    user_id: &str,
    sid: Option<&str>,
    what: Reused,
    now: UnixTime,
) -> Refusal {
    let (kind, description, reason) = match what {
        Reused::Code => (
            "token.code_reused",
            "the code was already used",
            "code_reused",
        ),
        Reused::Refresh => (
            "token.refresh_reused",
            "the refresh token was already used; its family is revoked",
            "refresh_reused",
        ),
    };
    let d = AuditDraft::new(now, Some(&realm.record.name), kind, &client.client_id)
        .subject(user_id)
        .detail(json!({"action": "family_revoked", "session_ended": sid.is_some()}));
    // A replayed token may have been stolen: its session ends too (the feed and back-channel
    // logout tell the resource servers and apps).
    let session = sid.map(|sid| (realm.record.name.as_str(), sid));
    match state.store.revoke_family(family, session, now, &[d]).await {
        Ok(_) => {
            state.logout_outbox.wake();
            invalid_grant(description, reason)
        }
        Err(e) => store_down(e),
    }
}

/// A refresh token lives its realm's lifetime but never past its session's absolute end.
pub(super) fn refresh_expiry(
    settings: &LoginSettings,
    session: &SessionRecord,
    now: UnixTime,
) -> UnixTime {
    (now + settings.refresh_token_ttl).min(sessions::absolute_end(settings, session))
}

fn at_hash(alg: Alg, access_token: &str) -> String {
    let (algo, half) = match alg {
        Alg::EdDSA => (&ring::digest::SHA512, 32),
        _ => (&ring::digest::SHA256, 16),
    };
    B64.encode(&ring::digest::digest(algo, access_token.as_bytes()).as_ref()[..half])
}

/// Mints access, ID (for `openid`) and refresh tokens for a signed-in user.
/// The refresh token is only put in the response: the caller stores it with the grant's writes.
#[allow(clippy::too_many_arguments)]
pub(super) async fn mint(
    state: &AppState,
    realm: &LiveRealm,
    client: &ClientRecord,
    user: &UserRecord,
    facts: &RefreshData,
    nonce: Option<&str>,
    refresh_token: &str,
    grant_type: &'static str,
    cnf: Option<&Cnf>,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let name = &realm.record.name;
    let settings = realm
        .login()
        .ok_or_else(|| Refusal::new(OAuthError::server_error(), "login_settings_unusable"))?;
    let groups = state
        .store
        .user_groups(name, &user.id)
        .await
        .map_err(store_down)?;
    // A user token's scope: what was asked, within the client's scopes (checked at /authorize),
    // and, beyond the OpenID scopes, granted by one of the user's groups.
    let scope: Vec<&str> = facts
        .scope
        .split(' ')
        .filter(|s| {
            OIDC_SCOPES.contains(s) || groups.iter().any(|g| g.scopes.split(' ').any(|x| x == *s))
        })
        .collect();
    let scope = scope.join(" ");
    let attrs: Map<String, Value> = serde_json::from_str(&user.attributes).unwrap_or_default();
    let mut claims = Map::new();
    claims.insert(
        settings.groups_claim.clone(),
        json!(groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>()),
    );
    let mut encrypted = Vec::new();
    for (attr, claim) in &settings.attribute_claims {
        match attrs.get(attr) {
            Some(v) => {
                claims.insert(claim.clone(), v.clone());
            }
            None => encrypted.push(attr.as_str()),
        }
    }
    // A mapped attribute not in the plain ones may be pii_high: decrypted only to be put in the
    // claim the realm maps it to.
    if !encrypted.is_empty() {
        let values = crate::identity::pii::values_for_claims(
            state.store.as_ref(),
            state.kek.as_ref(),
            name,
            &user.id,
            &encrypted,
        )
        .await
        .map_err(|e| match e {
            crate::identity::pii::PiiError::Store(e) => store_down(e),
            crate::identity::pii::PiiError::Key(_) => {
                Refusal::new(OAuthError::server_error(), "pii_key_unusable")
            }
        })?;
        for (attr, value) in values {
            if let Some(claim) = settings.attribute_claims.get(&attr) {
                claims.insert(claim.clone(), json!(value));
            }
        }
    }
    claims.insert("auth_time".into(), json!(facts.auth_time));
    claims.insert("amr".into(), json!(facts.amr));
    claims.insert("acr".into(), json!(facts.acr));
    claims.insert("sid".into(), json!(facts.sid));
    let ttl = client
        .access_token_ttl
        .unwrap_or(realm.record.access_token_ttl);
    let access = mint_access_token(
        &realm.signing,
        AccessSpec {
            issuer: &realm.issuer,
            subject: &user.id,
            audience: &client.audience,
            client_id: &client.client_id,
            scope: &scope,
            ttl,
            now,
            cnf,
            extra: Some(&claims),
        },
    )
    .map_err(|_| Refusal::new(OAuthError::server_error(), "signing_failed"))?;
    let mut response_extra = Map::new();
    if scope.split(' ').any(|s| s == "openid") {
        let mut id = claims.clone();
        id.insert("iss".into(), json!(realm.issuer));
        id.insert("sub".into(), json!(user.id));
        id.insert("aud".into(), json!(client.client_id));
        id.insert("azp".into(), json!(client.client_id));
        id.insert("iat".into(), json!(now));
        id.insert("exp".into(), json!(now + ttl));
        id.insert("token_use".into(), json!("id"));
        id.insert("preferred_username".into(), json!(user.username));
        id.insert(
            "at_hash".into(),
            json!(at_hash(realm.signing.alg(), &access.jwt)),
        );
        if let Some(n) = nonce {
            id.insert("nonce".into(), json!(n));
        }
        let jwt = realm
            .signing
            .sign_id_token(Value::Object(id).to_string().as_bytes())
            .map_err(|_| Refusal::new(OAuthError::server_error(), "signing_failed"))?;
        response_extra.insert("id_token".into(), json!(jwt));
    }
    response_extra.insert("refresh_token".into(), json!(refresh_token));
    let mut detail = Map::new();
    detail.insert("sub".into(), json!(user.id));
    detail.insert("sid".into(), json!(facts.sid));
    detail.insert("amr".into(), json!(facts.amr));
    Ok(Granted {
        cnf: cnf.cloned(),
        actor: client.client_id.clone(),
        grant_type,
        token: access,
        scope,
        expires_in: ttl,
        detail,
        token_exchange: false,
        response_extra,
        audited: false,
    })
}
