//! Configuration: built-in defaults, then a TOML file, then `SIGIL_*` environment variables, then
//! command-line flags; validated once at start so a bad value fails early and names its option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::store::DbOptions;

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

/// Raw settings as they come from one layer (file, environment or flags); `None` = not given.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub bind: Option<String>,
    pub metrics_bind: Option<String>,
    pub public_url: Option<String>,
    pub database_url: Option<String>,
    pub database_pool_size: Option<u32>,
    pub database_connect_timeout_secs: Option<u64>,
    pub database_statement_timeout_ms: Option<u64>,
    pub audit_chain: Option<String>,
    pub audit_checkpoint_secs: Option<u64>,
    pub kek_file: Option<PathBuf>,
    pub cache_ttl_secs: Option<u64>,
    pub jwks_max_age_secs: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub http2_max_concurrent_streams: Option<u32>,
    pub audit_batch_max: Option<usize>,
    pub rotation_check_secs: Option<u64>,
    pub failures_per_minute_per_ip: Option<u32>,
    pub refusal_tally_secs: Option<u64>,
    pub aws_challenges_per_minute_per_ip: Option<u32>,
    pub aws_max_live_challenges: Option<u32>,
    pub log_format: Option<String>,
}

impl Settings {
    /// Layer `over` on top of `self`: any value `over` sets wins.
    pub fn merge(self, over: Settings) -> Settings {
        Settings {
            bind: over.bind.or(self.bind),
            metrics_bind: over.metrics_bind.or(self.metrics_bind),
            public_url: over.public_url.or(self.public_url),
            database_url: over.database_url.or(self.database_url),
            database_pool_size: over.database_pool_size.or(self.database_pool_size),
            database_connect_timeout_secs: over
                .database_connect_timeout_secs
                .or(self.database_connect_timeout_secs),
            database_statement_timeout_ms: over
                .database_statement_timeout_ms
                .or(self.database_statement_timeout_ms),
            audit_chain: over.audit_chain.or(self.audit_chain),
            audit_checkpoint_secs: over.audit_checkpoint_secs.or(self.audit_checkpoint_secs),
            kek_file: over.kek_file.or(self.kek_file),
            cache_ttl_secs: over.cache_ttl_secs.or(self.cache_ttl_secs),
            jwks_max_age_secs: over.jwks_max_age_secs.or(self.jwks_max_age_secs),
            max_body_bytes: over.max_body_bytes.or(self.max_body_bytes),
            request_timeout_secs: over.request_timeout_secs.or(self.request_timeout_secs),
            header_read_timeout_secs: over
                .header_read_timeout_secs
                .or(self.header_read_timeout_secs),
            idle_timeout_secs: over.idle_timeout_secs.or(self.idle_timeout_secs),
            max_connections: over.max_connections.or(self.max_connections),
            http2_max_concurrent_streams: over
                .http2_max_concurrent_streams
                .or(self.http2_max_concurrent_streams),
            audit_batch_max: over.audit_batch_max.or(self.audit_batch_max),
            rotation_check_secs: over.rotation_check_secs.or(self.rotation_check_secs),
            failures_per_minute_per_ip: over
                .failures_per_minute_per_ip
                .or(self.failures_per_minute_per_ip),
            refusal_tally_secs: over.refusal_tally_secs.or(self.refusal_tally_secs),
            aws_challenges_per_minute_per_ip: over
                .aws_challenges_per_minute_per_ip
                .or(self.aws_challenges_per_minute_per_ip),
            aws_max_live_challenges: over
                .aws_max_live_challenges
                .or(self.aws_max_live_challenges),
            log_format: over.log_format.or(self.log_format),
        }
    }

    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Reads `SIGIL_*` variables through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        fn num<T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            var: &'static str,
        ) -> Result<Option<T>, ConfigError> {
            match get(var) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(var, format!("{v:?} is not a number"))),
            }
        }
        Ok(Settings {
            bind: get("SIGIL_BIND"),
            metrics_bind: get("SIGIL_METRICS_BIND"),
            public_url: get("SIGIL_PUBLIC_URL"),
            database_url: get("SIGIL_DATABASE_URL"),
            database_pool_size: num(&get, "SIGIL_DATABASE_POOL_SIZE")?,
            database_connect_timeout_secs: num(&get, "SIGIL_DATABASE_CONNECT_TIMEOUT_SECS")?,
            database_statement_timeout_ms: num(&get, "SIGIL_DATABASE_STATEMENT_TIMEOUT_MS")?,
            audit_chain: get("SIGIL_AUDIT_CHAIN"),
            audit_checkpoint_secs: num(&get, "SIGIL_AUDIT_CHECKPOINT_SECS")?,
            kek_file: get("SIGIL_KEK_FILE").map(PathBuf::from),
            cache_ttl_secs: num(&get, "SIGIL_CACHE_TTL_SECS")?,
            jwks_max_age_secs: num(&get, "SIGIL_JWKS_MAX_AGE_SECS")?,
            max_body_bytes: num(&get, "SIGIL_MAX_BODY_BYTES")?,
            request_timeout_secs: num(&get, "SIGIL_REQUEST_TIMEOUT_SECS")?,
            header_read_timeout_secs: num(&get, "SIGIL_HEADER_READ_TIMEOUT_SECS")?,
            idle_timeout_secs: num(&get, "SIGIL_IDLE_TIMEOUT_SECS")?,
            max_connections: num(&get, "SIGIL_MAX_CONNECTIONS")?,
            http2_max_concurrent_streams: num(&get, "SIGIL_HTTP2_MAX_CONCURRENT_STREAMS")?,
            audit_batch_max: num(&get, "SIGIL_AUDIT_BATCH_MAX")?,
            rotation_check_secs: num(&get, "SIGIL_ROTATION_CHECK_SECS")?,
            failures_per_minute_per_ip: num(&get, "SIGIL_FAILURES_PER_MINUTE_PER_IP")?,
            refusal_tally_secs: num(&get, "SIGIL_REFUSAL_TALLY_SECS")?,
            aws_challenges_per_minute_per_ip: num(&get, "SIGIL_AWS_CHALLENGES_PER_MINUTE_PER_IP")?,
            aws_max_live_challenges: num(&get, "SIGIL_AWS_MAX_LIVE_CHALLENGES")?,
            log_format: get("SIGIL_LOG_FORMAT"),
        })
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
    /// AWS exchange challenges one address may obtain per minute; past it, 429. 0 = no limit.
    pub aws_challenges_per_minute_per_ip: u32,
    /// Most unexpired AWS exchange challenges stored per realm; past it, 503.
    pub aws_max_live_challenges: u32,
    pub log_format: LogFormat,
}

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/sigil.db";
pub const DEFAULT_KEK_FILE: &str = "keys/kek";

