//! Creating and reading realms. A realm is born with one active signing key, sealed under the KEK.

use serde::Serialize;
use serde_json::json;

use super::{AdminError, check_ttl, invalid};
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::directory::{is_valid_realm_name, issuer_for};
use crate::keys::rotation::new_key;
use crate::keys::{Alg, KekSource};
use crate::store::{KeyRecord, RealmRecord, Store};

#[derive(Debug, Clone)]
pub struct NewRealm {
    pub name: String,
    pub alg: Alg,
    pub access_token_ttl: i64,
    pub display_name: Option<String>,
    pub rotation_period_secs: i64,
    pub prepublish_secs: i64,
    /// The JWKS `max-age` the servers send: a next key must be published at least this long.
    pub jwks_max_age_secs: i64,
}

pub const DEFAULT_ROTATION_PERIOD: i64 = 30 * 86_400;
pub const DEFAULT_PREPUBLISH: i64 = 86_400;
/// The longest a key may sign: two years.
pub const MAX_ROTATION_PERIOD: i64 = 2 * 365 * 86_400;
/// The longest a next key may wait, published, before it signs: 90 days.
pub const MAX_PREPUBLISH: i64 = 90 * 86_400;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
    /// The latest `exp` this key signed (0 = none yet).
    pub max_exp: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RealmView {
    pub name: String,
    pub issuer: String,
    pub alg: String,
    pub display_name: Option<String>,
    pub access_token_ttl: i64,
    pub rotation_period_secs: i64,
    pub prepublish_secs: i64,
    pub created_at: i64,
    pub keys: Vec<KeyView>,
}

/// A realm's settings that can change after it is made (its algorithm cannot: rotate to a realm
/// of the other algorithm instead).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RealmSettings {
    pub access_token_ttl: i64,
    pub display_name: Option<String>,
    pub rotation_period_secs: i64,
    pub prepublish_secs: i64,
}

fn check_schedule(rotation: i64, prepublish: i64, jwks_max_age: i64) -> Result<(), AdminError> {
    if prepublish > MAX_PREPUBLISH {
        return Err(invalid(
            "prepublish",
            format!("at most {MAX_PREPUBLISH} s (90 days)"),
        ));
    }
    if rotation > MAX_ROTATION_PERIOD {
        return Err(invalid(
            "rotation-period",
            format!("at most {MAX_ROTATION_PERIOD} s (two years)"),
        ));
    }
    if prepublish < jwks_max_age.max(1) {
        return Err(invalid(
            "prepublish",
            format!(
                "{prepublish} s is shorter than the JWKS max-age ({jwks_max_age} s): validators could meet a key before fetching it"
            ),
        ));
    }
    if rotation < 2 * prepublish {
        return Err(invalid(
            "rotation-period",
            "must be at least twice the prepublish period",
        ));
    }
    Ok(())
}

fn check_display_name(name: Option<&str>) -> Result<(), AdminError> {
    match name {
        Some(n) if n.chars().count() > 128 || n.chars().any(char::is_control) => {
            Err(invalid("display-name", "at most 128 printable characters"))
        }
        _ => Ok(()),
    }
}

/// Changes a realm's token lifetime, display name and key schedule. The schedule applies from
/// the next rotation; keys already published keep their times.
pub async fn update(
    store: &dyn Store,
    base_url: &str,
    name: &str,
    settings: RealmSettings,
    jwks_max_age_secs: i64,
    now: UnixTime,
    actor: &str,
) -> Result<RealmView, AdminError> {
    check_settings(&settings, jwks_max_age_secs)?;
    let Some(mut realm) = store.realm(name).await? else {
        return Err(AdminError::NotFound(format!("realm {name}")));
    };
    realm.access_token_ttl = settings.access_token_ttl;
    realm.display_name = settings.display_name;
    realm.rotation_period_secs = settings.rotation_period_secs;
    realm.prepublish_secs = settings.prepublish_secs;
    let audit = [AuditDraft::new(now, Some(name), "realm.updated", actor)
        .subject(name)
        .detail(json!({
            "access_token_ttl": realm.access_token_ttl,
            "display_name": realm.display_name,
            "rotation_period_secs": realm.rotation_period_secs,
            "prepublish_secs": realm.prepublish_secs,
        }))];
    if !store.update_realm(&realm, &audit).await? {
        return Err(AdminError::NotFound(format!("realm {name}")));
    }
    show(store, base_url, name).await
}

/// The checks [`create`] makes before it writes (none needs the database).
pub fn check_new(req: &NewRealm) -> Result<(), AdminError> {
    if !is_valid_realm_name(&req.name) {
        return Err(invalid("realm", "use 1-64 characters of a-z 0-9 - _"));
    }
    check_ttl("token-ttl", req.access_token_ttl)?;
    check_schedule(
        req.rotation_period_secs,
        req.prepublish_secs,
        req.jwks_max_age_secs,
    )?;
    check_display_name(req.display_name.as_deref())
}

/// The checks [`update`] makes before it writes.
pub fn check_settings(settings: &RealmSettings, jwks_max_age_secs: i64) -> Result<(), AdminError> {
    check_ttl("token-ttl", settings.access_token_ttl)?;
    check_schedule(
        settings.rotation_period_secs,
        settings.prepublish_secs,
        jwks_max_age_secs,
    )?;
    check_display_name(settings.display_name.as_deref())
}

