//! Users and groups of a realm: created and managed by the CLI (and later the admin API);
//! credentials are enrolled by the user through an invite link.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::{AdminError, invalid};
use crate::audit::AuditDraft;
use crate::clients::scope;
use crate::clock::UnixTime;
use crate::directory::issuer_for;
use crate::identity::pii::{self, Classification, PiiKey};
use crate::identity::settings::LoginSettings;
use crate::keys::KekSource;
use crate::keys::kek::hex;
use crate::store::login::{GroupRecord, UserRecord};
use crate::store::{PiiSealer, Store, StoreError};

/// Usernames: 1-128 of `A-Z a-z 0-9 . _ @ + -` (email addresses fit).
pub fn is_valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 128
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

pub(crate) fn is_valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub enabled: bool,
    pub attributes: BTreeMap<String, String>,
    pub groups: Vec<String>,
    pub has_password: bool,
    pub has_totp: bool,
    pub passkeys: usize,
    pub sessions: usize,
    /// Bumped by every admin change: the admin API's `ETag` is made from it.
    pub version: i64,
}

/// The checks [`create_group`] makes before it writes; the scopes normalised.
pub fn check_group(name: &str, scopes: &str) -> Result<String, AdminError> {
    if !is_valid_name(name) {
        return Err(invalid("name", "use 1-64 of A-Z a-z 0-9 . _ : -"));
    }
    scope::parse(scopes)
        .map(|s| s.join(" "))
        .map_err(|e| invalid("scope", e.to_string()))
}

pub async fn create_group(
    store: &dyn Store,
    realm: &str,
    name: &str,
    scopes: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let scopes = check_group(name, scopes)?;
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    let audit = [AuditDraft::new(now, Some(realm), "group.created", actor)
        .subject(name)
        .detail(json!({"scopes": scopes}))];
    store
        .create_group(
            &GroupRecord {
                realm: realm.into(),
                name: name.into(),
                scopes,
            },
            &audit,
        )
        .await?;
    Ok(())
}

/// Sets a group's scopes. Members' next tokens (and refreshes) carry the new ones.
pub async fn set_group_scopes(
    store: &dyn Store,
    realm: &str,
    name: &str,
    scopes: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let scopes = scope::parse(scopes)
        .map(|s| s.join(" "))
        .map_err(|e| invalid("scope", e.to_string()))?;
    let audit = [AuditDraft::new(now, Some(realm), "group.updated", actor)
        .subject(name)
        .detail(json!({"scopes": scopes}))];
    if store.set_group_scopes(realm, name, &scopes, &audit).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "group {name} in realm {realm}"
        )))
    }
}

/// Deletes a group; its members leave it, and its policies go with it, unless the realm's
/// policies change only through four-eyes (`keep_policies`, see
/// [`super::changes::policies_guarded`]): then a group that still has policies is refused, as
/// deleting it would delete them without a second admin.
pub async fn delete_group(
    store: &dyn Store,
    realm: &str,
    name: &str,
    keep_policies: bool,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    // The policies it takes along are named in its audit record: read first, held to by the
    // store (a policy written or deleted for it in between: read again).
    let deleted = super::settled(
        move || async move {
            let policies = store.policy_names_of(realm, "group", name).await?;
            let audit = [AuditDraft::new(now, Some(realm), "group.deleted", actor)
                .subject(name)
                .detail(serde_json::json!({"policies_removed": policies}))];
            store
                .delete_group(realm, name, keep_policies, &policies, &audit)
                .await
        },
        |e| matches!(e, crate::store::StoreError::Changed(_)),
    )
    .await
    .map_err(|e| match e {
        crate::store::StoreError::Conflict(held) => AdminError::Conflict(format!(
            "{held}, and a policy there is deleted only through a second admin's approval: \
             `sigil policy delete` files the request; delete the group once it has none"
        )),
        other => other.into(),
    })?;
    if deleted {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "group {name} in realm {realm}"
        )))
    }
}

pub async fn groups(store: &dyn Store, realm: &str) -> Result<Vec<(String, String)>, AdminError> {
    Ok(store
        .groups(realm)
        .await?
        .into_iter()
        .map(|g| (g.name, g.scopes))
        .collect())
}

