//! The grants that carry a signed-in user: `authorization_code` (with PKCE) and `refresh_token`
//! (rotated on every use; a reused one revokes its whole family), and the tokens they mint:
//! access token with the user's groups, mapped attributes, `auth_time`, `amr`, `acr`, `sid`; an
//! ID token when `openid` was asked for; a new refresh token.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::form::Params;
use super::outcome::{Granted, Refusal, issued_draft};
use super::token::{AccessSpec, mint_access_token};
use super::{ErrorCode, OAuthError, client_auth, secret};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::keys::Alg;
use crate::login::flow::{CodeData, OIDC_SCOPES, pkce_ok};
use crate::login::settings::LoginSettings;
use crate::login::{new_token, session, token_hash};
use crate::state::AppState;
use crate::store::ClientRecord;
use crate::store::login::{RefreshRecord, SessionRecord, UserRecord};

/// What a refresh token carries forward.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshData {
    scope: String,
    sid: String,
    auth_time: UnixTime,
    amr: Vec<String>,
    acr: String,
}

fn invalid_grant(description: &'static str, reason: &'static str) -> Refusal {
    Refusal::new(
        OAuthError::new(ErrorCode::InvalidGrant, description),
        reason,
    )
}

fn store_down(e: crate::store::StoreError) -> Refusal {
    tracing::error!(error = %e, "store error in a user grant");
    Refusal::new(OAuthError::store_unavailable(), "store_unavailable")
}

/// Confidential clients authenticate as at `client_credentials`; a public client names itself
/// with `client_id` and nothing else (its proof is PKCE).
async fn client_for_user_grant(
    state: &AppState,
    realm: &LiveRealm,
    headers: &axum::http::HeaderMap,
    params: &Params,
    now: UnixTime,
) -> Result<Arc<ClientRecord>, Refusal> {
    let presents_secret = headers.contains_key(axum::http::header::AUTHORIZATION)
        || params.get("client_secret").is_some();
    if presents_secret {
        let presented = client_auth::extract(headers, params)
            .map_err(|e| Refusal::new(e, "malformed_client_authentication"))?;
        return super::token_endpoint::authenticate(state, realm, &presented, now).await;
    }
    let id = params
        .get("client_id")
        .ok_or_else(|| Refusal::new(OAuthError::invalid_client(), "no_client_authentication"))?;
    let refuse = || Refusal::new(OAuthError::invalid_client(), "public_client_required").client(id);
    if !client_auth::is_valid_client_id(id) {
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

pub async fn grant(
    state: &AppState,
    realm: &LiveRealm,
    headers: &axum::http::HeaderMap,
    params: &Params,
    grant_type: &str,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let client = client_for_user_grant(state, realm, headers, params, now).await?;
    // A confidential client has proved itself: its refusals are audited one by one. A public
    // client's id is only claimed, so its refusals are counted like any anonymous request's.
    let mark = |r: Refusal| {
        let r = r.client(&client.client_id);
        if client.public_client {
            r
        } else {
            r.authenticated()
        }
    };
    if !client.grant_types.split(' ').any(|g| g == grant_type) {
        return Err(mark(Refusal::new(
            OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use this grant",
            ),
            "grant_not_allowed",
        )));
    }
    let Some(settings) = realm.login() else {
        return Err(mark(Refusal::new(
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "sign-in is unavailable in this realm",
            ),
            "login_settings_unusable",
        )));
    };
    let result = if grant_type == "authorization_code" {
        authorization_code(state, realm, settings, &client, params, now).await
    } else {
        refresh(state, realm, settings, &client, params, now).await
    };
    result.map_err(mark)
}

/// The user, if still enabled, and the session the grant belongs to, if still live (idle and
/// absolute timeouts): the same rule the browser path applies.
async fn live_user_and_session(
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
        Some(s) if s.user_id == user.id && session::is_live(settings, &s, now) => Ok((user, s)),
        _ => Err(invalid_grant("the session has ended", "session_ended")),
    }
}

/// What was presented again.
#[derive(Clone, Copy)]
enum Reused {
    Code,
    Refresh,
}

