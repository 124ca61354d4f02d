//! Records and store operations for interactive sign-in: users, groups, credentials, sessions,
//! pending flows, authorization codes and refresh tokens.

use async_trait::async_trait;

use super::{Audited, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRecord {
    pub realm: String,
    pub name: String,
    pub scopes: String,
}

#[derive(Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub realm: String,
    pub id: String,
    pub username: String,
    pub enabled: bool,
    /// JSON object of attribute → string value.
    pub attributes: String,
    /// Argon2id PHC string.
    pub password_hash: Option<String>,
    /// The TOTP secret, sealed under the KEK.
    pub totp_sealed: Option<Vec<u8>>,
    pub totp_last_step: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("realm", &self.realm)
            .field("id", &self.id)
            .field("username", &self.username)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasskeyRecord {
    pub realm: String,
    pub user_id: String,
    pub credential_id: String,
    pub name: String,
    /// webauthn-rs `Passkey`, JSON (public key material and counter; no secret).
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id_hash: String,
    pub realm: String,
    pub user_id: String,
    /// The `sid` claim: public, unlike the cookie value whose hash is the key.
    pub sid: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub auth_time: i64,
    /// Space-separated `amr` values.
    pub amr: String,
    pub acr: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub realm: String,
    pub family: String,
    pub user_id: String,
    pub client_id: String,
    /// JSON: scope, sid, auth_time, amr, acr, nonce-free grant facts.
    pub data: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What redeeming a one-time value found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed<T> {
    /// First use: here is what it stood for.
    Fresh(T),
    /// Already used: the family it belonged to (to revoke what it issued).
    Reused { family: String },
    /// Unknown or expired.
    Invalid,
}

#[async_trait]
pub trait LoginStore: Send + Sync {
    async fn create_group(&self, g: &GroupRecord, audit: Audited<'_>) -> Result<(), StoreError>;
    async fn groups(&self, realm: &str) -> Result<Vec<GroupRecord>, StoreError>;

    async fn create_user(
        &self,
        u: &UserRecord,
        groups: &[String],
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    async fn user_by_name(
        &self,
        realm: &str,
        username: &str,
    ) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_id(&self, realm: &str, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Writes enabled, attributes, password hash and TOTP secret of `u` (matched by realm and id).
    async fn update_user(&self, u: &UserRecord, audit: Audited<'_>) -> Result<bool, StoreError>;
    async fn add_user_group(
        &self,
        realm: &str,
        user_id: &str,
        group: &str,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    async fn remove_user_group(
        &self,
        realm: &str,
        user_id: &str,
        group: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    async fn user_groups(&self, realm: &str, user_id: &str)
    -> Result<Vec<GroupRecord>, StoreError>;
    /// Records that TOTP step `step` was used; false if it (or a later one) already was.
    async fn use_totp_step(
        &self,
        realm: &str,
        user_id: &str,
        step: i64,
    ) -> Result<bool, StoreError>;
    async fn replace_recovery_codes(
        &self,
        realm: &str,
        user_id: &str,
        hashes: &[String],
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    async fn use_recovery_code(
        &self,
        realm: &str,
        user_id: &str,
        hash: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    async fn add_passkey(&self, p: &PasskeyRecord, audit: Audited<'_>) -> Result<(), StoreError>;
    async fn passkeys(&self, realm: &str, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError>;
    async fn passkey(
        &self,
        realm: &str,
        credential_id: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError>;
    async fn update_passkey(
        &self,
        realm: &str,
        credential_id: &str,
        passkey: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn delete_passkey(
        &self,
        realm: &str,
        user_id: &str,
        credential_id: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;

    async fn create_invite(
        &self,
        token_hash: &str,
        realm: &str,
        user_id: &str,
        expires_at: i64,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    /// The invite's user, if the invite is live (it stays usable until `consume_invite`).
    async fn invite(
        &self,
        token_hash: &str,
        realm: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError>;
    async fn consume_invite(&self, token_hash: &str, realm: &str) -> Result<bool, StoreError>;

    /// Short-lived server-side state (authorization requests, WebAuthn ceremonies).
    async fn put_flow(
        &self,
        id_hash: &str,
        realm: &str,
        kind: &str,
        data: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn flow(
        &self,
        id_hash: &str,
        realm: &str,
        kind: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError>;
    async fn delete_flow(&self, id_hash: &str) -> Result<bool, StoreError>;

    async fn create_session(&self, s: &SessionRecord, audit: Audited<'_>)
    -> Result<(), StoreError>;
    async fn session(
        &self,
        id_hash: &str,
        realm: &str,
    ) -> Result<Option<SessionRecord>, StoreError>;
    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<(), StoreError>;
    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError>;
    async fn sessions_of(
        &self,
        realm: &str,
        user_id: &str,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Ends every session and revokes every refresh token of a user, in one transaction.
    async fn sign_out_everywhere(
        &self,
        realm: &str,
        user_id: &str,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<u64, StoreError>;

    async fn put_code(
        &self,
        code_hash: &str,
        realm: &str,
        data: &str,
        family: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    async fn redeem_code(
        &self,
        code_hash: &str,
        realm: &str,
        now: i64,
    ) -> Result<Redeemed<String>, StoreError>;

    async fn put_refresh(&self, r: &RefreshRecord) -> Result<(), StoreError>;
    /// Marks `token_hash` used and stores `next` in its place, atomically; a token used before
    /// reports its family.
    async fn rotate_refresh(
        &self,
        token_hash: &str,
        realm: &str,
        now: i64,
        next: &RefreshRecord,
    ) -> Result<Redeemed<RefreshRecord>, StoreError>;
    async fn revoke_family(
        &self,
        family: &str,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<u64, StoreError>;
    async fn refresh_token(
        &self,
        token_hash: &str,
        realm: &str,
    ) -> Result<Option<RefreshRecord>, StoreError>;
}
