//! All SQL lives here: one `Store` trait of whole units of work, with a SQLite (embedded default)
//! and a PostgreSQL implementation chosen by the database URL's scheme.

mod audit_backend;
mod backend;
pub mod login;
mod login_backend;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::audit::{AuditDraft, AuditRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// What the write was told it would change (and audited as such) changed meanwhile: nothing
    /// was written; read again and retry.
    #[error("{0} changed meanwhile")]
    Changed(String),
    /// A write refused because it would pass a limit (the message says which).
    #[error("{0}")]
    Full(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("encryption: {0}")]
    Crypto(String),
    #[error(
        "waited {secs} s for another sigil process to finish opening or migrating the database ({lock})"
    )]
    LockTimeout { lock: String, secs: u64 },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_auth_refusal(&e) {
            AUTH_REFUSED.notify_one();
        }
        StoreError::Database(e)
    }
}

/// Woken whenever the database refuses this process's credentials (SQLSTATE class 28): what
/// lets a node whose database password comes from a secret fetch the rotated one and carry on.
static AUTH_REFUSED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Waits for the database's next refusal of this process's credentials.
pub async fn auth_refused() {
    AUTH_REFUSED.notified().await
}

/// SQLSTATE 28000 (invalid authorization specification) or 28P01 (invalid password).
pub fn is_auth_refusal(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "28P01" || c == "28000")
}

/// Seals one `pii_high` attribute value for the store, inside its transaction: the sealed value
/// and its blind index (see `identity::pii`).
pub trait PiiSealer: Send + Sync {
    fn seal(
        &self,
        realm: &str,
        user_id: &str,
        name: &str,
        value: &str,
    ) -> Result<(Vec<u8>, String), StoreError>;
}

/// A realm's four-eyes settings (see `admin::changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RealmGuard {
    pub require_approval: bool,
    pub protected: bool,
}

/// The bits of a realm's guard one change sets; `None` leaves that bit as it is at the moment
/// the change is written (so two admins changing different bits at once both take effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct GuardBits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
}

impl GuardBits {
    pub fn all(g: RealmGuard) -> Self {
        GuardBits {
            require_approval: Some(g.require_approval),
            protected: Some(g.protected),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.require_approval.is_none() && self.protected.is_none()
    }

    /// Whether it turns off a bit that is on in `g`.
    pub fn lowers(&self, g: RealmGuard) -> bool {
        (g.require_approval && self.require_approval == Some(false))
            || (g.protected && self.protected == Some(false))
    }
}

/// A change request (see `admin::changes`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChangeRecord {
    pub id: String,
    pub realm: Option<String>,
    pub kind: String,
    /// JSON: what to change.
    pub params: String,
    pub requested_by: String,
    pub requested_at: i64,
    pub expires_at: i64,
    /// pending, applying (approved, being applied), applied, rejected, failed.
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    /// JSON: what applying it reported (never a secret), or why it failed.
    pub outcome: Option<String>,
}

/// A data-encryption key wrapped by a KMS key: what the database holds of a KMS-backed KEK.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WrappedKek {
    /// `aws-kms:KEY` as configured (one data key per KMS key).
    pub source: String,
    /// The KEK id values sealed under it carry.
    pub kek_id: String,
    /// KMS's ciphertext blob of the data key.
    pub wrapped: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RealmRecord {
    pub name: String,
    pub alg: String,
    pub display_name: Option<String>,
    pub access_token_ttl: i64,
    pub created_at: i64,
    /// How long a key signs before the next one takes over.
    pub rotation_period_secs: i64,
    /// How long a `next` key is published before it may sign.
    pub prepublish_secs: i64,
    /// Bumped by every key change: the compare-and-set that lets exactly one node rotate.
    pub key_version: i64,
    /// JSON of `login::settings::LoginSettings` (lifetimes, claim names, fallback policy).
    pub login_settings: String,
}

