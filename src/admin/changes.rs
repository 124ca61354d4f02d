//! Four-eyes approval of dangerous admin changes. In a realm that requires approval (a realm
//! setting, on by default for the admin realm), revoking a signing key and removing a user's
//! second factors become *requests*; in a realm marked protected, so do rotating a client's
//! secret and deleting a client; the KEK rotation is a request when any realm requires approval;
//! lowering a realm's own guard is a request when the guard is up; in a protected realm, writing
//! or deleting a principal policy (it grants a principal rights at resource servers) is one too.
//! A second, different admin approves a request within [`APPROVAL_WINDOW_SECS`]; the approval is
//! one conditional UPDATE, so two approvals at once apply it exactly once. Every step is audited.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::declarative::PolicyFileSpec;
use super::{AdminError, invalid};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::keys::KekSource;
use crate::store::{ChangeRecord, GuardBits, RealmGuard, Store};

/// How long a request waits for its approval.
pub const APPROVAL_WINDOW_SECS: i64 = 4 * 3600;

/// What a request changes once approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Re-seal everything under a new KEK (`file:PATH`, `aws-kms:KEY`, `aws-secretsmanager:ID`).
    KekRotate {
        to: String,
    },
    KeyRevoke {
        realm: String,
        kid: String,
    },
    ClientRotateSecret {
        realm: String,
        client_id: String,
    },
    ClientDelete {
        realm: String,
        client_id: String,
    },
    /// Remove a user's passkeys, TOTP secret and recovery codes.
    UserRemoveSecondFactors {
        realm: String,
        username: String,
    },
    /// Create (or, with `replace`, replace) a principal policy: the whole policy is in the request,
    /// so the approver sees exactly what will be written.
    PolicyPut {
        realm: String,
        policy: PolicyFileSpec,
        replace: bool,
    },
    /// Delete a principal policy, only if it is still `policy` (as it was when filed).
    PolicyDelete {
        realm: String,
        name: String,
        policy: PolicyFileSpec,
    },
    /// Set bits of a realm's guard (only lowering one is ever a request). A bit left out is not
    /// touched; requests filed before bits were optional hold both, as `Some`.
    RealmGuard {
        realm: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        require_approval: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protected: Option<bool>,
    },
}

impl Change {
    pub fn realm(&self) -> Option<&str> {
        match self {
            Change::KekRotate { .. } => None,
            Change::KeyRevoke { realm, .. }
            | Change::ClientRotateSecret { realm, .. }
            | Change::ClientDelete { realm, .. }
            | Change::UserRemoveSecondFactors { realm, .. }
            | Change::PolicyPut { realm, .. }
            | Change::PolicyDelete { realm, .. }
            | Change::RealmGuard { realm, .. } => Some(realm),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Change::KekRotate { .. } => "kek_rotate",
            Change::KeyRevoke { .. } => "key_revoke",
            Change::ClientRotateSecret { .. } => "client_rotate_secret",
            Change::ClientDelete { .. } => "client_delete",
            Change::UserRemoveSecondFactors { .. } => "user_remove_second_factors",
            Change::PolicyPut { .. } => "policy_put",
            Change::PolicyDelete { .. } => "policy_delete",
            Change::RealmGuard { .. } => "realm_guard",
        }
    }
}

/// A request as the CLI and the API show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeView {
    pub id: String,
    #[schema(value_type = Object)]
    pub change: Value,
    pub requested_by: String,
    pub requested_at: i64,
    pub expires_at: i64,
    /// pending, expired, applying, applied, rejected or failed.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<Value>,
}

fn view(c: ChangeRecord, now: UnixTime) -> ChangeView {
    let state = if c.state == "pending" && c.expires_at <= now {
        "expired".to_owned()
    } else {
        c.state
    };
    ChangeView {
        id: c.id,
        change: serde_json::from_str(&c.params).unwrap_or(Value::Null),
        requested_by: c.requested_by,
        requested_at: c.requested_at,
        expires_at: c.expires_at,
        state,
        decided_by: c.decided_by,
        decided_at: c.decided_at,
        outcome: c.outcome.and_then(|o| serde_json::from_str(&o).ok()),
    }
}

