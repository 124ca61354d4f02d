//! Declarative configuration: `sigil export` writes realms (with their sign-in policy), groups,
//! clients, AWS settings and bindings and principal policies as TOML, without secrets or keys;
//! `sigil apply -f FILE` makes the database match it. In every realm the file names, it creates
//! what is missing, changes what differs in place and deletes groups, clients, bindings and
//! policies the file does not
//! have; realms the file does not name are left alone (apply never deletes a realm). What cannot
//! change in place (a realm's algorithm, a client between public and confidential, the admin
//! realm, which is configuration) is a conflict, refused before anything is written. Applying
//! the same file twice writes nothing the second time, not even an audit row. Created clients'
//! secrets are returned once, or read from a `secret_file`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AdminError, aws, clients, invalid, policies, realms, users};
use crate::clients::auth::ClientAuth;
use crate::clock::UnixTime;
use crate::identity::settings::LoginSettings;
use crate::keys::{Alg, KekSource};
use crate::store::{ClientRecord, Store};

/// The file: realms, each with its groups and clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The realm whose tokens reach the admin API. This is the nodes' configuration
    /// (`admin_realm`; for the CLI without one, the admin realm the server recorded at its
    /// start): apply only checks that they agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_realm: Option<String>,
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
    /// The AWS workload exchange (absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSpec>,
    #[serde(default, rename = "aws_binding", skip_serializing_if = "Vec::is_empty")]
    pub aws_bindings: Vec<BindingSpec>,
    /// Principal policies for resource servers, by name.
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyFileSpec>,
    /// Attribute declarations, name → `internal` or `pii_high` (see `sigil realm
    /// set-attributes`); absent: as the database has them, present: exactly these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    /// Four-eyes (see `sigil realm set-approval`); absent: as the database has it. A file raises
    /// the guard; lowering it is a conflict (only an approved request lowers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSpec>,
}

/// A realm's four-eyes guard as a file states it: every bit, as `sigil realm set-approval` sets
/// it. Exported where the realm's guard was set (a never-set guard is the default: approval
/// required in the admin realm only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    pub require_approval: bool,
    pub protected: bool,
}

/// A principal policy (see `sigil policy create`), named by its name. Also what a four-eyes
/// request to write one holds (`changes::Change::PolicyPut`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFileSpec {
    pub name: String,
    /// `client`, `user`, `group`, `aws` or `issuer`.
    pub principal_kind: String,
    pub principal: String,
    /// `ALLOW` or `DENY`.
    pub effect: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assertions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl PolicyFileSpec {
    pub fn new_policy(&self, realm: &str) -> policies::NewPolicy {
        policies::NewPolicy {
            realm: realm.to_owned(),
            name: self.name.clone(),
            principal_kind: self.principal_kind.clone(),
            principal: self.principal.clone(),
            effect: self.effect.clone(),
            actions: self.actions.clone(),
            resources: self.resources.clone(),
            assertions: self.assertions.clone(),
            description: self.description.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
    #[serde(default = "aws_partition")]
    pub partitions: Vec<String>,
    pub server_id: String,
    #[serde(default)]
    pub require_challenge: bool,
}

fn aws_partition() -> Vec<String> {
    vec!["aws".into()]
}

/// An IAM principal binding, named by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `allow` (default) or `deny`.
    #[serde(default = "allow")]
    pub effect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_ttl: Option<i64>,
}

fn allow() -> String {
    "allow".into()
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
    /// A file holding the secret to give the client when `apply` creates it (a mounted secret),
    /// relative to the applied file's folder. Without it a secret is generated and printed once.
    /// Read only at creation; never exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<std::path::PathBuf>,
}

/// Reads a document from a TOML file; `secret_file`s are resolved against the file's folder.
pub fn read_file(file: &std::path::Path) -> Result<Document, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // No value of the file has a use for a control character (a NUL would even pass every check
    // and then be refused by PostgreSQL half-way through an apply).
    if let Ok(value) = toml::from_str::<toml::Value>(&text)
        && let Some(at) = control_character(&value, "")
    {
        return Err(format!(
            "{}: {at}: control characters are not allowed",
            file.display()
        ));
    }
    let mut doc: Document =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let folder = file
        .parent()
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    for realm in &mut doc.realms {
        for client in &mut realm.clients {
            if let Some(p) = client.secret_file.as_mut().filter(|p| p.is_relative()) {
                *p = folder.join(&*p);
            }
        }
    }
    Ok(doc)
}