/// A code or refresh token presented again by its own client: its whole family is revoked
/// (audited), and this is the refusal to answer with.
async fn reused(
    state: &AppState,
    realm: &LiveRealm,
    client: &ClientRecord,
    family: &str,
    user_id: &str,
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
        .detail(json!({"action": "family_revoked"}));
    match state.store.revoke_family(family, now, &[d]).await {
        Ok(_) => invalid_grant(description, reason),
        Err(e) => store_down(e),
    }
}

async fn authorization_code(
    state: &AppState,
    realm: &LiveRealm,
    settings: &LoginSettings,
    client: &ClientRecord,
    params: &Params,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let code = params.get("code").ok_or_else(|| {
        Refusal::new(
            OAuthError::invalid_request("code is required"),
            "missing_code",
        )
    })?;
    let verifier = params.get("code_verifier").ok_or_else(|| {
        Refusal::new(
            OAuthError::invalid_request("code_verifier is required (PKCE)"),
            "missing_code_verifier",
        )
    })?;
    let name = &realm.record.name;
    let hash = token_hash(code);
    // Read, check everything, and only then spend: a code presented by another client, with a
    // wrong redirect or verifier, is refused without being burnt.
    let Some(row) = state.store.code(&hash, name).await.map_err(store_down)? else {
        return Err(invalid_grant("invalid or expired code", "invalid_code"));
    };
    let data = serde_json::from_str::<CodeData>(&row.data)
        .map_err(|_| invalid_grant("invalid code", "corrupt_code"))?;
    if data.client_id != client.client_id {
        // Another client cannot spend the code nor trigger the reuse revocation.
        return Err(invalid_grant(
            "invalid or expired code",
            "code_client_mismatch",
        ));
    }
    if row.used_at.is_some() {
        // RFC 6749 §4.1.2: a code used twice by its own client revokes what it issued.
        return Err(reused(
            state,
            realm,
            client,
            &row.family,
            &data.user_id,
            Reused::Code,
            now,
        )
        .await);
    }
    if row.expires_at <= now {
        return Err(invalid_grant("invalid or expired code", "invalid_code"));
    }
    if params.get("redirect_uri") != Some(data.redirect_uri.as_str()) {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
            "redirect_uri_mismatch",
        ));
    }
    if !pkce_ok(verifier, &data.code_challenge) {
        return Err(invalid_grant("PKCE verification failed", "pkce_failed"));
    }
    // Codes die with their session: a sign-out or a disable after the code was issued wins.
    let (user, session) =
        live_user_and_session(state, realm, settings, &data.user_id, &data.sid, now).await?;
    let facts = RefreshData {
        scope: data.scope.clone(),
        sid: data.sid.clone(),
        auth_time: data.auth_time,
        amr: data.amr.clone(),
        acr: data.acr.clone(),
    };
    let refresh_token = new_token();
    let mut granted = mint(
        state,
        realm,
        client,
        &user,
        &facts,
        data.nonce.as_deref(),
        &refresh_token,
        "authorization_code",
        now,
    )
    .await?;
    let first = RefreshRecord {
        token_hash: token_hash(&refresh_token),
        realm: name.clone(),
        family: data.family.clone(),
        user_id: user.id.clone(),
        client_id: client.client_id.clone(),
        data: serde_json::to_string(&RefreshData {
            scope: granted.scope.clone(),
            ..facts
        })
        .unwrap_or_default(),
        expires_at: refresh_expiry(settings, &session, now),
        used_at: None,
        revoked_at: None,
    };
    let audit = [issued_draft(realm, &granted, now)];
    if !state
        .store
        .consume_code(&hash, name, now, &first, &audit)
        .await
        .map_err(store_down)?
    {
        // Spent by a concurrent request between the read and now: that is a replay too.
        return Err(reused(
            state,
            realm,
            client,
            &row.family,
            &user.id,
            Reused::Code,
            now,
        )
        .await);
    }
    granted.audited = true;
    Ok(granted)
}

