//! Validation: turns merged `Settings` into a `Config`, naming the option of any bad value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::store::DbOptions;

use super::connections::{max_connections, open_file_limit};
use super::{
    Config, ConfigError, DEFAULT_BIND, DEFAULT_DATABASE_URL, DEFAULT_FORWARDED_CERT_HEADER,
    DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_KEK_FILE, ForwardedCertFormat, KekSpec, LogFormat, Settings,
    TlsFiles, invalid,
};

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
        let database_url_secret = s.database_url_secret.filter(|v| !v.trim().is_empty());
        if database_url_secret.is_some() && s.database_url.is_some() {
            return Err(invalid(
                "database_url_secret",
                "give database_url or database_url_secret, not both",
            ));
        }
        if let Some(id) = &database_url_secret
            && (id.len() > 2048 || id.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(invalid(
                "database_url_secret",
                "must be a secret name or ARN without spaces or control characters",
            ));
        }
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
            start_wait: Duration::from_secs(bounded(
                "database_start_wait_secs",
                s.database_start_wait_secs.unwrap_or(0),
                0,
                3600,
            )?),
            statement_timeout: Duration::from_millis(bounded(
                "database_statement_timeout_ms",
                s.database_statement_timeout_ms.unwrap_or(5000),
                100,
                600_000,
            )?),
            audit_chain: audit_chain(s.audit_chain)?,
        };
        let tls = match (s.tls_cert_file, s.tls_key_file) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
            }),
            (Some(_), None) => return Err(invalid("tls_key_file", "tls_cert_file needs it")),
            (None, Some(_)) => return Err(invalid("tls_cert_file", "tls_key_file needs it")),
        };
        let mtls_bind: Option<SocketAddr> = match s.mtls_bind.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|_| invalid("mtls_bind", format!("{text:?} is not host:port")))?,
            ),
        };
        if mtls_bind.is_some() && tls.is_none() {
            return Err(invalid(
                "mtls_bind",
                "mutual TLS needs tls_cert_file and tls_key_file",
            ));
        }
        let mtls_public_url = match s.mtls_public_url {
            None => None,
            Some(text) => Some(parse_public_url(&text).map_err(|_| {
                invalid(
                    "mtls_public_url",
                    "must be an http(s) URL without query or fragment",
                )
            })?),
        };
        let trusted_proxies = s
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<Result<Vec<_>, _>>()?;
        let forwarded_cert_header = match s.forwarded_cert_header {
            None => DEFAULT_FORWARDED_CERT_HEADER.to_owned(),
            Some(h) => {
                let h = h.trim().to_ascii_lowercase();
                if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(invalid(
                        "forwarded_cert_header",
                        format!("{h:?} is not a header name"),
                    ));
                }
                h
            }
        };
        let client_address_header = match s.client_address_header {
            None => "x-forwarded-for".to_owned(),
            Some(h) => {
                let h = h.trim().to_ascii_lowercase();
                if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(invalid(
                        "client_address_header",
                        format!("{h:?} is not a header name"),
                    ));
                }
                h
            }
        };
        let forwarded_cert_format = match s.forwarded_cert_format.as_deref() {
            None | Some("envoy") => ForwardedCertFormat::Envoy,
            Some("nginx") => ForwardedCertFormat::Nginx,
            Some(other) => {
                return Err(invalid(
                    "forwarded_cert_format",
                    format!("{other:?} is not envoy or nginx"),
                ));
            }
        };
        Ok(Config {
            tls,
            mtls_bind,
            mtls_public_url,
            trusted_proxies,
            forwarded_cert_header,
            forwarded_cert_format,
            client_address_header,
            bind,
            metrics_bind,
            public_url,
            database_url,
            database_url_secret,
            db,
            kek: match (s.kek_source.filter(|v| !v.trim().is_empty()), s.kek_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "kek_source",
                        "give kek_file or kek_source, not both",
                    ));
                }
                (Some(text), None) => KekSpec::parse("kek_source", &text)?,
                (None, file) => {
                    KekSpec::File(file.unwrap_or_else(|| PathBuf::from(DEFAULT_KEK_FILE)))
                }
            },
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
            logout_poll_ms: bounded(
                "logout_poll_ms",
                s.logout_poll_ms.unwrap_or(1000),
                50,
                60_000,
            )?,
            session_sweep_secs: bounded(
                "session_sweep_secs",
                s.session_sweep_secs.unwrap_or(60),
                1,
                3600,
            )?,
            kek_previous: {
                let mut previous: Vec<KekSpec> = s
                    .kek_previous_files
                    .unwrap_or_default()
                    .into_iter()
                    .map(KekSpec::File)
                    .collect();
                for text in s.kek_previous_sources.unwrap_or_default() {
                    previous.push(KekSpec::parse("kek_previous_sources", &text)?);
                }
                previous
            },
            apply_on_start: s.apply_on_start.filter(|p| !p.as_os_str().is_empty()),
            audit_anchor_file: match s.audit_anchor_file {
                Some(_) if s.audit_checkpoint_secs == Some(0) => {
                    return Err(invalid(
                        "audit_anchor_file",
                        "anchors are written with checkpoints: audit_checkpoint_secs must not be 0",
                    ));
                }
                other => other.filter(|p| !p.as_os_str().is_empty()),
            },
            audit_anchor_url: match s.audit_anchor_url.filter(|u| !u.is_empty()) {
                None => None,
                Some(_) if s.audit_checkpoint_secs == Some(0) => {
                    return Err(invalid(
                        "audit_anchor_url",
                        "anchors are sent with checkpoints: audit_checkpoint_secs must not be 0",
                    ));
                }
                Some(u) => {
                    let url =
                        Url::parse(&u).map_err(|e| invalid("audit_anchor_url", e.to_string()))?;
                    let loopback =
                        matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback))
                        || url.password().is_some()
                        || !url.username().is_empty()
                    {
                        return Err(invalid(
                            "audit_anchor_url",
                            "must be https (http only on a loopback host), without credentials: use audit_anchor_token_file",
                        ));
                    }
                    Some(url)
                }
            },
            audit_anchor_token: match s
                .audit_anchor_token_file
                .filter(|p| !p.as_os_str().is_empty())
            {
                None => None,
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| {
                            invalid(
                                "audit_anchor_token_file",
                                format!("{}: {e}", path.display()),
                            )
                        })?
                        .trim()
                        .to_owned(),
                ),
            },
            admin_realm: match s.admin_realm.filter(|r| !r.is_empty()) {
                None => None,
                Some(r) if crate::directory::is_valid_realm_name(&r) => Some(r),
                Some(r) => {
                    return Err(invalid(
                        "admin_realm",
                        format!("{r:?} is not a realm name (1-64 of a-z 0-9 - _)"),
                    ));
                }
            },
            dpop_nonce_secs: match s.dpop_nonce_secs.unwrap_or(0) {
                0 => 0,
                n => bounded("dpop_nonce_secs", n, 10, 86_400)?,
            },
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
}

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

/// A CIDR (`10.0.0.0/8`, `::1/128`) or a single address.
fn parse_cidr(text: &str) -> Result<ipnet::IpNet, ConfigError> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| {
            invalid(
                "trusted_proxies",
                format!("{text:?} is not a CIDR or address"),
            )
        })
}
