//! The validator: discovery, the JWKS cache (lock-free reads through `arc-swap`, single-flight
//! refresh that holds no lock across the HTTP call, a cooldown on unknown-`kid` refetches) and
//! the token checks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use tokio::sync::watch;

use crate::claims::Claims;
use crate::dpop::{self, DpopError, DpopExpectations, IatWindow, ReplayCache};
use crate::error::{Error, ErrorKind};
use crate::forwarded_cert::{Cidr, Format};
use crate::jwks::{VerifyingKey, max_age, parse_jwks};
use crate::policy::{self, BundlePayload, Decision, DenyReason, PolicySet};
use crate::revocations::{self, FeedConfig, Page, RevocationSet};

/// Seconds since the Unix epoch, from an injectable source.
pub type ClockFn = Arc<dyn Fn() -> i64 + Send + Sync>;

#[allow(clippy::disallowed_methods)] // the validator's one read of the wall clock
fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const MAX_TOKEN_BYTES: usize = 16 * 1024;
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// A revocation feed page is larger than a key set: up to 20 000 entries.
const MAX_FEED_PAGE_BYTES: usize = 16 * 1024 * 1024;
/// Never cache keys longer than this, whatever the JWKS server says.
pub const MAX_CACHE_SECS: i64 = 24 * 3600;

/// What a validator accepts and how it caches: set by the builder, read by the validator.
struct Policy {
    issuer: String,
    audience: String,
    /// `realm` of the challenge sent to requests without a token (default: the audience).
    realm: Option<String>,
    leeway: i64,
    allowed_client_ids: Option<HashSet<String>>,
    cooldown: i64,
    default_cache: i64,
    min_cache: i64,
    stale_period: i64,
    /// Refuse tokens without `cnf` (bearer tokens).
    require_sender_constrained: bool,
    dpop_window: IatWindow,
    dpop_replay_capacity: usize,
    /// `https://host[:port]` the resource server is addressed as (for DPoP `htu`), no slash.
    public_base_url: Option<String>,
    /// Peers whose forwarded client-certificate header is believed, and that header.
    trusted_proxies: Vec<Cidr>,
    forwarded_cert: Option<(String, Format)>,
    /// The issuer's revocation feed, when this resource server reads it.
    feed: Option<FeedConfig>,
    /// The realm's policy bundle, when this resource server authorizes with it.
    bundle: Option<FeedConfig>,
}

/// What a key-set fetch yields: the JWKS document and its `max-age` in seconds, if any.
pub type JwksFetch = Result<(Vec<u8>, Option<u64>), String>;

/// A key set that does not come over HTTP: an issuer checking its own tokens in-process hands
/// the validator its JWKS this way, so it needs no request to itself. The document is parsed and
/// cached exactly as a fetched one (same `max-age`, stale period and unknown-`kid` refetches).
pub trait JwksSource: Send + Sync + 'static {
    fn fetch(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = JwksFetch> + Send + '_>>;
}

pub struct ValidatorBuilder {
    policy: Policy,
    source: Option<Arc<dyn JwksSource>>,
    /// The feed's settings, applied in `build()` whatever the order of the calls.
    feed_url: Option<String>,
    feed_interval: Duration,
    feed_stale: Duration,
    bundle_url: Option<String>,
    bundle_interval: Duration,
    bundle_stale: Duration,
    jwks_uri: Option<String>,
    http: Option<reqwest::Client>,
    clock: Option<ClockFn>,
    fetch_timeout: Duration,
}

