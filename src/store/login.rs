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
    /// Bumped by every admin change (enabled, attributes): the admin API's `ETag`.
    pub version: i64,
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

/// What a sign-in writes with its new session, in the session's transaction, so a sign-in costs
/// one commit: the claim that spends its WebAuthn ceremony (one winner among concurrent posts of
/// the same assertion), the passkey's new state, and the authorization code it issues.
#[derive(Debug, Default, Clone)]
pub struct SessionExtras {
    /// `(key, expires_at)`: a single-use claim (a row in `flows`, kind `claimed`, purged when it
    /// expires); if the key was claimed before, nothing is written (`Ok(false)`).
    pub claim: Option<(String, i64)>,
    /// `(credential id, passkey JSON)`: stored with `last_used_at = now`.
    pub passkey: Option<(String, String)>,
    /// `(code hash, data, family, expires_at)`.
    pub code: Option<(String, String, String, i64)>,
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

/// An entry of the revocation feed: `kind` `jti` (a revoked access token), `sid` (an ended
/// session: every token carrying it) or `client` (a disabled client: its tokens issued before
/// `not_before`).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct RevocationRecord {
    pub seq: i64,
    pub kind: String,
    pub value: String,
    pub not_before: i64,
    #[serde(skip)]
    pub created_at: i64,
    /// Published as `exp`.
    #[serde(rename = "exp")]
    pub expires_at: i64,
}

/// What spending an authorization code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSpend {
    /// Spent now; the refresh token is stored.
    Issued,
    /// Spent before (a concurrent redemption) or expired.
    Spent,
    /// Its session ended between the checks and the spend.
    SessionEnded,
}

/// A back-channel logout in the outbox, claimed by one node for delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogoutDelivery {
    pub id: i64,
    pub realm: String,
    pub client_id: String,
    pub uri: String,
    pub sid: String,
    pub sub: String,
    pub created_at: i64,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// A stored authorization code, read before anything is spent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRecord {
    pub data: String,
    pub family: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A change to a user's credentials made from the account page. Each one, in the same
/// transaction, ends the user's other sessions and revokes every refresh token.
#[derive(Debug, Clone)]
pub enum CredentialChange {
    AddPasskey(PasskeyRecord),
    RemovePasskey {
        credential_id: String,
    },
    /// A new TOTP secret (sealed) and the step its confirmation code used.
    ReplaceTotp {
        sealed: Vec<u8>,
        step: i64,
    },
    /// New recovery codes (hashes); the old ones stop working.
    ReplaceRecoveryCodes {
        hashes: Vec<String>,
    },
    /// An admin removes every passkey, the TOTP secret and the recovery codes (a staff member
    /// who lost their devices): the user enrols again through an invite.
    RemoveSecondFactors,
}

/// What enrolment through an invite stores, together with spending the invite.
#[derive(Debug, Clone)]
pub enum Enrolment {
    Passkey(PasskeyRecord),
    PasswordTotp {
        password_hash: String,
        totp_sealed: Vec<u8>,
        totp_step: i64,
        recovery_hashes: Vec<String>,
    },
}