/// Where a string (or key) of `v` holds a control character, as a dotted path.
fn control_character(v: &toml::Value, at: &str) -> Option<String> {
    match v {
        toml::Value::String(s) => s.chars().any(char::is_control).then(|| at.to_owned()),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| control_character(x, &format!("{at}[{i}]"))),
        toml::Value::Table(t) => t.iter().find_map(|(k, x)| {
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.chars().any(char::is_control) {
                Some(here)
            } else {
                control_character(x, &here)
            }
        }),
        _ => None,
    }
}

/// The database as a document, in name order; `admin_realm` is this node's configuration.
pub async fn export(store: &dyn Store, admin_realm: Option<&str>) -> Result<Document, AdminError> {
    let mut out = Document {
        admin_realm: admin_realm.map(str::to_owned),
        ..Document::default()
    };
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
        let aws = store.aws_settings(&r.name).await?.map(|a| AwsSpec {
            sts_endpoint: a.sts_endpoint,
            partitions: a.partitions.split(' ').map(str::to_owned).collect(),
            server_id: a.server_id,
            require_challenge: a.require_challenge,
        });
        let mut aws_bindings: Vec<BindingSpec> = store
            .aws_bindings(&r.name)
            .await?
            .into_iter()
            .map(|b| BindingSpec {
                id: b.id,
                principal: b.principal,
                account: b.account,
                scope: (!b.scopes.is_empty()).then_some(b.scopes),
                audience: (!b.audience.is_empty()).then_some(b.audience),
                effect: b.effect,
                access_token_ttl: b.access_token_ttl,
            })
            .collect();
        aws_bindings.sort_by(|a, b| a.id.cmp(&b.id));
        let policies = policies::list(store, &r.name)
            .await?
            .1
            .into_iter()
            .map(|p| PolicyFileSpec {
                name: p.name,
                principal_kind: p.principal_kind,
                principal: p.principal,
                effect: p.effect,
                actions: p.actions,
                resources: p.resources,
                assertions: p.assertions,
                description: p.description,
            })
            .collect();
        let declared: BTreeMap<String, String> =
            store.realm_attributes(&r.name).await?.into_iter().collect();
        let attributes = (!declared.is_empty()).then_some(declared);
        let approval = store.realm_guard(&r.name).await?.map(|g| ApprovalSpec {
            require_approval: g.require_approval,
            protected: g.protected,
        });
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
            aws,
            aws_bindings,
            policies,
            attributes,
            approval,
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
        secret_file: None,
    }
}