impl ValidatorBuilder {
    /// Clock skew tolerated on `exp` and `nbf` (default 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.policy.leeway = leeway.as_secs() as i64;
        self
    }
    /// Accept only tokens whose `client_id` is one of these.
    pub fn allowed_client_ids<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        ids: I,
    ) -> Self {
        self.policy.allowed_client_ids = Some(ids.into_iter().map(Into::into).collect());
        self
    }
    /// Least time between two refetches caused by unknown `kid`s (default 30 s).
    pub fn refetch_cooldown(mut self, cooldown: Duration) -> Self {
        self.policy.cooldown = cooldown.as_secs() as i64;
        self
    }
    /// Cache period when the JWKS response has no `max-age` (default 300 s).
    pub fn default_cache_period(mut self, period: Duration) -> Self {
        self.policy.default_cache = (period.as_secs() as i64).clamp(1, MAX_CACHE_SECS);
        self
    }
    /// How long cached keys stay usable past their `max-age` while the JWKS endpoint is down or
    /// answers garbage (default 6 h); after that, validation fails closed.
    pub fn stale_period(mut self, period: Duration) -> Self {
        self.policy.stale_period = period.as_secs() as i64;
        self
    }
    /// The `realm` the axum layer names in `WWW-Authenticate: Bearer realm="..."` when a request
    /// carries no token (default: the audience).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.policy.realm = Some(realm.into());
        self
    }
    /// Refuse tokens that are not sender-constrained (no `cnf`): only mTLS-bound (RFC 8705) and
    /// DPoP-bound (RFC 9449) tokens pass. Off by default: bearer tokens work as before.
    pub fn require_sender_constrained(mut self) -> Self {
        self.policy.require_sender_constrained = true;
        self
    }
    /// How old a DPoP proof's `iat` may be (default 60 s) and how far ahead of the clock
    /// (default 5 s). The replay cache remembers proofs for the sum.
    pub fn dpop_iat_window(mut self, max_age: Duration, max_future: Duration) -> Self {
        self.policy.dpop_window = IatWindow {
            max_age: max_age.as_secs() as i64,
            max_future: max_future.as_secs() as i64,
        };
        self
    }
    /// Most DPoP proofs remembered at once for replay detection (default 100 000); when full,
    /// new proofs are refused until old ones expire.
    pub fn dpop_replay_capacity(mut self, capacity: usize) -> Self {
        self.policy.dpop_replay_capacity = capacity;
        self
    }
    /// The scheme, host and port clients address this resource server by
    /// (`https://ledger.bank.example`): the axum layer builds the request URI that DPoP proofs
    /// must name (`htu`) from it and the request path. Without it the layer uses the request's
    /// `Host` header (see [`crate::axum`]), which is right only when no proxy rewrites it.
    pub fn public_base_url(mut self, url: impl Into<String>) -> Self {
        self.policy.public_base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }
    /// Believe the client certificate a TLS-terminating proxy forwards in `header` (in
    /// `format`), but only on requests whose peer address (axum's `ConnectInfo<SocketAddr>`) is
    /// inside one of `proxies`. From any other peer the header is ignored.
    pub fn trusted_proxies<I: IntoIterator<Item = Cidr>>(
        mut self,
        proxies: I,
        header: impl Into<String>,
        format: Format,
    ) -> Self {
        self.policy.trusted_proxies = proxies.into_iter().collect();
        self.policy.forwarded_cert = Some((header.into().to_ascii_lowercase(), format));
        self
    }
    /// Read the issuer's revocation feed (Sigil's `{issuer}/revocations`) as this resource server
    /// (a client registered with `--introspect`, authenticated with HTTP Basic): tokens revoked,
    /// of an ended session or of a disabled client are refused (401 `invalid_token`) within the
    /// poll interval, with no call to the issuer per request. The first read happens in
    /// [`ValidatorBuilder::build`], which fails if the feed does not answer.
    pub fn revocation_feed(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.policy.feed = Some(FeedConfig {
            url: String::new(), // set in build()
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            interval: Duration::from_secs(5),
            stale_period: 120,
        });
        self
    }
    /// The feed's URL, if not `{issuer}/revocations` (used once `revocation_feed` is set).
    pub fn revocation_feed_url(mut self, url: impl Into<String>) -> Self {
        self.feed_url = Some(url.into());
        self
    }
    /// How often the feed is read (default 5 s, at least 100 ms).
    pub fn revocation_poll_interval(mut self, interval: Duration) -> Self {
        self.feed_interval = interval.max(Duration::from_millis(100));
        self
    }
    /// How long the last list is trusted while the feed does not answer (default 120 s past the
    /// last answer); after that every token is refused until it answers again.
    pub fn revocation_stale_period(mut self, period: Duration) -> Self {
        self.feed_stale = period;
        self
    }
    /// Read the realm's principal policies (Sigil's `{issuer}/policies`) as this resource server
    /// (a client registered with `--introspect`, authenticated with HTTP Basic), for
    /// [`Validator::authorize`] and [`crate::axum::AuthLayer::require_policy`]. The bundle is a
    /// JWS (`typ: policies+jwt`) verified with the issuer's keys, addressed to this client, fresh,
    /// and never older than the version held; its policies are compiled once per version. It is
    /// polled in the background with `If-None-Match` (an unchanged bundle costs a 304); while
    /// the issuer does not answer the last bundle is used for the stale period, after which
    /// every request is denied. The first read happens in [`ValidatorBuilder::build`], which
    /// fails if it does not answer.
    pub fn policy_bundle(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.policy.bundle = Some(FeedConfig {
            url: String::new(), // set in build()
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            interval: Duration::from_secs(5),
            stale_period: 120,
        });
        self
    }
    /// The bundle's URL, if not `{issuer}/policies`.
    pub fn policy_bundle_url(mut self, url: impl Into<String>) -> Self {
        self.bundle_url = Some(url.into());
        self
    }
    /// How often the bundle is polled (default 5 s, at least 100 ms).
    pub fn policy_poll_interval(mut self, interval: Duration) -> Self {
        self.bundle_interval = interval.max(Duration::from_millis(100));
        self
    }
    /// How long the last bundle is used while the issuer does not answer (default 120 s past
    /// the last answer); after that every authorization is denied until it answers again.
    pub fn policy_stale_period(mut self, period: Duration) -> Self {
        self.bundle_stale = period;
        self
    }
    /// Skip discovery and fetch keys from this URL.
    pub fn jwks_uri(mut self, uri: impl Into<String>) -> Self {
        self.jwks_uri = Some(uri.into());
        self
    }
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }
    /// Take the key set from `source` instead of discovery and an HTTP fetch.
    pub fn jwks_source(mut self, source: Arc<dyn JwksSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Replace the wall clock (tests and simulations).
    pub fn clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Runs discovery (unless a JWKS URI was given) and fetches the keys once.
    pub async fn build(self) -> Result<Validator, Error> {
        let http = match self.http {
            Some(c) => c,
            None => {
                // reqwest is built without a bundled crypto provider; use ring's (idempotent).
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .timeout(self.fetch_timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| ErrorKind::Discovery(e.to_string()))?
            }
        };
        let mut policy = self.policy;
        policy.issuer = policy.issuer.trim_end_matches('/').to_owned();
        if let Some(feed) = &mut policy.feed {
            feed.url = self
                .feed_url
                .unwrap_or_else(|| format!("{}/revocations", policy.issuer));
            feed.interval = self.feed_interval;
            feed.stale_period = self.feed_stale.as_secs() as i64;
        }
        if let Some(bundle) = &mut policy.bundle {
            bundle.url = self
                .bundle_url
                .unwrap_or_else(|| format!("{}/policies", policy.issuer));
            bundle.interval = self.bundle_interval;
            bundle.stale_period = self.bundle_stale.as_secs() as i64;
        }
        let jwks_uri = match (self.jwks_uri, &self.source) {
            (Some(u), _) => u,
            (None, Some(_)) => "(in-process key set)".to_owned(),
            (None, None) => discover(&http, &policy.issuer).await?,
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(system_now));
        let replay = ReplayCache::new(policy.dpop_replay_capacity, policy.dpop_window.span());
        let inner = Arc::new(Inner {
            source: self.source,
            replay,
            policy,
            jwks_uri,
            http,
            clock,
            keys: ArcSwap::from_pointee(KeySet::default()),
            flight: Mutex::new(None),
            last_unknown_kid_fetch: AtomicI64::new(i64::MIN / 2),
            fetches: AtomicU64::new(0),
            unknown_kid_fetches: AtomicU64::new(0),
            revocations: ArcSwap::from_pointee(RevocationSet::new()),
            policies: ArcSwap::from_pointee(HeldBundle::default()),
        });
        inner.fetch_and_swap().await?;
        let validator = Validator { inner };
        if let Some(feed) = validator.inner.policy.feed.clone() {
            validator.poll_revocations().await?;
            poll_in_background(
                &validator,
                feed,
                "revocation feed unavailable; keeping the last list",
                |v| Box::pin(async move { v.poll_revocations().await }),
            );
        }
        if let Some(bundle) = validator.inner.policy.bundle.clone() {
            validator.poll_policies().await?;
            poll_in_background(
                &validator,
                bundle,
                "policy bundle unavailable; keeping the last one",
                |v| Box::pin(async move { v.poll_policies().await }),
            );
        }
        Ok(validator)
    }
}

type PollFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>;

/// Runs `poll` every `cfg.interval` for as long as the validator lives, logging failures (the
/// last answer is kept by the poll itself).
fn poll_in_background(
    validator: &Validator,
    cfg: FeedConfig,
    failed: &'static str,
    poll: fn(Validator) -> PollFuture,
) {
    let weak = Arc::downgrade(&validator.inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(cfg.interval).await;
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = poll(Validator { inner }).await {
                tracing::warn!(url = %cfg.url, error = %e, "{failed}");
            }
        }
    });
}

/// The policy bundle as last read.
#[derive(Default)]
struct HeldBundle {
    /// The compiled policies (`None` before the first read).
    set: Option<Arc<PolicySet>>,
    /// The issuer's `ETag` for it.
    etag: Option<String>,
    /// The signed `iat` of the bundle held.
    signed_iat: i64,
    /// When the issuer last answered (200 or 304).
    confirmed_at: i64,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    /// When a background refresh is due (a little before `max-age` runs out, or after the
    /// cooldown following a failed fetch).
    refresh_at: i64,
    /// Until then the keys are within the `max-age` they were served with.
    fresh_until: i64,
    /// After this the keys are too stale to trust: `max-age` plus the stale period.
    usable_until: i64,
}

struct Inner {
    policy: Policy,
    source: Option<Arc<dyn JwksSource>>,
    jwks_uri: String,
    http: reqwest::Client,
    clock: ClockFn,
    keys: ArcSwap<KeySet>,
    /// The refresh in flight, if any: joiners wait on it instead of fetching again.
    flight: Mutex<Option<watch::Receiver<bool>>>,
    last_unknown_kid_fetch: AtomicI64,
    fetches: AtomicU64,
    unknown_kid_fetches: AtomicU64,
    replay: ReplayCache,
    /// The revocation feed as last read (empty without a feed).
    revocations: ArcSwap<RevocationSet>,
    /// The policy bundle as last read.
    policies: ArcSwap<HeldBundle>,
}

/// Verifies access tokens for one issuer and audience. Cheap to clone.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("issuer", &self.inner.policy.issuer)
            .field("audience", &self.inner.policy.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

async fn get_limited(http: &reqwest::Client, url: &str) -> Result<(Vec<u8>, Option<u64>), String> {
    read_limited(http.get(url), url, MAX_DOCUMENT_BYTES).await
}

async fn read_limited(
    req: reqwest::RequestBuilder,
    url: &str,
    limit: usize,
) -> Result<(Vec<u8>, Option<u64>), String> {
    let res = req.send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("{url} answered {}", res.status()));
    }
    let max_age = res
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    Ok((read_body(res, url, limit).await?, max_age))
}