impl Config {
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let bind_text = s.bind.unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let bind: SocketAddr = bind_text
            .parse()
            .map_err(|_| invalid("bind", format!("{bind_text:?} is not host:port")))?;
        let metrics_bind = match s.metrics_bind.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|_| invalid("metrics_bind", format!("{text:?} is not host:port")))?,
            ),
        };
        let public_url = match s.public_url {
            None => None,
            Some(text) => Some(parse_public_url(&text)?),
        };
        let database_url = s
            .database_url
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        let bounded = |option: &'static str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(invalid(option, format!("{v} is outside {lo}..={hi}")))
            }
        };
        let log_format = match s.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?} is not text or json"),
                ));
            }
        };
        let db = DbOptions {
            pool_size: bounded(
                "database_pool_size",
                u64::from(s.database_pool_size.unwrap_or(16)),
                1,
                1000,
            )? as u32,
            connect_timeout: Duration::from_secs(bounded(
                "database_connect_timeout_secs",
                s.database_connect_timeout_secs.unwrap_or(5),
                1,
                300,
            )?),
            statement_timeout: Duration::from_millis(bounded(
                "database_statement_timeout_ms",
                s.database_statement_timeout_ms.unwrap_or(5000),
                100,
                600_000,
            )?),
            audit_chain: audit_chain(s.audit_chain)?,
        };
        Ok(Config {
            bind,
            metrics_bind,
            public_url,
            database_url,
            db,
            kek_file: s
                .kek_file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KEK_FILE)),
            cache_ttl_secs: bounded("cache_ttl_secs", s.cache_ttl_secs.unwrap_or(5), 0, 3600)?,
            jwks_max_age_secs: bounded(
                "jwks_max_age_secs",
                s.jwks_max_age_secs.unwrap_or(3600),
                0,
                86_400,
            )?,
            max_body_bytes: bounded(
                "max_body_bytes",
                s.max_body_bytes.unwrap_or(16 * 1024) as u64,
                1024,
                1024 * 1024,
            )? as usize,
            request_timeout_secs: bounded(
                "request_timeout_secs",
                s.request_timeout_secs.unwrap_or(15),
                1,
                300,
            )?,
            header_read_timeout_secs: bounded(
                "header_read_timeout_secs",
                s.header_read_timeout_secs.unwrap_or(10),
                1,
                120,
            )?,
            idle_timeout_secs: bounded(
                "idle_timeout_secs",
                s.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS),
                1,
                3600,
            )?,
            max_connections: max_connections(s.max_connections, open_file_limit())?,
            http2_max_concurrent_streams: bounded(
                "http2_max_concurrent_streams",
                u64::from(s.http2_max_concurrent_streams.unwrap_or(64)),
                1,
                1000,
            )? as u32,
            audit_batch_max: bounded(
                "audit_batch_max",
                s.audit_batch_max.unwrap_or(256) as u64,
                1,
                1000,
            )? as usize,
            audit_checkpoint_secs: bounded(
                "audit_checkpoint_secs",
                s.audit_checkpoint_secs.unwrap_or(60),
                0,
                86_400,
            )?,
            rotation_check_secs: bounded(
                "rotation_check_secs",
                s.rotation_check_secs.unwrap_or(60),
                0,
                3600,
            )?,
            failures_per_minute_per_ip: bounded(
                "failures_per_minute_per_ip",
                u64::from(s.failures_per_minute_per_ip.unwrap_or(60)),
                0,
                1_000_000,
            )? as u32,
            refusal_tally_secs: bounded(
                "refusal_tally_secs",
                s.refusal_tally_secs.unwrap_or(60),
                1,
                3600,
            )?,
            aws_challenges_per_minute_per_ip: bounded(
                "aws_challenges_per_minute_per_ip",
                u64::from(s.aws_challenges_per_minute_per_ip.unwrap_or(30)),
                0,
                1_000_000,
            )? as u32,
            aws_max_live_challenges: bounded(
                "aws_max_live_challenges",
                u64::from(s.aws_max_live_challenges.unwrap_or(10_000)),
                1,
                1_000_000,
            )? as u32,
            log_format,
        })
    }

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
            aws_challenges_per_minute_per_ip: 30,
            aws_max_live_challenges: 10_000,
            log_format: LogFormat::Text,
        }
    }
}

pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;

/// A chain name: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit; `main` by default.
fn audit_chain(configured: Option<String>) -> Result<String, ConfigError> {
    let Some(name) = configured else {
        return Ok(crate::audit::MAIN_CHAIN.to_owned());
    };
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(name)
    } else {
        Err(invalid(
            "audit_chain",
            format!("{name:?} is not 1-63 of a-z 0-9 . _ - starting with a letter or digit"),
        ))
    }
}
/// The default connection cap never exceeds this, however high the open-file limit: each open
/// connection also costs memory (buffers, a task), and 16,384 is far beyond what one node serves.
pub const MAX_CONNECTIONS_CEILING: usize = 16_384;

/// File descriptors kept free of connections for everything else a node opens: the database pool
/// and SQLite's WAL files, the KEK and config files, outbound STS connections, the runtime's own.
pub fn fd_reserve(limit: u64) -> u64 {
    (limit / 4).min(128)
}

/// The connection cap when none is configured: the open-file limit minus the reserve, at most
/// [`MAX_CONNECTIONS_CEILING`]; the ceiling when the limit is unknown or unlimited.
pub fn default_max_connections(limit: Option<u64>) -> usize {
    match limit {
        Some(n) => (n.saturating_sub(fd_reserve(n)) as usize).clamp(1, MAX_CONNECTIONS_CEILING),
        None => MAX_CONNECTIONS_CEILING,
    }
}

