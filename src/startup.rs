//! Builds the application (store, KEK, caches, audit writer, router, listener) the same way for
//! `sigil serve` and for tests, and runs it until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::audit::AuditWriter;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, base_url_string};
use crate::directory::Directory;
use crate::keys::{KekOpenError, open_configured};
use crate::state::AppState;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Secret(#[from] crate::secrets::database::OpenError),
    #[error("{0}")]
    Kek(#[from] KekOpenError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("recording admin_realm: {0}")]
    AdminRealm(#[from] crate::admin::AdminError),
    #[error("apply_on_start: {0}")]
    Apply(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    mtls_listener: Option<(TcpListener, SocketAddr)>,
    tls: Option<Arc<crate::tls::ReloadingCert>>,
    base_url: String,
    router: Router,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let store = crate::secrets::database::open_store(&config).await?;
        let (kek, created) = open_configured(&config, store.as_ref()).await?;
        if created {
            match &config.kek {
                crate::config::KekSpec::AwsKms(_) => tracing::info!(
                    kek = %config.kek,
                    "generated the KEK: a KMS data key, stored wrapped in the database"
                ),
                _ => tracing::warn!(
                    path = %config.kek,
                    "created a new key-encryption key; production must provide its own KEK (kek_file) and back it up"
                ),
            }
        }
        let listener = listen(config.bind).map_err(|source| StartupError::Bind {
            addr: config.bind,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.bind,
            source,
        })?;
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::ReloadingCert::load(files)?),
            None => None,
        };
        let base_url = match &config.public_url {
            Some(url) => base_url_string(url),
            None => crate::config::default_base_url_with(addr, tls.is_some()),
        };
        if let Some(admin_realm) = &config.admin_realm {
            crate::admin::changes::record_admin_realm(
                store.as_ref(),
                admin_realm,
                true,
                clock.now(),
                "system",
            )
            .await?;
        }
        if let Some(file) = &config.apply_on_start {
            apply_on_start(
                file,
                &config,
                store.as_ref(),
                kek.as_ref(),
                &base_url,
                clock.now(),
            )
            .await?;
        }
        let mtls_listener = listen_optional(config.mtls_bind)?;
        let mtls_base_url = match (&config.mtls_public_url, &mtls_listener) {
            (Some(url), _) => Some(base_url_string(url)),
            (None, Some((_, at))) => Some(crate::config::default_base_url_with(*at, true)),
            (None, None) => None,
        };
        let directory = Arc::new(Directory::new(
            store.clone(),
            kek.clone(),
            base_url.clone(),
            config.cache_ttl_secs,
        ));
        let audit = AuditWriter::spawn(store.clone(), config.audit_batch_max, config.db.deadline());
        let config_failures_per_minute = config.failures_per_minute_per_ip;
        let config_logout_poll_ms = config.logout_poll_ms;
        let aws_challenges = Arc::new(crate::ratelimit::FailureLimiter::new(
            config.aws_challenges_per_minute_per_ip,
        ));
        let state = AppState::new(crate::state::Shared {
            config: Arc::new(config),
            store,
            directory,
            audit,
            clock,
            kek,
            sts_http: crate::outbound::client(),
            failures: Arc::new(crate::ratelimit::FailureLimiter::new(
                config_failures_per_minute,
            )),
            aws_challenges,
            templates: crate::login::pages_support::environment(),
            // One argon2 computation per core (each ~19 MiB; at least 2, at most 8): more would
            // only queue on the CPU.
            passwords: crate::identity::password::Passwords::new(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
                    .clamp(2, 8),
            ),
            login_ip_failures: Arc::new(crate::ratelimit::FailureLimiter::new(30)),
            login_account_failures: Arc::new(crate::ratelimit::FailureLimiter::new(5)),
            refusals: Arc::new(crate::audit::RefusalTally::new()),
            mtls_base_url: mtls_base_url.map(Arc::from),
            client_keys: Arc::new(crate::clients::keys::ClientKeys::new()),
            logout_outbox: Arc::new(crate::oidc::backchannel_logout::LogoutOutbox::new(
                Duration::from_millis(config_logout_poll_ms),
            )),
            feed_snapshots: Arc::default(),
            readiness: Default::default(),
        });
        let metrics_listener = listen_optional(state.config.metrics_bind)?;
        let router = crate::routes::router(state.clone());
        Ok(Application {
            listener,
            addr,
            metrics_listener,
            mtls_listener,
            tls,
            base_url,
            router,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served, when `metrics_bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, a)| *a)
    }

    /// Where the mutual-TLS listener is, when `mtls_bind` is set.
    pub fn mtls_addr(&self) -> Option<SocketAddr> {
        self.mtls_listener.as_ref().map(|(_, a)| *a)
    }

    /// The base of every issuer URL (`{base_url}/realms/{realm}`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let limits = crate::serve::ConnLimits {
            header_read_timeout: Duration::from_secs(self.state.config.header_read_timeout_secs),
            max_buf_size: 64 * 1024,
            idle_timeout: Duration::from_secs(self.state.config.idle_timeout_secs),
            max_connections: self.state.config.max_connections,
            http2_max_concurrent_streams: self.state.config.http2_max_concurrent_streams,
        };
        if self.state.config.rotation_check_secs > 0 {
            tokio::spawn(rotation_schedule(self.state.clone()));
        }
        tokio::spawn(flush_refusals(self.state.clone()));
        tokio::spawn(housekeeping(self.state.clone()));
        tokio::spawn(session_sweep(self.state.clone()));
        tokio::spawn(crate::oidc::backchannel_logout::deliver_forever(
            self.state.clone(),
        ));
        if self.state.config.audit_checkpoint_secs > 0 {
            tokio::spawn(checkpoints(self.state.clone()));
        }
        if let Some((listener, at)) = self.metrics_listener {
            tracing::info!(%at, "metrics at /metrics");
            let metrics = crate::metrics::router(self.state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, metrics).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        let state = self.state.clone();
        let acceptor =
            |ask_client_cert: bool| -> std::io::Result<Option<tokio_rustls::TlsAcceptor>> {
                match &self.tls {
                    None => Ok(None),
                    Some(cert) => crate::tls::server_config(cert.clone(), ask_client_cert)
                        .map(|c| Some(tokio_rustls::TlsAcceptor::from(c)))
                        .map_err(std::io::Error::other),
                }
            };
        if let Some(cert) = &self.tls {
            cert.watch(crate::tls::RELOAD_CHECK);
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some((listener, at)) = self.mtls_listener {
            tracing::info!(%at, "mutual TLS listener");
            let router = crate::routes::mtls_router(self.state.clone());
            let tls = acceptor(true)?;
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = crate::serve::serve_with(
                    listener,
                    router,
                    limits,
                    tls,
                    crate::tls::Listener::MutualTls,
                    stopped,
                )
                .await
                {
                    tracing::error!(error = %e, "mutual TLS listener failed");
                }
            });
        }
        let main_tls = acceptor(false)?;
        let served = crate::serve::serve_with(
            self.listener,
            self.router,
            limits,
            main_tls,
            crate::tls::Listener::Main,
            async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            },
        )
        .await;
        // What was tallied since the last flush is written before the process ends.
        write_refusals(&state).await;
        served
    }
}

/// Connections the kernel completes and queues before `accept` takes them. The OS default here
/// was 128, too few to absorb a burst while the accept loop makes room by closing idle
/// connections: beyond it, new connections' handshakes stall for a second or more. The kernel
/// caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

/// A second listener (metrics, mutual TLS) when its address is configured, with the address
/// it is bound to (port 0 in tests).
fn listen_optional(
    at: Option<SocketAddr>,
) -> Result<Option<(TcpListener, SocketAddr)>, StartupError> {
    let Some(at) = at else { return Ok(None) };
    let bind_error = |source| StartupError::Bind { addr: at, source };
    let l = listen(at).map_err(bind_error)?;
    let bound = l.local_addr().map_err(bind_error)?;
    Ok(Some((l, bound)))
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs every realm's rotation schedule every `rotation_check_secs`. Each node runs it; the
/// store's compare-and-set lets exactly one node apply each change, and every node's directory
/// picks the change up within `cache_ttl_secs`.
async fn rotation_schedule(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(state.config.rotation_check_secs));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let realms = match state.store.realms().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "rotation schedule: cannot list realms");
                continue;
            }
        };
        for realm in realms {
            let now = state.clock.now();
            match crate::keys::rotation::tick(
                state.store.as_ref(),
                state.kek.as_ref(),
                &realm.name,
                now,
            )
            .await
            {
                Ok(actions) if !actions.is_empty() => {
                    tracing::info!(realm = %realm.name, ?actions, "key rotation applied");
                    state.directory.invalidate(&realm.name);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(realm = %realm.name, error = %e, "key rotation failed"),
            }
        }
    }
}

/// Every `audit_checkpoint_secs`, appends to this node's chain a checkpoint naming every chain's
/// head, sealed with the KEK, when some chain has rows other than checkpoints since the heads the
/// previous one named (or a chain appeared or vanished): idle nodes stop writing them, even when
/// several nodes checkpoint each other's heads. The checkpoints are what binds the chains of
/// several nodes together.
async fn checkpoints(state: AppState) {
    let period = Duration::from_secs(state.config.audit_checkpoint_secs);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The heads the last checkpoint named.
    let mut named: Option<Vec<crate::store::ChainHead>> = None;
    let sink = crate::outbound::client();
    loop {
        every.tick().await;
        let heads = match state.store.audit_heads().await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "audit checkpoint: cannot read the chain heads");
                continue;
            }
        };
        if let Some(before) = &named {
            match audit_moved(&state, before, &heads).await {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    tracing::error!(error = %e, "audit checkpoint: cannot read the log");
                    continue;
                }
            }
        }
        let draft =
            match crate::audit::checkpoint::draft(&heads, state.kek.as_ref(), state.clock.now()) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "audit checkpoint: cannot seal");
                    continue;
                }
            };
        let anchor = crate::audit::checkpoint::anchor_line(&draft, state.clock.now());
        match state.audit.record(draft).await {
            Ok(_) => named = Some(heads),
            Err(_) => {
                tracing::error!("audit checkpoint could not be written");
                continue;
            }
        }
        if let Some(path) = &state.config.audit_anchor_file
            && let Err(e) = crate::audit::checkpoint::append_anchor(path, &anchor).await
        {
            tracing::error!(path = %path.display(), error = %e, "audit anchor could not be written");
        }
        if let Some(url) = &state.config.audit_anchor_url {
            // Each anchor names every head as of now, so one lost to an outage is covered by the
            // next; the error is logged, and the node goes on.
            let token = state.config.audit_anchor_token.as_deref();
            if let Err(e) = crate::audit::checkpoint::post_anchor(&sink, url, token, &anchor).await
            {
                tracing::error!(host = url.host_str().unwrap_or(""), error = %e, "audit anchor could not be sent");
            }
        }
    }
}

/// Whether anything but checkpoints was appended since `before` was read, or the set of chains
/// changed.
async fn audit_moved(
    state: &AppState,
    before: &[crate::store::ChainHead],
    now: &[crate::store::ChainHead],
) -> Result<bool, StoreError> {
    if before.len() != now.len() || now.iter().any(|h| !before.iter().any(|b| b.0 == h.0)) {
        return Ok(true);
    }
    for (chain, seq, _) in before {
        if state
            .store
            .audit_rows_after(chain, *seq, crate::audit::checkpoint::KIND)
            .await?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes the anonymous refusals counted since the last call, as one row per key with its count.
async fn write_refusals(state: &AppState) {
    for draft in state.refusals.drain(state.clock.now()) {
        if state.audit.record(draft).await.is_err() {
            tracing::error!("tallied refusals could not be audited");
        }
    }
}

async fn flush_refusals(state: AppState) {
    let period = Duration::from_secs(state.config.refusal_tally_secs.max(1));
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        write_refusals(&state).await;
    }
}

/// Deletes expired flows, codes, refresh tokens, invites and AWS challenges once a minute, in
/// small batches with pauses, so the audit writer never waits long behind it.
async fn housekeeping(state: AppState) {
    const BATCH: i64 = 500;
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for _ in 0..100 {
            match state.store.purge_expired(state.clock.now(), BATCH).await {
                Ok(n) if n > 0 => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "housekeeping failed");
                    break;
                }
            }
        }
    }
}

/// Ends the sessions that passed their realm's timeouts without anyone using them since.
async fn session_sweep(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(state.config.session_sweep_secs));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let ended = crate::identity::sessions::end_lapsed(&state, state.clock.now()).await;
        if ended > 0 {
            tracing::debug!(ended, "lapsed sessions ended");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `apply_on_start`: the file is applied before the node serves (see `admin::declarative`). A
/// conflict stops the start, naming it. A client created here gets a secret nobody sees (it is
/// never logged): `sigil client rotate-secret` gives it one to hand over.
async fn apply_on_start(
    file: &std::path::Path,
    config: &Config,
    store: &dyn Store,
    kek: &dyn crate::keys::KekSource,
    base_url: &str,
    now: crate::clock::UnixTime,
) -> Result<(), StartupError> {
    use crate::admin::declarative;
    let doc = declarative::read_file(file).map_err(StartupError::Apply)?;
    // Nodes started together on one database plan at once: a step another node applied first
    // ends in a conflict, and planning again finds it done. A few rounds settle any start.
    let mut round = 0;
    loop {
        round += 1;
        let steps = match declarative::plan(store, &doc, config.admin_realm.as_deref())
            .await
            .map_err(|e| StartupError::Apply(e.to_string()))?
        {
            Ok(steps) => steps,
            Err(conflicts) => return Err(StartupError::Apply(conflicts.join("; "))),
        };
        if steps.is_empty() {
            return Ok(());
        }
        let jwks_max_age = config.jwks_max_age_secs as i64;
        let applied = declarative::apply(
            store,
            kek,
            base_url,
            jwks_max_age,
            steps,
            now,
            "apply_on_start",
        )
        .await
        .map_err(|e| StartupError::Apply(e.to_string()))?;
        for step in &applied.steps {
            tracing::info!(file = %file.display(), "applied: {step}");
        }
        for client in applied.secrets.keys() {
            tracing::warn!(%client, "created by apply_on_start; its secret was not kept: run `sigil client rotate-secret` for one");
        }
        match applied.failed {
            None => return Ok(()),
            Some(crate::admin::AdminError::Conflict(what)) if round < 5 => {
                tracing::info!(%what, "apply_on_start: another node applied it first; planning again");
            }
            Some(e) => return Err(StartupError::Apply(e.to_string())),
        }
    }
}