/// Records `realm` as the admin realm (by `sigil serve` at start, `replace`; by `sigil admin
/// bootstrap` only where none is recorded), audited as `server.admin_realm_recorded` when the
/// record changes. The CLI falls back to this record when its own configuration has no
/// `admin_realm` (see `cli::open_admin_store`), so an operator who runs it without that setting
/// is held by the admin realm's four-eyes all the same.
pub async fn record_admin_realm(
    store: &dyn Store,
    realm: &str,
    replace: bool,
    now: UnixTime,
    actor: &str,
) -> Result<bool, AdminError> {
    let audit = [
        AuditDraft::new(now, None, "server.admin_realm_recorded", actor)
            .subject(realm)
            .detail(json!({ "admin_realm": realm })),
    ];
    Ok(store
        .record_admin_realm(realm, replace, now, &audit)
        .await?)
}

/// A realm's guard: as set, or (never set) approval required for the admin realm only.
pub async fn guard(
    store: &dyn Store,
    admin_realm: Option<&str>,
    realm: &str,
) -> Result<RealmGuard, AdminError> {
    Ok(guard_of(
        store.realm_guard(realm).await?,
        admin_realm,
        realm,
    ))
}

/// [`guard`] from a guard row already read (`None`: never set).
pub fn guard_of(row: Option<RealmGuard>, admin_realm: Option<&str>, realm: &str) -> RealmGuard {
    row.unwrap_or(RealmGuard {
        require_approval: admin_realm == Some(realm),
        protected: false,
    })
}

/// Whether `change` needs a second admin's approval.
pub async fn needs_approval(
    store: &dyn Store,
    admin_realm: Option<&str>,
    change: &Change,
) -> Result<bool, AdminError> {
    Ok(match change {
        Change::KekRotate { .. } => {
            let mut any = false;
            for r in store.realms().await? {
                any |= guard(store, admin_realm, &r.name).await?.require_approval;
            }
            any
        }
        Change::KeyRevoke { realm, .. } | Change::UserRemoveSecondFactors { realm, .. } => {
            guard(store, admin_realm, realm).await?.require_approval
        }
        // Credentials and rights: held where the realm is protected (and in the admin realm
        // while it requires approval).
        Change::ClientRotateSecret { realm, .. }
        | Change::ClientDelete { realm, .. }
        | Change::PolicyPut { realm, .. }
        | Change::PolicyDelete { realm, .. } => policies_guarded(store, admin_realm, realm).await?,
        Change::RealmGuard {
            realm,
            require_approval,
            protected,
        } => {
            let g = guard(store, admin_realm, realm).await?;
            GuardBits {
                require_approval: *require_approval,
                protected: *protected,
            }
            .lowers(g)
        }
    })
}

/// Whether a realm's principal policies change only through a request (writing, replacing or
/// deleting one, and deleting a group that has some): where the realm is protected, and in the
/// admin realm while it requires approval; the same rule holds a client's credentials.
pub async fn policies_guarded(
    store: &dyn Store,
    admin_realm: Option<&str>,
    realm: &str,
) -> Result<bool, AdminError> {
    Ok(guards_policies(
        guard(store, admin_realm, realm).await?,
        admin_realm,
        realm,
    ))
}

/// [`policies_guarded`] for a guard already read.
pub fn guards_policies(g: RealmGuard, admin_realm: Option<&str>, realm: &str) -> bool {
    g.protected || g.require_approval && admin_realm == Some(realm)
}

/// Whether replacing a client's authentication (a new secret, a new certificate or key) needs a
/// second admin's approval: as for rotating its secret.
pub async fn credential_change_needs_approval(
    store: &dyn Store,
    admin_realm: Option<&str>,
    realm: &str,
    client_id: &str,
) -> Result<bool, AdminError> {
    let change = Change::ClientRotateSecret {
        realm: realm.to_owned(),
        client_id: client_id.to_owned(),
    };
    needs_approval(store, admin_realm, &change).await
}