/// One step of a plan, as `--dry-run` prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateRealm(RealmSpec),
    UpdateRealm {
        realm: String,
        settings: realms::RealmSettings,
    },
    SetLogin {
        realm: String,
        login: LoginSettings,
    },
    CreateGroup {
        realm: String,
        group: GroupSpec,
    },
    UpdateGroup {
        realm: String,
        group: GroupSpec,
    },
    DeleteGroup {
        realm: String,
        name: String,
        /// The realm's policies change only through four-eyes: refuse if the group has any.
        keep_policies: bool,
    },
    CreateClient {
        realm: String,
        client: ClientSpec,
    },
    /// What differs: the description, the authentication, the state (any of them).
    UpdateClient {
        realm: String,
        client: ClientSpec,
        /// The client as the database has it (for the `field: old → new` lines).
        was: Box<ClientSpec>,
        description: bool,
        auth: bool,
        enabled: bool,
    },
    DeleteClient {
        realm: String,
        client_id: String,
    },
    SetAws {
        realm: String,
        aws: AwsSpec,
    },
    DisableAws {
        realm: String,
    },
    PutBinding {
        realm: String,
        binding: BindingSpec,
        /// No binding of that id yet.
        new: bool,
    },
    DeleteBinding {
        realm: String,
        id: String,
    },
    PutPolicy {
        realm: String,
        policy: PolicyFileSpec,
        /// No policy of that name yet.
        new: bool,
    },
    DeletePolicy {
        realm: String,
        name: String,
    },
    /// Replaces the realm's attribute declarations (values of attributes now `pii_high` are
    /// encrypted in the same transaction).
    DeclareAttributes {
        realm: String,
        attributes: BTreeMap<String, String>,
    },
    /// Raises bits of the realm's guard (never lowers one), after the realm's other steps.
    RaiseGuard {
        realm: String,
        bits: crate::store::GuardBits,
        /// The realm's guard when planned, for a realm without a guard row yet.
        was: crate::store::RealmGuard,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::CreateRealm(r) => write!(
                f,
                "+ realm {} ({}, tokens {} s)",
                r.name, r.alg, r.access_token_ttl
            ),
            Step::UpdateRealm { realm, settings } => write!(
                f,
                "~ realm {realm}: tokens {} s, display name {:?}, rotation {} s, prepublish {} s",
                settings.access_token_ttl,
                settings.display_name,
                settings.rotation_period_secs,
                settings.prepublish_secs
            ),
            Step::SetLogin { realm, .. } => write!(f, "~ realm {realm}: sign-in policy"),
            Step::DeclareAttributes { realm, attributes } => write!(
                f,
                "~ realm {realm}: attributes {}",
                attributes
                    .iter()
                    .map(|(n, c)| format!("{n}:{c}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Step::CreateGroup { realm, group } => {
                write!(f, "+ group {realm}/{} ({})", group.name, group.scopes)
            }
            Step::UpdateGroup { realm, group } => {
                write!(f, "~ group {realm}/{} ({})", group.name, group.scopes)
            }
            Step::DeleteGroup { realm, name, .. } => write!(f, "- group {realm}/{name}"),
            Step::CreateClient { realm, client } => {
                write!(
                    f,
                    "+ client {realm}/{} ({})",
                    client.client_id, client.scope
                )
            }
            Step::UpdateClient {
                realm, client, was, ..
            } => write!(
                f,
                "~ client {realm}/{}: {}",
                client.client_id,
                changes(was, &normalised(client)).join("; ")
            ),
            Step::DeleteClient { realm, client_id } => write!(f, "- client {realm}/{client_id}"),
            Step::SetAws { realm, aws } => write!(
                f,
                "~ realm {realm}: AWS exchange on (server id {}, partitions {})",
                aws.server_id,
                aws.partitions.join(" ")
            ),
            Step::DisableAws { realm } => write!(f, "~ realm {realm}: AWS exchange off"),
            Step::PutBinding {
                realm,
                binding,
                new,
            } => write!(
                f,
                "{} AWS binding {realm}/{} ({} {})",
                if *new { "+" } else { "~" },
                binding.id,
                binding.effect,
                binding
                    .principal
                    .as_deref()
                    .or(binding.account.as_deref())
                    .unwrap_or("")
            ),
            Step::DeleteBinding { realm, id } => write!(f, "- AWS binding {realm}/{id}"),
            Step::PutPolicy { realm, policy, new } => write!(
                f,
                "{} policy {realm}/{} ({} {} {})",
                if *new { "+" } else { "~" },
                policy.name,
                policy.effect,
                policy.principal_kind,
                policy.principal
            ),
            Step::DeletePolicy { realm, name } => write!(f, "- policy {realm}/{name}"),
            Step::RaiseGuard { realm, bits, .. } => {
                let on: Vec<&str> = [
                    (bits.require_approval, "require_approval"),
                    (bits.protected, "protected"),
                ]
                .into_iter()
                .filter_map(|(b, name)| (b == Some(true)).then_some(name))
                .collect();
                if on.is_empty() {
                    write!(f, "~ realm {realm}: four-eyes guard recorded as it is")
                } else {
                    write!(f, "~ realm {realm}: four-eyes {} on", on.join(", "))
                }
            }
        }
    }
}

/// The realm a file's `[[realm]]` creates (checked first, then created, from the same value).
fn new_realm(r: &RealmSpec, alg: crate::keys::Alg, jwks_max_age_secs: i64) -> realms::NewRealm {
    realms::NewRealm {
        name: r.name.clone(),
        alg,
        access_token_ttl: r.access_token_ttl,
        display_name: r.display_name.clone(),
        rotation_period_secs: r.rotation_period_secs,
        prepublish_secs: r.prepublish_secs,
        jwks_max_age_secs,
    }
}

