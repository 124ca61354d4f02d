//! Configuration: built-in defaults, then a TOML file, then `SIGIL_*` environment variables, then
//! command-line flags; validated once at start so a bad value fails early and names its option.
//!
//! This module holds the validated `Config`, its errors and defaults; the raw layers are in
//! `settings`, their validation in `validate`, the connection cap in `connections`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use url::Url;

use crate::store::DbOptions;

mod connections;
mod settings;
#[cfg(test)]
mod tests;
mod validate;

pub use connections::{
    MAX_CONNECTIONS_CEILING, default_max_connections, fd_reserve, open_file_limit,
};
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {option}: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

fn invalid(option: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where `/metrics` (Prometheus text) is served; `None` = nowhere (the default).
    pub metrics_bind: Option<SocketAddr>,
    /// Base URL of every issuer (`{public_url}/realms/{realm}`); `None` = derived from the bound
    /// address once the listener exists (port 0 in tests).
    pub public_url: Option<Url>,
    pub database_url: String,
    /// The database pool and its deadlines (see [`DbOptions`]).
    pub db: DbOptions,
    pub kek_file: PathBuf,
    /// How long a node trusts its in-memory copy of a realm or client before re-reading it.
    pub cache_ttl_secs: u64,
    pub jwks_max_age_secs: u64,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    /// A connection that has not sent a complete request head within this (from its first byte)
    /// is closed.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in progress is closed after this long: from accept to its
    /// first request, and between requests on a kept-alive (HTTP/1.1) or HTTP/2 connection.
    pub idle_timeout_secs: u64,
    /// Most connections open at once. At the cap the oldest idle connection is closed to make
    /// room; when none is idle, new connections wait in the listen backlog.
    pub max_connections: usize,
    /// Most concurrent streams (requests) one HTTP/2 connection may have open.
    pub http2_max_concurrent_streams: u32,
    pub audit_batch_max: usize,
    /// How often a node writes a checkpoint (every chain's head, sealed with the KEK) to its
    /// chain, when anything changed; 0 = never.
    pub audit_checkpoint_secs: u64,
    /// How often `serve` runs the key-rotation schedule; 0 turns the scheduler off.
    pub rotation_check_secs: u64,
    /// Failed client authentications one address may make per minute before the token endpoints
    /// answer it 429 for the rest of the minute; 0 = no limit.
    pub failures_per_minute_per_ip: u32,
    /// Anonymous refusals are written as one counted row per (address, reason, ...) every this
    /// many seconds instead of one row each.
    pub refusal_tally_secs: u64,
    /// How often each node looks for back-channel logouts to send when nothing woke it (another
    /// node or the CLI ended a session, a retry came due).
    pub logout_poll_ms: u64,
    /// How often each node ends sessions past their realm's idle or absolute timeout that nobody
    /// used since (for the revocation feed and back-channel logout).
    pub session_sweep_secs: u64,
    /// DPoP server nonces (RFC 9449 §8, §9): 0 = none (the default); otherwise every DPoP proof
    /// must carry a nonce this server issued, and a nonce is good for the period of this many
    /// seconds it was issued in and the next one.
    pub dpop_nonce_secs: u64,
    /// The realm whose tokens (audience `sigil-admin`) the admin API at `/admin` accepts;
    /// `None` = the admin API is off.
    pub admin_realm: Option<String>,
    /// KEKs this node still opens with but never seals with (a KEK rotation in progress).
    pub kek_previous_files: Vec<std::path::PathBuf>,
    /// Where every audit checkpoint is also appended (a JSON line), outside the database.
    pub audit_anchor_file: Option<std::path::PathBuf>,
    /// Every anchor is also POSTed here (https, or http on a loopback host).
    pub audit_anchor_url: Option<Url>,
    /// A bearer token for `audit_anchor_url`, read from this file (never logged).
    pub audit_anchor_token: Option<String>,
    /// A file `sigil serve` applies (as `sigil apply`) before it serves.
    pub apply_on_start: Option<std::path::PathBuf>,
    /// AWS exchange challenges one address may obtain per minute; past it, 429. 0 = no limit.
    pub aws_challenges_per_minute_per_ip: u32,
    /// Most unexpired AWS exchange challenges stored per realm; past it, 503.
    pub aws_max_live_challenges: u32,
    pub log_format: LogFormat,
    /// TLS on the main listener (and the mTLS one); `None` = plain HTTP.
    pub tls: Option<TlsFiles>,
    /// A second listener that asks for client certificates (RFC 8705); needs `tls`.
    pub mtls_bind: Option<SocketAddr>,
    /// Base URL of the mutual-TLS aliases in discovery; `None` = derived from `mtls_bind`.
    pub mtls_public_url: Option<Url>,
    /// Addresses whose `Forwarded`/`X-Forwarded-For` and forwarded client certificate are
    /// believed; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header a trusted proxy puts the client certificate in, lower case.
    pub forwarded_cert_header: String,
    pub forwarded_cert_format: ForwardedCertFormat,
    /// The one header a trusted proxy writes the client's address to, lower case:
    /// `x-forwarded-for` (default) or `forwarded` (RFC 7239 `for=`).
    pub client_address_header: String,
}