pub fn parse_attr(kv: &str) -> Result<(String, String), AdminError> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| invalid("attr", "use key=value"))?;
    if !is_valid_name(k) || v.len() > 512 || v.chars().any(char::is_control) {
        return Err(invalid("attr", format!("bad attribute {k:?}")));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// The realm's PII key when it declares any `pii_high` attribute (what the store seals those
/// attributes' values with), else `None`.
async fn pii_sealer(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm: &str,
) -> Result<Option<PiiKey>, AdminError> {
    let declared = store.realm_attributes(realm).await?;
    if !declared.iter().any(|(_, c)| c == "pii_high") {
        return Ok(None);
    }
    Ok(pii::realm_key(store, kek, realm, false, 0).await?)
}

/// Declares a realm's attributes and their classification, replacing its declarations; values of
/// attributes now `pii_high` are encrypted in the same transaction. An attribute holding encrypted
/// values stays `pii_high`. Returns how many values were encrypted.
pub async fn declare_attributes(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm: &str,
    declarations: &[(String, Classification)],
    now: UnixTime,
    actor: &str,
) -> Result<usize, AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in declarations {
        if !is_valid_name(name) {
            return Err(invalid("attr", format!("bad attribute name {name:?}")));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid("attr", format!("{name} is declared twice")));
        }
    }
    let key = if declarations
        .iter()
        .any(|(_, c)| *c == Classification::PiiHigh)
    {
        pii::realm_key(store, kek, realm, true, now).await?
    } else {
        None
    };
    let rows: Vec<(String, String)> = declarations
        .iter()
        .map(|(n, c)| (n.clone(), c.as_str().to_owned()))
        .collect();
    let detail: BTreeMap<&str, &str> = rows.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
    let audit = [
        AuditDraft::new(now, Some(realm), "realm.attributes_declared", actor)
            .detail(json!({ "attributes": detail })),
    ];
    let sealer = key.as_ref().map(|k| k as &dyn PiiSealer);
    let moved = match store
        .set_realm_attributes(realm, &rows, sealer, &audit)
        .await
    {
        Err(StoreError::Conflict(message)) => return Err(invalid("attr", message)),
        other => other?,
    };
    if moved > 0 {
        store.scrub().await?;
    }
    Ok(moved)
}

/// The realm's declarations: (name, classification).
pub async fn declared_attributes(
    store: &dyn Store,
    realm: &str,
) -> Result<Vec<(String, String)>, AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    Ok(store.realm_attributes(realm).await?)
}

/// Encrypts plain values of `pii_high` attributes left by an older version (`sigil migrate`).
pub async fn migrate_pii(store: &dyn Store, kek: &dyn KekSource) -> Result<usize, AdminError> {
    let mut moved = 0;
    for realm in store.realms().await? {
        if let Some(key) = pii_sealer(store, kek, &realm.name).await? {
            moved += store.migrate_pii(&realm.name, &key).await?;
        }
    }
    if moved > 0 {
        store.scrub().await?;
    }
    Ok(moved)
}