/// A key to be used once (a hashed `jti`), kept until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleUse {
    pub realm: String,
    pub key: String,
    pub expires_at: i64,
}

#[derive(Clone, sqlx::FromRow)]
pub struct KeyRecord {
    pub realm: String,
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub public_jwk: String,
    /// PKCS#8 sealed under the KEK; see `keys::kek`.
    pub private_sealed: Vec<u8>,
    pub kek_id: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
    /// The latest `exp` of any token this key signed (0 = none).
    pub max_exp: i64,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("realm", &self.realm)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, sqlx::FromRow)]
pub struct ClientRecord {
    pub realm: String,
    pub client_id: String,
    pub enabled: bool,
    pub secret_salt: Vec<u8>,
    pub secret_verifier: Vec<u8>,
    /// Space-separated, as in an OAuth `scope` parameter.
    pub allowed_scopes: String,
    pub default_scopes: String,
    pub audience: String,
    pub grant_types: String,
    pub access_token_ttl: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Exact redirect URIs (UI clients), a JSON list of strings; see `redirect_uris()`.
    pub redirect_uris: String,
    /// A public client (mobile app, SPA) has no secret and must use PKCE.
    pub public_client: bool,
    /// What users see of the app on the hosted pages, and where "Back to the app" goes.
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    /// How the client authenticates (JSON of `clients::auth::ClientAuth`); `None` = a secret.
    pub auth_config: Option<String>,
    /// May call the introspection endpoint (RFC 7662): a resource server.
    pub may_introspect: bool,
    /// Exact post-logout redirect URIs (RP-Initiated Logout), a JSON list of strings.
    pub post_logout_redirect_uris: String,
    /// Where the client is told that a session it had tokens in ended (Back-Channel Logout 1.0).
    pub backchannel_logout_uri: Option<String>,
    /// Bumped by every change to the client (the admin API's `ETag`); random when created.
    pub version: i64,
    /// `auth_config` parsed (inline JWKS included) on first use: the directory caches the
    /// record, so a client's settings are parsed once per cache period, not once per request.
    #[sqlx(skip)]
    pub parsed_auth: std::sync::OnceLock<Result<Arc<crate::clients::auth::ParsedAuth>, String>>,
}

impl ClientRecord {
    /// The registered redirect URIs, each re-validated: a stored value that is not one valid URI
    /// (or a column that is not a JSON list) matches nothing.
    /// The name the hosted pages show: the registered name, else the client id.
    pub fn display_name(&self) -> &str {
        self.client_name.as_deref().unwrap_or(&self.client_id)
    }

    /// The client's authentication settings, parsed once per record.
    pub fn auth(&self) -> Result<Arc<crate::clients::auth::ParsedAuth>, String> {
        self.parsed_auth
            .get_or_init(|| {
                crate::clients::auth::ParsedAuth::parse(self.auth_config.as_deref()).map(Arc::new)
            })
            .clone()
    }

    pub fn redirect_uris(&self) -> Vec<String> {
        serde_json::from_str::<Vec<String>>(&self.redirect_uris)
            .unwrap_or_default()
            .into_iter()
            .filter(|u| crate::admin::clients::is_valid_redirect_uri(u))
            .collect()
    }

    /// The registered post-logout redirect URIs, each re-validated like the redirect URIs.
    pub fn post_logout_redirect_uris(&self) -> Vec<String> {
        serde_json::from_str::<Vec<String>>(&self.post_logout_redirect_uris)
            .unwrap_or_default()
            .into_iter()
            .filter(|u| crate::admin::clients::is_valid_redirect_uri(u))
            .collect()
    }
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("realm", &self.realm)
            .field("client_id", &self.client_id)
            .field("enabled", &self.enabled)
            .field("allowed_scopes", &self.allowed_scopes)
            .finish_non_exhaustive()
    }
}