/// What applying `doc` would do, or every difference it cannot apply (nothing is written then).
/// `admin_realm` is this node's configuration, which the file's must match if it names one.
pub async fn plan(
    store: &dyn Store,
    doc: &Document,
    admin_realm: Option<&str>,
) -> Result<Result<Vec<Step>, Vec<String>>, AdminError> {
    let current = export(store, admin_realm).await?;
    let mut steps = Vec::new();
    let mut conflicts = Vec::new();
    if let Some(want) = &doc.admin_realm
        && admin_realm != Some(want.as_str())
    {
        conflicts.push(format!(
            "admin_realm is {want:?} in the file and {} for this node: set admin_realm in \
             the configuration (the database only records the one a server last started with, \
             which the CLI takes when its configuration has none)",
            admin_realm.map_or("unset".to_owned(), |a| format!("{a:?}"))
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for want in &doc.realms {
        if !seen.insert(want.name.clone()) {
            conflicts.push(format!("realm {} appears twice in the file", want.name));
            continue;
        }
        for (kind, names) in [
            (
                "group",
                want.groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>(),
            ),
            (
                "client",
                want.clients.iter().map(|c| c.client_id.as_str()).collect(),
            ),
            (
                "AWS binding",
                want.aws_bindings.iter().map(|b| b.id.as_str()).collect(),
            ),
            (
                "policy",
                want.policies.iter().map(|p| p.name.as_str()).collect(),
            ),
        ] {
            let mut names = names;
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                conflicts.push(format!(
                    "{kind} {}/{} appears twice in the file",
                    want.name, w[0]
                ));
            }
        }
        let empty = RealmSpec {
            groups: Vec::new(),
            clients: Vec::new(),
            aws: None,
            aws_bindings: Vec::new(),
            policies: Vec::new(),
            login: LoginSettings::default(),
            attributes: None,
            approval: None,
            ..want.clone()
        };
        let have = match current.realms.iter().find(|r| r.name == want.name) {
            Some(have) => have,
            None => {
                steps.push(Step::CreateRealm(want.clone()));
                &empty
            }
        };
        if want.alg != have.alg {
            conflicts.push(format!(
                "realm {}: alg is {} in the database, {} in the file (a realm keeps its algorithm)",
                want.name, have.alg, want.alg
            ));
        }
        let settings = |r: &RealmSpec| realms::RealmSettings {
            access_token_ttl: r.access_token_ttl,
            display_name: r.display_name.clone(),
            rotation_period_secs: r.rotation_period_secs,
            prepublish_secs: r.prepublish_secs,
        };
        if settings(want) != settings(have) {
            steps.push(Step::UpdateRealm {
                realm: want.name.clone(),
                settings: settings(want),
            });
        }
        // The realm's guard as it is (exported where a row exists; never set for a new realm):
        // the realm's steps are planned under it.
        let guard_row = have.approval.map(|a| crate::store::RealmGuard {
            require_approval: a.require_approval,
            protected: a.protected,
        });
        let was = super::changes::guard_of(guard_row, admin_realm, &want.name);
        let policies_guarded = super::changes::guards_policies(was, admin_realm, &want.name);
        // Declarations before the sign-in policy, whose claims may name them.
        if let Some(attributes) = &want.attributes {
            let declared = have.attributes.clone().unwrap_or_default();
            let held = if declared.is_empty() {
                Vec::new()
            } else {
                store.attributes_holding_pii(&want.name).await?
            };
            if let Some(n) = held
                .iter()
                .find(|n| attributes.get(*n).map(String::as_str) != Some("pii_high"))
            {
                conflicts.push(format!(
                    "realm {}: attribute {n} holds encrypted values, so it stays pii_high (the \
                     file makes it {})",
                    want.name,
                    attributes.get(n).map_or("undeclared", String::as_str)
                ));
            } else if *attributes != declared {
                steps.push(Step::DeclareAttributes {
                    realm: want.name.clone(),
                    attributes: attributes.clone(),
                });
            }
        }
        if want.login != have.login {
            steps.push(Step::SetLogin {
                realm: want.name.clone(),
                login: want.login.clone(),
            });
        }
        let realm = || want.name.clone();
        for g in &want.groups {
            match have.groups.iter().find(|h| h.name == g.name) {
                None => steps.push(Step::CreateGroup {
                    realm: realm(),
                    group: g.clone(),
                }),
                Some(h) if same_scopes(&h.scopes, &g.scopes) => {}
                Some(_) => steps.push(Step::UpdateGroup {
                    realm: realm(),
                    group: g.clone(),
                }),
            }
        }
        for h in &have.groups {
            if !want.groups.iter().any(|g| g.name == h.name) {
                steps.push(Step::DeleteGroup {
                    realm: realm(),
                    name: h.name.clone(),
                    keep_policies: policies_guarded,
                });
            }
        }
        for c in &want.clients {
            let Some(h) = have.clients.iter().find(|h| h.client_id == c.client_id) else {
                steps.push(Step::CreateClient {
                    realm: realm(),
                    client: c.clone(),
                });
                continue;
            };
            if h.public != c.public {
                conflicts.push(format!(
                    "client {}/{}: public is {} in the database, {} in the file (a client does \
                     not change between public and confidential: give the new one another id)",
                    want.name, c.client_id, h.public, c.public
                ));
                continue;
            }
            let w = normalised(c);
            let description = ClientSpec {
                enabled: h.enabled,
                auth: h.auth.clone(),
                ..w.clone()
            } != *h;
            let auth = w.auth != h.auth;
            if auth
                && super::changes::credential_change_needs_approval(
                    store,
                    admin_realm,
                    &want.name,
                    &c.client_id,
                )
                .await?
            {
                conflicts.push(format!(
                    "client {}/{}: the file changes its authentication, but realm {} is protected \
                     (a client's credentials change only through a four-eyes request)",
                    want.name, c.client_id, want.name
                ));
                continue;
            }
            let enabled = w.enabled != h.enabled;
            if description || auth || enabled {
                steps.push(Step::UpdateClient {
                    realm: realm(),
                    client: c.clone(),
                    was: Box::new(h.clone()),
                    description,
                    auth,
                    enabled,
                });
            }
        }
        // The admin realm keeps a way in: a file that would leave it without any client holding
        // sigil:admin (while the database has one) would lock the admin API out.
        let full_admin = |c: &ClientSpec| {
            c.enabled
                && c.audience == crate::admin_api::auth::ADMIN_AUDIENCE
                && c.scope.split(' ').any(|s| s == "sigil:admin")
        };
        if admin_realm == Some(want.name.as_str())
            && have.clients.iter().any(full_admin)
            && !want.clients.iter().any(full_admin)
        {
            conflicts.push(format!(
                "realm {}: the file leaves the admin realm no enabled client with sigil:admin and \
                 audience sigil-admin \
                 (applying it would lock the admin API out); keep one",
                want.name
            ));
        }
        for h in &have.clients {
            if !want.clients.iter().any(|c| c.client_id == h.client_id) {
                let change = super::changes::Change::ClientDelete {
                    realm: realm(),
                    client_id: h.client_id.clone(),
                };
                // Four-eyes: a file cannot delete what needs a second admin's approval.
                if super::changes::needs_approval(store, admin_realm, &change).await? {
                    conflicts.push(format!(
                        "realm {}: the file leaves out client {}, but deleting a client there \
                         needs a second admin's approval: `sigil client delete` files the request",
                        want.name, h.client_id
                    ));
                    continue;
                }
                steps.push(Step::DeleteClient {
                    realm: realm(),
                    client_id: h.client_id.clone(),
                });
            }
        }
        match (&want.aws, &have.aws) {
            (Some(w), h) if Some(w) != h.as_ref() => steps.push(Step::SetAws {
                realm: realm(),
                aws: w.clone(),
            }),
            (None, Some(_)) => steps.push(Step::DisableAws { realm: realm() }),
            _ => {}
        }
        for b in &want.aws_bindings {
            let same = have.aws_bindings.iter().any(|h| {
                h.id == b.id
                    && *h
                        == BindingSpec {
                            scope: b.scope.as_deref().map(normalise_scope),
                            ..b.clone()
                        }
            });
            if !same {
                steps.push(Step::PutBinding {
                    realm: realm(),
                    binding: b.clone(),
                    new: !have.aws_bindings.iter().any(|h| h.id == b.id),
                });
            }
        }
        for h in &have.aws_bindings {
            if !want.aws_bindings.iter().any(|b| b.id == h.id) {
                steps.push(Step::DeleteBinding {
                    realm: realm(),
                    id: h.id.clone(),
                });
            }
        }
        // Four-eyes: in a realm where a policy changes only through a second admin's approval,
        // a file cannot write or delete one (`sigil policy create|delete` files the request).
        let guarded = |what: &str, name: &str| {
            format!(
                "realm {}: the file {what} policy {name}, but a policy changes there only through a \
                 second admin's approval: `sigil policy create|delete` files the request",
                want.name
            )
        };
        for p in &want.policies {
            // The principal must be the realm's once the file is applied (checked before any
            // write, so a file naming another realm's client changes nothing).
            let known = match p.principal_kind.as_str() {
                "client" => want.clients.iter().any(|c| c.client_id == p.principal),
                "group" => want.groups.iter().any(|g| g.name == p.principal),
                "user" => store.user_by_id(&want.name, &p.principal).await?.is_some(),
                _ => true,
            };
            if !known {
                conflicts.push(format!(
                    "policy {}/{} names {} {:?}, which the realm will not have",
                    want.name, p.name, p.principal_kind, p.principal
                ));
            }
            // Compared as stored: the effect in capitals, an empty description as none.
            let as_stored = PolicyFileSpec {
                effect: p.effect.to_ascii_uppercase(),
                description: p.description.clone().filter(|d| !d.is_empty()),
                ..p.clone()
            };
            if !have.policies.contains(&as_stored) {
                if policies_guarded {
                    conflicts.push(guarded("writes", &p.name));
                    continue;
                }
                steps.push(Step::PutPolicy {
                    realm: realm(),
                    policy: p.clone(),
                    new: !have.policies.iter().any(|h| h.name == p.name),
                });
            }
        }
        for h in &have.policies {
            if !want.policies.iter().any(|p| p.name == h.name) {
                if policies_guarded {
                    conflicts.push(guarded("leaves out", &h.name));
                    continue;
                }
                steps.push(Step::DeletePolicy {
                    realm: realm(),
                    name: h.name.clone(),
                });
            }
        }
        // Four-eyes last: the realm's other steps were planned under its guard as it is now.
        if let Some(a) = want.approval {
            let bits = crate::store::GuardBits {
                require_approval: (a.require_approval != was.require_approval)
                    .then_some(a.require_approval),
                protected: (a.protected != was.protected).then_some(a.protected),
            };
            if bits.lowers(was) {
                conflicts.push(format!(
                    "realm {}: the file lowers its four-eyes guard (require_approval {} → {}, \
                     protected {} → {}), which only a second admin's approval does: `sigil realm \
                     set-approval` files the request",
                    want.name, was.require_approval, a.require_approval, was.protected, a.protected
                ));
            } else if !bits.is_empty() || guard_row.is_none() {
                // Also a guard never set that the file states as it is: then recorded, so the
                // database exports what the file says.
                steps.push(Step::RaiseGuard {
                    realm: realm(),
                    bits,
                    was,
                });
            }
        }
    }
    Ok(if conflicts.is_empty() {
        Ok(steps)
    } else {
        Err(conflicts)
    })
}

/// A file's attribute declarations as `declare_attributes` takes them: each class known, each
/// name well-formed.
fn declarations(
    attributes: &BTreeMap<String, String>,
) -> Result<Vec<(String, crate::identity::pii::Classification)>, AdminError> {
    attributes
        .iter()
        .map(|(name, class)| {
            if !users::is_valid_name(name) {
                return Err(super::invalid(
                    "attributes",
                    format!("bad attribute name {name:?}"),
                ));
            }
            crate::identity::pii::Classification::parse(class)
                .map(|c| (name.clone(), c))
                .ok_or_else(|| {
                    super::invalid(
                        "attributes",
                        format!("{name}: the class is internal or pii_high, not {class:?}"),
                    )
                })
        })
        .collect()
}

/// `field: old → new` for every field that differs between two clients as the file writes them.
fn changes(was: &ClientSpec, now: &ClientSpec) -> Vec<String> {
    let as_map = |c: &ClientSpec| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (old, new) = (as_map(was), as_map(now));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => "(none)".to_owned(),
        Some(serde_json::Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    };
    keys.into_iter()
        .filter(|k| k.as_str() != "secret_file" && old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: {} → {}", show(old.get(k)), show(new.get(k))))
        .collect()
}

fn normalise_scope(s: &str) -> String {
    crate::clients::scope::parse(s)
        .map(|v| v.join(" "))
        .unwrap_or_else(|_| s.to_owned())
}

fn same_scopes(a: &str, b: &str) -> bool {
    normalise_scope(a) == normalise_scope(b)
}

/// A client as the file says it, once normalised the way creation normalises it (and as export
/// writes it back).
fn normalised(want: &ClientSpec) -> ClientSpec {
    let mut w = want.clone();
    w.scope = normalise_scope(&w.scope);
    w.default_scope = w
        .default_scope
        .as_deref()
        .map(normalise_scope)
        .filter(|d| *d != w.scope);
    w.auth = w.auth.filter(|a| *a != ClientAuth::default());
    w.client_uri = w.client_uri.as_deref().map(|u| {
        url::Url::parse(u)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| u.to_owned())
    });
    w.secret_file = None;
    w
}

/// What applying did: the steps taken and the secrets of the clients it created (shown once).
pub struct Applied {
    /// The steps done, in order.
    pub steps: Vec<Step>,
    pub secrets: BTreeMap<String, String>,
    /// Why the step after the last one done failed (the steps before it stay done: each is its
    /// own transaction, and every check that needs no database ran before the first).
    pub failed: Option<AdminError>,
}

fn new_client(realm: &str, c: &ClientSpec, secret: Option<String>) -> clients::NewClient {
    clients::NewClient {
        realm: realm.to_owned(),
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
        secret,
    }
}

fn binding(realm: &str, b: &BindingSpec) -> Result<aws::Bind, AdminError> {
    let deny = match b.effect.as_str() {
        "allow" => false,
        "deny" => true,
        other => return Err(invalid("effect", format!("{other:?} is not allow or deny"))),
    };
    Ok(aws::Bind {
        realm: realm.to_owned(),
        id: Some(b.id.clone()),
        principal: b.principal.clone(),
        account: b.account.clone(),
        deny,
        scopes: b.scope.clone(),
        audience: b.audience.clone(),
        access_token_ttl: b.access_token_ttl,
    })
}

fn read_secret(c: &ClientSpec) -> Result<Option<String>, AdminError> {
    let Some(path) = &c.secret_file else {
        return Ok(None);
    };
    use std::io::Read;
    let bad = |why: String| invalid("secret_file", format!("{}: {why}", path.display()));
    // A regular file (after symlinks): never a device or a FIFO, which could be endless or block.
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    // A secret is short: read at most a little more than the longest one allowed.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4097).read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() > 4096 {
        return Err(bad("larger than a secret".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

fn alg(name: &str) -> Result<Alg, AdminError> {
    name.parse().map_err(|e: String| invalid("alg", e))
}

/// Every check the steps' writes would make that needs no database, for all of them before the
/// first write: a file with one bad client changes nothing at all. Each problem names its step.
pub fn check(steps: &[Step], jwks_max_age_secs: i64, now: UnixTime) -> Vec<String> {
    let mut problems = Vec::new();
    for step in steps {
        let result = match step {
            Step::CreateRealm(r) => {
                alg(&r.alg).and_then(|alg| realms::check_new(&new_realm(r, alg, jwks_max_age_secs)))
            }
            Step::UpdateRealm { settings, .. } => {
                realms::check_settings(settings, jwks_max_age_secs)
            }
            Step::SetLogin { login, .. } => {
                login.validate().map_err(|m| invalid("login settings", m))
            }
            Step::CreateGroup { group, .. } | Step::UpdateGroup { group, .. } => {
                users::check_group(&group.name, &group.scopes).map(|_| ())
            }
            Step::CreateClient { realm, client } => read_secret(client)
                .and_then(|secret| clients::check(&new_client(realm, client, secret), now)),
            Step::UpdateClient { realm, client, .. } => {
                clients::check(&new_client(realm, client, None), now)
            }
            Step::SetAws { realm, aws: a } => aws::check_configure(&aws::Configure {
                realm: realm.clone(),
                sts_endpoint: a.sts_endpoint.clone(),
                partitions: a.partitions.clone(),
                server_id: a.server_id.clone(),
                require_challenge: a.require_challenge,
            }),
            Step::PutBinding {
                realm, binding: b, ..
            } => binding(realm, b).and_then(|b| aws::check_binding(&b).map(|_| ())),
            Step::PutPolicy { realm, policy, .. } => {
                policies::check(&policy.new_policy(realm)).map(|_| ())
            }
            Step::DeclareAttributes { attributes, .. } => declarations(attributes).map(|_| ()),
            Step::DeleteGroup { .. }
            | Step::RaiseGuard { .. }
            | Step::DeletePolicy { .. }
            | Step::DeleteClient { .. }
            | Step::DisableAws { .. }
            | Step::DeleteBinding { .. } => Ok(()),
        };
        if let Err(e) = result {
            problems.push(format!("{step}: {e}"));
        }
    }
    problems
}

/// Applies a plan made by [`plan`], step by step, each audited with `actor`. The steps are
/// [`check`]ed first: a bad one is `Err`, nothing written. A step that fails after others were
/// done (the database refused it, or a concurrent apply made it first) ends the run with
/// [`Applied::failed`] set, and the secrets of the clients already created kept.
pub async fn apply(
    store: &dyn Store,
    kek: &dyn KekSource,
    base_url: &str,
    jwks_max_age_secs: i64,
    steps: Vec<Step>,
    now: UnixTime,
    actor: &str,
) -> Result<Applied, AdminError> {
    if let Some(first) = check(&steps, jwks_max_age_secs, now).into_iter().next() {
        return Err(AdminError::Invalid {
            field: "file",
            message: first,
        });
    }
    let mut secrets = BTreeMap::new();
    let mut done = Vec::new();
    for step in steps {
        if let Err(e) = apply_step(
            store,
            kek,
            base_url,
            jwks_max_age_secs,
            &step,
            now,
            actor,
            &mut secrets,
        )
        .await
        {
            return Ok(Applied {
                steps: done,
                secrets,
                failed: Some(e),
            });
        }
        done.push(step);
    }
    Ok(Applied {
        steps: done,
        secrets,
        failed: None,
    })
}

/// One step of [`apply`]; a created client's secret goes into `secrets`.
#[allow(clippy::too_many_arguments)] // the step and what it needs, as apply has them
async fn apply_step(
    store: &dyn Store,
    kek: &dyn KekSource,
    base_url: &str,
    jwks_max_age_secs: i64,
    step: &Step,
    now: UnixTime,
    actor: &str,
    secrets: &mut BTreeMap<String, String>,
) -> Result<(), AdminError> {
    match step {
        Step::CreateRealm(r) => {
            let alg = alg(&r.alg)?;
            realms::create(
                store,
                kek,
                base_url,
                new_realm(r, alg, jwks_max_age_secs),
                now,
                actor,
            )
            .await?;
        }
        Step::UpdateRealm { realm, settings } => {
            realms::update(
                store,
                base_url,
                realm,
                settings.clone(),
                jwks_max_age_secs,
                now,
                actor,
            )
            .await?;
        }
        Step::DeclareAttributes { realm, attributes } => {
            users::declare_attributes(store, kek, realm, &declarations(attributes)?, now, actor)
                .await?;
        }
        Step::SetLogin { realm, login } => {
            users::set_login_settings(store, realm, login, now, actor).await?;
        }
        Step::CreateGroup { realm, group } => {
            users::create_group(store, realm, &group.name, &group.scopes, now, actor).await?;
        }
        Step::UpdateGroup { realm, group } => {
            users::set_group_scopes(store, realm, &group.name, &group.scopes, now, actor).await?;
        }
        Step::DeleteGroup {
            realm,
            name,
            keep_policies,
        } => {
            users::delete_group(store, realm, name, *keep_policies, now, actor).await?;
        }
        Step::CreateClient { realm, client: c } => {
            let secret = read_secret(c)?;
            let made = clients::create(store, new_client(realm, c, secret), now, actor).await?;
            if !c.enabled {
                clients::set_enabled(store, realm, &c.client_id, None, false, now, actor).await?;
            }
            if let Some(secret) = made.client_secret {
                secrets.insert(format!("{realm}/{}", c.client_id), secret);
            }
        }
        Step::UpdateClient {
            realm,
            client: c,
            description,
            auth,
            enabled,
            ..
        } => {
            if *description {
                clients::update(store, new_client(realm, c, None), None, now, actor).await?;
            }
            if *auth {
                let made = clients::set_auth(
                    store,
                    realm,
                    &c.client_id,
                    None,
                    c.auth.clone().unwrap_or_default(),
                    now,
                    actor,
                )
                .await?;
                if let Some(secret) = made.client_secret {
                    secrets.insert(format!("{realm}/{}", c.client_id), secret);
                }
            }
            if *enabled {
                clients::set_enabled(store, realm, &c.client_id, None, c.enabled, now, actor)
                    .await?;
            }
        }
        Step::DeleteClient { realm, client_id } => {
            clients::delete(store, realm, client_id, None, now, actor).await?;
        }
        Step::SetAws { realm, aws: a } => {
            aws::configure(
                store,
                aws::Configure {
                    realm: realm.clone(),
                    sts_endpoint: a.sts_endpoint.clone(),
                    partitions: a.partitions.clone(),
                    server_id: a.server_id.clone(),
                    require_challenge: a.require_challenge,
                },
                now,
                actor,
            )
            .await?;
        }
        Step::DisableAws { realm } => aws::disable(store, realm, now, actor).await?,
        Step::PutBinding {
            realm, binding: b, ..
        } => {
            aws::put_binding(store, binding(realm, b)?, now, actor).await?;
        }
        Step::DeleteBinding { realm, id } => aws::unbind(store, realm, id, now, actor).await?,
        Step::PutPolicy { realm, policy, new } => {
            policies::create(store, policy.new_policy(realm), !new, now, actor).await?;
        }
        Step::DeletePolicy { realm, name } => {
            policies::delete(store, realm, name, now, actor).await?;
        }
        Step::RaiseGuard { realm, bits, was } => {
            super::changes::change_guard(store, realm, *bits, *was, now, actor).await?;
        }
    }
    Ok(())
}