/// The server certificate chain and key (PEM), re-read when either file changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How a trusted proxy passes the client certificate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedCertFormat {
    /// Envoy's `X-Forwarded-Client-Cert: ...;Cert="<URL-encoded PEM>";...`.
    Envoy,
    /// nginx's `$ssl_client_escaped_cert`: the whole value is a URL-encoded PEM.
    Nginx,
}

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/sigil.db";
pub const DEFAULT_KEK_FILE: &str = "keys/kek";

pub const DEFAULT_FORWARDED_CERT_HEADER: &str = "x-forwarded-client-cert";

pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;

impl Config {
    /// A configuration for tests: loopback on port 0, the given database and KEK.
    pub fn for_tests(database_url: &str, kek_file: &Path) -> Config {
        Config {
            bind: ([127, 0, 0, 1], 0).into(),
            metrics_bind: None,
            public_url: None,
            database_url: database_url.to_owned(),
            db: DbOptions::default(),
            kek_file: kek_file.to_owned(),
            cache_ttl_secs: 0,
            jwks_max_age_secs: 3600,
            max_body_bytes: 16 * 1024,
            request_timeout_secs: 15,
            header_read_timeout_secs: 10,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            max_connections: default_max_connections(open_file_limit()),
            http2_max_concurrent_streams: 64,
            audit_batch_max: 256,
            audit_checkpoint_secs: 0,
            rotation_check_secs: 0,
            failures_per_minute_per_ip: 60,
            refusal_tally_secs: 1,
            logout_poll_ms: 200,
            session_sweep_secs: 60,
            dpop_nonce_secs: 0,
            admin_realm: None,
            kek_previous_files: Vec::new(),
            audit_anchor_file: None,
            audit_anchor_url: None,
            audit_anchor_token: None,
            apply_on_start: None,
            aws_challenges_per_minute_per_ip: 30,
            aws_max_live_challenges: 10_000,
            log_format: LogFormat::Text,
            tls: None,
            mtls_bind: None,
            mtls_public_url: None,
            trusted_proxies: Vec::new(),
            forwarded_cert_header: DEFAULT_FORWARDED_CERT_HEADER.to_owned(),
            forwarded_cert_format: ForwardedCertFormat::Envoy,
            client_address_header: "x-forwarded-for".to_owned(),
        }
    }
}

/// The base URL when no `public_url` is configured: `http://{bind}`, with a loopback address
/// named `localhost` (browsers allow WebAuthn on `http://localhost`, never on an IP address).
pub fn default_base_url(addr: std::net::SocketAddr) -> String {
    default_base_url_with(addr, false)
}

/// As [`default_base_url`], `https://` when the listener speaks TLS.
pub fn default_base_url_with(addr: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_loopback() {
        format!("{scheme}://localhost:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

/// `{base}` without a trailing slash, so issuers compose as `{base}/realms/{realm}`.
pub fn base_url_string(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sigil.example.toml");
        let s = Settings::from_file(&path).expect("example parses");
        let c = Config::from_settings(s).expect("example validates");
        assert_eq!(c.cache_ttl_secs, 5);
    }
}