/// A response's body, at most `limit` bytes (read chunk by chunk: a larger one is refused before
/// it is all in memory).
async fn read_body(mut res: reqwest::Response, url: &str, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("{url} answered more than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn discover(http: &reqwest::Client, issuer: &str) -> Result<String, Error> {
    let url = format!("{issuer}/.well-known/openid-configuration");
    let (body, _) = get_limited(http, &url)
        .await
        .map_err(ErrorKind::Discovery)?;
    let doc: Discovery = serde_json::from_slice(&body)
        .map_err(|e| ErrorKind::Discovery(format!("bad metadata: {e}")))?;
    if doc.issuer != issuer {
        return Err(ErrorKind::Discovery(format!(
            "metadata names issuer {:?}, expected {issuer:?}",
            doc.issuer
        ))
        .into());
    }
    if !(doc.jwks_uri.starts_with("https://") || doc.jwks_uri.starts_with("http://")) {
        return Err(ErrorKind::Discovery("jwks_uri is not an http(s) URL".into()).into());
    }
    Ok(doc.jwks_uri)
}

impl Inner {
    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Fetches the JWKS and swaps it in. A failure keeps the keys already held.
    async fn fetch_and_swap(&self) -> Result<(), Error> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = match &self.source {
            Some(source) => source.fetch().await,
            None => get_limited(&self.http, &self.jwks_uri).await,
        };
        let result = fetched.and_then(|(body, max_age)| Ok((parse_jwks(&body)?, max_age)));
        let now = self.now();
        match result {
            Ok((keys, max_age)) => {
                crate::observe::jwks_fetch(true);
                let period = max_age
                    .map(|s| s.min(MAX_CACHE_SECS as u64) as i64)
                    .unwrap_or(self.policy.default_cache)
                    .max(self.policy.min_cache);
                // Refresh a tenth of the period early (at most a minute), so a validator never
                // verifies with keys older than max-age while the endpoint is healthy.
                let early = (period / 10).min(60);
                self.keys.store(Arc::new(KeySet {
                    keys: keys.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
                    refresh_at: now + period - early,
                    fresh_until: now + period,
                    usable_until: now + period + self.policy.stale_period,
                }));
                Ok(())
            }
            Err(message) => {
                crate::observe::jwks_fetch(false);
                let current = self.keys.load_full();
                tracing::warn!(
                    jwks_uri = %self.jwks_uri,
                    error = %message,
                    usable_for_secs = current.usable_until - now,
                    "JWKS refresh failed; keeping cached keys"
                );
                if !current.keys.is_empty() {
                    // Try again after the cooldown rather than on every request.
                    self.keys.store(Arc::new(KeySet {
                        keys: current.keys.clone(),
                        refresh_at: now + self.policy.cooldown.max(1),
                        fresh_until: current.fresh_until,
                        usable_until: current.usable_until,
                    }));
                }
                Err(ErrorKind::Jwks(message).into())
            }
        }
    }
}

/// Starts a refresh unless one is in flight; returns a receiver that turns `true` when it ends.
/// The fetch runs in its own task, so a cancelled caller never strands the others.
fn join_or_start_refresh(inner: &Arc<Inner>) -> watch::Receiver<bool> {
    let mut slot = inner.flight.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rx) = &*slot {
        return rx.clone();
    }
    let (tx, rx) = watch::channel(false);
    *slot = Some(rx.clone());
    drop(slot);
    let inner = inner.clone();
    tokio::spawn(async move {
        let _ = inner.fetch_and_swap().await;
        *inner.flight.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = tx.send(true);
    });
    rx
}