/// Validates a configured cap against the open-file limit (a cap the limit cannot honour would
/// end in "Too many open files" instead of a clean refusal), or derives the default.
fn max_connections(configured: Option<usize>, limit: Option<u64>) -> Result<usize, ConfigError> {
    let Some(v) = configured else {
        return Ok(default_max_connections(limit));
    };
    if !(1..=1_000_000).contains(&v) {
        return Err(invalid(
            "max_connections",
            format!("{v} is outside 1..=1000000"),
        ));
    }
    if let Some(n) = limit {
        let usable = n.saturating_sub(fd_reserve(n));
        if v as u64 > usable {
            return Err(invalid(
                "max_connections",
                format!(
                    "{v} is more than the open-file limit ({n}) leaves after a reserve of {} for \
                     the database and files; raise the limit (ulimit -n, systemd LimitNOFILE=) \
                     or set at most {usable}",
                    fd_reserve(n)
                ),
            ));
        }
    }
    Ok(v)
}

/// The process's soft RLIMIT_NOFILE; `None` when unlimited or unknown.
#[allow(unsafe_code)]
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, properly aligned
        // local; it has no other effect.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

fn parse_public_url(text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| invalid("public_url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("public_url", "scheme must be http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("public_url", "must have no query or fragment"));
    }
    Ok(url)
}

