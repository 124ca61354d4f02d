//! Configuring a realm's AWS exchange and its principal bindings.

use serde::Serialize;
use serde_json::json;

use super::{AdminError, check_ttl, invalid};
use crate::audit::AuditDraft;
use crate::clients::scope;
use crate::clock::UnixTime;
use crate::store::{AwsBindingRecord, AwsSettingsRecord, Store};

#[derive(Debug, Clone)]
pub struct Configure {
    pub realm: String,
    pub sts_endpoint: Option<String>,
    pub partitions: Vec<String>,
    pub server_id: String,
    pub require_challenge: bool,
}

/// The checks [`configure`] makes before it writes (none needs the database).
pub fn check_configure(req: &Configure) -> Result<(), AdminError> {
    if let Some(ep) = &req.sts_endpoint {
        let url = url::Url::parse(ep).map_err(|e| invalid("sts-endpoint", e.to_string()))?;
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback))
            || url.path() != "/"
            || url.query().is_some()
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(invalid(
                "sts-endpoint",
                "must be https://host[:port]/ (http only on a loopback host), without credentials",
            ));
        }
    }
    for p in &req.partitions {
        if !matches!(p.as_str(), "aws" | "aws-us-gov" | "aws-cn") {
            return Err(invalid(
                "partition",
                format!("{p:?} is not aws, aws-us-gov or aws-cn"),
            ));
        }
    }
    if req.server_id.is_empty()
        || req.server_id.len() > 256
        || !req.server_id.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err(invalid(
            "server-id",
            "must be 1-256 printable characters without spaces",
        ));
    }
    Ok(())
}

pub async fn configure(
    store: &dyn Store,
    req: Configure,
    now: UnixTime,
    actor: &str,
) -> Result<AwsSettingsRecord, AdminError> {
    check_configure(&req)?;
    if store.realm(&req.realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {}", req.realm)));
    }
    let record = AwsSettingsRecord {
        realm: req.realm.clone(),
        sts_endpoint: req.sts_endpoint,
        partitions: if req.partitions.is_empty() {
            "aws".into()
        } else {
            req.partitions.join(" ")
        },
        server_id: req.server_id,
        require_challenge: req.require_challenge,
        updated_at: now,
    };
    let audit = [
        AuditDraft::new(now, Some(&req.realm), "aws.configured", actor).detail(json!({
            "sts_endpoint": record.sts_endpoint,
            "partitions": record.partitions,
            "server_id": record.server_id,
            "require_challenge": record.require_challenge,
        })),
    ];
    store.set_aws_settings(&record, &audit).await?;
    Ok(record)
}

