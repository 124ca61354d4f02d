//! The `sigil` command line: `serve`, `migrate`, and realm/client/audit administration against
//! the same database a running server uses.
//!
//! This module holds the top-level parser, configuration layering and the dispatch; each command
//! group has a file of its own.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::admin::AdminError;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, Settings, base_url_string};
use crate::store::{self, Store};

mod admin;
mod apply;
mod audit;
mod aws;
mod bench;
mod change;
mod client;
mod group;
mod keys;
mod policy;
mod realm;
mod user;

pub use admin::AdminCommand;
pub use audit::AuditCommand;
pub use aws::{AwsCommand, TokenCommand};
pub use change::ChangeCommand;
pub use client::{ClientCommand, ClientRef};
pub use group::GroupCommand;
pub use keys::{KekCommand, KeyCommand};
pub use policy::PolicyCommand;
pub use realm::RealmCommand;
pub use user::{UserCommand, UserRef};

#[derive(Debug, Parser)]
#[command(name = "sigil", version, about = "Self-hosted OpenID Connect issuer")]
pub struct Cli {
    /// TOML configuration file (see sigil.example.toml).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Shared options"
    )]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://PATH (default sqlite://data/sigil.db) or postgres://...
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Shared options"
    )]
    pub database_url: Option<String>,
    /// Key-encryption key file (default keys/kek).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Shared options"
    )]
    pub kek_file: Option<PathBuf>,
    /// Who runs this command, for the audit log and four-eyes approvals (an approval must come
    /// from another operator than the request). Recorded as cli:NAME; default cli.
    #[arg(
        long,
        global = true,
        env = "SIGIL_OPERATOR",
        value_name = "NAME",
        help_heading = "Shared options"
    )]
    pub operator: Option<String>,
    /// Base URL of every issuer: {public-url}/realms/{realm}.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Shared options"
    )]
    pub public_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "HOST:PORT")]
        bind: Option<String>,
    },
    /// Apply database migrations (and encrypt plain values of pii_high attributes) and exit.
    Migrate,
    /// Ask a running node whether it is ready (its `/readyz`), for a container's health check:
    /// exit status 0 when it answers 200, 1 otherwise, with its answer on stderr.
    Probe {
        /// The URL to ask (default: `/readyz` on this configuration's `bind`, through loopback
        /// when it binds every address). A TLS certificate is not verified: the probe sends
        /// nothing secret and a node's certificate names its public host, not loopback.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
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
    /// Principal policies for resource servers (ALLOW/DENY, actions, resources, CEL assertions).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The admin REST API: its first client, its OpenAPI document.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Four-eyes: dangerous changes waiting for a second admin's approval.
    #[command(subcommand)]
    Change(ChangeCommand),
    /// Print realms, sign-in policies, groups, clients and AWS settings and bindings (no secrets,
    /// no keys) as the TOML that `apply` reads.
    Export,
    /// Make the database match a file written like `export`'s: in the realms it names, create
    /// what is missing, change what differs and delete groups, clients and AWS bindings it leaves
    /// out (never a realm). Prints a line per change (+ create, ~ change, - delete); refuses,
    /// writing nothing, on a conflict or an invalid entry.
    Apply {
        /// The file (TOML).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Measure the raw signing rate of a realm's active key in-process (for bench/).
    #[command(hide = true)]
    BenchSign {
        /// The realm whose active key signs.
        #[arg(long)]
        realm: String,
        /// How long to measure.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Signing threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Measure how fast `writers` concurrent appenders (one per node, simulated) can grow the
    /// audit chain in batches of `batch` records (for bench/; writes synthetic records: use a
    /// scratch database).
    #[command(hide = true)]
    BenchChain {
        /// Concurrent appenders.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Records per batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// How long to measure.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
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
    Secret(#[from] crate::secrets::database::OpenError),
    #[error("{0}")]
    Other(String),
}

fn admin_name_ok(name: &str) -> bool {
    // "cli" is the anonymous default: no operator may take its name.
    !name.eq_ignore_ascii_case("cli")
        && !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
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
    Ok(crate::secrets::database::open_store(config).await?)
}

/// Opens the store for a command that may change the deployment. Without `admin_realm` in this
/// run's configuration, the admin realm is the one the server last recorded (at its start, or
/// `sigil admin bootstrap`): four-eyes then holds the admin realm's changes as the server would,
/// instead of letting through what an operator's shell without `SIGIL_ADMIN_REALM` would not see.
/// A configured `admin_realm` that differs from the record is refused: this run would judge
/// four-eyes otherwise than the server (a decoy setting would let the admin realm's changes
/// through).
async fn open_admin_store(config: &mut Config) -> Result<Arc<dyn Store>, CliError> {
    let store = open_store(config).await?;
    let recorded = store.recorded_admin_realm().await?;
    match (&config.admin_realm, recorded) {
        (None, recorded) => config.admin_realm = recorded,
        (Some(mine), Some(theirs)) if *mine != theirs => {
            return Err(CliError::Other(format!(
                "admin_realm is {mine:?} here, but the server recorded {theirs:?} at its start: \
                 run this with admin_realm = {theirs:?} (or unset), or restart the server with \
                 the new setting first"
            )));
        }
        _ => {}
    }
    Ok(store)
}

/// `sigil probe`: GET the node's `/readyz`.
async fn probe(config: &Config, url: Option<String>) -> Result<i32, CliError> {
    let url = url.unwrap_or_else(|| {
        let mut addr = config.bind;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}/readyz")
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(3))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| CliError::Other(format!("probe: {e}")))?;
    match client.get(&url).send().await {
        Ok(response) => {
            let status = response.status();
            // The first KiB of the answer (readyz's is far shorter): an endless body must not
            // fill the probe's memory.
            let mut body = Vec::new();
            let mut response = response;
            while body.len() < 1024 {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            body.truncate(1024);
            eprintln!("{url}: {status} {}", String::from_utf8_lossy(&body).trim());
            Ok(if status == reqwest::StatusCode::OK {
                0
            } else {
                1
            })
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            Ok(1)
        }
    }
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
    let actor_name = match &cli.operator {
        // One admin, one name: case does not make a second one.
        Some(name) if admin_name_ok(name) => format!("cli:{}", name.to_ascii_lowercase()),
        Some(_) => {
            return Err(CliError::Other(
                "--operator: use 1-64 of A-Z a-z 0-9 . _ @ -".into(),
            ));
        }
        None => "cli".to_owned(),
    };
    let actor = actor_name.as_str();
    match cli.command {
        Command::Serve { .. } => {
            let app = crate::Application::build(config).await?;
            tracing::info!(address = %app.local_addr(), base_url = %app.base_url(), "sigil listening");
            if let Some(mtls) = app.state().mtls_base_url.as_deref() {
                println!("mutual TLS on {mtls}");
            }
            println!("listening on {}", app.base_url());
            app.run_until_stopped()
                .await
                .map_err(|e| CliError::Other(format!("server error: {e}")))?;
            Ok(0)
        }
        Command::Probe { url } => probe(&config, url).await,
        Command::Migrate => {
            let store = open_store(&config).await?;
            println!("migrations applied");
            // Plain values of pii_high attributes (left by an older version) are encrypted; the
            // KEK is opened only when some realm declares a pii_high attribute.
            let mut any = false;
            for realm in store.realms().await? {
                any |= store
                    .realm_attributes(&realm.name)
                    .await?
                    .iter()
                    .any(|(_, c)| c == "pii_high");
            }
            if any {
                let (kek, _) = crate::keys::open_configured(&config, store.as_ref()).await?;
                let moved = crate::admin::users::migrate_pii(store.as_ref(), kek.as_ref()).await?;
                println!("pii_high values encrypted: {moved}");
            }
            Ok(0)
        }
        Command::Realm(cmd) => realm::run(cmd, config, now, actor).await,
        Command::Client(cmd) => client::run(cmd, config, now, actor).await,
        Command::Key(cmd) => keys::run(cmd, config, now, actor).await,
        Command::Kek(cmd) => keys::run_kek(cmd, config, now, actor).await,
        Command::Aws(cmd) => aws::run(cmd, config, now, actor).await,
        Command::Token(cmd) => aws::token(cmd, now).await,
        Command::User(cmd) => user::run(cmd, config, now, actor).await,
        Command::Group(cmd) => group::run(cmd, config, now, actor).await,
        Command::Policy(cmd) => policy::run(cmd, config, now, actor).await,
        Command::Change(cmd) => change::run(cmd, config, now, actor).await,
        Command::Admin(cmd) => admin::run(cmd, config, now, actor).await,
        Command::Export => apply::export(config).await,
        Command::Apply { file, dry_run } => apply::apply(config, file, dry_run, now).await,
        Command::Audit(cmd) => audit::run(cmd, config).await,
        Command::BenchSign {
            realm,
            seconds,
            threads,
        } => bench::sign(config, realm, seconds, threads, now).await,
        Command::BenchChain {
            writers,
            batch,
            seconds,
        } => bench::chain(config, writers, batch, seconds, now).await,
    }
}
