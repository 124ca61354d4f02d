//! Principal policies for resource servers (the model is `sigil_validator::policy`): written
//! only after every field is checked and every CEL assertion compiles, attached only to a
//! principal of the same realm, audited in the write's transaction, and published by
//! `oauth::policy_bundle`.

use serde::Serialize;
use serde_json::json;
use sigil_validator::policy::{Effect, PolicySpec, Principal};

use super::{AdminError, invalid};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::store::{PolicyRecord, Store};

/// A policy as the CLI and the admin API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub name: String,
    /// `client`, `user`, `group`, `aws` or `issuer`.
    pub principal_kind: String,
    pub principal: String,
    /// `ALLOW` or `DENY`.
    pub effect: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub assertions: Vec<String>,
    pub description: Option<String>,
    pub created_at: i64,
    pub created_by: String,
}

/// A stored policy's spec.
fn parse(r: &PolicyRecord) -> Result<PolicySpec, AdminError> {
    serde_json::from_str(&r.spec).map_err(|e| {
        AdminError::Store(crate::store::StoreError::Database(sqlx::Error::Decode(
            format!("policy {} of realm {}: {e}", r.name, r.realm).into(),
        )))
    })
}

fn view(r: &PolicyRecord) -> Result<PolicyView, AdminError> {
    let spec = parse(r)?;
    Ok(PolicyView {
        name: spec.name,
        principal_kind: r.principal_kind.clone(),
        principal: r.principal.clone(),
        effect: spec.effect.as_str().to_owned(),
        actions: spec.actions,
        resources: spec.resources,
        assertions: spec.assertions,
        description: spec.description,
        created_at: r.created_at,
        created_by: r.created_by.clone(),
    })
}

/// The parts of a policy as given on the command line or in a request.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    pub realm: String,
    pub name: String,
    pub principal_kind: String,
    pub principal: String,
    pub effect: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub assertions: Vec<String>,
    pub description: Option<String>,
}

/// The checks a policy's write makes before it touches the database: its spec, well-formed,
/// with every assertion compiled.
pub fn check(req: &NewPolicy) -> Result<PolicySpec, AdminError> {
    let principal = Principal::parse(&req.principal_kind, &req.principal)
        .map_err(|e| invalid("principal-kind", e))?;
    let effect = match req.effect.to_ascii_uppercase().as_str() {
        "ALLOW" => Effect::Allow,
        "DENY" => Effect::Deny,
        _ => return Err(invalid("effect", "ALLOW or DENY")),
    };
    let spec = PolicySpec {
        name: req.name.clone(),
        principal,
        effect,
        actions: req.actions.clone(),
        resources: req.resources.clone(),
        assertions: req.assertions.clone(),
        description: req.description.clone().filter(|d| !d.is_empty()),
    };
    spec.check().map_err(|e| invalid(e.field, e.message))?;
    Ok(spec)
}

/// Creates a policy (`replace`: or replaces the one of that name, in one transaction), audited
/// as `policy.created` or `policy.replaced` by what the transaction found.
pub async fn create(
    store: &dyn Store,
    req: NewPolicy,
    replace: bool,
    now: UnixTime,
    actor: &str,
) -> Result<PolicyView, AdminError> {
    let spec = check(&req)?;
    if store.realm(&req.realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {}", req.realm)));
    }
    // Whether it replaces one is read first and held to by the store (a policy created or deleted
    // in between makes the write a conflict): then read and written again (409 past the budget).
    let (req, spec) = (&req, &spec);
    super::settled(
        move || async move {
            let replaces = replace && store.policy(&req.realm, &spec.name).await?.is_some();
            write(store, req, spec, replaces, now, actor).await
        },
        |e| replace && matches!(e, AdminError::Conflict(_)),
    )
    .await
}

async fn write(
    store: &dyn Store,
    req: &NewPolicy,
    spec: &PolicySpec,
    replace: bool,
    now: UnixTime,
    actor: &str,
) -> Result<PolicyView, AdminError> {
    let record = PolicyRecord {
        realm: req.realm.clone(),
        name: spec.name.clone(),
        principal_kind: spec.principal.kind().to_owned(),
        principal: spec.principal.id().to_owned(),
        effect: spec.effect.as_str().to_owned(),
        spec: serde_json::to_string(&spec).map_err(|e| invalid("policy", e.to_string()))?,
        created_at: now,
        created_by: actor.to_owned(),
    };
    let kind = if replace {
        "policy.replaced"
    } else {
        "policy.created"
    };
    let audit = [
        AuditDraft::new(now, Some(&req.realm), kind, actor).detail(json!({
            "name": spec.name,
            "principal_kind": record.principal_kind,
            "principal": record.principal,
            "effect": record.effect,
            "actions": spec.actions,
            "resources": spec.resources,
            "assertions": spec.assertions,
        })),
    ];
    match store.put_policy(&record, replace, &audit).await {
        Err(crate::store::StoreError::Full(message)) => return Err(invalid("policies", message)),
        // The principal (a client, group or user) is not one of this realm's: checked by the
        // store under the lock that orders it against the principal's deletion.
        Err(crate::store::StoreError::NotFound(message)) => {
            return Err(invalid("principal", message));
        }
        other => other?,
    };
    view(&record)
}