/// A set of key changes applied together, in this order: delete removed keys (their private halves
/// are destroyed with the row), retire the active key, activate the next one, insert new keys.
#[derive(Debug, Default)]
pub struct KeyChanges {
    pub retire: Option<String>,
    pub activate: Option<String>,
    pub insert: Vec<KeyRecord>,
    pub remove: Vec<String>,
    /// The realm's algorithm for keys generated from now on.
    pub set_alg: Option<String>,
    pub now: i64,
}

/// A sealed private key re-encrypted under another KEK.
#[derive(Debug)]
pub struct Resealed {
    pub realm: String,
    pub kid: String,
    pub private_sealed: Vec<u8>,
    pub kek_id: String,
}

/// A realm's PII key sealed again under a new KEK; written only while the row still holds `old`.
#[derive(Debug, Clone)]
pub struct ResealedPiiKey {
    pub realm: String,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

/// A user's TOTP secret sealed again under a new KEK; written only while the row still holds
/// `old` (a secret replaced meanwhile is left as the user set it).
#[derive(Debug, Clone)]
pub struct ResealedTotp {
    pub realm: String,
    pub user_id: String,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

/// A realm's AWS exchange settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AwsSettingsRecord {
    pub realm: String,
    /// An explicit STS endpoint URL (tests, VPC endpoints); `None` = the real AWS STS hosts of
    /// `partitions`.
    pub sts_endpoint: Option<String>,
    /// Space-separated AWS partitions whose STS hosts are allowed (`aws aws-us-gov aws-cn`).
    pub partitions: String,
    /// The value the `X-Sigil-Server-ID` header must carry (and be signed).
    pub server_id: String,
    pub require_challenge: bool,
    pub updated_at: i64,
}

/// Maps IAM principals to what their tokens may carry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AwsBindingRecord {
    pub realm: String,
    pub id: String,
    /// Exact canonical ARN or a `*`/`?` glob over it; `None` = any principal (of `account`).
    pub principal: Option<String>,
    pub account: Option<String>,
    /// `allow` or `deny`.
    pub effect: String,
    pub scopes: String,
    pub audience: String,
    pub access_token_ttl: Option<i64>,
    pub created_at: i64,
}

/// A principal policy (see `sigil_validator::policy`): `spec` is its JSON as published.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PolicyRecord {
    pub realm: String,
    pub name: String,
    pub principal_kind: String,
    pub principal: String,
    /// `ALLOW` or `DENY`.
    pub effect: String,
    pub spec: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A write plus the audit records that describe it, committed together or not at all.
pub type Audited<'a> = &'a [AuditDraft];

