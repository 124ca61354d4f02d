//! Declarative configuration: `sigil export` writes realms (with their sign-in policy), groups and
//! clients as TOML, without secrets or keys; `sigil apply -f FILE` creates what the file has and
//! the database lacks, sets a realm's sign-in policy where the file's differs, and refuses, before
//! writing anything, when the database holds a realm, group or client the file describes
//! differently (changing those in place is not built yet). Applying the same file twice writes
//! nothing the second time, not even an audit row. Created clients' secrets are returned once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AdminError, clients, invalid, realms, users};
use crate::clients::auth::ClientAuth;
use crate::clock::UnixTime;
use crate::identity::settings::LoginSettings;
use crate::keys::{Alg, KekSource};
use crate::store::{ClientRecord, Store};

/// The file: realms, each with its groups and clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default, rename = "realm")]
    pub realms: Vec<RealmSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmSpec {
    pub name: String,
    #[serde(default = "default_alg")]
    pub alg: String,
    #[serde(default = "default_ttl")]
    pub access_token_ttl: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default = "default_rotation")]
    pub rotation_period_secs: i64,
    #[serde(default = "default_prepublish")]
    pub prepublish_secs: i64,
    /// The realm's sign-in policy (defaults where absent).
    #[serde(default)]
    pub login: LoginSettings,
    #[serde(default, rename = "group", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupSpec>,
    #[serde(default, rename = "client", skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientSpec>,
}

fn default_alg() -> String {
    "ES256".into()
}
fn default_ttl() -> i64 {
    3600
}
fn default_rotation() -> i64 {
    realms::DEFAULT_ROTATION_PERIOD
}
fn default_prepublish() -> i64 {
    realms::DEFAULT_PREPUBLISH
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    pub scopes: String,
}

/// A client without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub client_id: String,
    pub scope: String,
    /// Default: every scope in `scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_scope: Option<String>,
    pub audience: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default)]
    pub introspect: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_uri: Option<String>,
    /// How it authenticates (absent: a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ClientAuth>,
}

/// The database as a document, in name order.
pub async fn export(store: &dyn Store) -> Result<Document, AdminError> {
    let mut out = Document::default();
    for r in store.realms().await? {
        let login: LoginSettings = serde_json::from_str(&r.login_settings).unwrap_or_default();
        let mut groups: Vec<GroupSpec> = users::groups(store, &r.name)
            .await?
            .into_iter()
            .map(|(name, scopes)| GroupSpec { name, scopes })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        let mut specs: Vec<ClientSpec> = store
            .clients(&r.name)
            .await?
            .iter()
            .map(client_spec)
            .collect();
        specs.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out.realms.push(RealmSpec {
            name: r.name,
            alg: r.alg,
            access_token_ttl: r.access_token_ttl,
            display_name: r.display_name,
            rotation_period_secs: r.rotation_period_secs,
            prepublish_secs: r.prepublish_secs,
            login,
            groups,
            clients: specs,
        });
    }
    out.realms.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn client_spec(c: &ClientRecord) -> ClientSpec {
    let auth = ClientAuth::parse_stored(c.auth_config.as_deref())
        .ok()
        .filter(|a| *a != ClientAuth::default());
    ClientSpec {
        client_id: c.client_id.clone(),
        scope: c.allowed_scopes.clone(),
        default_scope: (c.default_scopes != c.allowed_scopes).then(|| c.default_scopes.clone()),
        audience: c.audience.clone(),
        enabled: c.enabled,
        access_token_ttl: c.access_token_ttl,
        redirect_uris: c.redirect_uris(),
        public: c.public_client,
        name: c.client_name.clone(),
        client_uri: c.client_uri.clone(),
        introspect: c.may_introspect,
        post_logout_redirect_uris: c.post_logout_redirect_uris(),
        backchannel_logout_uri: c.backchannel_logout_uri.clone(),
        auth,
    }
}

/// One step of a plan, as `--dry-run` prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateRealm(RealmSpec),
    SetLogin { realm: String, login: LoginSettings },
    CreateGroup { realm: String, group: GroupSpec },
    CreateClient { realm: String, client: ClientSpec },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::CreateRealm(r) => write!(
                f,
                "+ realm {} ({}, tokens {} s)",
                r.name, r.alg, r.access_token_ttl
            ),
            Step::SetLogin { realm, .. } => write!(f, "~ realm {realm}: sign-in policy"),
            Step::CreateGroup { realm, group } => {
                write!(f, "+ group {realm}/{} ({})", group.name, group.scopes)
            }
            Step::CreateClient { realm, client } => {
                write!(
                    f,
                    "+ client {realm}/{} ({})",
                    client.client_id, client.scope
                )
            }
        }
    }
}