/// In a realm that requires approval, a user who has any sign-in factor cannot be enrolled again
/// through an invite (that would replace the factors without a second admin): their factors
/// must first be removed through a request (`user remove-second-factors`).
pub async fn reenrolment_refused(
    store: &dyn Store,
    admin_realm: Option<&str>,
    realm: &str,
    user: &crate::store::login::UserRecord,
) -> Result<bool, AdminError> {
    if !guard(store, admin_realm, realm).await?.require_approval {
        return Ok(false);
    }
    Ok(user.password_hash.is_some()
        || user.totp_sealed.is_some()
        || !store.passkeys(realm, &user.id).await?.is_empty())
}

/// What an entry point does with a change: apply it now, or it became a request.
pub enum Gate {
    Proceed,
    Requested(ChangeView),
}

/// Called by every entry point (CLI, API) before a dangerous change: a request when the realm
/// requires approval, else go ahead.
pub async fn gate(
    store: &dyn Store,
    admin_realm: Option<&str>,
    change: &Change,
    actor: &str,
    now: UnixTime,
) -> Result<Gate, AdminError> {
    if !needs_approval(store, admin_realm, change).await? {
        return Ok(Gate::Proceed);
    }
    Ok(Gate::Requested(request(store, change, actor, now).await?))
}

