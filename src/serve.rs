//! The connection loop. Every connection is bounded in time and in number:
//!
//! - **Idle timeout**: a connection with no request in progress is closed `idle_timeout` after it
//!   was accepted or after its last request ended (HTTP/1.1 keep-alive and HTTP/2 alike; a peer
//!   that only answers HTTP/2 pings is idle too). hyper's own header-read timeout only starts at
//!   the first byte, so a connection that sends nothing would otherwise stay open for ever.
//! - **Connection cap**: at most `max_connections` are open. At the cap the oldest idle
//!   connections are closed to make room (a new client is served at once, a flood of silent
//!   connections only evicts itself); when every connection is busy, accepting pauses and new
//!   connections wait in the kernel's listen backlog. The cap is below the open-file limit, so
//!   the process never runs out of descriptors for its database and files.
//! - **Accept errors** (out of descriptors and the like) back off exponentially, and are logged at
//!   most once a second with a count.
//! - **HTTP/1**: header-read timeout, bounded read buffer (bounds the request head).
//!   **HTTP/2**: bounded concurrent streams, header list, send buffer and frame size; keep-alive
//!   pings; hyper's limits on reset streams (rapid-reset) stay on.
//!
//! Graceful shutdown stops accepting, lets requests in progress finish and closes idle
//! connections, for at most 10 s.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::tls::{ClientCertChain, ConnTls, Listener};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower_http::add_extension::AddExtension;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// From the first byte of a request head to its end (HTTP/1).
    pub header_read_timeout: Duration,
    /// Largest HTTP/1 read buffer, which bounds the request head; also HTTP/2's header list.
    pub max_buf_size: usize,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
}

/// How long an idle connection being closed may take to say goodbye (HTTP/2 GOAWAY) before it is
/// dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// HTTP/2 keep-alive: a PING after this long without a frame from the peer…
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// …and the connection is closed if the ping is not answered within this.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest back-off after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// At the cap with nothing idle to close: how long to wait for a slot before looking again.
const FULL_WAIT: Duration = Duration::from_millis(50);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, router, limits, None, Listener::Main, shutdown).await
}

/// As [`serve`], with TLS when `tls` is given (the handshake is bounded by the header-read
/// timeout); each request learns the connection's [`ConnTls`].
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    which: Listener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Shared by every connection's task (its settings are read, never changed).
    let builder = Arc::new(builder(&limits));
    let registry = Arc::new(Registry::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Evict several idle connections at once when full, so a burst of new ones does not wait
    // for each eviction in turn.
    let shed_batch = (limits.max_connections / 64).clamp(1, 64);
    let (stop_tx, stop_rx) = watch::channel(());
    let mut accept_errors = EverySecond::default();
    let mut full = EverySecond::default();
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let shed = registry.close_oldest_idle(shed_batch);
                if let Some(count) = full.hit() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        count,
                        shed,
                        "connection limit reached; closing the oldest idle connections"
                    );
                }
                let wait = if shed > 0 { CLOSE_GRACE } else { FULL_WAIT };
                tokio::select! {
                    p = tokio::time::timeout(wait, slots.clone().acquire_owned()) => match p {
                        Ok(Ok(p)) => p,
                        _ => continue,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    backoff = Duration::ZERO;
                    pair
                }
                Err(e) => {
                    drop(permit);
                    if is_connection_error(&e) {
                        // The peer gave up before we accepted: nothing is wrong here.
                        continue;
                    }
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // log once a second, not once per failure.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    if let Some(count) = accept_errors.hit() {
                        tracing::warn!(error = %e, count, backoff_ms = backoff.as_millis() as u64,
                            "accept failed (count = failures since the last report)");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {},
                        () = &mut shutdown => break,
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Registered (idle) from accept on, so a connection still in its TLS handshake can be
        // evicted at the cap like any other idle one.
        let (id, close) = registry.open(Instant::now());
        let registry = registry.clone();
        let stop = stop_rx.clone();
        let router = router.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let conn = Registered { id, close };
            match tls {
                None => {
                    let conn_tls = ConnTls {
                        listener: which,
                        client_chain: None,
                    };
                    run_conn(
                        stream, peer, conn_tls, router, &builder, &registry, conn, limits, stop,
                    )
                    .await;
                }
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        h = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => h.ok().and_then(Result::ok),
                        () = conn.close.notified() => None,
                    };
                    let Some(stream) = handshake else {
                        // A failed, stalled or evicted handshake: nothing to answer.
                        registry.remove(conn.id);
                        drop(permit);
                        return;
                    };
                    let client_chain = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .filter(|c| !c.is_empty())
                        .map(|c| {
                            ClientCertChain(Arc::new(
                                c.iter().map(|d| d.clone().into_owned()).collect(),
                            ))
                        });
                    let conn_tls = ConnTls {
                        listener: which,
                        client_chain,
                    };
                    run_conn(
                        stream, peer, conn_tls, router, &builder, &registry, conn, limits, stop,
                    )
                    .await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    tokio::select! {
        () = stop_tx.closed() => {},
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; stopping anyway");
        }
    }
    Ok(())
}