/// What applying `doc` would do, or every difference it cannot apply (nothing is written then).
pub async fn plan(
    store: &dyn Store,
    doc: &Document,
) -> Result<Result<Vec<Step>, Vec<String>>, AdminError> {
    let current = export(store).await?;
    let mut steps = Vec::new();
    let mut conflicts = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for want in &doc.realms {
        if !seen.insert(want.name.clone()) {
            conflicts.push(format!("realm {} appears twice in the file", want.name));
            continue;
        }
        let Some(have) = current.realms.iter().find(|r| r.name == want.name) else {
            steps.push(Step::CreateRealm(want.clone()));
            if want.login != LoginSettings::default() {
                steps.push(Step::SetLogin {
                    realm: want.name.clone(),
                    login: want.login.clone(),
                });
            }
            for g in &want.groups {
                steps.push(Step::CreateGroup {
                    realm: want.name.clone(),
                    group: g.clone(),
                });
            }
            for c in &want.clients {
                steps.push(Step::CreateClient {
                    realm: want.name.clone(),
                    client: c.clone(),
                });
            }
            continue;
        };
        for (what, file, db) in [
            ("alg", want.alg.clone(), have.alg.clone()),
            (
                "access_token_ttl",
                want.access_token_ttl.to_string(),
                have.access_token_ttl.to_string(),
            ),
            (
                "display_name",
                format!("{:?}", want.display_name),
                format!("{:?}", have.display_name),
            ),
            (
                "rotation_period_secs",
                want.rotation_period_secs.to_string(),
                have.rotation_period_secs.to_string(),
            ),
            (
                "prepublish_secs",
                want.prepublish_secs.to_string(),
                have.prepublish_secs.to_string(),
            ),
        ] {
            if file != db {
                conflicts.push(format!(
                    "realm {}: {what} is {db} in the database, {file} in the file",
                    want.name
                ));
            }
        }
        if want.login != have.login {
            steps.push(Step::SetLogin {
                realm: want.name.clone(),
                login: want.login.clone(),
            });
        }
        for g in &want.groups {
            match have.groups.iter().find(|h| h.name == g.name) {
                None => steps.push(Step::CreateGroup {
                    realm: want.name.clone(),
                    group: g.clone(),
                }),
                Some(h) if h == g => {}
                Some(h) => conflicts.push(format!(
                    "group {}/{}: scopes are {:?} in the database, {:?} in the file",
                    want.name, g.name, h.scopes, g.scopes
                )),
            }
        }
        for c in &want.clients {
            match have.clients.iter().find(|h| h.client_id == c.client_id) {
                None => steps.push(Step::CreateClient { realm: want.name.clone(), client: c.clone() }),
                Some(h) if same_client(h, c) => {}
                Some(_) => conflicts.push(format!(
                    "client {}/{} differs from the database (changing a client in place is not built yet: \
                     use the CLI or the admin API)",
                    want.name, c.client_id
                )),
            }
        }
    }
    Ok(if conflicts.is_empty() {
        Ok(steps)
    } else {
        Err(conflicts)
    })
}

/// A client as the file says it, once normalised the way creation normalises it.
fn same_client(have: &ClientSpec, want: &ClientSpec) -> bool {
    let norm = |s: &str| {
        crate::clients::scope::parse(s)
            .map(|v| v.join(" "))
            .unwrap_or_default()
    };
    let mut w = want.clone();
    w.scope = norm(&w.scope);
    w.default_scope = w
        .default_scope
        .as_deref()
        .map(norm)
        .filter(|d| *d != w.scope);
    w.auth = w.auth.filter(|a| *a != ClientAuth::default());
    *have == w
}

/// What applying did: the steps taken and the secrets of the clients it created (shown once).
pub struct Applied {
    pub steps: Vec<Step>,
    pub secrets: BTreeMap<String, String>,
}

/// Applies a plan made by [`plan`], step by step, each audited with `actor`.
pub async fn apply(
    store: &dyn Store,
    kek: &dyn KekSource,
    base_url: &str,
    jwks_max_age_secs: i64,
    steps: Vec<Step>,
    now: UnixTime,
    actor: &str,
) -> Result<Applied, AdminError> {
    let mut secrets = BTreeMap::new();
    for step in &steps {
        match step {
            Step::CreateRealm(r) => {
                let alg: Alg = r.alg.parse().map_err(|e: String| invalid("alg", e))?;
                realms::create(
                    store,
                    kek,
                    base_url,
                    realms::NewRealm {
                        name: r.name.clone(),
                        alg,
                        access_token_ttl: r.access_token_ttl,
                        display_name: r.display_name.clone(),
                        rotation_period_secs: r.rotation_period_secs,
                        prepublish_secs: r.prepublish_secs,
                        jwks_max_age_secs,
                    },
                    now,
                    actor,
                )
                .await?;
            }
            Step::SetLogin { realm, login } => {
                users::set_login_settings(store, realm, login, now, actor).await?;
            }
            Step::CreateGroup { realm, group } => {
                users::create_group(store, realm, &group.name, &group.scopes, now, actor).await?;
            }
            Step::CreateClient { realm, client: c } => {
                let made = clients::create(
                    store,
                    clients::NewClient {
                        realm: realm.clone(),
                        client_id: c.client_id.clone(),
                        scopes: c.scope.clone(),
                        default_scopes: c.default_scope.clone(),
                        audience: c.audience.clone(),
                        access_token_ttl: c.access_token_ttl,
                        redirect_uris: c.redirect_uris.clone(),
                        public: c.public,
                        name: c.name.clone(),
                        client_uri: c.client_uri.clone(),
                        auth: c.auth.clone().unwrap_or_default(),
                        introspect: c.introspect,
                        post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
                        backchannel_logout_uri: c.backchannel_logout_uri.clone(),
                    },
                    now,
                    actor,
                )
                .await?;
                if !c.enabled {
                    clients::set_enabled(store, realm, &c.client_id, None, false, now, actor)
                        .await?;
                }
                if let Some(secret) = made.client_secret {
                    secrets.insert(format!("{realm}/{}", c.client_id), secret);
                }
            }
        }
    }
    Ok(Applied { steps, secrets })
}