/// The base URL when no `public_url` is configured: `http://{bind}`, with a loopback address
/// named `localhost` (browsers allow WebAuthn on `http://localhost`, never on an IP address).
pub fn default_base_url(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_loopback() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// `{base}` without a trailing slash, so issuers compose as `{base}/realms/{realm}`.
pub fn base_url_string(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_settings(Settings::default()).expect("defaults");
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn bad_values_name_their_option() {
        let e = Config::from_settings(Settings {
            bind: Some("nope".into()),
            ..Default::default()
        })
        .expect_err("must fail");
        assert!(e.to_string().contains("bind"), "{e}");
        let e = Config::from_settings(Settings {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        })
        .expect_err("must fail");
        assert!(e.to_string().contains("database_url"), "{e}");
        let e = Config::from_settings(Settings {
            public_url: Some("ftp://x".into()),
            ..Default::default()
        })
        .expect_err("must fail");
        assert!(e.to_string().contains("public_url"), "{e}");
        let e = Settings::from_env(|k| (k == "SIGIL_CACHE_TTL_SECS").then(|| "x".to_owned()))
            .expect_err("must fail");
        assert!(e.to_string().contains("SIGIL_CACHE_TTL_SECS"), "{e}");
    }

    #[test]
    fn database_pool_and_deadlines_are_configurable_and_bounded() {
        let c = Config::from_settings(Settings::default()).expect("defaults");
        assert_eq!(c.db, DbOptions::default());
        assert_eq!(c.db.deadline(), Duration::from_secs(10));
        assert_eq!(c.metrics_bind, None);
        let env = Settings::from_env(|k| {
            match k {
                "SIGIL_DATABASE_POOL_SIZE" => Some("48"),
                "SIGIL_DATABASE_CONNECT_TIMEOUT_SECS" => Some("2"),
                "SIGIL_DATABASE_STATEMENT_TIMEOUT_MS" => Some("750"),
                "SIGIL_METRICS_BIND" => Some("127.0.0.1:9100"),
                _ => None,
            }
            .map(str::to_owned)
        })
        .expect("env");
        let c = Config::from_settings(env).expect("valid");
        assert_eq!(c.db.pool_size, 48);
        assert_eq!(c.db.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.db.statement_timeout, Duration::from_millis(750));
        assert_eq!(c.db.deadline(), Duration::from_millis(2750));
        assert_eq!(c.metrics_bind, Some(([127, 0, 0, 1], 9100).into()));
        for (s, option) in [
            (
                Settings {
                    database_pool_size: Some(0),
                    ..Default::default()
                },
                "database_pool_size",
            ),
            (
                Settings {
                    database_connect_timeout_secs: Some(0),
                    ..Default::default()
                },
                "database_connect_timeout_secs",
            ),
            (
                Settings {
                    database_statement_timeout_ms: Some(10),
                    ..Default::default()
                },
                "database_statement_timeout_ms",
            ),
            (
                Settings {
                    metrics_bind: Some("everywhere".into()),
                    ..Default::default()
                },
                "metrics_bind",
            ),
        ] {
            let e = Config::from_settings(s).expect_err(option);
            assert!(e.to_string().contains(option), "{e}");
        }
    }

    #[test]
    fn the_connection_cap_follows_the_open_file_limit() {
        // systemd's default soft limit: 128 descriptors stay free for the database and files.
        assert_eq!(default_max_connections(Some(1024)), 896);
        assert_eq!(default_max_connections(Some(256)), 192);
        assert_eq!(
            default_max_connections(Some(1 << 20)),
            MAX_CONNECTIONS_CEILING
        );
        assert_eq!(default_max_connections(None), MAX_CONNECTIONS_CEILING);
        assert_eq!(max_connections(None, Some(1024)).expect("default"), 896);
        assert_eq!(max_connections(Some(500), Some(1024)).expect("fits"), 500);
        let e = max_connections(Some(1000), Some(1024)).expect_err("over the limit");
        assert!(
            e.to_string().contains("max_connections") && e.to_string().contains("896"),
            "{e}"
        );
        assert!(max_connections(Some(0), None).is_err());
        assert_eq!(
            max_connections(Some(50_000), None).expect("unlimited"),
            50_000
        );
        let e = Settings::from_env(|k| (k == "SIGIL_MAX_CONNECTIONS").then(|| "many".to_owned()))
            .expect_err("must fail");
        assert!(e.to_string().contains("SIGIL_MAX_CONNECTIONS"), "{e}");
        let s = Settings::from_env(|k| match k {
            "SIGIL_IDLE_TIMEOUT_SECS" => Some("5".to_owned()),
            "SIGIL_AWS_CHALLENGES_PER_MINUTE_PER_IP" => Some("7".to_owned()),
            _ => None,
        })
        .expect("env");
        let c = Config::from_settings(s).expect("valid");
        assert_eq!(
            (c.idle_timeout_secs, c.aws_challenges_per_minute_per_ip),
            (5, 7)
        );
        let e = Config::from_settings(Settings {
            idle_timeout_secs: Some(0),
            ..Default::default()
        })
        .expect_err("must fail");
        assert!(e.to_string().contains("idle_timeout_secs"), "{e}");
    }

    #[test]
    fn later_layers_win() {
        let file = Settings {
            bind: Some("127.0.0.1:1".into()),
            cache_ttl_secs: Some(9),
            ..Default::default()
        };
        let env = Settings {
            bind: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let merged = file.merge(env);
        assert_eq!(merged.bind.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(merged.cache_ttl_secs, Some(9));
    }
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