fn builder(limits: &ConnLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf_size)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_buf_size as u32)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_send_buf_size(64 * 1024)
        .max_frame_size(16 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    builder
}

/// Errors that concern one connection that never got going, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

type Svc = Tracked<
    TowerToHyperService<
        AddExtension<
            AddExtension<axum::routing::RouterIntoService<Incoming>, ConnectInfo<SocketAddr>>,
            ConnTls,
        >,
    >,
>;

type Conn<I> =
    hyper_util::server::conn::auto::UpgradeableConnection<'static, TokioIo<I>, Svc, TokioExecutor>;

/// A connection's entry in the registry and its eviction signal.
struct Registered {
    id: u64,
    close: Arc<Notify>,
}

/// Serves one accepted (and, for TLS, handshaken) connection until it ends.
#[allow(clippy::too_many_arguments)]
async fn run_conn<I>(
    io: I,
    peer: SocketAddr,
    conn_tls: ConnTls,
    router: Router,
    builder: &Builder<TokioExecutor>,
    registry: &Arc<Registry>,
    Registered { id, close }: Registered,
    limits: ConnLimits,
    stop: watch::Receiver<()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Each request learns its TCP peer (for per-address limits) as `ConnectInfo`, and the
    // connection's TLS facts (listener, client certificate) as `ConnTls`.
    let service = Tracked {
        inner: TowerToHyperService::new(AddExtension::new(
            AddExtension::new(router.into_service::<Incoming>(), ConnectInfo(peer)),
            conn_tls,
        )),
        conn: ConnRef {
            registry: registry.clone(),
            id,
        },
    };
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    drive(conn, registry, id, close, limits.idle_timeout, stop).await;
    registry.remove(id);
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Idle,
    Evicted,
    Shutdown,
}

/// Runs one connection until it ends by itself, goes idle for too long, is evicted to make room,
/// or the server shuts down.
async fn drive<I>(
    conn: Conn<I>,
    registry: &Registry,
    id: u64,
    close: Arc<Notify>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::pin!(conn);
    let mut check_at = Instant::now() + idle_timeout;
    let ending = loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                match registry.idle_since(id) {
                    Some(since) if now >= since + idle_timeout => break Ending::Idle,
                    Some(since) => check_at = since + idle_timeout,
                    None => check_at = now + idle_timeout,
                }
            }
            () = close.notified() => break Ending::Evicted,
            _ = stop.changed() => break Ending::Shutdown,
        }
    };
    if matches!(ending, Ending::Evicted) && registry.idle_since(id).is_some() {
        // Evicted while idle: no request is lost by dropping it now.
        return;
    }
    // HTTP/1: no more keep-alive; HTTP/2: GOAWAY. Requests in progress finish (the request
    // timeout bounds them); a connection with none is dropped after the grace period even if
    // the peer never acknowledges the GOAWAY.
    conn.as_mut().graceful_shutdown();
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            () = tokio::time::sleep(CLOSE_GRACE) => {
                if registry.idle_since(id).is_some() {
                    break;
                }
            }
        }
    }
}

/// The open connections, and the idle ones in the order they went idle.
#[derive(Default)]
struct Registry {
    inner: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    open: HashMap<u64, Open>,
    /// (idle since, id) of every open connection with no request in progress.
    idle: BTreeSet<(Instant, u64)>,
}

