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
    /// The keys, or why the last fetch failed (kept for the cooldown: a failing or slow
    /// `jwks_uri` is not fetched again for every request that names it).
    keys: Result<Arc<Vec<PublicJwk>>, String>,
    fetched_at: UnixTime,
}

pub struct ClientKeys {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
    /// One fetch in flight per URI: concurrent requests wait for it instead of fetching too.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientKeys {
    pub fn new() -> ClientKeys {
        // Redirects only within the same origin (scheme, host and port: a JWKS moved to a new
        // path), never elsewhere, never from https down to http.
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if attempt.previous().len() >= 3 || !same_origin {
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
            in_flight: Mutex::new(HashMap::new()),
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
        if let Some(hit) = self.cached(uri, kid, now) {
            return hit;
        }
        let gate = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_CACHED {
                map.retain(|_, g| Arc::strong_count(g) > 1);
            }
            map.entry(uri.to_owned()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        // Whoever held the gate before may have fetched what this request needs.
        if let Some(hit) = self.cached(uri, kid, now) {
            return hit;
        }
        let fetched = self.download(uri).await.map(Arc::new);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            uri.to_owned(),
            Cached {
                keys: fetched.as_ref().map(Arc::clone).map_err(|e| e.to_string()),
                fetched_at: now,
            },
        );
        fetched
    }

    /// The cached answer when it may be used: fresh and holding the wanted `kid`, or fetched
    /// within the cooldown (keys or failure alike).
    fn cached(
        &self,
        uri: &str,
        kid: Option<&str>,
        now: UnixTime,
    ) -> Option<Result<Arc<Vec<PublicJwk>>, KeysError>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let c = cache.get(uri)?;
        let age = now - c.fetched_at;
        let cooling = (0..COOLDOWN_SECS).contains(&age);
        match &c.keys {
            Ok(keys) => {
                let has_kid = kid.is_none_or(|k| keys.iter().any(|key| key.kid() == Some(k)));
                ((age < CACHE_SECS && has_kid) || cooling).then(|| Ok(keys.clone()))
            }
            Err(e) => cooling.then(|| Err(KeysError::Fetch(format!("{e} (cached)")))),
        }
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
