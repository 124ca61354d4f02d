//! A node's in-memory view of realms (with their decrypted signing keys and JWKS) and clients,
//! re-read from the store after `cache_ttl_secs`, so the token endpoint's hot path does no SQL
//! while changes made by the CLI or another node still arrive within a bounded time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::clock::UnixTime;
use crate::identity::settings::LoginSettings;
use crate::keys::{Alg, Jwks, KekSource, KeyError, SigningKey, key_aad};
use crate::store::{ClientRecord, RealmRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("realm {0} has no active signing key")]
    NoActiveKey(String),
}

/// A realm ready to serve: its record, issuer URL, active signing key and published JWKS.
#[derive(Debug)]
pub struct LiveRealm {
    pub record: RealmRecord,
    pub issuer: String,
    /// `{issuer}/oauth2/token`, made once per load (the token endpoint's `htu` and `aud`).
    pub token_endpoint: String,
    pub signing: Arc<SigningKey>,
    pub jwks: Jwks,
    /// The realm's sign-in policy, or why the stored one is unusable (sign-in is then refused).
    pub login: Result<LoginSettings, String>,
    /// The CAs this realm's `tls_client_auth` clients chain to (none: such clients are refused).
    pub mtls_anchors: Arc<Vec<rustls_pki_types::TrustAnchor<'static>>>,
    /// The published kids with their states, to notice key changes without re-decrypting.
    key_states: Vec<(String, String)>,
}

impl LiveRealm {
    /// The sign-in policy, `None` when the stored one is unusable (fail closed).
    pub fn login(&self) -> Option<&LoginSettings> {
        self.login.as_ref().ok()
    }
}

struct Entry<T> {
    value: T,
    loaded_at: UnixTime,
}

/// Caps each cache so that a flood of made-up names cannot grow memory without bound.
const MAX_ENTRIES: usize = 10_000;

pub struct Directory {
    store: Arc<dyn Store>,
    kek: Arc<dyn KekSource>,
    base_url: String,
    ttl: i64,
    realms: RwLock<HashMap<String, Entry<Option<Arc<LiveRealm>>>>>,
    clients: RwLock<HashMap<ClientKey, Entry<Option<Arc<ClientRecord>>>>>,
}

/// (realm, client id)
type ClientKey = (String, String);

/// A realm name: 1-64 of `a-z 0-9 - _`.
pub fn is_valid_realm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub fn issuer_for(base_url: &str, realm: &str) -> String {
    format!("{base_url}/realms/{realm}")
}