impl Validator {
    /// `issuer` and `audience` are required: there are no silent defaults.
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> ValidatorBuilder {
        ValidatorBuilder {
            policy: Policy {
                issuer: issuer.into(),
                audience: audience.into(),
                realm: None,
                leeway: 60,
                allowed_client_ids: None,
                cooldown: 30,
                default_cache: 300,
                min_cache: 5,
                stale_period: 6 * 3600,
                require_sender_constrained: false,
                feed: None,
                dpop_window: IatWindow::default(),
                dpop_replay_capacity: 100_000,
                public_base_url: None,
                trusted_proxies: Vec::new(),
                forwarded_cert: None,
                bundle: None,
            },
            jwks_uri: None,
            source: None,
            http: None,
            clock: None,
            fetch_timeout: Duration::from_secs(5),
            feed_url: None,
            feed_interval: Duration::from_secs(5),
            feed_stale: Duration::from_secs(120),
            bundle_url: None,
            bundle_interval: Duration::from_secs(5),
            bundle_stale: Duration::from_secs(120),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.inner.policy.issuer
    }

    /// The protection space named in challenges (the builder's `realm`, else the audience).
    pub fn realm(&self) -> &str {
        let p = &self.inner.policy;
        p.realm.as_deref().unwrap_or(&p.audience)
    }

    /// How many times the JWKS has been fetched (for metrics and tests).
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// How many of those fetches an unknown `kid` caused (0 when rotation is pre-published).
    pub fn unknown_kid_fetches(&self) -> u64 {
        self.inner.unknown_kid_fetches.load(Ordering::Relaxed)
    }

    /// Refreshes the keys now (single-flight with any refresh already running).
    pub async fn refresh(&self) {
        let mut rx = join_or_start_refresh(&self.inner);
        let _ = rx.wait_for(|done| *done).await;
    }

    fn lookup(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.inner.keys.load().keys.get(kid).cloned()
    }

    async fn refetch_for_unknown_kid(&self, now: i64) {
        let last = self.inner.last_unknown_kid_fetch.load(Ordering::Acquire);
        let cooled = now - last >= self.inner.policy.cooldown;
        if cooled
            && self
                .inner
                .last_unknown_kid_fetch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.inner
                .unknown_kid_fetches
                .fetch_add(1, Ordering::Relaxed);
            crate::observe::unknown_kid_refetch();
            self.refresh().await;
            return;
        }
        // Within the cooldown: wait for a refresh already in flight, but never start one.
        let pending = self
            .inner
            .flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(mut rx) = pending {
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Checks a validated token's sign-in against a route's step-up demand (RFC 9470) with this
    /// validator's clock: `Err` is `insufficient_user_authentication`.
    pub fn check_step_up(&self, claims: &Claims, demand: &crate::StepUp) -> Result<(), Error> {
        demand.check(claims, self.inner.now())
    }

    /// Verifies signature and claims of a token presented as a bearer token without a client
    /// certificate; returns the claims of a valid access token. A sender-constrained token (with
    /// `cnf`) is refused here, since its binding cannot be checked without the request: use
    /// [`Validator::validate_request`] for those.
    pub async fn validate(&self, token: &str) -> Result<Claims, Error> {
        let result = async {
            let claims = self.verify_token(token).await?;
            self.check_bearer_binding(&claims, None)?;
            Ok(claims)
        }
        .await;
        if let Err(e) = &result {
            crate::observe::refusal(e);
        }
        result
    }

    /// Validates the credentials of one request: an `Authorization: Bearer` token (which may be
    /// bound to the client certificate, RFC 8705) or an `Authorization: DPoP` token with its
    /// proof (RFC 9449 §7). Every binding in the token's `cnf` must hold; a DPoP-bound token is
    /// refused as a bearer token, and an unbound one under
    /// [`ValidatorBuilder::require_sender_constrained`]. An accepted proof's `jti` is remembered
    /// (per key) for the iat window, and a second use is refused.
    pub async fn validate_request(
        &self,
        request: &RequestCredentials<'_>,
    ) -> Result<Claims, Error> {
        let result = self.validate_request_inner(request).await;
        if let Err(e) = &result {
            crate::observe::refusal(e);
        }
        result
    }

    async fn validate_request_inner(
        &self,
        request: &RequestCredentials<'_>,
    ) -> Result<Claims, Error> {
        let (scheme, token) = request
            .authorization
            .and_then(split_authorization)
            .ok_or(ErrorKind::MissingToken)?;
        let claims = self.verify_token(token).await?;
        match scheme {
            Scheme::Bearer => self.check_bearer_binding(&claims, request.client_certificate)?,
            Scheme::DPoP => self.check_dpop_binding(&claims, token, request)?,
        }
        Ok(claims)
    }

    /// The binding checks of a bearer presentation (with the client certificate, if any).
    fn check_bearer_binding(&self, claims: &Claims, cert: Option<&[u8]>) -> Result<(), Error> {
        match &claims.cnf {
            None if self.inner.policy.require_sender_constrained => {
                Err(ErrorKind::NotSenderConstrained.into())
            }
            None => Ok(()),
            Some(cnf) => {
                if cnf.jkt.is_some() {
                    return Err(ErrorKind::DpopBoundTokenAsBearer.into());
                }
                let x5t = cnf
                    .x5t_s256
                    .as_deref()
                    .ok_or(ErrorKind::UnsupportedConfirmation)?;
                check_certificate(x5t, cert)
            }
        }
    }

    fn check_dpop_binding(
        &self,
        claims: &Claims,
        token: &str,
        request: &RequestCredentials<'_>,
    ) -> Result<(), Error> {
        let jkt = claims
            .cnf
            .as_ref()
            .and_then(|c| c.jkt.as_deref())
            .ok_or(ErrorKind::NotDpopBound)?;
        // A token bound to both a key and a certificate needs both.
        if let Some(x5t) = claims.cnf.as_ref().and_then(|c| c.x5t_s256.as_deref()) {
            check_certificate(x5t, request.client_certificate)?;
        }
        let proof = match request.dpop_proofs.as_slice() {
            [] => return Err(ErrorKind::DpopProof(DpopError::MissingProof).into()),
            [one] => *one,
            _ => return Err(ErrorKind::DpopProof(DpopError::MultipleProofs).into()),
        };
        let policy = &self.inner.policy;
        let expected = DpopExpectations::new(request.method, request.uri)
            .access_token(token)
            .window(policy.dpop_window);
        let now = self.inner.now();
        let verified = dpop::verify_proof(proof, &expected, now).map_err(ErrorKind::DpopProof)?;
        if !dpop::constant_time_eq(verified.jkt.as_bytes(), jkt.as_bytes()) {
            return Err(ErrorKind::DpopKeyMismatch.into());
        }
        self.inner
            .replay
            .check_and_insert(&verified.jkt, &verified.jti, now)
            .map_err(ErrorKind::DpopProof)?;
        Ok(())
    }

    /// The validator's replay cache of DPoP proofs (for metrics).
    pub fn dpop_replay_cache(&self) -> &ReplayCache {
        &self.inner.replay
    }

    #[cfg(feature = "axum")]
    pub(crate) fn public_base_url(&self) -> Option<&str> {
        self.inner.policy.public_base_url.as_deref()
    }

    #[cfg(feature = "axum")]
    /// The forwarded-certificate header and its format, when `peer` is a trusted proxy.
    pub(crate) fn forwarded_cert_for(&self, peer: std::net::IpAddr) -> Option<(&str, Format)> {
        let p = &self.inner.policy;
        let (header, format) = p.forwarded_cert.as_ref()?;
        p.trusted_proxies
            .iter()
            .any(|c| c.contains(peer))
            .then_some((header.as_str(), *format))
    }

    #[cfg(feature = "axum")]
    pub(crate) fn has_trusted_proxies(&self) -> bool {
        !self.inner.policy.trusted_proxies.is_empty()
    }

    #[cfg(feature = "axum")]
    pub(crate) fn requires_sender_constrained(&self) -> bool {
        self.inner.policy.require_sender_constrained
    }

    /// Signature and claim checks, without any binding check.
    async fn verify_token(&self, token: &str) -> Result<Claims, Error> {
        let malformed = || Error::from(ErrorKind::Malformed);
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed());
        }
        let (signing_input, sig_b64) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (header_b64, payload_b64) = signing_input.split_once('.').ok_or_else(malformed)?;
        if payload_b64.contains('.') {
            return Err(malformed());
        }
        let header: Header = B64
            .decode(header_b64)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(malformed)?;
        match header.typ.as_deref() {
            Some(t)
                if t.eq_ignore_ascii_case("at+jwt")
                    || t.eq_ignore_ascii_case("application/at+jwt") => {}
            other => {
                return Err(ErrorKind::UnsupportedHeader(format!("typ {other:?}")).into());
            }
        }
        if header.crit.is_some() {
            return Err(ErrorKind::UnsupportedHeader("crit".into()).into());
        }
        let kid = header
            .kid
            .ok_or_else(|| ErrorKind::UnsupportedHeader("no kid".into()))?;
        let now = self.inner.now();
        let (refresh_at, fresh_until, usable_until) = {
            let set = self.inner.keys.load();
            (set.refresh_at, set.fresh_until, set.usable_until)
        };
        if refresh_at <= now {
            // Due: refresh in the background, keep verifying with what we hold.
            drop(join_or_start_refresh(&self.inner));
        }
        if usable_until <= now {
            return Err(ErrorKind::Jwks("cached keys are past their stale period".into()).into());
        }
        if fresh_until <= now {
            crate::observe::stale_keys_used();
        }
        let key = match self.lookup(&kid) {
            Some(k) => k,
            None => {
                self.refetch_for_unknown_kid(now).await;
                self.lookup(&kid).ok_or(ErrorKind::UnknownKey)?
            }
        };
        if header.alg != key.alg() {
            return Err(ErrorKind::AlgorithmMismatch.into());
        }
        let signature = B64.decode(sig_b64).map_err(|_| malformed())?;
        if !key.verify(signing_input.as_bytes(), &signature) {
            return Err(ErrorKind::BadSignature.into());
        }
        let payload = B64.decode(payload_b64).map_err(|_| malformed())?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| malformed())?;
        self.check_claims(&claims, now)?;
        self.check_revocations(&claims, now)?;
        Ok(claims)
    }

    /// With a revocation feed: refuses a revoked token, and every token once the list is past its
    /// stale period.
    fn check_revocations(&self, claims: &Claims, now: i64) -> Result<(), Error> {
        let Some(feed) = &self.inner.policy.feed else {
            return Ok(());
        };
        let set = self.inner.revocations.load();
        if now.saturating_sub(set.fetched_at) > feed.stale_period {
            return Err(ErrorKind::RevocationsUnavailable.into());
        }
        if set.revokes(&crate::revocations::Named {
            jti: claims.jti.as_deref(),
            sid: claims.extra.get("sid").and_then(serde_json::Value::as_str),
            sub: Some(claims.sub.as_str()),
            client_id: claims.client_id.as_deref(),
            iat: claims.iat,
        }) {
            return Err(ErrorKind::Revoked.into());
        }
        Ok(())
    }

    /// How many entries the revocation list holds (for metrics), and its cursor.
    pub fn revocations(&self) -> (usize, i64) {
        let set = self.inner.revocations.load();
        (set.len(), set.cursor)
    }

    /// Reads the feed from the cursor until it has nothing more, verifying each page, and swaps
    /// the new list in. A failure keeps the list held.
    pub async fn poll_revocations(&self) -> Result<(), Error> {
        let Some(feed) = &self.inner.policy.feed else {
            return Ok(());
        };
        let unavailable = |m: String| Error::from(ErrorKind::Feed(m));
        let mut set = (**self.inner.revocations.load()).clone();
        // Pages are read by sequence number (`after` moves to each page's last entry), apart from
        // the settled cursor kept for the next poll (`next`): it moves only while every entry
        // read so far has settled, so entries still settling are read again next time, and a
        // full page of them does not hold back the pages behind it.
        let mut after = set.cursor;
        let mut settled = true;
        // At most a bounded number of pages per poll (20 000 entries each).
        for _ in 0..50 {
            let sep = if feed.url.contains('?') { '&' } else { '?' };
            let req = self
                .inner
                .http
                .get(format!("{}{sep}after={after}", feed.url))
                .basic_auth(&feed.client_id, Some(&feed.client_secret));
            let (body, _) = read_limited(req, &feed.url, MAX_FEED_PAGE_BYTES)
                .await
                .map_err(unavailable)?;
            let jws = std::str::from_utf8(&body).map_err(|_| unavailable("not text".into()))?;
            let payload = self.verify_signed(jws.trim(), revocations::TYP).await?;
            let page: Page = serde_json::from_slice(&payload)
                .map_err(|e| unavailable(format!("bad page: {e}")))?;
            let now = self.inner.now();
            let policy = &self.inner.policy;
            if page.iss != policy.issuer || page.aud != feed.client_id || page.after != after {
                return Err(unavailable(
                    "a page for another issuer, resource server or cursor".into(),
                ));
            }
            if (now - page.iat).abs() > policy.leeway {
                return Err(unavailable("a stale or future page".into()));
            }
            set.apply(&page, now, policy.leeway);
            let last = page.entries.last().map(|e| e.seq);
            if settled {
                set.cursor = set.cursor.max(page.next);
                settled = last.is_none_or(|l| page.next >= l);
            }
            match last {
                Some(l) if page.more && l > after => after = l,
                _ => break,
            }
        }
        self.inner.revocations.store(Arc::new(set));
        Ok(())
    }

    /// Decides whether the token with `claims` may do `action` (`db:Insert`) to `resource`
    /// (`financial.ledger.document.tx`), a record whose content is `document` (`Value::Null`
    /// when the route has none), under the realm's policy bundle (see [`crate::policy`]). Without
    /// a bundle young enough (none configured, or past its stale period) every request is denied.
    /// Synchronous: it never waits for the issuer.
    pub fn authorize(
        &self,
        claims: &Claims,
        action: &str,
        resource: &str,
        document: &serde_json::Value,
    ) -> Decision {
        let held = self.inner.policies.load();
        let fresh =
            self.inner.policy.bundle.as_ref().is_some_and(|b| {
                self.inner.now().saturating_sub(held.confirmed_at) <= b.stale_period
            });
        let decision = match &held.set {
            Some(set) if fresh => set.evaluate(claims, action, resource, document),
            _ => Decision::deny(DenyReason::BundleUnavailable),
        };
        crate::observe::authorization(&decision);
        decision
    }

    /// The version of the policy bundle held (for metrics and tests), if any.
    pub fn policy_version(&self) -> Option<i64> {
        self.inner.policies.load().set.as_ref().map(|s| s.version())
    }

    /// Reads the policy bundle (conditionally, with the `ETag` held, while the signed bundle is
    /// younger than half the stale period), verifies and compiles a new one, and swaps it in. A
    /// failure keeps the bundle held.
    pub async fn poll_policies(&self) -> Result<(), Error> {
        let Some(cfg) = &self.inner.policy.bundle else {
            return Ok(());
        };
        let unavailable = |m: String| Error::from(ErrorKind::Policies(m));
        let held = self.inner.policies.load_full();
        let now = self.inner.now();
        let mut req = self
            .inner
            .http
            .get(&cfg.url)
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret));
        let conditional = held.set.is_some() && now - held.signed_iat < cfg.stale_period / 2;
        if let (Some(etag), true) = (&held.etag, conditional) {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let res = req.send().await.map_err(|e| unavailable(e.to_string()))?;
        if res.status() == reqwest::StatusCode::NOT_MODIFIED && conditional {
            self.inner.policies.store(Arc::new(HeldBundle {
                set: held.set.clone(),
                etag: held.etag.clone(),
                signed_iat: held.signed_iat,
                confirmed_at: self.inner.now(),
            }));
            return Ok(());
        }
        if !res.status().is_success() {
            return Err(unavailable(format!(
                "{} answered {}",
                cfg.url,
                res.status()
            )));
        }
        let etag = res
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(res, &cfg.url, policy::MAX_BUNDLE_BYTES)
            .await
            .map_err(unavailable)?;
        let jws = std::str::from_utf8(&body).map_err(|_| unavailable("not text".into()))?;
        let payload = self
            .verify_signed(jws.trim(), policy::TYP)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Feed(m) => unavailable(m.clone()),
                _ => unavailable(e.to_string()),
            })?;
        let bundle: BundlePayload = serde_json::from_slice(&payload)
            .map_err(|e| unavailable(format!("bad bundle: {e}")))?;
        let now = self.inner.now();
        let p = &self.inner.policy;
        if bundle.iss != p.issuer || bundle.aud != cfg.client_id {
            return Err(unavailable(
                "a bundle for another issuer or resource server".into(),
            ));
        }
        if (now - bundle.iat).abs() > p.leeway {
            return Err(unavailable("a stale or future bundle".into()));
        }
        let set = match &held.set {
            Some(s) if bundle.version < s.version() => {
                return Err(unavailable(format!(
                    "bundle version {} is older than the {} held",
                    bundle.version,
                    s.version()
                )));
            }
            // Compiled once per version.
            Some(s) if bundle.version == s.version() && bundle.groups_claim == s.groups_claim() => {
                s.clone()
            }
            _ => Arc::new(
                PolicySet::new(bundle.version, bundle.groups_claim, bundle.policies)
                    .map_err(|e| unavailable(format!("bundle refused: {e}")))?,
            ),
        };
        self.inner.policies.store(Arc::new(HeldBundle {
            set: Some(set),
            etag,
            signed_iat: bundle.iat,
            confirmed_at: now,
        }));
        Ok(())
    }

    /// Verifies a JWS of media type `typ` signed by one of the issuer's keys; returns its payload.
    async fn verify_signed(&self, jws: &str, typ: &str) -> Result<Vec<u8>, Error> {
        let bad = |m: &str| Error::from(ErrorKind::Feed(m.to_owned()));
        let (signing_input, sig_b64) = jws.rsplit_once('.').ok_or_else(|| bad("not a JWS"))?;
        let (header_b64, payload_b64) = signing_input
            .split_once('.')
            .ok_or_else(|| bad("not a JWS"))?;
        let header: Header = B64
            .decode(header_b64)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| bad("bad header"))?;
        if header.typ.as_deref() != Some(typ) || header.crit.is_some() {
            return Err(bad("wrong typ"));
        }
        let kid = header.kid.ok_or_else(|| bad("no kid"))?;
        let key = match self.lookup(&kid) {
            Some(k) => k,
            None => {
                self.refetch_for_unknown_kid(self.inner.now()).await;
                self.lookup(&kid).ok_or_else(|| bad("unknown key"))?
            }
        };
        let signature = B64.decode(sig_b64).map_err(|_| bad("bad signature"))?;
        if header.alg != key.alg() || !key.verify(signing_input.as_bytes(), &signature) {
            return Err(bad("bad signature"));
        }
        B64.decode(payload_b64).map_err(|_| bad("bad payload"))
    }

    fn check_claims(&self, c: &Claims, now: i64) -> Result<(), Error> {
        let i = &self.inner.policy;
        if c.iss != i.issuer {
            return Err(ErrorKind::WrongIssuer.into());
        }
        if !c.aud.contains(&i.audience) {
            return Err(ErrorKind::WrongAudience.into());
        }
        if c.exp <= now - i.leeway {
            return Err(ErrorKind::Expired.into());
        }
        if c.nbf.is_some_and(|nbf| nbf > now + i.leeway) {
            return Err(ErrorKind::NotYetValid.into());
        }
        if c.token_use.as_deref() != Some("access") {
            return Err(ErrorKind::WrongTokenUse.into());
        }
        if let Some(allowed) = &i.allowed_client_ids {
            let id = c
                .client_id
                .as_deref()
                .ok_or(ErrorKind::MissingClaim("client_id"))?;
            if !allowed.contains(id) {
                return Err(ErrorKind::ClientNotAllowed.into());
            }
        }
        Ok(())
    }

    /// Validates and requires every scope in `required`.
    pub async fn validate_with_scopes(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<Claims, Error> {
        let claims = self.validate(token).await?;
        let missing: Vec<String> = required
            .iter()
            .filter(|s| !claims.has_scope(s))
            .map(|s| (*s).to_owned())
            .collect();
        if missing.is_empty() {
            Ok(claims)
        } else {
            Err(
                ErrorKind::InsufficientScope(required.iter().map(|s| (*s).to_owned()).collect())
                    .into(),
            )
        }
    }
}