pub async fn create(
    store: &dyn Store,
    kek: &dyn KekSource,
    base_url: &str,
    req: NewRealm,
    now: UnixTime,
    actor: &str,
) -> Result<RealmView, AdminError> {
    check_new(&req)?;
    let key = new_key(kek, &req.name, req.alg, "active", now)?;
    let realm = RealmRecord {
        name: req.name.clone(),
        alg: req.alg.to_string(),
        display_name: req.display_name.clone(),
        access_token_ttl: req.access_token_ttl,
        created_at: now,
        rotation_period_secs: req.rotation_period_secs,
        prepublish_secs: req.prepublish_secs,
        key_version: 0,
        login_settings: "{}".into(),
    };
    let audit = [
        AuditDraft::new(now, Some(&req.name), "realm.created", actor)
            .subject(&req.name)
            .detail(json!({
                "alg": realm.alg,
                "access_token_ttl": realm.access_token_ttl,
                "rotation_period_secs": realm.rotation_period_secs,
                "prepublish_secs": realm.prepublish_secs,
            })),
        AuditDraft::new(now, Some(&req.name), "key.created", actor)
            .subject(&key.kid)
            .detail(json!({"alg": key.alg, "state": key.state, "kek_id": key.kek_id})),
    ];
    store.create_realm(&realm, &key, &audit).await?;
    Ok(view(base_url, realm, vec![key]))
}

pub async fn show(store: &dyn Store, base_url: &str, name: &str) -> Result<RealmView, AdminError> {
    let realm = store
        .realm(name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("realm {name}")))?;
    let keys = store.realm_keys(name).await?;
    Ok(view(base_url, realm, keys))
}

pub async fn list(store: &dyn Store, base_url: &str) -> Result<Vec<RealmView>, AdminError> {
    let mut out = Vec::new();
    for realm in store.realms().await? {
        let keys = store.realm_keys(&realm.name).await?;
        out.push(view(base_url, realm, keys));
    }
    Ok(out)
}

fn view(base_url: &str, r: RealmRecord, keys: Vec<KeyRecord>) -> RealmView {
    RealmView {
        issuer: issuer_for(base_url, &r.name),
        name: r.name,
        alg: r.alg,
        display_name: r.display_name,
        access_token_ttl: r.access_token_ttl,
        rotation_period_secs: r.rotation_period_secs,
        prepublish_secs: r.prepublish_secs,
        created_at: r.created_at,
        keys: keys
            .into_iter()
            .map(|k| KeyView {
                kid: k.kid,
                alg: k.alg,
                state: k.state,
                created_at: k.created_at,
                activated_at: k.activated_at,
                retired_at: k.retired_at,
                max_exp: k.max_exp,
            })
            .collect(),
    }
}

/// A realm's client CAs as `realm set-mtls` shows them: subject and thumbprint of each.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MtlsView {
    pub realm: String,
    pub client_cas: Vec<CaView>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CaView {
    pub subject: String,
    pub sha256: String,
    pub not_after: i64,
}

/// Each CA certificate of a PEM bundle; an error if one is not a CA or does not parse.
fn ca_views(pem: &str) -> Result<Vec<CaView>, AdminError> {
    use x509_parser::prelude::FromDer;
    let certs = crate::clients::mtls::certificates_from_pem(pem)
        .map_err(|e| super::invalid("ca-file", e))?;
    crate::clients::mtls::anchors_from_pem(pem).map_err(|e| super::invalid("ca-file", e))?;
    let mut cas = Vec::new();
    for der in &certs {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| super::invalid("ca-file", e.to_string()))?;
        if !cert.is_ca() {
            return Err(super::invalid(
                "ca-file",
                format!("{} is not a CA certificate", cert.subject()),
            ));
        }
        cas.push(CaView {
            subject: cert.subject().to_string(),
            sha256: crate::clients::mtls::thumbprint(der),
            not_after: cert.validity().not_after.timestamp(),
        });
    }
    Ok(cas)
}

/// A realm's client CAs as stored.
pub async fn show_mtls(
    store: &dyn crate::store::Store,
    realm: &str,
) -> Result<MtlsView, AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    let cas = match store.realm_mtls(realm).await? {
        Some(pem) => ca_views(&pem)?,
        None => Vec::new(),
    };
    Ok(MtlsView {
        realm: realm.to_owned(),
        client_cas: cas,
    })
}

/// Sets (or with `None` removes) the CAs a realm's `tls_client_auth` clients chain to. Each must
/// be a CA certificate (basic constraints `cA`); the change is audited with their thumbprints.
pub async fn set_mtls(
    store: &dyn crate::store::Store,
    realm: &str,
    pem: Option<&str>,
    now: crate::clock::UnixTime,
    actor: &str,
) -> Result<MtlsView, AdminError> {
    if store.realm(realm).await?.is_none() {
        return Err(AdminError::NotFound(format!("realm {realm}")));
    }
    let cas = match pem {
        Some(pem) => ca_views(pem)?,
        None => Vec::new(),
    };
    let audit = [
        crate::audit::AuditDraft::new(now, Some(realm), "realm.mtls_changed", actor)
            .subject(realm)
            .detail(serde_json::json!({
                "client_cas": cas.iter().map(|c| serde_json::json!({"subject": c.subject, "sha256": c.sha256})).collect::<Vec<_>>(),
            })),
    ];
    store.set_realm_mtls(realm, pem, now, &audit).await?;
    Ok(MtlsView {
        realm: realm.to_owned(),
        client_cas: cas,
    })
}