impl Directory {
    pub fn new(
        store: Arc<dyn Store>,
        kek: Arc<dyn KekSource>,
        base_url: String,
        ttl_secs: u64,
    ) -> Directory {
        Directory {
            store,
            kek,
            base_url,
            ttl: ttl_secs as i64,
            realms: RwLock::new(HashMap::new()),
            clients: RwLock::new(HashMap::new()),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn is_fresh(&self, loaded_at: UnixTime, now: UnixTime) -> bool {
        self.ttl > 0 && now >= loaded_at && now - loaded_at < self.ttl
    }

    /// The realm, or `None` if it does not exist (names that cannot exist are not looked up).
    pub async fn realm(
        &self,
        name: &str,
        now: UnixTime,
    ) -> Result<Option<Arc<LiveRealm>>, DirectoryError> {
        if !is_valid_realm_name(name) {
            return Ok(None);
        }
        let previous = {
            let map = self.realms.read().unwrap_or_else(|p| p.into_inner());
            match map.get(name) {
                Some(e) if self.is_fresh(e.loaded_at, now) => return Ok(e.value.clone()),
                Some(e) => e.value.clone(),
                None => None,
            }
        };
        let loaded = self.load_realm(name, previous.as_deref()).await?;
        let mut map = self.realms.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            name.to_owned(),
            Entry {
                value: loaded.clone(),
                loaded_at: now,
            },
        );
        Ok(loaded)
    }

    async fn load_realm(
        &self,
        name: &str,
        previous: Option<&LiveRealm>,
    ) -> Result<Option<Arc<LiveRealm>>, DirectoryError> {
        let Some(record) = self.store.realm(name).await? else {
            return Ok(None);
        };
        let keys = self.store.realm_keys(name).await?;
        let key_states: Vec<(String, String)> = keys
            .iter()
            .map(|k| (k.kid.clone(), k.state.clone()))
            .collect();
        let issuer = issuer_for(&self.base_url, name);
        let login = LoginSettings::parse(&record.login_settings);
        let mtls_anchors = match self.store.realm_mtls(name).await? {
            None => Arc::new(Vec::new()),
            Some(pem) => match crate::clients::mtls::anchors_from_pem(&pem) {
                Ok(a) => Arc::new(a),
                Err(e) => {
                    tracing::error!(realm = name, error = %e, "the realm's client CAs are unusable: its tls_client_auth clients are refused until they are set again (sigil realm set-mtls)");
                    Arc::new(Vec::new())
                }
            },
        };
        if let Err(e) = &login {
            tracing::error!(realm = name, error = %e, "the realm's sign-in policy is unusable: its sign-in is refused until it is set again (sigil realm set-login)");
        }
        if let Some(prev) = previous
            && prev.key_states == key_states
        {
            return Ok(Some(Arc::new(LiveRealm {
                record,
                token_endpoint: format!("{issuer}{}", crate::oidc::TOKEN_PATH),
                issuer,
                signing: prev.signing.clone(),
                jwks: prev.jwks.clone(),
                login,
                mtls_anchors,
                key_states,
            })));
        }
        let active = keys
            .iter()
            .find(|k| k.state == "active")
            .ok_or_else(|| DirectoryError::NoActiveKey(name.to_owned()))?;
        if !self.kek.can_open(&active.kek_id) {
            return Err(KeyError::WrongKek {
                kid: active.kid.clone(),
                kek_id: self.kek.id().to_owned(),
                sealed_under: active.kek_id.clone(),
            }
            .into());
        }
        let pkcs8 = self
            .kek
            .open(&key_aad(name, &active.kid), &active.private_sealed)?;
        let alg: Alg = active.alg.parse().map_err(KeyError::Malformed)?;
        let signing = Arc::new(SigningKey::from_pkcs8(alg, active.kid.clone(), &pkcs8)?);
        let publics: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| serde_json::from_str(&k.public_jwk))
            .collect::<Result<_, _>>()
            .map_err(|e| KeyError::Malformed(format!("stored public JWK: {e}")))?;
        Ok(Some(Arc::new(LiveRealm {
            record,
            token_endpoint: format!("{issuer}{}", crate::oidc::TOKEN_PATH),
            issuer,
            signing,
            jwks: Jwks::from_public_jwks(&publics),
            login,
            mtls_anchors,
            key_states,
        })))
    }

    /// The client, or `None` if it does not exist. Absent clients are cached too, so an unknown
    /// id costs the same as a known one.
    pub async fn client(
        &self,
        realm: &str,
        id: &str,
        now: UnixTime,
    ) -> Result<Option<Arc<ClientRecord>>, DirectoryError> {
        let key = (realm.to_owned(), id.to_owned());
        {
            let map = self.clients.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = map.get(&key)
                && self.is_fresh(e.loaded_at, now)
            {
                return Ok(e.value.clone());
            }
        }
        let loaded = self.store.client(realm, id).await?.map(Arc::new);
        let mut map = self.clients.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            key,
            Entry {
                value: loaded.clone(),
                loaded_at: now,
            },
        );
        Ok(loaded)
    }

    /// Forgets cached entries of a realm (after a change made through this node).
    pub fn invalidate(&self, realm: &str) {
        self.realms
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(realm);
        self.clients
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(r, _), _| r != realm);
    }
}
