//! Scheduled, pre-published key rotation. A realm's keys move `next` → `active` → `retired` →
//! removed:
//! - a `next` key is generated `prepublish` before the active key's period ends, so every validator
//!   that honours the JWKS `max-age` (≤ prepublish) holds it before it signs;
//! - it becomes `active` when the period ends (and it has been published for `prepublish`);
//! - a `retired` key stays published until the latest `exp` it actually signed (`max_exp`, raised
//!   with each token's audit record) plus [`REMOVAL_LEEWAY`], then its row, and with it the sealed
//!   private half, is deleted.
//!
//! [`plan`] is pure; [`tick`] applies a plan through the store's compare-and-set on the realm's
//! `key_version`, so when several nodes tick at once exactly one change lands.

use serde_json::json;

use super::{Alg, KekSource, KeyError, SigningKey, key_aad};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::store::{KeyChanges, KeyRecord, RealmRecord, Store, StoreError};

/// Clock skew plus the time a just-signed token's audit record may still be in flight.
pub const REMOVAL_LEEWAY: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("realm {0} not found")]
    NoRealm(String),
    #[error("key {kid} not found in realm {realm}")]
    NoKey { realm: String, kid: String },
    #[error("another node changed realm {0}'s keys at the same time; try again")]
    Raced(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateNext,
    Promote {
        next: String,
        active: Option<String>,
    },
    Remove {
        kid: String,
    },
}

fn find<'a>(keys: &'a [KeyRecord], state: &str) -> Option<&'a KeyRecord> {
    keys.iter().find(|k| k.state == state)
}

/// What the schedule calls for at `now`.
pub fn plan(realm: &RealmRecord, keys: &[KeyRecord], now: UnixTime) -> Vec<Action> {
    let mut actions = Vec::new();
    let active = find(keys, "active");
    let next = find(keys, "next");
    match (active, next) {
        (Some(a), next) => {
            let due = a.activated_at.unwrap_or(a.created_at) + realm.rotation_period_secs;
            match next {
                None if now >= due - realm.prepublish_secs => actions.push(Action::CreateNext),
                Some(n) if now >= due && now >= n.created_at + realm.prepublish_secs => actions
                    .push(Action::Promote {
                        next: n.kid.clone(),
                        active: Some(a.kid.clone()),
                    }),
                _ => {}
            }
        }
        // No active key (only after a revoke with nothing to promote): promote at once.
        (None, Some(n)) => actions.push(Action::Promote {
            next: n.kid.clone(),
            active: None,
        }),
        (None, None) => actions.push(Action::CreateNext),
    }
    for k in keys.iter().filter(|k| k.state == "retired") {
        let retired_at = k.retired_at.unwrap_or(now);
        if now >= k.max_exp.max(retired_at) + REMOVAL_LEEWAY {
            actions.push(Action::Remove { kid: k.kid.clone() });
        }
    }
    actions
}

/// Generates a key for `realm` and seals its private half.
pub fn new_key(
    kek: &dyn KekSource,
    realm: &str,
    alg: Alg,
    state: &str,
    now: UnixTime,
) -> Result<KeyRecord, KeyError> {
    let generated = SigningKey::generate(alg)?;
    let sealed = kek.seal(&key_aad(realm, &generated.kid), &generated.pkcs8)?;
    Ok(KeyRecord {
        realm: realm.to_owned(),
        kid: generated.kid,
        alg: alg.to_string(),
        state: state.to_owned(),
        public_jwk: generated.public_jwk.to_string(),
        private_sealed: sealed,
        kek_id: kek.id().to_owned(),
        created_at: now,
        activated_at: (state == "active").then_some(now),
        retired_at: None,
        max_exp: 0,
    })
}

fn key_event(realm: &str, kind: &'static str, actor: &str, kid: &str, now: UnixTime) -> AuditDraft {
    AuditDraft::new(now, Some(realm), kind, actor).subject(kid)
}

