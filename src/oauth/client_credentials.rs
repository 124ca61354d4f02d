//! The `client_credentials` grant: an authenticated client gets an access token for itself, with
//! scopes inside what it is allowed.

use super::scope::{self, ScopeError};
use super::token::{AccessSpec, Minted, mint_access_token};
use super::{ErrorCode, OAuthError};
use crate::clock::UnixTime;
use crate::directory::LiveRealm;
use crate::store::ClientRecord;

pub const GRANT_TYPE: &str = "client_credentials";

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
