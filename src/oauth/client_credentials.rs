//! The `client_credentials` grant: an authenticated client gets an access token for itself, with
//! scopes inside what it is allowed.

use super::client_auth::Authenticated;
use super::form::Params;
use super::outcome::{Granted, Refusal};
use super::token::{AccessSpec, Cnf, Minted, mint_access_token};
use super::{ErrorCode, OAuthError};
use crate::clients::auth::AuthMethod;
use crate::clients::scope::{self, ScopeError};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::store::ClientRecord;

pub use crate::clients::CLIENT_CREDENTIALS as GRANT_TYPE;

/// The grant as the token endpoint runs it: the client has authenticated; issue.
pub fn grant(
    realm: &LiveRealm,
    authed: &Authenticated,
    params: &Params,
    cnf: Option<&Cnf>,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let client = &authed.client;
    if authed.method == AuthMethod::None {
        // A public client has no credential: it cannot act for itself.
        return Err(
            Refusal::new(OAuthError::invalid_client(), "no_client_authentication")
                .client(&client.client_id),
        );
    }
    let issued = issue(realm, client, params.get("scope"), cnf, now).map_err(|e| {
        let reason = match e.code {
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::UnauthorizedClient => "grant_not_allowed",
            _ => "signing_failed",
        };
        Refusal::new(e, reason)
            .client(&client.client_id)
            .authenticated()
    })?;
    Ok(Granted {
        cnf: cnf.cloned(),
        actor: client.client_id.clone(),
        grant_type: GRANT_TYPE,
        token: issued.token,
        scope: issued.scope,
        expires_in: issued.expires_in,
        detail: Default::default(),
        token_exchange: false,
        response_extra: Default::default(),
        audited: false,
    })
}

#[derive(Debug)]
pub struct Issued {
    pub token: Minted,
    pub scope: String,
    pub expires_in: i64,
}

pub fn issue(
    realm: &LiveRealm,
    client: &ClientRecord,
    requested_scope: Option<&str>,
    cnf: Option<&Cnf>,
    now: UnixTime,
) -> Result<Issued, OAuthError> {
    if !client.grant_types.split(' ').any(|g| g == GRANT_TYPE) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use client_credentials",
        ));
    }
    let granted = scope::grant(
        requested_scope,
        &client.allowed_scopes,
        &client.default_scopes,
    )
    .map_err(|e| match e {
        ScopeError::Empty => OAuthError::new(
            ErrorCode::InvalidScope,
            "no scope requested and the client has no default scope",
        ),
        other => OAuthError::new(ErrorCode::InvalidScope, other.to_string()),
    })?;
    let ttl = client
        .access_token_ttl
        .unwrap_or(realm.record.access_token_ttl);
    let token = mint_access_token(
        &realm.signing,
        AccessSpec {
            issuer: &realm.issuer,
            subject: &client.client_id,
            audience: &client.audience,
            client_id: &client.client_id,
            scope: &granted,
            ttl,
            now,
            cnf,
            extra: None,
        },
    )
    .map_err(|e| {
        tracing::error!(error = %e, realm = %realm.record.name, "signing failed");
        OAuthError::server_error()
    })?;
    Ok(Issued {
        token,
        scope: granted,
        expires_in: ttl,
    })
}