/// The users whose `pii_high` attribute `name` is exactly `value`, found through its blind index.
pub async fn find_by_attribute(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm: &str,
    name: &str,
    value: &str,
) -> Result<Vec<UserView>, AdminError> {
    let declared = declared_attributes(store, realm).await?;
    if !declared.iter().any(|(n, c)| n == name && c == "pii_high") {
        return Err(invalid(
            "attr",
            format!("{name} is not a pii_high attribute of realm {realm} (only those are indexed)"),
        ));
    }
    let Some(key) = pii::realm_key(store, kek, realm, false, 0).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for id in store
        .users_by_pii_index(realm, name, &key.index(name, value))
        .await?
    {
        if let Some(u) = store.user_by_id(realm, &id).await? {
            out.push(show(store, realm, &u.username).await?);
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub async fn create(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm: &str,
    username: &str,
    attributes: &[(String, String)],
    groups: &[String],
    now: UnixTime,
    actor: &str,
) -> Result<UserView, AdminError> {
    if !is_valid_username(username) {
        return Err(invalid("username", "use 1-128 of A-Z a-z 0-9 . _ @ + -"));
    }
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    let attrs: BTreeMap<String, String> = attributes.iter().cloned().collect();
    let id_bytes: [u8; 16] = crate::random::random_bytes();
    let user = UserRecord {
        realm: realm.into(),
        id: hex(&id_bytes),
        username: username.into(),
        enabled: true,
        attributes: serde_json::to_string(&attrs).unwrap_or_else(|_| "{}".into()),
        password_hash: None,
        totp_sealed: None,
        totp_last_step: 0,
        created_at: now,
        updated_at: now,
        version: super::first_version(),
    };
    // Which attributes were set, never their values (some may be pii_high).
    let names: Vec<&String> = attrs.keys().collect();
    let audit = [AuditDraft::new(now, Some(realm), "user.created", actor)
        .subject(&user.id)
        .detail(json!({"username": username, "groups": groups, "attributes": names}))];
    let key = pii_sealer(store, kek, realm).await?;
    let sealer = key.as_ref().map(|k| k as &dyn PiiSealer);
    store.create_user(&user, groups, sealer, &audit).await?;
    show(store, realm, username).await
}

pub async fn find(
    store: &dyn Store,
    realm: &str,
    username: &str,
) -> Result<UserRecord, AdminError> {
    store
        .user_by_name(realm, username)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("user {username} in realm {realm}")))
}

pub async fn show(store: &dyn Store, realm: &str, username: &str) -> Result<UserView, AdminError> {
    let u = find(store, realm, username).await?;
    let groups = store
        .user_groups(realm, &u.id)
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    let passkeys = store.passkeys(realm, &u.id).await?.len();
    let sessions = store.sessions_of(realm, &u.id).await?.len();
    let mut attributes: BTreeMap<String, String> =
        serde_json::from_str(&u.attributes).unwrap_or_default();
    for (name, _) in store.user_pii(realm, &u.id).await? {
        attributes.insert(name, pii::REDACTED.to_owned());
    }
    Ok(UserView {
        version: u.version,
        attributes,
        has_password: u.password_hash.is_some(),
        has_totp: u.totp_sealed.is_some(),
        id: u.id,
        username: u.username,
        enabled: u.enabled,
        groups,
        passkeys,
        sessions,
    })
}

/// Enables or disables. Disabling ends every session and refresh token in the same transaction,
/// and writes only the `enabled` column: a request of the user's in flight cannot revert it.
pub async fn set_enabled(
    store: &dyn Store,
    realm: &str,
    username: &str,
    expected: Option<i64>,
    enabled: bool,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let u = find(store, realm, username).await?;
    let kind = if enabled {
        "user.enabled"
    } else {
        "user.disabled"
    };
    let mut audit = vec![AuditDraft::new(now, Some(realm), kind, actor).subject(&u.id)];
    if !enabled {
        audit.push(
            AuditDraft::new(now, Some(realm), "user.signed_out_everywhere", actor).subject(&u.id),
        );
    }
    if store
        .set_user_enabled(realm, &u.id, expected, enabled, now, &audit)
        .await?
    {
        Ok(())
    } else {
        Err(gone_or_stale(store, realm, username).await)
    }
}

/// Sets (or with an empty value, removes) attributes.
#[allow(clippy::too_many_arguments)]
pub async fn set_attrs(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm: &str,
    username: &str,
    expected: Option<i64>,
    attrs: &[(String, String)],
    now: UnixTime,
    actor: &str,
) -> Result<UserView, AdminError> {
    let u = find(store, realm, username).await?;
    // Which attributes changed, never their values (some may be pii_high).
    let set: Vec<&str> = attrs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.as_str())
        .collect();
    let removed: Vec<&str> = attrs
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| k.as_str())
        .collect();
    let audit = [
        AuditDraft::new(now, Some(realm), "user.attributes_set", actor)
            .subject(&u.id)
            .detail(json!({"set": set, "removed": removed})),
    ];
    let key = pii_sealer(store, kek, realm).await?;
    let sealer = key.as_ref().map(|k| k as &dyn PiiSealer);
    match store
        .update_user_attributes(realm, &u.id, expected, attrs, sealer, now, &audit)
        .await?
    {
        Some(_) => show(store, realm, username).await,
        None => Err(gone_or_stale(store, realm, username).await),
    }
}