pub async fn request(
    store: &dyn Store,
    change: &Change,
    actor: &str,
    now: UnixTime,
) -> Result<ChangeView, AdminError> {
    if let Some(realm) = change.realm()
        && store.realm(realm).await?.is_none()
    {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    if let Change::PolicyPut { realm, policy, .. } = change {
        super::policies::principal_known(store, realm, &policy.principal_kind, &policy.principal)
            .await?;
    }
    let id_bytes: [u8; 12] = crate::random::random_bytes();
    let record = ChangeRecord {
        id: format!("chg-{}", crate::keys::kek::hex(&id_bytes)),
        realm: change.realm().map(str::to_owned),
        kind: change.kind().to_owned(),
        params: serde_json::to_string(change)
            .map_err(|e| AdminError::Conflict(format!("change: {e}")))?,
        requested_by: actor.to_owned(),
        requested_at: now,
        expires_at: now + APPROVAL_WINDOW_SECS,
        state: "pending".into(),
        decided_by: None,
        decided_at: None,
        outcome: None,
    };
    let audit = [
        AuditDraft::new(now, change.realm(), "change.requested", actor)
            .subject(&record.id)
            .detail(json!({"change": change, "expires_at": record.expires_at})),
    ];
    store.create_change(&record, &audit).await?;
    Ok(view(record, now))
}

pub async fn list(store: &dyn Store, now: UnixTime) -> Result<Vec<ChangeView>, AdminError> {
    Ok(store
        .changes(500)
        .await?
        .into_iter()
        .map(|c| view(c, now))
        .collect())
}

pub async fn show(store: &dyn Store, id: &str, now: UnixTime) -> Result<ChangeView, AdminError> {
    store
        .change(id)
        .await?
        .map(|c| view(c, now))
        .ok_or_else(|| AdminError::NotFound(format!("change request {id}")))
}

/// Why a decision did not take: the request is gone, decided, expired, or the requester's own.
async fn not_decided(store: &dyn Store, id: &str, actor: &str, now: UnixTime) -> AdminError {
    match store.change(id).await {
        Ok(None) => AdminError::NotFound(format!("change request {id}")),
        Ok(Some(c)) if c.state != "pending" => invalid(
            "id",
            format!("change request {id} was already decided ({})", c.state),
        ),
        Ok(Some(c)) if c.expires_at <= now => {
            invalid("id", format!("change request {id} has expired"))
        }
        Ok(Some(c)) if c.requested_by == actor => invalid(
            "id",
            "the admin who asked for a change cannot approve it: another admin must",
        ),
        Ok(Some(_)) => invalid("id", format!("change request {id} could not be decided")),
        Err(e) => e.into(),
    }
}

pub async fn reject(
    store: &dyn Store,
    id: &str,
    actor: &str,
    now: UnixTime,
) -> Result<ChangeView, AdminError> {
    let realm = store.change(id).await?.and_then(|c| c.realm);
    let audit = [AuditDraft::new(now, realm.as_deref(), "change.rejected", actor).subject(id)];
    if !store
        .decide_change(id, actor, "rejected", now, &audit)
        .await?
    {
        return Err(not_decided(store, id, actor, now).await);
    }
    show(store, id, now).await
}

/// Approves and applies a request. Returns the request as it ended and what applying it
/// reported (a rotated client secret is in this answer only, never stored).
pub async fn approve(
    store: &dyn Store,
    kek: &dyn KekSource,
    id: &str,
    actor: &str,
    now: UnixTime,
) -> Result<(ChangeView, Value), AdminError> {
    let record = store
        .change(id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("change request {id}")))?;
    let change: Change = serde_json::from_str(&record.params)
        .map_err(|_| invalid("id", format!("change request {id} cannot be read")))?;
    let audit = [
        AuditDraft::new(now, change.realm(), "change.approved", actor)
            .subject(id)
            .detail(json!({"requested_by": record.requested_by, "change": change})),
    ];
    if !store
        .decide_change(id, actor, "applying", now, &audit)
        .await?
    {
        return Err(not_decided(store, id, actor, now).await);
    }
    // Only the one approval that won gets here.
    let applied_by = format!("{actor} (approving {id} of {})", record.requested_by);
    let result = apply(store, kek, &change, &applied_by, now).await;
    let (state, outcome, answer) = match result {
        Ok((stored, answer)) => ("applied", stored, answer),
        Err(e) => {
            let failed = json!({"error": e.to_string()});
            ("failed", failed.clone(), failed)
        }
    };
    let kind = if state == "applied" {
        "change.applied"
    } else {
        "change.failed"
    };
    let audit = [AuditDraft::new(now, change.realm(), kind, actor)
        .subject(id)
        .detail(outcome.clone())];
    store
        .finish_change(id, state, &outcome.to_string(), &audit)
        .await?;
    Ok((show(store, id, now).await?, answer))
}

