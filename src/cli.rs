//! The `sigil` command line: `serve`, `migrate`, and realm/client/audit administration against
//! the same database a running server uses.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::admin::{self, AdminError};
use crate::audit::VerifyReport;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, Settings, base_url_string};
use crate::keys::{Alg, open_file_kek};
use crate::store::{self, Store};

#[derive(Debug, Parser)]
#[command(name = "sigil", version, about = "Self-hosted OpenID Connect issuer")]
pub struct Cli {
    /// TOML configuration file (see sigil.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://PATH (default sqlite://data/sigil.db) or postgres://...
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Key-encryption key file (default keys/kek).
    #[arg(long, global = true, value_name = "PATH")]
    pub kek_file: Option<PathBuf>,
    /// Base URL of every issuer: {public-url}/realms/{realm}.
    #[arg(long, global = true, value_name = "URL")]
    pub public_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "HOST:PORT")]
        bind: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage realms.
    #[command(subcommand)]
    Realm(RealmCommand),
    /// Manage service clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Signing keys: list, rotate now, revoke.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The key-encryption key.
    #[command(subcommand)]
    Kek(KekCommand),
    /// AWS workload identity: STS settings and principal bindings of a realm.
    #[command(subcommand)]
    Aws(AwsCommand),
    /// Token helpers for workloads.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Users of a realm (customers, staff).
    #[command(subcommand)]
    User(UserCommand),
    /// Groups of a realm and the scopes they grant.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Measure the raw signing rate of a realm's active key in-process (for bench/).
    #[command(hide = true)]
    BenchSign {
        #[arg(long)]
        realm: String,
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Measure how fast `writers` concurrent appenders (one per node, simulated) can grow the
    /// audit chain in batches of `batch` records (for bench/; writes synthetic records: use a
    /// scratch database).
    #[command(hide = true)]
    BenchChain {
        #[arg(long, default_value_t = 4)]
        writers: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum RealmCommand {
    /// Create a realm with a fresh signing key.
    Create {
        name: String,
        #[arg(long, default_value = "ES256")]
        alg: Alg,
        /// Access token lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        token_ttl: i64,
        #[arg(long)]
        display_name: Option<String>,
        /// Seconds a key signs before the next one takes over (default 30 days).
        #[arg(long, default_value_t = admin::realms::DEFAULT_ROTATION_PERIOD)]
        rotation_period: i64,
        /// Seconds a next key is published before it signs (default 24 h; at least the JWKS max-age).
        #[arg(long, default_value_t = admin::realms::DEFAULT_PREPUBLISH)]
        prepublish: i64,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Sign-in policy: lifetimes, the password + TOTP fallback, claim names.
    SetLogin {
        name: String,
        #[arg(long)]
        refresh_ttl: Option<i64>,
        #[arg(long)]
        session_idle: Option<i64>,
        #[arg(long)]
        session_absolute: Option<i64>,
        /// true or false.
        #[arg(long)]
        allow_fallback: Option<bool>,
        #[arg(long)]
        groups_claim: Option<String>,
        /// attribute=claim (repeatable), e.g. party_id=custom:party_id.
        #[arg(long = "attr-claim")]
        attr_claims: Vec<String>,
        #[arg(long)]
        logo_url: Option<String>,
        /// true or false: remember a user's "continue" for a public app (RFC 8252 §8.6 advises
        /// against it; off by default).
        #[arg(long)]
        remember_consent: Option<bool>,
        /// Start from the defaults instead of the stored policy (needed when the stored one is
        /// unusable).
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Debug, Args)]
pub struct UserRef {
    #[arg(long)]
    pub realm: String,
    #[arg(long)]
    pub username: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (prints JSON).
    Create {
        #[command(flatten)]
        user: UserRef,
        /// key=value (repeatable).
        #[arg(long = "attr")]
        attrs: Vec<String>,
        /// Group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    Show {
        #[command(flatten)]
        user: UserRef,
    },
    Disable {
        #[command(flatten)]
        user: UserRef,
    },
    Enable {
        #[command(flatten)]
        user: UserRef,
    },
    /// key=value (repeatable); an empty value removes the attribute.
    SetAttr {
        #[command(flatten)]
        user: UserRef,
        #[arg(long = "attr", required = true)]
        attrs: Vec<String>,
    },
    AddGroup {
        #[command(flatten)]
        user: UserRef,
        #[arg(long)]
        group: String,
    },
    RemoveGroup {
        #[command(flatten)]
        user: UserRef,
        #[arg(long)]
        group: String,
    },
    /// Print a single-use, expiring enrolment link.
    Invite {
        #[command(flatten)]
        user: UserRef,
        /// Seconds the link stays valid (default 24 h).
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
    /// End every session and refresh token of the user at once.
    SignOutEverywhere {
        #[command(flatten)]
        user: UserRef,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    Create {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        name: String,
        /// Space-separated scopes members may have.
        #[arg(long)]
        scope: String,
    },
    List {
        #[arg(long)]
        realm: String,
    },
}

#[derive(Debug, Args)]
pub struct ClientRef {
    #[arg(long)]
    pub realm: String,
    #[arg(long)]
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its secret once, as JSON.
    Create {
        #[command(flatten)]
        client: ClientRef,
        /// Space-separated scopes the client may request.
        #[arg(long)]
        scope: String,
        /// Scopes granted when a request names none (default: all allowed scopes).
        #[arg(long)]
        default_scope: Option<String>,
        /// The `aud` of the client's tokens.
        #[arg(long)]
        audience: String,
        /// Access token lifetime in seconds (default: the realm's).
        #[arg(long)]
        token_ttl: Option<i64>,
        /// An exact redirect URI (repeatable): makes this a sign-in (authorization code) client.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client (mobile app): no secret, PKCE only.
        #[arg(long)]
        public: bool,
        /// Accepted for symmetry; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        json: bool,
    },
    Show {
        #[command(flatten)]
        client: ClientRef,
        #[arg(long)]
        json: bool,
    },
    Delete {
        #[command(flatten)]
        client: ClientRef,
    },
    /// Replace the secret; the old one stops working at once. Prints the new one as JSON.
    RotateSecret {
        #[command(flatten)]
        client: ClientRef,
        #[arg(long)]
        json: bool,
    },
    Disable {
        #[command(flatten)]
        client: ClientRef,
    },
    Enable {
        #[command(flatten)]
        client: ClientRef,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Every key of the realm with its state and dates.
    List {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        json: bool,
    },
    /// Make the next key sign now (or a fresh key, if none is published yet).
    Rotate {
        #[arg(long)]
        realm: String,
        /// Switch the realm to this algorithm from this key on.
        #[arg(long)]
        alg: Option<Alg>,
    },
    /// Emergency: remove a key from JWKS at once and destroy its private half.
    Revoke {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Re-encrypt every private key under the KEK in FILE, in one transaction. Afterwards, point
    /// kek_file at FILE (or move it into place) and restart the servers.
    Rotate {
        #[arg(long, value_name = "FILE")]
        new_kek: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Enable the exchange in a realm: which STS endpoint, which server ID.
    Configure {
        #[arg(long)]
        realm: String,
        /// An explicit STS endpoint (http(s)://host[:port]/); default: the real STS hosts of the
        /// partitions.
        #[arg(long)]
        sts_endpoint: Option<String>,
        /// AWS partitions whose STS hosts are allowed (repeatable; default aws).
        #[arg(long = "partition")]
        partitions: Vec<String>,
        /// The value workloads must send, signed, in X-Sigil-Server-ID.
        #[arg(long)]
        server_id: String,
        /// Require a single-use challenge from the challenge endpoint in every request.
        #[arg(long)]
        require_challenge: bool,
    },
    /// Map IAM principals (exact ARN or */? glob, and/or account id) to scopes and an audience.
    Bind {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        token_ttl: Option<i64>,
        /// A DENY binding: a match refuses the principal whatever ALLOWs say.
        #[arg(long)]
        deny: bool,
    },
    /// List a realm's bindings as JSON.
    Bindings {
        #[arg(long)]
        realm: String,
    },
    Unbind {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign STS GetCallerIdentity with the AWS credentials in the environment (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), exchange it at ISSUER, print the access token.
    Aws {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        audience: Option<String>,
        /// Region whose STS endpoint to sign for (default AWS_REGION, else us-east-1).
        #[arg(long)]
        region: Option<String>,
        /// Sign for this STS URL instead of https://sts.{region}.amazonaws.com/.
        #[arg(long)]
        sts_url: Option<String>,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exits 1 and names the first broken row if it is broken.
    Verify,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Startup(#[from] crate::startup::StartupError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Kek(#[from] crate::keys::KekOpenError),
    #[error("{0}")]
    Key(#[from] crate::keys::KeyError),
    #[error("{0}")]
    Other(String),
}

/// Layers file, environment and flags into a validated configuration.
pub fn resolve_config(cli: &Cli) -> Result<Config, ConfigError> {
    let file = match &cli.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let env = Settings::from_env(|k| std::env::var(k).ok())?;
    let flags = Settings {
        bind: match &cli.command {
            Command::Serve { bind } => bind.clone(),
            _ => None,
        },
        public_url: cli.public_url.clone(),
        database_url: cli.database_url.clone(),
        kek_file: cli.kek_file.clone(),
        ..Settings::default()
    };
    Config::from_settings(file.merge(env).merge(flags))
}

fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    let store = store::connect_with(&config.database_url, &config.db).await?;
    store.migrate().await?;
    Ok(store)
}

fn base_url(config: &Config) -> String {
    match &config.public_url {
        Some(u) => base_url_string(u),
        None => crate::config::default_base_url(config.bind),
    }
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli, config: Config) -> Result<i32, CliError> {
    let now = SystemClock.now();
    let actor = "cli";
    match cli.command {
        Command::Serve { .. } => {
            let app = crate::Application::build(config).await?;
            tracing::info!(address = %app.local_addr(), base_url = %app.base_url(), "sigil listening");
            println!("listening on {}", app.base_url());
            app.run_until_stopped()
                .await
                .map_err(|e| CliError::Other(format!("server error: {e}")))?;
            Ok(0)
        }
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied");
            Ok(0)
        }
        Command::Realm(cmd) => {
            let store = open_store(&config).await?;
            let base = base_url(&config);
            match cmd {
                RealmCommand::Create {
                    name,
                    alg,
                    token_ttl,
                    display_name,
                    rotation_period,
                    prepublish,
                } => {
                    let (kek, created) = open_file_kek(&config.kek_file, store.as_ref()).await?;
                    if created {
                        eprintln!(
                            "warning: created a new key-encryption key at {}; production must provide its own",
                            config.kek_file.display()
                        );
                    }
                    let req = admin::realms::NewRealm {
                        name,
                        alg,
                        access_token_ttl: token_ttl,
                        display_name,
                        rotation_period_secs: rotation_period,
                        prepublish_secs: prepublish,
                        jwks_max_age_secs: config.jwks_max_age_secs as i64,
                    };
                    let view =
                        admin::realms::create(store.as_ref(), kek.as_ref(), &base, req, now, actor)
                            .await?;
                    print_json(&view);
                }
                RealmCommand::List { json } => {
                    let realms = admin::realms::list(store.as_ref(), &base).await?;
                    if json {
                        print_json(&realms);
                    } else {
                        for r in realms {
                            println!("{}\t{}\t{}", r.name, r.alg, r.issuer);
                        }
                    }
                }
                RealmCommand::SetLogin {
                    name,
                    refresh_ttl,
                    session_idle,
                    session_absolute,
                    allow_fallback,
                    groups_claim,
                    attr_claims,
                    logo_url,
                    remember_consent,
                    reset,
                } => {
                    let realm = store
                        .realm(&name)
                        .await?
                        .ok_or_else(|| CliError::Other(format!("realm {name} not found")))?;
                    let mut ls = if reset {
                        crate::identity::settings::LoginSettings::default()
                    } else {
                        crate::identity::settings::LoginSettings::parse(&realm.login_settings)
                            .map_err(|e| {
                                CliError::Other(format!(
                                    "{e}; pass --reset to start from the defaults"
                                ))
                            })?
                    };
                    if let Some(v) = remember_consent {
                        ls.remember_consent = v;
                    }
                    if let Some(v) = refresh_ttl {
                        ls.refresh_token_ttl = v;
                    }
                    if let Some(v) = session_idle {
                        ls.session_idle_secs = v;
                    }
                    if let Some(v) = session_absolute {
                        ls.session_absolute_secs = v;
                    }
                    if let Some(v) = allow_fallback {
                        ls.allow_password_fallback = v;
                    }
                    if let Some(v) = groups_claim {
                        ls.groups_claim = v;
                    }
                    for kv in attr_claims {
                        let (a, c) = admin::users::parse_attr(&kv)?;
                        ls.attribute_claims.insert(a, c);
                    }
                    if logo_url.is_some() {
                        ls.logo_url = logo_url;
                    }
                    admin::users::set_login_settings(store.as_ref(), &name, &ls, now, actor)
                        .await?;
                    print_json(&ls);
                }
                RealmCommand::Show { name, json } => {
                    let r = admin::realms::show(store.as_ref(), &base, &name).await?;
                    if json {
                        print_json(&r);
                    } else {
                        println!(
                            "realm:   {}\nissuer:  {}\nalg:     {}\nttl:     {}s",
                            r.name, r.issuer, r.alg, r.access_token_ttl
                        );
                        for k in r.keys {
                            println!("key:     {} {} {}", k.kid, k.alg, k.state);
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Client(cmd) => {
            let store = open_store(&config).await?;
            let s = store.as_ref();
            match cmd {
                ClientCommand::Create {
                    client,
                    scope,
                    default_scope,
                    audience,
                    token_ttl,
                    redirect_uris,
                    public,
                    json: _,
                } => {
                    let req = admin::clients::NewClient {
                        realm: client.realm,
                        client_id: client.id,
                        scopes: scope,
                        default_scopes: default_scope,
                        audience,
                        access_token_ttl: token_ttl,
                        redirect_uris,
                        public,
                    };
                    print_json(&admin::clients::create(s, req, now, actor).await?);
                }
                ClientCommand::List { realm, json } => {
                    let clients = admin::clients::list(s, &realm).await?;
                    if json {
                        print_json(&clients);
                    } else {
                        for c in clients {
                            let state = if c.enabled { "enabled" } else { "disabled" };
                            println!(
                                "{}\t{}\t{}\t{}",
                                c.client_id,
                                state,
                                c.audience,
                                c.allowed_scopes.join(" ")
                            );
                        }
                    }
                }
                ClientCommand::Show { client, json } => {
                    let c = admin::clients::show(s, &client.realm, &client.id).await?;
                    if json {
                        print_json(&c);
                    } else {
                        println!(
                            "client:   {}\nrealm:    {}\nenabled:  {}\naudience: {}\nscopes:   {}\ndefaults: {}",
                            c.client_id,
                            c.realm,
                            c.enabled,
                            c.audience,
                            c.allowed_scopes.join(" "),
                            c.default_scopes.join(" ")
                        );
                    }
                }
                ClientCommand::Delete { client } => {
                    admin::clients::delete(s, &client.realm, &client.id, now, actor).await?;
                    println!("deleted {}", client.id);
                }
                ClientCommand::RotateSecret { client, json: _ } => {
                    print_json(
                        &admin::clients::rotate_secret(s, &client.realm, &client.id, now, actor)
                            .await?,
                    );
                }
                ClientCommand::Disable { client } => {
                    admin::clients::set_enabled(s, &client.realm, &client.id, false, now, actor)
                        .await?;
                    println!("disabled {}", client.id);
                }
                ClientCommand::Enable { client } => {
                    admin::clients::set_enabled(s, &client.realm, &client.id, true, now, actor)
                        .await?;
                    println!("enabled {}", client.id);
                }
            }
            Ok(0)
        }
        Command::Key(cmd) => {
            let store = open_store(&config).await?;
            let base = base_url(&config);
            match cmd {
                KeyCommand::List { realm, json } => {
                    let r = admin::realms::show(store.as_ref(), &base, &realm).await?;
                    if json {
                        print_json(&r.keys);
                    } else {
                        for k in r.keys {
                            println!(
                                "{}\t{}\t{}\tcreated {}\tactivated {}\tretired {}\tmax_exp {}",
                                k.kid,
                                k.alg,
                                k.state,
                                k.created_at,
                                k.activated_at.map_or("-".into(), |t| t.to_string()),
                                k.retired_at.map_or("-".into(), |t| t.to_string()),
                                k.max_exp
                            );
                        }
                    }
                }
                KeyCommand::Rotate { realm, alg } => {
                    let (kek, _) = open_file_kek(&config.kek_file, store.as_ref()).await?;
                    let kid = crate::keys::rotation::rotate_now(
                        store.as_ref(),
                        kek.as_ref(),
                        &realm,
                        alg,
                        actor,
                        now,
                    )
                    .await
                    .map_err(|e| CliError::Other(e.to_string()))?;
                    println!("{kid} now signs for realm {realm}");
                }
                KeyCommand::Revoke { realm, kid } => {
                    let (kek, _) = open_file_kek(&config.kek_file, store.as_ref()).await?;
                    crate::keys::rotation::revoke(
                        store.as_ref(),
                        kek.as_ref(),
                        &realm,
                        &kid,
                        actor,
                        now,
                    )
                    .await
                    .map_err(|e| CliError::Other(e.to_string()))?;
                    println!(
                        "revoked {kid}: it has left the JWKS; validators drop it at their next JWKS \
                         fetch (at most jwks_max_age_secs = {} s, or at once on Validator::refresh)",
                        config.jwks_max_age_secs
                    );
                }
            }
            Ok(0)
        }
        Command::Kek(KekCommand::Rotate { new_kek }) => {
            let store = open_store(&config).await?;
            let (old, _) = open_file_kek(&config.kek_file, store.as_ref()).await?;
            let new = crate::keys::FileKek::load(&new_kek)?;
            let n = admin::keys::rotate_kek(store.as_ref(), old.as_ref(), &new, actor, now).await?;
            println!(
                "re-encrypted {n} keys under {}; now set kek_file to {} and restart every node",
                crate::keys::KekSource::id(&new),
                new_kek.display()
            );
            Ok(0)
        }
        Command::Aws(cmd) => {
            let store = open_store(&config).await?;
            let s = store.as_ref();
            match cmd {
                AwsCommand::Configure {
                    realm,
                    sts_endpoint,
                    partitions,
                    server_id,
                    require_challenge,
                } => {
                    let rec = admin::aws::configure(
                        s,
                        admin::aws::Configure {
                            realm,
                            sts_endpoint,
                            partitions,
                            server_id,
                            require_challenge,
                        },
                        now,
                        actor,
                    )
                    .await?;
                    println!(
                        "AWS exchange configured for realm {} (server ID {})",
                        rec.realm, rec.server_id
                    );
                }
                AwsCommand::Bind {
                    realm,
                    id,
                    principal,
                    account,
                    scope,
                    audience,
                    token_ttl,
                    deny,
                } => {
                    let b = admin::aws::bind(
                        s,
                        admin::aws::Bind {
                            realm,
                            id,
                            principal,
                            account,
                            deny,
                            scopes: scope,
                            audience,
                            access_token_ttl: token_ttl,
                        },
                        now,
                        actor,
                    )
                    .await?;
                    print_json(&b);
                }
                AwsCommand::Bindings { realm } => {
                    print_json(&admin::aws::bindings(s, &realm).await?)
                }
                AwsCommand::Unbind { realm, id } => {
                    admin::aws::unbind(s, &realm, &id, now, actor).await?;
                    println!("removed binding {id}");
                }
            }
            Ok(0)
        }
        Command::Token(TokenCommand::Aws {
            issuer,
            scope,
            audience,
            region,
            sts_url,
            json,
        }) => {
            let region = region
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into());
            let sts_url = sts_url.unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com/"));
            let body = crate::aws::client::fetch_token(
                &issuer,
                &region,
                &sts_url,
                scope.as_deref(),
                audience.as_deref(),
                now,
            )
            .await
            .map_err(CliError::Other)?;
            if json {
                print_json(&body);
            } else {
                println!("{}", body["access_token"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
        Command::User(cmd) => {
            let store = open_store(&config).await?;
            let s = store.as_ref();
            let base = base_url(&config);
            let attrs = |v: Vec<String>| -> Result<Vec<(String, String)>, CliError> {
                v.iter()
                    .map(|kv| admin::users::parse_attr(kv).map_err(CliError::from))
                    .collect()
            };
            match cmd {
                UserCommand::Create {
                    user,
                    attrs: a,
                    groups,
                } => {
                    let a = attrs(a)?;
                    print_json(
                        &admin::users::create(
                            s,
                            &user.realm,
                            &user.username,
                            &a,
                            &groups,
                            now,
                            actor,
                        )
                        .await?,
                    );
                }
                UserCommand::Show { user } => {
                    print_json(&admin::users::show(s, &user.realm, &user.username).await?)
                }
                UserCommand::Disable { user } => {
                    admin::users::set_enabled(s, &user.realm, &user.username, false, now, actor)
                        .await?;
                    println!(
                        "disabled {} (sessions and refresh tokens ended)",
                        user.username
                    );
                }
                UserCommand::Enable { user } => {
                    admin::users::set_enabled(s, &user.realm, &user.username, true, now, actor)
                        .await?;
                    println!("enabled {}", user.username);
                }
                UserCommand::SetAttr { user, attrs: a } => {
                    let a = attrs(a)?;
                    print_json(
                        &admin::users::set_attrs(s, &user.realm, &user.username, &a, now, actor)
                            .await?,
                    );
                }
                UserCommand::AddGroup { user, group } => {
                    admin::users::add_group(s, &user.realm, &user.username, &group, now, actor)
                        .await?;
                    println!("{} is in {group}", user.username);
                }
                UserCommand::RemoveGroup { user, group } => {
                    admin::users::remove_group(s, &user.realm, &user.username, &group, now, actor)
                        .await?;
                    println!("{} left {group}", user.username);
                }
                UserCommand::Invite { user, ttl } => {
                    println!(
                        "{}",
                        admin::users::invite(
                            s,
                            &base,
                            &user.realm,
                            &user.username,
                            ttl,
                            now,
                            actor
                        )
                        .await?
                    );
                }
                UserCommand::SignOutEverywhere { user } => {
                    let n = admin::users::sign_out_everywhere(
                        s,
                        &user.realm,
                        &user.username,
                        now,
                        actor,
                    )
                    .await?;
                    println!("ended {n} sessions and refresh tokens of {}", user.username);
                }
            }
            Ok(0)
        }
        Command::Group(cmd) => {
            let store = open_store(&config).await?;
            match cmd {
                GroupCommand::Create { realm, name, scope } => {
                    admin::users::create_group(store.as_ref(), &realm, &name, &scope, now, actor)
                        .await?;
                    println!("group {name} created");
                }
                GroupCommand::List { realm } => {
                    for (name, scopes) in admin::users::groups(store.as_ref(), &realm).await? {
                        println!("{name}\t{scopes}");
                    }
                }
            }
            Ok(0)
        }
        Command::Audit(AuditCommand::Verify) => {
            let store = open_store(&config).await?;
            // Checkpoint seals are checked when this KEK is at hand (never created here).
            let kek = crate::keys::FileKek::load(&config.kek_file).ok();
            let kek_ref = kek.as_ref().map(|k| k as &dyn crate::keys::KekSource);
            if kek.is_none() {
                eprintln!(
                    "note: no KEK at {}: checkpoint seals are not checked",
                    config.kek_file.display()
                );
            }
            match admin::audit::verify(store.as_ref(), kek_ref).await? {
                VerifyReport::Intact { rows, head } => {
                    println!("audit chain intact: {rows} rows, head {head}");
                    Ok(0)
                }
                VerifyReport::Broken { seq, reason } => {
                    println!("audit chain BROKEN at row {seq}: {reason}");
                    Ok(1)
                }
            }
        }
        Command::BenchSign {
            realm,
            seconds,
            threads,
        } => {
            let store = open_store(&config).await?;
            let (kek, _) = open_file_kek(&config.kek_file, store.as_ref()).await?;
            let dir = crate::directory::Directory::new(store, kek, base_url(&config), 0);
            let live = dir
                .realm(&realm, now)
                .await
                .map_err(|e| CliError::Other(e.to_string()))?
                .ok_or_else(|| CliError::Other(format!("realm {realm} not found")))?;
            let rate = crate::oauth::token::bench_sign_rate(&live, seconds, threads);
            println!("raw_signs_per_sec {rate:.0}");
            Ok(0)
        }
        Command::BenchChain {
            writers,
            batch,
            seconds,
        } => {
            let store = open_store(&config).await?;
            let r = crate::audit::bench::bench_chain(
                store,
                writers.clamp(1, 256),
                batch.clamp(1, 1000),
                seconds,
                now,
            )
            .await?;
            println!(
                "writers {writers} batch {batch} records_per_sec {:.0} batches_per_sec {:.0} \
                 batch_ms {:.2} head_wait_ms {:.2} wait_share {:.2}",
                r.records_per_sec, r.batches_per_sec, r.batch_ms, r.head_wait_ms, r.wait_share
            );
            Ok(0)
        }
    }
}