#[async_trait]
pub trait Store: login::LoginStore + Send + Sync + 'static {
    async fn migrate(&self) -> Result<(), StoreError>;
    /// The connection pool now: (open connections, of which idle, the configured maximum).
    fn pool_status(&self) -> PoolStatus;

    async fn create_realm(
        &self,
        realm: &RealmRecord,
        key: &KeyRecord,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    async fn realm(&self, name: &str) -> Result<Option<RealmRecord>, StoreError>;
    /// Sets a realm's token lifetime, display name and rotation schedule (from `realm`, by its
    /// name); false if there is no such realm. Keys already scheduled keep their times.
    async fn update_realm(
        &self,
        realm: &RealmRecord,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    async fn realms(&self) -> Result<Vec<RealmRecord>, StoreError>;
    /// Keys that are published (every state), oldest first.
    async fn realm_keys(&self, realm: &str) -> Result<Vec<KeyRecord>, StoreError>;
    /// Applies `changes` if the realm's `key_version` is still `expected_version` (then bumps it);
    /// returns false, changing nothing, when another node got there first.
    async fn apply_key_changes(
        &self,
        realm: &str,
        expected_version: i64,
        changes: &KeyChanges,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Every key of every realm (for KEK rotation).
    async fn all_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Replaces every listed sealed key in one transaction.
    /// Replaces every listed sealed key and TOTP secret in one transaction; returns how many
    /// TOTP secrets were still the ones read.
    async fn reseal_keys(
        &self,
        keys: &[Resealed],
        totps: &[ResealedTotp],
        pii_keys: &[ResealedPiiKey],
        audit: Audited<'_>,
    ) -> Result<usize, StoreError>;
    /// Every user's sealed TOTP secret: (realm, user id, sealed).
    async fn totp_secrets(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError>;
    /// The KEK ids any stored private key is sealed under (to refuse a wrong or missing KEK).
    async fn kek_ids_in_use(&self) -> Result<Vec<String>, StoreError>;
    /// The admin realm recorded by the last `sigil serve` or `sigil admin bootstrap`; `None` if
    /// none was (see `record_admin_realm`).
    async fn recorded_admin_realm(&self) -> Result<Option<String>, StoreError>;
    /// Records the admin realm this node runs with, so that a CLI run without `admin_realm`
    /// judges four-eyes as the server does; with `replace` false, only if none is recorded.
    /// `Ok(true)` when the record changed; the audit records are appended, in the same
    /// transaction, only then.
    async fn record_admin_realm(
        &self,
        realm: &str,
        replace: bool,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// A realm's four-eyes settings; `None` if never set.
    async fn realm_guard(&self, realm: &str) -> Result<Option<RealmGuard>, StoreError>;
    /// Sets the given bits of a realm's guard in one statement, each over the value the row has
    /// when it is written; a realm without a row gets `defaults` for the bits not given (its
    /// guard until now, which the caller knows). Returns the guard as written.
    async fn set_realm_guard(
        &self,
        realm: &str,
        bits: GuardBits,
        defaults: RealmGuard,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<RealmGuard, StoreError>;
    async fn create_change(&self, c: &ChangeRecord, audit: Audited<'_>) -> Result<(), StoreError>;
    async fn change(&self, id: &str) -> Result<Option<ChangeRecord>, StoreError>;
    /// Newest first, at most `limit`.
    async fn changes(&self, limit: i64) -> Result<Vec<ChangeRecord>, StoreError>;
    /// Decides a pending, unexpired request: `to` is `applying` (an approval; never by the
    /// requester) or `rejected`. One conditional UPDATE, with `audit` only if it matched: of
    /// several deciders at once exactly one wins. True if this call decided it.
    async fn decide_change(
        &self,
        id: &str,
        decider: &str,
        to: &str,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Records how an approved change ended: `applied` or `failed`, with its outcome.
    async fn finish_change(
        &self,
        id: &str,
        state: &str,
        outcome: &str,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    /// The data key wrapped by the KMS key `source` names, if one was made.
    async fn wrapped_kek(&self, source: &str) -> Result<Option<WrappedKek>, StoreError>;
    /// Stores a wrapped data key unless one for its source exists (two nodes starting at once:
    /// the first one's stays, and both use it).
    async fn insert_wrapped_kek(&self, w: &WrappedKek) -> Result<(), StoreError>;
    /// Makes new connections use `url` (a rotated password) after one test connection with it
    /// succeeds; connections already open stay. A no-op for SQLite.
    async fn use_database_url(&self, url: &str) -> Result<(), StoreError>;
    /// After values were moved out of plain storage: SQLite folds its WAL into the file and
    /// truncates it (the file itself overwrites freed content, `secure_delete`); a no-op on
    /// PostgreSQL, whose old row versions go with VACUUM.
    async fn scrub(&self) -> Result<(), StoreError>;

    async fn create_client(&self, c: &ClientRecord, audit: Audited<'_>) -> Result<(), StoreError>;
    async fn client(&self, realm: &str, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn clients(&self, realm: &str) -> Result<Vec<ClientRecord>, StoreError>;
    /// Replaces a client's description (scopes, audience, grant types, lifetime, URIs, names,
    /// introspection) from `c`, keeping its secret, authentication, state and history; with
    /// `expected`, only while its `version` is that one. False if no row matched.
    async fn update_client(
        &self,
        c: &ClientRecord,
        expected: Option<i64>,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Deletes a client; its tokens issued until `now` go into the revocation feed. With
    /// `expected`, only while the client's `version` is that one (the admin API's `If-Match`):
    /// the check and the change are one statement, so of two writers holding the same version
    /// one wins. `false` if no row matched (no such client, or another version).
    /// Deletes a client, its policies with it: exactly `removing` (the names its audit record
    /// gives), else `Changed` and nothing is written.
    async fn delete_client(
        &self,
        realm: &str,
        id: &str,
        expected: Option<i64>,
        removing: &[String],
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Whether a client's tokens issued at `iat` were revoked since (it was disabled or deleted
    /// then): a client enabled again, or created again under the same id, does not revive them.
    async fn client_revoked_since(
        &self,
        realm: &str,
        client_id: &str,
        iat: i64,
        now: i64,
    ) -> Result<bool, StoreError>;
    #[allow(clippy::too_many_arguments)] // the row, its version, the secret, the audit
    async fn set_client_secret(
        &self,
        realm: &str,
        id: &str,
        expected: Option<i64>,
        salt: &[u8],
        verifier: &[u8],
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    async fn set_login_settings(
        &self,
        realm: &str,
        settings: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    async fn set_client_enabled(
        &self,
        realm: &str,
        id: &str,
        expected: Option<i64>,
        enabled: bool,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Replaces how a client authenticates; `false` if there is no such client.
    async fn set_client_auth(
        &self,
        realm: &str,
        id: &str,
        expected: Option<i64>,
        auth_config: Option<&str>,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// The CAs (PEM) a realm's `tls_client_auth` clients chain to.
    async fn realm_mtls(&self, realm: &str) -> Result<Option<String>, StoreError>;
    /// Sets (or with `None` removes) a realm's client CAs.
    async fn set_realm_mtls(
        &self,
        realm: &str,
        ca_pem: Option<&str>,
        now: i64,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;

    async fn set_aws_settings(
        &self,
        s: &AwsSettingsRecord,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    async fn aws_settings(&self, realm: &str) -> Result<Option<AwsSettingsRecord>, StoreError>;
    /// Turns a realm's AWS exchange off (its bindings stay); false if it was not on.
    async fn delete_aws_settings(
        &self,
        realm: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Stores a binding; with `replace`, one of the same realm and id is replaced in the same
    /// transaction (otherwise it is a conflict).
    async fn put_aws_binding(
        &self,
        b: &AwsBindingRecord,
        replace: bool,
        audit: Audited<'_>,
    ) -> Result<(), StoreError>;
    async fn aws_bindings(&self, realm: &str) -> Result<Vec<AwsBindingRecord>, StoreError>;
    async fn delete_aws_binding(
        &self,
        realm: &str,
        id: &str,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Stores a policy and raises the realm's policy version in one transaction with its audit
    /// records; with `replace` the one of the same name is replaced (`Conflict` if there is none
    /// any more), otherwise one of that name is a `Conflict`.
    /// A client, group or user principal must exist in the realm (`NotFound` naming it), and the
    /// realm's policies stay within what a validator loads (`Full`). Returns the new version.
    async fn put_policy(
        &self,
        p: &PolicyRecord,
        replace: bool,
        audit: Audited<'_>,
    ) -> Result<i64, StoreError>;
    /// A realm's policy version and policies (by name), read in one statement: the version
    /// always describes exactly these policies.
    async fn policies(&self, realm: &str) -> Result<(i64, Vec<PolicyRecord>), StoreError>;
    /// A realm's policy version alone (0 before its first policy): all a conditional bundle read
    /// needs when nothing changed.
    async fn policy_version(&self, realm: &str) -> Result<i64, StoreError>;
    /// One policy by name.
    async fn policy(&self, realm: &str, name: &str) -> Result<Option<PolicyRecord>, StoreError>;
    /// Whether the realm has a policy's principal: a client, group or user by id (other kinds
    /// name no record: true). `put_policy` checks the same under its lock.
    async fn policy_principal_exists(
        &self,
        realm: &str,
        kind: &str,
        id: &str,
    ) -> Result<bool, StoreError>;
    /// The names of the policies attached to one principal (`kind`, `id`).
    async fn policy_names_of(
        &self,
        realm: &str,
        kind: &str,
        id: &str,
    ) -> Result<Vec<String>, StoreError>;
    /// Deletes a policy and raises the version; false (nothing written) if there was none, or
    /// (with `expected`) if its stored spec is not that one.
    async fn delete_policy(
        &self,
        realm: &str,
        name: &str,
        expected: Option<&str>,
        audit: Audited<'_>,
    ) -> Result<bool, StoreError>;
    /// Prunes expired challenges, then stores this one (by hash) unless the realm already holds
    /// `max_live` unexpired ones; returns whether it was stored. Under concurrent calls on
    /// PostgreSQL the count may overshoot `max_live` by the number of calls in flight.
    async fn create_aws_challenge(
        &self,
        realm: &str,
        nonce_hash: &str,
        expires_at: i64,
        now: i64,
        max_live: i64,
    ) -> Result<bool, StoreError>;
    /// Consumes a live challenge; false if unknown, expired or already used.
    async fn consume_aws_challenge(
        &self,
        realm: &str,
        nonce_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Appends to the hash chain in one transaction; returns the new rows' sequence numbers.
    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, StoreError>;
    /// A connection of its own for the group-commit writer, kept across batches.
    async fn audit_session(&self) -> Result<Box<dyn AuditSession>, StoreError>;
    /// Rows of every chain with `after < seq <= after + limit`, ordered by seq then chain (each
    /// chain's rows in order). Page on by `after += limit` until a page is empty: every chain is
    /// numbered from 1 without gaps, so no range before the end is empty.
    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// Every chain's stored head (`chain`, `seq`, `hash`), the row its appends chain onto.
    async fn audit_heads(&self) -> Result<Vec<ChainHead>, StoreError>;
    /// The chain this store's appends go to.
    fn audit_chain(&self) -> &str;
    /// Whether `chain` has a row after `seq` of another kind than `except_kind`.
    async fn audit_rows_after(
        &self,
        chain: &str,
        seq: i64,
        except_kind: &str,
    ) -> Result<bool, StoreError>;
}

/// The audit writer's connection: appends batches like [`Store::append_audit`] without checking a
/// connection out of the pool for each.
#[async_trait]
pub trait AuditSession: Send {
    async fn append(&mut self, drafts: &[AuditDraft]) -> Result<Vec<i64>, StoreError>;
    /// Claims single-use keys and appends `drafts` in one transaction: one durable commit for
    /// both. For each claim, `false` if its key was already used (a replay) or appears earlier in
    /// the same batch; the keys (hashed `jti`s of client assertions and DPoP proofs) are shared
    /// by every node on the database. On SQLite, using the audit writer's connection also keeps
    /// the claims from queueing for the database's one write lock.
    async fn claim_and_append(
        &mut self,
        claims: &[SingleUse],
        drafts: &[AuditDraft],
    ) -> Result<(Vec<bool>, Vec<i64>), StoreError>;
    /// Closes the connection instead of returning it to the pool: call after an error, or after
    /// an `append` was abandoned at its deadline.
    fn discard(self: Box<Self>);
}

/// A chain's stored head: (chain, seq, hash).
pub type ChainHead = (String, i64, String);

/// The clock leeway a validator may allow past a token's `exp` (the validator crate's default is
/// 60 s): a revoked token stays in the revocation feed that much longer than it lives.
pub const VALIDATOR_LEEWAY_SECS: i64 = 300;

/// How long an ended session or a disabled client stays in the revocation feed: the longest an
/// access token can live (24 h) and the validators' clock leeway.
pub const REVOCATION_HORIZON_SECS: i64 = 86_400 + VALIDATOR_LEEWAY_SECS;

/// One audit row ready to write: (seq, the draft, its detail as text, prev_hash, hash).
pub(crate) type AuditRow<'a> = (i64, &'a AuditDraft, String, String, String);

/// A connection pool's state, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub open: u32,
    pub idle: usize,
    pub max: u32,
}

/// How a node uses its database connections (the pool and its deadlines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbOptions {
    /// Most connections one node keeps open to PostgreSQL (SQLite uses a fixed, small pool).
    pub pool_size: u32,
    /// How long a caller waits for a connection: a free one from the pool, or a new one being
    /// opened. Past it the caller gets an error (a request, 503 `temporarily_unavailable`).
    pub connect_timeout: Duration,
    /// At start, how long to keep trying to reach the database (a container started before its
    /// database) before giving up. Zero: one try.
    pub start_wait: Duration,
    /// PostgreSQL cancels a statement (lock waits included) running longer than this, and ends a
    /// session left idle inside a transaction for as long, so a stalled node cannot hold the
    /// audit chain's head row.
    pub statement_timeout: Duration,
    /// The audit chain this node appends to (`main` by default). Nodes on different chains never
    /// wait for each other's audit commits; `audit verify` checks every chain.
    pub audit_chain: String,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            start_wait: Duration::ZERO,
            statement_timeout: Duration::from_secs(5),
            audit_chain: crate::audit::MAIN_CHAIN.to_owned(),
        }
    }
}

impl DbOptions {
    /// The longest one store operation may take on an unresponsive database: a connection, then
    /// its statements. Callers on a request's path give up after this.
    pub fn deadline(&self) -> Duration {
        self.connect_timeout + self.statement_timeout
    }
}

/// Opens the store the URL names (`sqlite:` or `postgres://`) with the default pool settings,
/// without migrating.
pub async fn connect(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(database_url, &DbOptions::default()).await
}

/// Opens the store the URL names with the given pool settings, without migrating.
pub async fn connect_with(
    database_url: &str,
    options: &DbOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(database_url, &options.audit_chain).await?,
        ))
    } else {
        Ok(Arc::new(
            postgres::PgStore::connect(database_url, options).await?,
        ))
    }
}

/// Connects and runs the migrations, as a process starts. While the database cannot be reached
/// (not up yet, still starting), tries again every second until `options.start_wait` has passed.
pub async fn open(database_url: &str, options: &DbOptions) -> Result<Arc<dyn Store>, StoreError> {
    let deadline = tokio::time::Instant::now() + options.start_wait;
    loop {
        let attempt = async {
            let store = connect_with(database_url, options).await?;
            store.migrate().await?;
            Ok::<_, StoreError>(store)
        };
        match attempt.await {
            Ok(store) => return Ok(store),
            Err(e @ (StoreError::Database(_) | StoreError::Migrate(_)))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "database not reachable yet; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The count of a policy principal's record (`$1` realm, `$2` id), for the kinds that have one.
pub(crate) fn principal_count_sql(kind: &str) -> Option<&'static str> {
    match kind {
        "client" => Some("SELECT COUNT(*) FROM clients WHERE realm = $1 AND client_id = $2"),
        "group" => Some("SELECT COUNT(*) FROM groups WHERE realm = $1 AND name = $2"),
        "user" => Some("SELECT COUNT(*) FROM users WHERE realm = $1 AND id = $2"),
        _ => None,
    }
}

fn map_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::Conflict(what()),
        Some(d) if d.is_foreign_key_violation() => StoreError::NotFound(what()),
        _ => StoreError::Database(e),
    }
}