/// Applies an approved change: (what is stored as its outcome, what the approver is told).
async fn apply(
    store: &dyn Store,
    kek: &dyn KekSource,
    change: &Change,
    actor: &str,
    now: UnixTime,
) -> Result<(Value, Value), AdminError> {
    let done = |v: Value| Ok((v.clone(), v));
    match change {
        Change::KekRotate { to } => {
            let spec = crate::config::KekSpec::parse("to", to)
                .map_err(|e| invalid("to", e.to_string()))?;
            let new = crate::keys::open_rotation_target(&spec, store, now)
                .await
                .map_err(|e| invalid("to", e.to_string()))?;
            let (keys, totps) =
                super::keys::rotate_kek(store, kek, new.as_ref(), actor, now).await?;
            done(json!({"kek": new.id(), "keys": keys, "totp_secrets": totps}))
        }
        Change::KeyRevoke { realm, kid } => {
            crate::keys::rotation::revoke(store, kek, realm, kid, actor, now)
                .await
                .map_err(|e| {
                    use crate::keys::rotation::RotationError as R;
                    match e {
                        R::Store(e) => e.into(),
                        R::Key(e) => AdminError::Key(e),
                        R::NoRealm(r) => AdminError::NotFound(format!("realm {r}")),
                        R::NoKey { realm, kid } => {
                            AdminError::NotFound(format!("key {kid} in realm {realm}"))
                        }
                        R::Raced(r) => AdminError::Stale(format!("realm {r}'s keys")),
                    }
                })?;
            done(json!({"revoked": kid}))
        }
        Change::ClientRotateSecret { realm, client_id } => {
            let made =
                super::clients::rotate_secret(store, realm, client_id, None, now, actor).await?;
            let stored = json!({"rotated": client_id});
            Ok((
                stored,
                json!({"rotated": client_id, "client_secret": made.client_secret}),
            ))
        }
        Change::ClientDelete { realm, client_id } => {
            super::clients::delete(store, realm, client_id, None, now, actor).await?;
            done(json!({"deleted": client_id}))
        }
        Change::UserRemoveSecondFactors { realm, username } => {
            super::users::remove_second_factors(store, realm, username, now, actor).await?;
            done(json!({"second_factors_removed": username}))
        }
        Change::PolicyPut {
            realm,
            policy,
            replace,
        } => {
            super::policies::create(store, policy.new_policy(realm), *replace, now, actor).await?;
            done(json!({"policy": policy.name, "replace": replace}))
        }
        Change::PolicyDelete {
            realm,
            name,
            policy,
        } => {
            super::policies::delete_as_filed(store, realm, policy, now, actor).await?;
            done(json!({"deleted_policy": name}))
        }
        Change::RealmGuard {
            realm,
            require_approval,
            protected,
        } => {
            let bits = GuardBits {
                require_approval: *require_approval,
                protected: *protected,
            };
            // A realm without a guard row whose bit is lowered is the admin realm (approval
            // required, not protected), and a bit left out keeps that.
            let defaults = RealmGuard {
                require_approval: true,
                protected: false,
            };
            let g = change_guard(store, realm, bits, defaults, now, actor).await?;
            done(
                json!({"realm": realm, "require_approval": g.require_approval, "protected": g.protected}),
            )
        }
    }
}

/// Sets both bits of a realm's guard (callers gate lowering it through [`gate`]).
pub async fn set_guard(
    store: &dyn Store,
    realm: &str,
    g: RealmGuard,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    change_guard(store, realm, GuardBits::all(g), g, now, actor)
        .await
        .map(drop)
}

/// Sets the given bits of a realm's guard, each over the row as it is when written (callers
/// gate lowering one through [`gate`]; raising one, checked against a guard read earlier, can
/// then never undo a concurrent change). `defaults` is the realm's guard while it has no row
/// (see [`guard`]). Returns the guard as written; audited as `realm.guard_set`.
pub async fn change_guard(
    store: &dyn Store,
    realm: &str,
    bits: GuardBits,
    defaults: RealmGuard,
    now: UnixTime,
    actor: &str,
) -> Result<RealmGuard, AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    let audit = [AuditDraft::new(now, Some(realm), "realm.guard_set", actor)
        .detail(serde_json::to_value(bits).unwrap_or(Value::Null))];
    Ok(store
        .set_realm_guard(realm, bits, defaults, now, &audit)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_request_filed_with_both_bits_still_reads_and_a_new_one_holds_only_its_own() {
        // As requests were stored before a bit could be left out.
        let old: Change = serde_json::from_str(
            r#"{"kind":"realm_guard","realm":"staff","require_approval":false,"protected":true}"#,
        )
        .expect("old form");
        assert_eq!(
            old,
            Change::RealmGuard {
                realm: "staff".into(),
                require_approval: Some(false),
                protected: Some(true),
            }
        );
        let new = Change::RealmGuard {
            realm: "staff".into(),
            require_approval: None,
            protected: Some(false),
        };
        assert_eq!(
            serde_json::to_value(&new).expect("json"),
            json!({"kind": "realm_guard", "realm": "staff", "protected": false})
        );
        let on = RealmGuard {
            require_approval: true,
            protected: false,
        };
        assert!(
            !GuardBits {
                require_approval: None,
                protected: Some(false)
            }
            .lowers(on)
        );
        assert!(
            GuardBits {
                require_approval: Some(false),
                protected: None
            }
            .lowers(on)
        );
    }
}