/// A realm's policies, by name.
pub async fn list(store: &dyn Store, realm: &str) -> Result<(i64, Vec<PolicyView>), AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    let (version, records) = store.policies(realm).await?;
    Ok((
        version,
        records.iter().map(view).collect::<Result<Vec<_>, _>>()?,
    ))
}

/// The names of the policies attached to one principal (for the audit record of its deletion,
/// which takes them along).
pub async fn show(store: &dyn Store, realm: &str, name: &str) -> Result<PolicyView, AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    match store.policy(realm, name).await? {
        Some(r) => view(&r),
        None => Err(AdminError::NotFound(format!(
            "policy {name} in realm {realm}"
        ))),
    }
}

pub async fn delete(
    store: &dyn Store,
    realm: &str,
    name: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let audit = [
        AuditDraft::new(now, Some(realm), "policy.deleted", actor).detail(json!({"name": name}))
    ];
    if store.delete_policy(realm, name, None, &audit).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "policy {name} in realm {realm}"
        )))
    }
}

/// What writing a policy comes to, before any write.
pub enum Put {
    /// The stored policy is already the one asked for (`replace`): the answer is that policy,
    /// with nothing written (no new version, no audit record) and nothing filed.
    Unchanged(PolicyView),
    /// The change to apply now or to file as a four-eyes request.
    Change(super::changes::Change),
}

/// The change that writes `req` (see `changes::Change::PolicyPut`; a four-eyes request where the
/// realm needs one), made only from a policy that would be written now: checked and compiled, in
/// an existing realm, and (without `replace`) under a name not taken yet. A request is also filed
/// only for a principal the realm has ([`principal_known`]); the store checks it again when the
/// policy is written.
pub async fn put_change(
    store: &dyn Store,
    req: &NewPolicy,
    replace: bool,
) -> Result<Put, AdminError> {
    let spec = check(req)?;
    if store.realm(&req.realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {}", req.realm)));
    }
    if let Some(stored) = store.policy(&req.realm, &spec.name).await? {
        if !replace {
            return Err(AdminError::Conflict(format!(
                "policy {} already exists in realm {}",
                spec.name, req.realm
            )));
        }
        // Stored as `create` writes it: the same spec serialises to the same text.
        if serde_json::to_string(&spec).is_ok_and(|s| s == stored.spec) {
            return Ok(Put::Unchanged(view(&stored)?));
        }
    }
    Ok(Put::Change(super::changes::Change::PolicyPut {
        realm: req.realm.clone(),
        policy: file_spec(spec),
        replace,
    }))
}

/// A policy as a file (and a change request) holds it.
fn file_spec(spec: PolicySpec) -> super::declarative::PolicyFileSpec {
    super::declarative::PolicyFileSpec {
        principal_kind: spec.principal.kind().to_owned(),
        principal: spec.principal.id().to_owned(),
        effect: spec.effect.as_str().to_owned(),
        name: spec.name,
        actions: spec.actions,
        resources: spec.resources,
        assertions: spec.assertions,
        description: spec.description,
    }
}

/// The change that deletes a policy (a four-eyes request where the realm needs one), made only
/// for one that exists, and holding it as it is now: the approver sees what goes, and
/// [`delete_as_filed`] deletes only that.
pub async fn delete_change(
    store: &dyn Store,
    realm: &str,
    name: &str,
) -> Result<super::changes::Change, AdminError> {
    let (_, policy) = as_filed(store, realm, name).await?;
    Ok(super::changes::Change::PolicyDelete {
        realm: realm.to_owned(),
        name: name.to_owned(),
        policy,
    })
}

/// A stored policy: its spec as stored, and as a request holds it.
async fn as_filed(
    store: &dyn Store,
    realm: &str,
    name: &str,
) -> Result<(String, super::declarative::PolicyFileSpec), AdminError> {
    let record = store
        .policy(realm, name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("policy {name} in realm {realm}")))?;
    let spec = parse(&record)?;
    Ok((record.spec, file_spec(spec)))
}

/// Deletes a policy through an approved request: only if it is still the one the request holds
/// (a policy replaced since is not deleted by a request its approver read before).
pub async fn delete_as_filed(
    store: &dyn Store,
    realm: &str,
    filed: &super::declarative::PolicyFileSpec,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let changed = || {
        AdminError::Conflict(format!(
            "policy {} in realm {realm} changed since the request was filed",
            filed.name
        ))
    };
    let (spec, now_is) = as_filed(store, realm, &filed.name).await?;
    if now_is != *filed {
        return Err(changed());
    }
    let audit = [AuditDraft::new(now, Some(realm), "policy.deleted", actor)
        .detail(json!({"name": filed.name}))];
    if store
        .delete_policy(realm, &filed.name, Some(&spec), &audit)
        .await?
    {
        Ok(())
    } else {
        Err(changed())
    }
}

/// Whether the realm has the policy's principal (a client, group or user; other kinds name no
/// record). Before a request is filed; the write itself checks under the store's lock.
pub async fn principal_known(
    store: &dyn Store,
    realm: &str,
    kind: &str,
    id: &str,
) -> Result<(), AdminError> {
    if store.policy_principal_exists(realm, kind, id).await? {
        Ok(())
    } else {
        // The words the store's own check uses.
        Err(invalid(
            "principal",
            format!("realm {realm} has no {kind} {id:?}"),
        ))
    }
}