/// Removes a user's passkeys, TOTP secret and recovery codes and ends every session and refresh
/// token, in one transaction (a staff member who lost their devices enrols again through an
/// invite). Callers gate it through `changes::gate`.
pub async fn remove_second_factors(
    store: &dyn Store,
    realm: &str,
    username: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let u = find(store, realm, username).await?;
    let audit = [
        AuditDraft::new(now, Some(realm), "user.second_factors_removed", actor).subject(&u.id),
        AuditDraft::new(now, Some(realm), "user.signed_out_everywhere", actor).subject(&u.id),
    ];
    let change = crate::store::login::CredentialChange::RemoveSecondFactors;
    if store
        .change_credentials(realm, &u.id, "", &change, now, &audit)
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "user {username} in realm {realm}"
        )))
    }
}

/// Why a change naming a version matched no row: the user is gone, or changed since it was read.
async fn gone_or_stale(store: &dyn Store, realm: &str, username: &str) -> AdminError {
    match store.user_by_name(realm, username).await {
        Ok(Some(_)) => AdminError::Stale(format!("user {username} in realm {realm}")),
        Ok(None) => AdminError::NotFound(format!("user {username} in realm {realm}")),
        Err(e) => e.into(),
    }
}

pub async fn add_group(
    store: &dyn Store,
    realm: &str,
    username: &str,
    group: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let u = find(store, realm, username).await?;
    let audit = [AuditDraft::new(now, Some(realm), "user.group_added", actor)
        .subject(&u.id)
        .detail(json!({"group": group}))];
    store.add_user_group(realm, &u.id, group, &audit).await?;
    Ok(())
}

pub async fn remove_group(
    store: &dyn Store,
    realm: &str,
    username: &str,
    group: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let u = find(store, realm, username).await?;
    let audit = [
        AuditDraft::new(now, Some(realm), "user.group_removed", actor)
            .subject(&u.id)
            .detail(json!({"group": group})),
    ];
    if store.remove_user_group(realm, &u.id, group, &audit).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "membership of {username} in {group}"
        )))
    }
}

/// A single-use, expiring enrolment link; only its hash is stored.
#[allow(clippy::too_many_arguments)]
pub async fn invite(
    store: &dyn Store,
    admin_realm: Option<&str>,
    base_url: &str,
    realm: &str,
    username: &str,
    ttl: i64,
    now: UnixTime,
    actor: &str,
) -> Result<String, AdminError> {
    if !(60..=7 * 86_400).contains(&ttl) {
        return Err(invalid("ttl", "an invite lives 60 s to 7 days"));
    }
    let u = find(store, realm, username).await?;
    if super::changes::reenrolment_refused(store, admin_realm, realm, &u).await? {
        return Err(invalid(
            "username",
            format!(
                "{username} already has sign-in factors, and realm {realm} requires approval: \
                 remove them first with `sigil user remove-second-factors` (a four-eyes request)"
            ),
        ));
    }
    let token = crate::identity::new_token();
    let audit = [AuditDraft::new(now, Some(realm), "user.invited", actor)
        .subject(&u.id)
        .detail(json!({"expires_at": now + ttl}))];
    store
        .create_invite(
            &crate::identity::token_hash(&token),
            realm,
            &u.id,
            now + ttl,
            &audit,
        )
        .await?;
    Ok(format!("{}/enrol/{token}", issuer_for(base_url, realm)))
}

pub async fn sign_out_everywhere(
    store: &dyn Store,
    realm: &str,
    username: &str,
    now: UnixTime,
    actor: &str,
) -> Result<u64, AdminError> {
    let u = find(store, realm, username).await?;
    let audit =
        [AuditDraft::new(now, Some(realm), "user.signed_out_everywhere", actor).subject(&u.id)];
    Ok(store.sign_out_everywhere(realm, &u.id, now, &audit).await?)
}

/// Changes the realm's sign-in policy (lifetimes, fallback, claim names).
pub async fn set_login_settings(
    store: &dyn Store,
    realm: &str,
    settings: &LoginSettings,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    settings
        .validate()
        .map_err(|m| invalid("login settings", m))?;
    let json =
        serde_json::to_string(settings).map_err(|e| invalid("login settings", e.to_string()))?;
    let audit = [
        AuditDraft::new(now, Some(realm), "realm.login_settings_set", actor)
            .detail(serde_json::from_str(&json).unwrap_or_default()),
    ];
    if store.set_login_settings(realm, &json, &audit).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("realm {realm}")))
    }
}