/// The certificate a TLS acceptor saw for this request's connection, as DER: the extension the
/// axum layer reads (insert it per connection, for every request on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub Arc<Vec<u8>>);

/// What one request presents, for [`Validator::validate_request`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RequestCredentials<'a> {
    /// The whole `Authorization` header value (`Bearer <token>` or `DPoP <token>`).
    pub authorization: Option<&'a str>,
    /// Every `DPoP` header value of the request (exactly one is required with a DPoP token).
    pub dpop_proofs: Vec<&'a str>,
    /// The HTTP method (`GET`...).
    pub method: &'a str,
    /// The absolute URI the client addressed (`https://ledger.bank.example/balances`).
    pub uri: &'a str,
    /// The DER of the client's TLS certificate, if it presented one.
    pub client_certificate: Option<&'a [u8]>,
}

impl<'a> RequestCredentials<'a> {
    pub fn new(method: &'a str, uri: &'a str) -> Self {
        RequestCredentials {
            method,
            uri,
            ..Default::default()
        }
    }
    pub fn authorization(mut self, value: &'a str) -> Self {
        self.authorization = Some(value);
        self
    }
    /// Adds one `DPoP` header value.
    pub fn dpop_proof(mut self, proof: &'a str) -> Self {
        self.dpop_proofs.push(proof);
        self
    }
    pub fn client_certificate(mut self, der: &'a [u8]) -> Self {
        self.client_certificate = Some(der);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bearer,
    DPoP,
}

/// The scheme and token of an `Authorization` value; `None` for another scheme or no token.
pub(crate) fn split_authorization(value: &str) -> Option<(Scheme, &str)> {
    let (scheme, token) = value.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::DPoP
    } else {
        return None;
    };
    match token.trim() {
        "" => None,
        token => Some((scheme, token)),
    }
}

/// RFC 8705 §3.1: the certificate's SHA-256 thumbprint must be the token's `x5t#S256`.
fn check_certificate(x5t: &str, cert: Option<&[u8]>) -> Result<(), Error> {
    let cert = cert.ok_or(ErrorKind::CertificateRequired)?;
    let actual = crate::jwk::sha256_b64(cert);
    if dpop::constant_time_eq(actual.as_bytes(), x5t.as_bytes()) {
        Ok(())
    } else {
        Err(ErrorKind::CertificateMismatch.into())
    }
}