/// Turns a plan into key changes and their audit records.
fn changes_for(
    kek: &dyn KekSource,
    realm: &RealmRecord,
    actions: &[Action],
    actor: &str,
    now: UnixTime,
) -> Result<(KeyChanges, Vec<AuditDraft>), RotationError> {
    let alg: Alg = realm.alg.parse().map_err(KeyError::Malformed)?;
    let mut changes = KeyChanges {
        now,
        ..Default::default()
    };
    let mut audit = Vec::new();
    for action in actions {
        match action {
            Action::CreateNext => {
                let key = new_key(kek, &realm.name, alg, "next", now)?;
                audit.push(
                    key_event(&realm.name, "key.created", actor, &key.kid, now)
                        .detail(json!({"alg": key.alg, "state": "next", "kek_id": key.kek_id})),
                );
                changes.insert.push(key);
            }
            Action::Promote { next, active } => {
                audit.push(key_event(&realm.name, "key.activated", actor, next, now));
                changes.activate = Some(next.clone());
                if let Some(a) = active {
                    audit.push(key_event(&realm.name, "key.retired", actor, a, now));
                    changes.retire = Some(a.clone());
                }
            }
            Action::Remove { kid } => {
                audit.push(key_event(&realm.name, "key.removed", actor, kid, now));
                changes.remove.push(kid.clone());
            }
        }
    }
    Ok((changes, audit))
}

/// One scheduler step for one realm: plans and applies; returns what this node applied (nothing if
/// nothing was due or another node applied it first).
pub async fn tick(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm_name: &str,
    now: UnixTime,
) -> Result<Vec<Action>, RotationError> {
    let realm = store
        .realm(realm_name)
        .await?
        .ok_or_else(|| RotationError::NoRealm(realm_name.to_owned()))?;
    let keys = store.realm_keys(realm_name).await?;
    let actions = plan(&realm, &keys, now);
    if actions.is_empty() {
        return Ok(actions);
    }
    let (changes, audit) = changes_for(kek, &realm, &actions, "scheduler", now)?;
    if store
        .apply_key_changes(realm_name, realm.key_version, &changes, &audit)
        .await?
    {
        Ok(actions)
    } else {
        Ok(Vec::new())
    }
}

/// `sigil key rotate`: the `next` key signs from now on (a fresh one if none is published yet,
/// which validators will meet as an unknown `kid` and fetch once). `alg` changes the realm's
/// algorithm for this and later keys.
pub async fn rotate_now(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm_name: &str,
    alg: Option<Alg>,
    actor: &str,
    now: UnixTime,
) -> Result<String, RotationError> {
    let mut realm = store
        .realm(realm_name)
        .await?
        .ok_or_else(|| RotationError::NoRealm(realm_name.to_owned()))?;
    let keys = store.realm_keys(realm_name).await?;
    let active = find(&keys, "active").map(|k| k.kid.clone());
    let next = find(&keys, "next").filter(|n| alg.is_none_or(|a| n.alg == a.as_str()));
    let mut changes = KeyChanges {
        now,
        set_alg: alg.map(|a| a.to_string()),
        ..Default::default()
    };
    if let Some(a) = alg {
        realm.alg = a.to_string();
    }
    let mut audit = Vec::new();
    let new_kid = match next {
        Some(n) => {
            changes.activate = Some(n.kid.clone());
            n.kid.clone()
        }
        None => {
            // A next key of another algorithm is replaced by one of the new algorithm.
            if let Some(stale) = find(&keys, "next") {
                changes.remove.push(stale.kid.clone());
                audit.push(key_event(realm_name, "key.removed", actor, &stale.kid, now));
            }
            let alg: Alg = realm.alg.parse().map_err(KeyError::Malformed)?;
            let key = new_key(kek, realm_name, alg, "active", now)?;
            audit.push(
                key_event(realm_name, "key.created", actor, &key.kid, now)
                    .detail(json!({"alg": key.alg, "state": "active", "kek_id": key.kek_id})),
            );
            let kid = key.kid.clone();
            changes.insert.push(key);
            kid
        }
    };
    audit.push(key_event(realm_name, "key.activated", actor, &new_kid, now));
    if let Some(a) = &active {
        audit.push(key_event(realm_name, "key.retired", actor, a, now));
        changes.retire = Some(a.clone());
    }
    if store
        .apply_key_changes(realm_name, realm.key_version, &changes, &audit)
        .await?
    {
        Ok(new_kid)
    } else {
        Err(RotationError::Raced(realm_name.to_owned()))
    }
}

