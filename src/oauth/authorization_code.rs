//! The `authorization_code` grant (RFC 6749 §4.1.3) with PKCE: the code is read and checked
//! (client, redirect, verifier, live session) before it is spent; a code used twice revokes what
//! it issued.

use super::OAuthError;
use super::form::Params;
use super::outcome::{Granted, Refusal, issued_draft};
use super::token::Cnf;
use super::user_tokens::{
    RefreshData, Reused, invalid_grant, live_user_and_session, mint, refresh_expiry, reused,
    store_down,
};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::identity::authorize::{CodeData, pkce_ok};
use crate::identity::settings::LoginSettings;
use crate::identity::{new_token, token_hash};
use crate::state::AppState;
use crate::store::ClientRecord;
use crate::store::login::{CodeSpend, RefreshRecord};

pub async fn grant(
    state: &AppState,
    realm: &LiveRealm,
    settings: &LoginSettings,
    client: &ClientRecord,
    params: &Params,
    cnf: Option<&Cnf>,
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
            Some(&data.sid),
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
    // RFC 9449 §10: a code bound at the authorization request (`dpop_jkt`) is redeemed only with
    // a proof made with that key. Refused before it is spent: the client that holds the key can
    // still redeem it.
    if let Some(want) = &data.dpop_jkt
        && cnf.and_then(|c| c.jkt.as_deref()) != Some(want.as_str())
    {
        return Err(Refusal::new(
            OAuthError::new(
                super::ErrorCode::InvalidDpopProof,
                "the code is bound to another DPoP key",
            ),
            "dpop_jkt_mismatch",
        ));
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
        // A public client's refresh tokens stay with the DPoP key of this request.
        dpop_jkt: if client.public_client {
            cnf.and_then(|c| c.jkt.clone())
        } else {
            None
        },
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
        cnf,
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
    match state
        .store
        .consume_code(&hash, name, now, &first, &data.sid, &audit)
        .await
        .map_err(store_down)?
    {
        CodeSpend::Issued => {}
        // Spent by a concurrent request between the read and now: that is a replay too.
        CodeSpend::Spent => {
            return Err(reused(
                state,
                realm,
                client,
                &row.family,
                &user.id,
                Some(&data.sid),
                Reused::Code,
                now,
            )
            .await);
        }
        // Signed out between the check above and the spend: nothing was issued.
        CodeSpend::SessionEnded => {
            return Err(invalid_grant("the session has ended", "session_ended"));
        }
    }
    granted.audited = true;
    Ok(granted)
}