#[derive(Debug, Clone)]
pub struct Bind {
    pub realm: String,
    pub id: Option<String>,
    pub principal: Option<String>,
    pub account: Option<String>,
    pub deny: bool,
    pub scopes: Option<String>,
    pub audience: Option<String>,
    pub access_token_ttl: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BindingView {
    pub id: String,
    pub effect: String,
    pub principal: Option<String>,
    pub account: Option<String>,
    pub scopes: Vec<String>,
    pub audience: String,
    pub access_token_ttl: Option<i64>,
}

fn view(b: AwsBindingRecord) -> BindingView {
    BindingView {
        id: b.id,
        effect: b.effect,
        principal: b.principal,
        account: b.account,
        scopes: b
            .scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        audience: b.audience,
        access_token_ttl: b.access_token_ttl,
    }
}

pub async fn bind(
    store: &dyn Store,
    req: Bind,
    now: UnixTime,
    actor: &str,
) -> Result<BindingView, AdminError> {
    write_binding(store, req, false, now, actor).await
}

/// Creates a binding, or replaces the one with the same id, in one transaction (a deny binding
/// is never missing half-way).
pub async fn put_binding(
    store: &dyn Store,
    req: Bind,
    now: UnixTime,
    actor: &str,
) -> Result<BindingView, AdminError> {
    if req.id.is_none() {
        return Err(invalid("id", "a binding to put needs its id"));
    }
    write_binding(store, req, true, now, actor).await
}

/// The checks a binding's write makes before it writes; its normalised scopes and audience.
pub fn check_binding(req: &Bind) -> Result<(String, String), AdminError> {
    if let Some(id) = &req.id
        && (id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
    {
        return Err(invalid("id", "use 1-64 of A-Z a-z 0-9 - _ . :"));
    }
    if req.principal.is_none() && req.account.is_none() {
        return Err(invalid(
            "principal",
            "give a principal pattern, an account id, or both",
        ));
    }
    if let Some(p) = &req.principal
        && (p.is_empty() || p.len() > 512 || !p.bytes().all(|b| (0x21..0x7f).contains(&b)))
    {
        return Err(invalid(
            "principal",
            "must be an ARN or a */? glob over one",
        ));
    }
    if let Some(a) = &req.account
        && !(a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("account", "must be a 12-digit AWS account id"));
    }
    let scopes = match (&req.scopes, req.deny) {
        (Some(s), _) => scope::parse(s)
            .map(|v| v.join(" "))
            .map_err(|e| invalid("scope", e.to_string()))?,
        (None, true) => String::new(),
        (None, false) => return Err(invalid("scope", "an ALLOW binding needs scopes")),
    };
    let audience = match (&req.audience, req.deny) {
        (Some(a), _)
            if !a.trim().is_empty() && a.len() <= 256 && !a.chars().any(char::is_control) =>
        {
            a.clone()
        }
        (None, true) => String::new(),
        _ => {
            return Err(invalid(
                "audience",
                "an ALLOW binding needs an audience of 1-256 printable characters",
            ));
        }
    };
    if let Some(ttl) = req.access_token_ttl {
        check_ttl("token-ttl", ttl)?;
    }
    Ok((scopes, audience))
}

async fn write_binding(
    store: &dyn Store,
    req: Bind,
    replace: bool,
    now: UnixTime,
    actor: &str,
) -> Result<BindingView, AdminError> {
    let (scopes, audience) = check_binding(&req)?;
    if store.realm(&req.realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {}", req.realm)));
    }
    let id = req.id.clone().unwrap_or_else(|| {
        let b: [u8; 6] = crate::random::random_bytes();
        format!("b-{}", crate::keys::kek::hex(&b))
    });
    let record = AwsBindingRecord {
        realm: req.realm.clone(),
        id,
        principal: req.principal,
        account: req.account,
        effect: if req.deny { "deny" } else { "allow" }.into(),
        scopes,
        audience,
        access_token_ttl: req.access_token_ttl,
        created_at: now,
    };
    let audit = [
        AuditDraft::new(now, Some(&req.realm), "aws.binding_created", actor)
            .subject(&record.id)
            .detail(json!({
                "effect": record.effect,
                "principal": record.principal,
                "account": record.account,
                "scopes": record.scopes,
                "audience": record.audience,
            })),
    ];
    store.put_aws_binding(&record, replace, &audit).await?;
    Ok(view(record))
}

pub async fn bindings(store: &dyn Store, realm: &str) -> Result<Vec<BindingView>, AdminError> {
    Ok(store
        .aws_bindings(realm)
        .await?
        .into_iter()
        .map(view)
        .collect())
}

/// Turns a realm's AWS exchange off (its bindings stay, unused until it is configured again).
pub async fn disable(
    store: &dyn Store,
    realm: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let audit = [AuditDraft::new(now, Some(realm), "aws.disabled", actor).subject(realm)];
    if store.delete_aws_settings(realm, &audit).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "AWS settings of realm {realm}"
        )))
    }
}

pub async fn unbind(
    store: &dyn Store,
    realm: &str,
    id: &str,
    now: UnixTime,
    actor: &str,
) -> Result<(), AdminError> {
    let audit = [AuditDraft::new(now, Some(realm), "aws.binding_deleted", actor).subject(id)];
    if store.delete_aws_binding(realm, id, &audit).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "AWS binding {id} in realm {realm}"
        )))
    }
}