/// `sigil key revoke`: the emergency path. The key leaves JWKS at once and its private half is
/// destroyed; if it was the active key, the next key (or a fresh one) takes over.
pub async fn revoke(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm_name: &str,
    kid: &str,
    actor: &str,
    now: UnixTime,
) -> Result<(), RotationError> {
    let realm = store
        .realm(realm_name)
        .await?
        .ok_or_else(|| RotationError::NoRealm(realm_name.to_owned()))?;
    let keys = store.realm_keys(realm_name).await?;
    let target = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| RotationError::NoKey {
            realm: realm_name.to_owned(),
            kid: kid.to_owned(),
        })?;
    let mut changes = KeyChanges {
        now,
        remove: vec![kid.to_owned()],
        ..Default::default()
    };
    let mut audit = vec![
        key_event(realm_name, "key.revoked", actor, kid, now)
            .detail(json!({"state": target.state})),
    ];
    if target.state == "active" {
        match find(&keys, "next") {
            Some(n) => {
                changes.activate = Some(n.kid.clone());
                audit.push(key_event(realm_name, "key.activated", actor, &n.kid, now));
            }
            None => {
                let alg: Alg = realm.alg.parse().map_err(KeyError::Malformed)?;
                let key = new_key(kek, realm_name, alg, "active", now)?;
                audit.push(
                    key_event(realm_name, "key.created", actor, &key.kid, now)
                        .detail(json!({"alg": key.alg, "state": "active", "kek_id": key.kek_id})),
                );
                changes.insert.push(key);
            }
        }
    }
    if store
        .apply_key_changes(realm_name, realm.key_version, &changes, &audit)
        .await?
    {
        Ok(())
    } else {
        Err(RotationError::Raced(realm_name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn realm() -> RealmRecord {
        RealmRecord {
            name: "r".into(),
            alg: "ES256".into(),
            display_name: None,
            access_token_ttl: 3600,
            created_at: 0,
            rotation_period_secs: 30 * DAY,
            prepublish_secs: DAY,
            key_version: 0,
            login_settings: "{}".into(),
        }
    }

    fn key(kid: &str, state: &str, created: i64, activated: Option<i64>) -> KeyRecord {
        KeyRecord {
            realm: "r".into(),
            kid: kid.into(),
            alg: "ES256".into(),
            state: state.into(),
            public_jwk: "{}".into(),
            private_sealed: vec![],
            kek_id: "k".into(),
            created_at: created,
            activated_at: activated,
            retired_at: None,
            max_exp: 0,
        }
    }

    #[test]
    fn next_key_is_published_prepublish_before_it_signs() {
        let r = realm();
        let keys = vec![key("a", "active", 0, Some(0))];
        assert!(plan(&r, &keys, 29 * DAY - 1).is_empty());
        assert_eq!(plan(&r, &keys, 29 * DAY), vec![Action::CreateNext]);
        let keys = vec![
            key("a", "active", 0, Some(0)),
            key("b", "next", 29 * DAY, None),
        ];
        assert!(plan(&r, &keys, 30 * DAY - 1).is_empty());
        assert_eq!(
            plan(&r, &keys, 30 * DAY),
            vec![Action::Promote {
                next: "b".into(),
                active: Some("a".into())
            }]
        );
        // A next key created late (the server was down) still waits out its prepublish period.
        let keys = vec![
            key("a", "active", 0, Some(0)),
            key("b", "next", 40 * DAY, None),
        ];
        assert!(plan(&r, &keys, 40 * DAY + DAY - 1).is_empty());
    }

    #[test]
    fn retired_keys_stay_until_their_last_token_expires() {
        let r = realm();
        let mut old = key("a", "retired", 0, Some(0));
        old.retired_at = Some(30 * DAY);
        old.max_exp = 30 * DAY + 3600;
        let keys = vec![old, key("b", "active", 29 * DAY, Some(30 * DAY))];
        assert!(plan(&r, &keys, 30 * DAY + 3600 + REMOVAL_LEEWAY - 1).is_empty());
        assert_eq!(
            plan(&r, &keys, 30 * DAY + 3600 + REMOVAL_LEEWAY),
            vec![Action::Remove { kid: "a".into() }]
        );
    }
}
