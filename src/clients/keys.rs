//! A `private_key_jwt` client's public keys: registered inline (`--jwks-file`) or fetched from its
//! `jwks_uri` with a timeout, a size cap, no redirect to another host, and a cache (refetched when
//! an assertion names a `kid` the cached set lacks, at most once per cooldown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sigil_validator::jwk::{PublicJwk, parse_jwk_set};

use crate::clock::UnixTime;

/// Largest JWKS document read from a client's `jwks_uri`.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// How long a fetched set is used before it is fetched again.
const CACHE_SECS: i64 = 300;
/// Least time between two fetches of one URI (an unknown `kid` cannot make Sigil hammer it).
const COOLDOWN_SECS: i64 = 30;
/// Most URIs cached at once.
const MAX_CACHED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("the client's JWKS could not be fetched: {0}")]
    Fetch(String),
    #[error("the client's JWKS is unusable: {0}")]
    Invalid(String),
}

/// The usable public signing keys of a JWKS value; empty when it has none or is unusable.
pub fn parse_client_jwks(jwks: &Value) -> Vec<PublicJwk> {
    parse_jwk_set(jwks).unwrap_or_default()
}

struct Cached {
    keys: Arc<Vec<PublicJwk>>,
    fetched_at: UnixTime,
}

pub struct ClientKeys {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientKeys {
    pub fn new() -> ClientKeys {
        // Redirects only within the same host (a JWKS moved to a new path), never elsewhere.
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            if attempt.previous().len() >= 3 || !same_host {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        ClientKeys {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The keys at `uri`; `kid` names the key an assertion wants: a cached set without it is
    /// refetched (once per cooldown).
    pub async fn fetch(
        &self,
        uri: &str,
        kid: Option<&str>,
        now: UnixTime,
    ) -> Result<Arc<Vec<PublicJwk>>, KeysError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(uri) {
                let fresh = now - c.fetched_at < CACHE_SECS;
                let has_kid = kid.is_none_or(|k| c.keys.iter().any(|key| key.kid() == Some(k)));
                let cooling = now - c.fetched_at < COOLDOWN_SECS;
                if (fresh && has_kid) || cooling {
                    return Ok(c.keys.clone());
                }
            }
        }
        let keys = Arc::new(self.download(uri).await?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            uri.to_owned(),
            Cached {
                keys: keys.clone(),
                fetched_at: now,
            },
        );
        Ok(keys)
    }

    async fn download(&self, uri: &str) -> Result<Vec<PublicJwk>, KeysError> {
        let mut res = self
            .http
            .get(uri)
            .header("accept", "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| KeysError::Fetch(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(KeysError::Fetch(format!("HTTP {}", res.status().as_u16())));
        }
        if res
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(KeysError::Fetch("larger than 64 KiB".into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| KeysError::Fetch(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(KeysError::Fetch("larger than 64 KiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value =
            serde_json::from_slice(&body).map_err(|_| KeysError::Invalid("not JSON".into()))?;
        parse_jwk_set(&value).map_err(|e| KeysError::Invalid(e.to_string()))
    }
}