#[async_trait]
pub trait LoginStore: Send + Sync {
    /// A realm's declared attributes: (name, classification), by name.
    async fn realm_attributes(&self, realm: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// The realm's attributes that hold encrypted values (they stay `pii_high`).
    async fn attributes_holding_pii(&self, realm: &str) -> Result<Vec<String>, StoreError>;
    /// Replaces a realm's declarations and, in the same transaction, moves every value of an
    /// attribute now `pii_high` out of the users' attribute JSON into `user_pii`, sealed by
    /// `pii`. Refuses (`Conflict`) to make an attribute that holds encrypted values anything
    /// but `pii_high`. Returns how many values it moved.
    async fn set_realm_attributes(
        &self,
        realm: &str,
        declarations: &[(String, String)],
        pii: Option<&dyn super::PiiSealer>,
        audit: Audited<'_>,
    ) -> Result<usize, StoreError>;
    /// Moves plain values of `pii_high` attributes (written by an older version) into
    /// `user_pii`; returns how many.
    async fn migrate_pii(
        &self,
        realm: &str,
        pii: &dyn super::PiiSealer,
    ) -> Result<usize, StoreError>;
    async fn realm_pii_key(&self, realm: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a realm's sealed PII key unless it has one.
    async fn insert_realm_pii_key(
        &self,
        realm: &str,
        sealed: &[u8],
        now: i64,
    ) -> Result<(), StoreError>;
    /// Every realm's sealed PII key (for KEK rotation).
    async fn realm_pii_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// A user's encrypted attributes: (name, sealed).
    async fn user_pii(
        &self,
        realm: &str,
        user_id: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// The ids of the users whose `name` has this blind index.
    async fn users_by_pii_index(
        &self,
        realm: &str,
        name: &str,
        index: &str,
    ) -> Result<Vec<String>, StoreError>;
    async fn create_group(&self, g: &GroupRecord, audit: Audited<'_>) -> Result<(), StoreError>;
    async fn groups(&self, realm: &str) -> Result<Vec<GroupRecord>, StoreError>;
    /// Sets a group's scopes; false if there is no such group.
    async fn set_group_scopes(
        &self,
        realm: &str,
        name: &str,
        scopes: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Deletes a group and its memberships; false if there is no such group. Its policies go with
    /// it (exactly `removing`, the names its audit record gives, else `Changed` and nothing is
    /// written), unless `keep_policies`: then a group that has any is not deleted (`Conflict`),
    /// checked under the lock policy writes take, so none is written for it meanwhile.
    async fn delete_group(
        &self,
        realm: &str,
        name: &str,
        keep_policies: bool,
        removing: &[String],
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;

    async fn create_user(
        &self,
        u: &UserRecord,
        groups: &[String],
        pii: Option<&dyn super::PiiSealer>,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    async fn user_by_name(
        &self,
        realm: &str,
        username: &str,
    ) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_id(&self, realm: &str, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Up to `limit` users of a realm whose username sorts after `after`, by username.
    async fn users_page(
        &self,
        realm: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<UserRecord>, StoreError>;
    /// Enables or disables a user (column-precise). Disabling also ends every session and revokes
    /// every refresh token, in the same transaction. False if there is no such user.
    /// With `expected`, only while the user's `version` is that one (the admin API's
    /// `If-Match`); `false` if no row matched.
    async fn set_user_enabled(
        &self,
        realm: &str,
        user_id: &str,
        expected: Option<i64>,
        enabled: bool,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Sets (or, with an empty value, removes) attributes under the row's lock, so concurrent
    /// changes of other attributes or columns are never overwritten. `None` if no such user.
    /// `None` if no row matched (no such user, or with `expected`, another version).
    #[allow(clippy::too_many_arguments)]
    async fn update_user_attributes(
        &self,
        realm: &str,
        user_id: &str,
        expected: Option<i64>,
        changes: &[(String, String)],
        pii: Option<&dyn super::PiiSealer>,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<Option<String>, StoreError>;
    /// Spends a live invite and stores what the user enrolled, in one transaction; false (nothing
    /// written) if the invite is gone, expired, or not this user's.
    #[allow(clippy::too_many_arguments)]
    async fn enrol(
        &self,
        invite_hash: &str,
        realm: &str,
        user_id: &str,
        enrolment: &Enrolment,
        first_only: bool,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Applies `change`, ends every session of the user but `keep_session`, revokes every refresh
    /// token of the user, and appends `audit`, in one transaction. False if nothing was changed
    /// (the passkey to remove is not the user's).
    async fn change_credentials(
        &self,
        realm: &str,
        user_id: &str,
        keep_session: &str,
        change: &CredentialChange,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Whether an unused recovery code with this hash exists (nothing is spent).
    async fn has_recovery_code(
        &self,
        realm: &str,
        user_id: &str,
        hash: &str,
    ) -> Result<bool, StoreError>;
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

    /// Whether an invite exists but has expired (a spent invite is deleted, so `false` then).
    async fn invite_expired(
        &self,
        token_hash: &str,
        realm: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Short-lived server-side state (enrolments, WebAuthn ceremonies). Upserts: the newest
    /// ceremony under a key replaces an older one.
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
    /// Deletes the flow and returns its data if it was live: of concurrent takers exactly one wins.
    async fn take_flow(
        &self,
        id_hash: &str,
        realm: &str,
        kind: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError>;
    /// Deletes up to `limit` expired rows of each short-lived table (flows, codes, refresh tokens,
    /// invites, AWS challenges); returns how many went.
    async fn purge_expired(&self, now: i64, limit: i64) -> Result<u64, StoreError>;

    /// A new session, its audit records and what the sign-in writes beside it, in one
    /// transaction; `Ok(false)` (nothing written) when `extras.claim` was claimed before.
    async fn open_session(
        &self,
        s: &SessionRecord,
        extras: &SessionExtras,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    async fn session(
        &self,
        id_hash: &str,
        realm: &str,
    ) -> Result<Option<SessionRecord>, StoreError>;
    async fn session_by_sid(
        &self,
        realm: &str,
        sid: &str,
    ) -> Result<Option<SessionRecord>, StoreError>;
    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<(), StoreError>;
    /// A fresh authentication inside an existing session (account changes need one).
    async fn reauthenticate_session(
        &self,
        id_hash: &str,
        now: i64,
        amr: &str,
        acr: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` sessions of `realm` idle since before `idle_before` or created before
    /// `created_before`: past the realm's timeouts, still to be ended.
    async fn lapsed_sessions(
        &self,
        realm: &str,
        idle_before: i64,
        created_before: i64,
        limit: i64,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Ends one session (RP-initiated logout, sign-out, a timeout reached on use): deletes it,
    /// puts its `sid` in the revocation feed and a back-channel logout for each client that had
    /// tokens in it in the outbox, with its audit record, in one transaction. False (nothing
    /// written) if it was gone.
    async fn end_session(
        &self,
        id_hash: &str,
        realm: &str,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
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
    /// The code as stored; nothing is spent.
    async fn code(&self, code_hash: &str, realm: &str) -> Result<Option<CodeRecord>, StoreError>;
    /// Spends a live, unused code, stores the first refresh token of its family, records that the
    /// client has tokens in session `sid` (for back-channel logout) and appends the token's audit
    /// record, in one transaction. Nothing is written unless the answer is `Issued`.
    async fn consume_code(
        &self,
        code_hash: &str,
        realm: &str,
        now: i64,
        refresh: &RefreshRecord,
        sid: &str,
        audit: Audited<'_>,
    ) -> Result<CodeSpend, StoreError>;

    /// Marks `token_hash` used, stores `next` in its family, refreshes the session's `last_seen`
    /// (by sid) and appends the token's audit record, in one transaction: a failure leaves the
    /// old token usable, so a retry is not mistaken for reuse. False (nothing written) if the token
    /// is no longer live (used concurrently, revoked or expired).
    async fn rotate_refresh(
        &self,
        token_hash: &str,
        realm: &str,
        now: i64,
        next: &RefreshRecord,
        sid: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Revokes a token family (a code or refresh token presented twice) and ends the session it
    /// belongs to (`realm`, `sid`), as `end_session` does, in one transaction.
    async fn revoke_family(
        &self,
        family: &str,
        session: Option<(&str, &str)>,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<u64, StoreError>;

    /// Claims up to `limit` due back-channel logouts for `owner` until `now + lease_secs`
    /// (another node's claim is never taken before its lease ends), counting the attempt.
    async fn claim_logouts(
        &self,
        owner: &str,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> Result<Vec<LogoutDelivery>, StoreError>;
    /// Hands a claimed logout back unsent, due at `next_attempt_at`, without counting the
    /// attempt (its app is known to be down). False if `owner` no longer holds it.
    async fn defer_logout(
        &self,
        id: i64,
        owner: &str,
        next_attempt_at: i64,
    ) -> Result<bool, StoreError>;
    /// Settles a claimed logout with its audit record, in one transaction: delivered or abandoned
    /// deletes it, a retry schedules it. False (nothing written) if `owner` no longer holds it.
    async fn settle_logout(
        &self,
        id: i64,
        owner: &str,
        next_attempt_at: Option<i64>,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    async fn refresh_token(
        &self,
        token_hash: &str,
        realm: &str,
    ) -> Result<Option<RefreshRecord>, StoreError>;

    /// Records an access token's `jti` as revoked until `exp` (kept in `flows`, kind
    /// `revoked_at`, purged once the token would have expired anyway) with its audit record, in one
    /// transaction. Revoking twice is one row.
    async fn revoke_access_token(
        &self,
        jti_hash: &str,
        jti: &str,
        realm: &str,
        exp: i64,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    /// The revocation feed: a realm's live entries after `after`, in order, at most `limit`.
    async fn revocations_after(
        &self,
        realm: &str,
        after: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<RevocationRecord>, StoreError>;
    /// Whether an access token's `jti` was revoked (and the token is not yet expired).
    async fn access_token_revoked(
        &self,
        jti_hash: &str,
        realm: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// The scope a user last approved for a client (remembered consent), if any.
    async fn consent(
        &self,
        realm: &str,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError>;
    async fn put_consent(
        &self,
        realm: &str,
        user_id: &str,
        client_id: &str,
        scope: &str,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    /// The latest audit records about a user of the given kinds (the account page's history).
    async fn user_events(
        &self,
        realm: &str,
        user_id: &str,
        kinds: &[&str],
        limit: i64,
    ) -> Result<Vec<crate::audit::AuditRecord>, StoreError>;
}