struct Open {
    in_flight: u32,
    idle_since: Instant,
    close: Arc<Notify>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, now: Instant) -> (u64, Arc<Notify>) {
        let mut c = self.lock();
        let id = c.next_id;
        c.next_id += 1;
        let close = Arc::new(Notify::new());
        c.open.insert(
            id,
            Open {
                in_flight: 0,
                idle_since: now,
                close: close.clone(),
            },
        );
        c.idle.insert((now, id));
        (id, close)
    }

    fn remove(&self, id: u64) {
        let mut c = self.lock();
        if let Some(o) = c.open.remove(&id) {
            c.idle.remove(&(o.idle_since, id));
        }
    }

    fn request_started(&self, id: u64) {
        let mut c = self.lock();
        let Conns { open, idle, .. } = &mut *c;
        if let Some(o) = open.get_mut(&id) {
            if o.in_flight == 0 {
                idle.remove(&(o.idle_since, id));
            }
            o.in_flight += 1;
        }
    }

    fn request_ended(&self, id: u64, now: Instant) {
        let mut c = self.lock();
        let Conns { open, idle, .. } = &mut *c;
        if let Some(o) = open.get_mut(&id) {
            o.in_flight = o.in_flight.saturating_sub(1);
            if o.in_flight == 0 {
                o.idle_since = now;
                idle.insert((now, id));
            }
        }
    }

    /// When the connection went idle; `None` while a request is in progress.
    fn idle_since(&self, id: u64) -> Option<Instant> {
        let c = self.lock();
        c.open
            .get(&id)
            .and_then(|o| (o.in_flight == 0).then_some(o.idle_since))
    }

    /// Tells up to `n` of the longest-idle connections to close; returns how many.
    fn close_oldest_idle(&self, n: usize) -> usize {
        let mut c = self.lock();
        let mut shed = 0;
        while shed < n {
            let Some((_, id)) = c.idle.pop_first() else {
                break;
            };
            if let Some(o) = c.open.get(&id) {
                o.close.notify_one();
                shed += 1;
            }
        }
        shed
    }
}

/// Which connection a service belongs to.
#[derive(Clone)]
struct ConnRef {
    registry: Arc<Registry>,
    id: u64,
}

/// Marks the connection busy from the moment a request reaches the service until its response
/// has been sent (or the request is dropped).
struct InFlight(ConnRef);

impl InFlight {
    fn new(conn: ConnRef) -> Self {
        conn.registry.request_started(conn.id);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.registry.request_ended(self.0.id, Instant::now());
    }
}

/// The application service, counting requests in progress on its connection.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    conn: ConnRef,
}

impl<S, R, B> Service<R> for Tracked<S>
where
    S: Service<R, Response = hyper::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = hyper::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        let busy = InFlight::new(self.conn.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|inner| TrackedBody {
                inner,
                busy: Some(busy),
            }))
        })
    }
}

/// A response body that keeps its connection busy until it has been sent or dropped.
struct TrackedBody<B> {
    inner: B,
    busy: Option<InFlight>,
}

impl<B> hyper::body::Body for TrackedBody<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A log line at most once a second, counting the events in between.
#[derive(Default)]
struct EverySecond {
    last: Option<Instant>,
    count: u64,
}

impl EverySecond {
    /// Counts one event; returns the count to report when a line is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_idle_connections_are_closed_first_and_busy_ones_never() {
        let r = Registry::default();
        let t0 = Instant::now();
        let (a, close_a) = r.open(t0);
        let (b, _close_b) = r.open(t0 + Duration::from_millis(1));
        let (c, close_c) = r.open(t0 + Duration::from_millis(2));
        // `a` is busy, then `b` finishes a request: `c` is now the longest idle.
        r.request_started(a);
        r.request_started(b);
        r.request_ended(b, t0 + Duration::from_millis(3));
        assert_eq!(r.idle_since(a), None);
        assert_eq!(r.close_oldest_idle(1), 1);
        // `c` was told to close: its notification is stored.
        let waker = futures_noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = Box::pin(close_c.notified());
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        let mut fut = Box::pin(close_a.notified());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        // Only `b` is left idle; `a` never is while busy.
        assert_eq!(r.close_oldest_idle(5), 1);
        assert_eq!(r.close_oldest_idle(5), 0);
        r.remove(c);
        r.remove(b);
        r.request_ended(a, t0 + Duration::from_millis(4));
        assert_eq!(r.idle_since(a), Some(t0 + Duration::from_millis(4)));
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }

    #[test]
    fn every_second_reports_a_count() {
        let mut e = EverySecond::default();
        assert_eq!(e.hit(), Some(1));
        assert_eq!(e.hit(), None);
        assert_eq!(e.hit(), None);
        e.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(e.hit(), Some(3));
    }
}
