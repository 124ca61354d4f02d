//! The raw settings of one layer (TOML file, `SIGIL_*` environment, flags) and how layers merge.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Raw settings as they come from one layer (file, environment or flags); `None` = not given.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub bind: Option<String>,
    pub metrics_bind: Option<String>,
    pub public_url: Option<String>,
    pub database_url: Option<String>,
    pub database_url_secret: Option<String>,
    pub database_pool_size: Option<u32>,
    pub database_connect_timeout_secs: Option<u64>,
    pub database_start_wait_secs: Option<u64>,
    pub database_statement_timeout_ms: Option<u64>,
    pub audit_chain: Option<String>,
    pub audit_checkpoint_secs: Option<u64>,
    pub kek_file: Option<PathBuf>,
    pub kek_previous_files: Option<Vec<PathBuf>>,
    pub kek_source: Option<String>,
    pub kek_previous_sources: Option<Vec<String>>,
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
    pub logout_poll_ms: Option<u64>,
    pub session_sweep_secs: Option<u64>,
    pub dpop_nonce_secs: Option<u64>,
    pub admin_realm: Option<String>,
    pub audit_anchor_file: Option<PathBuf>,
    pub audit_anchor_url: Option<String>,
    pub audit_anchor_token_file: Option<PathBuf>,
    pub apply_on_start: Option<PathBuf>,
    pub aws_challenges_per_minute_per_ip: Option<u32>,
    pub aws_max_live_challenges: Option<u32>,
    pub log_format: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub mtls_bind: Option<String>,
    pub mtls_public_url: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub forwarded_cert_header: Option<String>,
    pub forwarded_cert_format: Option<String>,
    pub client_address_header: Option<String>,
}

impl Settings {
    /// Layer `over` on top of `self`: any value `over` sets wins.
    pub fn merge(self, over: Settings) -> Settings {
        Settings {
            bind: over.bind.or(self.bind),
            metrics_bind: over.metrics_bind.or(self.metrics_bind),
            public_url: over.public_url.or(self.public_url),
            database_url: over.database_url.or(self.database_url),
            database_url_secret: over.database_url_secret.or(self.database_url_secret),
            database_pool_size: over.database_pool_size.or(self.database_pool_size),
            database_connect_timeout_secs: over
                .database_connect_timeout_secs
                .or(self.database_connect_timeout_secs),
            database_start_wait_secs: over
                .database_start_wait_secs
                .or(self.database_start_wait_secs),
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
            logout_poll_ms: over.logout_poll_ms.or(self.logout_poll_ms),
            session_sweep_secs: over.session_sweep_secs.or(self.session_sweep_secs),
            dpop_nonce_secs: over.dpop_nonce_secs.or(self.dpop_nonce_secs),
            admin_realm: over.admin_realm.or(self.admin_realm),
            kek_previous_files: over.kek_previous_files.or(self.kek_previous_files),
            kek_source: over.kek_source.or(self.kek_source),
            kek_previous_sources: over.kek_previous_sources.or(self.kek_previous_sources),
            audit_anchor_file: over.audit_anchor_file.or(self.audit_anchor_file),
            audit_anchor_url: over.audit_anchor_url.or(self.audit_anchor_url),
            audit_anchor_token_file: over
                .audit_anchor_token_file
                .or(self.audit_anchor_token_file),
            apply_on_start: over.apply_on_start.or(self.apply_on_start),
            aws_challenges_per_minute_per_ip: over
                .aws_challenges_per_minute_per_ip
                .or(self.aws_challenges_per_minute_per_ip),
            aws_max_live_challenges: over
                .aws_max_live_challenges
                .or(self.aws_max_live_challenges),
            log_format: over.log_format.or(self.log_format),
            tls_cert_file: over.tls_cert_file.or(self.tls_cert_file),
            tls_key_file: over.tls_key_file.or(self.tls_key_file),
            mtls_bind: over.mtls_bind.or(self.mtls_bind),
            mtls_public_url: over.mtls_public_url.or(self.mtls_public_url),
            trusted_proxies: over.trusted_proxies.or(self.trusted_proxies),
            forwarded_cert_header: over.forwarded_cert_header.or(self.forwarded_cert_header),
            forwarded_cert_format: over.forwarded_cert_format.or(self.forwarded_cert_format),
            client_address_header: over.client_address_header.or(self.client_address_header),
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
            database_url_secret: get("SIGIL_DATABASE_URL_SECRET"),
            database_pool_size: num(&get, "SIGIL_DATABASE_POOL_SIZE")?,
            database_connect_timeout_secs: num(&get, "SIGIL_DATABASE_CONNECT_TIMEOUT_SECS")?,
            database_start_wait_secs: num(&get, "SIGIL_DATABASE_START_WAIT_SECS")?,
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
            logout_poll_ms: num(&get, "SIGIL_LOGOUT_POLL_MS")?,
            session_sweep_secs: num(&get, "SIGIL_SESSION_SWEEP_SECS")?,
            dpop_nonce_secs: num(&get, "SIGIL_DPOP_NONCE_SECS")?,
            admin_realm: get("SIGIL_ADMIN_REALM"),
            // Comma-separated paths in the environment; a list in the file.
            kek_previous_files: get("SIGIL_KEK_PREVIOUS_FILES").map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            }),
            kek_source: get("SIGIL_KEK_SOURCE"),
            kek_previous_sources: get("SIGIL_KEK_PREVIOUS_SOURCES").map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            audit_anchor_file: get("SIGIL_AUDIT_ANCHOR_FILE").map(PathBuf::from),
            audit_anchor_url: get("SIGIL_AUDIT_ANCHOR_URL"),
            audit_anchor_token_file: get("SIGIL_AUDIT_ANCHOR_TOKEN_FILE").map(PathBuf::from),
            apply_on_start: get("SIGIL_APPLY_ON_START").map(PathBuf::from),
            aws_challenges_per_minute_per_ip: num(&get, "SIGIL_AWS_CHALLENGES_PER_MINUTE_PER_IP")?,
            aws_max_live_challenges: num(&get, "SIGIL_AWS_MAX_LIVE_CHALLENGES")?,
            log_format: get("SIGIL_LOG_FORMAT"),
            tls_cert_file: get("SIGIL_TLS_CERT_FILE").map(PathBuf::from),
            tls_key_file: get("SIGIL_TLS_KEY_FILE").map(PathBuf::from),
            mtls_bind: get("SIGIL_MTLS_BIND"),
            mtls_public_url: get("SIGIL_MTLS_PUBLIC_URL"),
            // Comma-separated CIDRs in the environment; a list in the file.
            trusted_proxies: get("SIGIL_TRUSTED_PROXIES").map(|v| {
                v.split(',')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect()
            }),
            forwarded_cert_header: get("SIGIL_FORWARDED_CERT_HEADER"),
            forwarded_cert_format: get("SIGIL_FORWARDED_CERT_FORMAT"),
            client_address_header: get("SIGIL_CLIENT_ADDRESS_HEADER"),
        })
    }
}
