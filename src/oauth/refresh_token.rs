//! The `refresh_token` grant (RFC 6749 §6): rotated on every use; a reused one revokes its whole
//! family. Never outlives its session.

use super::form::Params;
use super::outcome::{Granted, Refusal, issued_draft};
use super::token::Cnf;
use super::user_tokens::{
    RefreshData, Reused, invalid_grant, live_user_and_session, mint, refresh_expiry, reused,
    store_down,
};
use super::{ErrorCode, OAuthError};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::settings::LoginSettings;
use crate::identity::{new_token, token_hash};
use crate::state::AppState;
use crate::store::ClientRecord;
use crate::store::login::RefreshRecord;

pub async fn grant(
    state: &AppState,
    realm: &LiveRealm,
    settings: &LoginSettings,
    client: &ClientRecord,
    params: &Params,
    cnf: Option<&Cnf>,
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
            sid_of(&old.data).as_deref(),
            Reused::Refresh,
            now,
        )
        .await);
    }
    let facts: RefreshData = serde_json::from_str(&old.data)
        .map_err(|_| invalid_grant("invalid refresh token", "corrupt_refresh"))?;
    // A refresh token bound to a DPoP key is used only with a proof made with that key.
    if let Some(bound) = &facts.dpop_jkt
        && cnf.and_then(|c| c.jkt.as_deref()) != Some(bound.as_str())
    {
        return Err(Refusal::new(
            OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "this refresh token needs a DPoP proof made with the key it is bound to",
            ),
            "refresh_dpop_key_mismatch",
        ));
    }
    let (user, session) =
        live_user_and_session(state, realm, settings, &old.user_id, &facts.sid, now).await?;
    let scope = match params.get("scope") {
        None => facts.scope.clone(),
        Some(s) => {
            let had: Vec<&str> = facts.scope.split(' ').collect();
            let asked = crate::clients::scope::parse(s).map_err(|_| {
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
    // A public client's refresh tokens bind to the first DPoP key it proves, at redemption or
    // at the first refresh that carries a proof (RFC 9449 §5); once bound they stay bound.
    let dpop_jkt = match (&facts.dpop_jkt, cnf.and_then(|c| c.jkt.as_ref())) {
        (Some(bound), _) => Some(bound.clone()),
        (None, Some(jkt)) if client.public_client => Some(jkt.clone()),
        (None, _) => None,
    };
    let next_facts = RefreshData {
        scope,
        dpop_jkt,
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
        cnf,
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
            Some(&facts.sid),
            Reused::Refresh,
            now,
        )
        .await);
    }
    granted.audited = true;
    Ok(granted)
}

/// The session a stored refresh token belongs to, read without trusting the rest of its data.
fn sid_of(data: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Sid {
        sid: String,
    }
    serde_json::from_str::<Sid>(data).ok().map(|s| s.sid)
}