/// A refresh token lives its realm's lifetime but never past its session's absolute end.
fn refresh_expiry(settings: &LoginSettings, session: &SessionRecord, now: UnixTime) -> UnixTime {
    (now + settings.refresh_token_ttl).min(session::absolute_end(settings, session))
}

async fn refresh(
    state: &AppState,
    realm: &LiveRealm,
    settings: &LoginSettings,
    client: &ClientRecord,
    params: &Params,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let token = params.get("refresh_token").ok_or_else(|| {
        Refusal::new(
            OAuthError::invalid_request("refresh_token is required"),
            "missing_refresh_token",
        )
    })?;
    let name = &realm.record.name;
    let hash = token_hash(token);
    let Some(old) = state
        .store
        .refresh_token(&hash, name)
        .await
        .map_err(store_down)?
    else {
        return Err(invalid_grant(
            "invalid refresh token",
            "invalid_refresh_token",
        ));
    };
    if old.client_id != client.client_id {
        return Err(invalid_grant(
            "invalid refresh token",
            "refresh_client_mismatch",
        ));
    }
    if old.revoked_at.is_some() || old.expires_at <= now {
        return Err(invalid_grant(
            "invalid, expired or revoked refresh token",
            "invalid_refresh_token",
        ));
    }
    if old.used_at.is_some() {
        return Err(reused(
            state,
            realm,
            client,
            &old.family,
            &old.user_id,
            Reused::Refresh,
            now,
        )
        .await);
    }
    let facts: RefreshData = serde_json::from_str(&old.data)
        .map_err(|_| invalid_grant("invalid refresh token", "corrupt_refresh"))?;
    let (user, session) =
        live_user_and_session(state, realm, settings, &old.user_id, &facts.sid, now).await?;
    let scope = match params.get("scope") {
        None => facts.scope.clone(),
        Some(s) => {
            let had: Vec<&str> = facts.scope.split(' ').collect();
            let asked = super::scope::parse(s).map_err(|_| {
                Refusal::new(
                    OAuthError::new(ErrorCode::InvalidScope, "malformed scope"),
                    "invalid_scope",
                )
            })?;
            if asked.iter().any(|a| !had.contains(a)) {
                return Err(Refusal::new(
                    OAuthError::new(ErrorCode::InvalidScope, "a refresh cannot widen the scope"),
                    "invalid_scope",
                ));
            }
            asked.join(" ")
        }
    };
    let next_facts = RefreshData {
        scope,
        ..facts.clone()
    };
    let next_token = new_token();
    let next = RefreshRecord {
        token_hash: token_hash(&next_token),
        realm: name.clone(),
        family: old.family.clone(),
        user_id: old.user_id.clone(),
        client_id: old.client_id.clone(),
        data: serde_json::to_string(&next_facts).unwrap_or_default(),
        expires_at: refresh_expiry(settings, &session, now),
        used_at: None,
        revoked_at: None,
    };
    let mut granted = mint(
        state,
        realm,
        client,
        &user,
        &next_facts,
        None,
        &next_token,
        "refresh_token",
        now,
    )
    .await?;
    // Rotation, session activity and the token's audit record commit together: if any fails,
    // nothing happened and the client's retry with the same token is not mistaken for reuse.
    let audit = [issued_draft(realm, &granted, now)];
    if !state
        .store
        .rotate_refresh(&hash, name, now, &next, &facts.sid, &audit)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "refresh rotation failed");
            Refusal::new(
                OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the token could not be recorded; try again",
                ),
                "store_unavailable",
            )
        })?
    {
        // Used by a concurrent request between the read and now: reuse.
        return Err(reused(
            state,
            realm,
            client,
            &old.family,
            &old.user_id,
            Reused::Refresh,
            now,
        )
        .await);
    }
    granted.audited = true;
    Ok(granted)
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
async fn mint(
    state: &AppState,
    realm: &LiveRealm,
    client: &ClientRecord,
    user: &UserRecord,
    facts: &RefreshData,
    nonce: Option<&str>,
    refresh_token: &str,
    grant_type: &'static str,
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
    for (attr, claim) in &settings.attribute_claims {
        if let Some(v) = attrs.get(attr) {
            claims.insert(claim.clone(), v.clone());
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
