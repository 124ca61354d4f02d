//! The shared application state handed to every handler: built once in startup, no globals.

use std::sync::Arc;

use crate::audit::AuditWriter;
use crate::clock::Clock;
use crate::config::Config;
use crate::directory::Directory;
use crate::keys::KekSource;
use crate::store::Store;

/// Cloned by every extractor and middleware of every request: one reference count, not one per
/// field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
    pub audit: AuditWriter,
    pub clock: Arc<dyn Clock>,
    pub kek: Arc<dyn KekSource>,
    /// For STS calls: no redirects, short timeouts.
    pub sts_http: reqwest::Client,
    pub failures: Arc<crate::ratelimit::FailureLimiter>,
    /// AWS exchange challenges issued per address and minute (anonymous, each writes a row).
    pub aws_challenges: Arc<crate::ratelimit::FailureLimiter>,
    pub templates: Arc<minijinja::Environment<'static>>,
    pub passwords: crate::identity::password::Passwords,
    pub login_ip_failures: Arc<crate::ratelimit::FailureLimiter>,
    pub login_account_failures: Arc<crate::ratelimit::FailureLimiter<String>>,
    /// Anonymous refusals, written as counted rows once per `refusal_tally_secs`.
    pub refusals: Arc<crate::audit::RefusalTally>,
    /// Base URL of the mutual-TLS listener's aliases, when there is one.
    pub mtls_base_url: Option<Arc<str>>,
    /// `private_key_jwt` clients' keys fetched from their `jwks_uri`.
    pub client_keys: Arc<crate::clients::keys::ClientKeys>,
    /// Back-channel logouts: this node's lease name, HTTP client and wake-up signal.
    pub logout_outbox: Arc<crate::oidc::backchannel_logout::LogoutOutbox>,
    /// The revocation feed's settled entries per realm, serialised once.
    pub feed_snapshots: Arc<crate::oauth::feed_snapshot::FeedSnapshots>,
    /// `/readyz`'s last answer (computed at most once per clock second).
    pub readiness: crate::health::ReadinessCache,
}
