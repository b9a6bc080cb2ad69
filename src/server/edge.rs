//! The edge: the accept loop, and each TCP connection until it is a
//! WebSocket, with the limits that keep hostile connections from holding
//! descriptors and memory:
//!
//! - a client over its connections (counted from accept, per address or
//!   IPv6 /64) is answered HTTP 429 a few times, then closed at once;
//! - a request head must arrive within `--header-timeout` and fit in
//!   `--max-header-bytes` (hyper's HTTP/1 server: closed, or HTTP 431); the
//!   same timeout bounds the idle time between two requests;
//! - connections that are not WebSockets are at most
//!   `--max-http-connections` (an eighth of the open-files limit by
//!   default): when full, the oldest is closed to make room, so an honest
//!   request, which takes milliseconds, always gets in;
//! - a connection is plain HTTP for at most `--http-timeout`;
//! - with TLS, the handshake counts in the header timeout (its deadline is
//!   the first request head's, from accept) and in the cap of connections
//!   that are not WebSockets, so a client that never finishes it holds its
//!   slot no longer than one that never sends its request;
//! - an accept that fails (at the open-files limit) backs off, from 5 ms up
//!   to 1 s, and is logged at most once a second.
//!
//! A connection is served by [`Edge::serve`], generic over its byte stream:
//! the TCP stream, or the TLS stream around it ([`Edge::handshake`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::clients::{Admission, ClientSlot, Clients, ProxyTrust};
use crate::config::{Config, DEFAULT_MAX_HTTP_CONNECTIONS};
use crate::metrics::{Limited, Metrics};

/// Descriptors kept beside the connections: the listener, standard streams,
/// the runtime's, Redis connections, a log file.
pub const RESERVED_DESCRIPTORS: usize = 64;
/// The first back-off after a failed accept; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a request knows of its connection (a request extension).
#[derive(Debug)]
pub(super) struct Peer {
    /// The TCP peer (a proxy, behind one).
    pub addr: SocketAddr,
    /// The connection's count in its client's limit, taken at accept;
    /// `None` for a connection from a trusted proxy, whose clients are
    /// known from each request's headers. A WebSocket upgrade takes it into
    /// its session ([`Peer::take_slot`]): owned there, not shared.
    slot: Mutex<Option<ClientSlot>>,
    /// Whether the connection came through a trusted proxy.
    proxied: bool,
    /// A whole request head has arrived on the connection.
    requested: AtomicBool,
}

impl Peer {
    /// Whether the connection is counted under its own address (not
    /// through a trusted proxy).
    pub fn counted(&self) -> bool {
        !self.proxied
    }

    /// The connection's count, for the session it becomes.
    pub fn take_slot(&self) -> Option<ClientSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The limits of the edge and what they count into.
pub(super) struct Edge {
    builder: http1::Builder,
    http: Arc<HttpConns>,
    clients: Clients,
    proxy: ProxyTrust,
    header_timeout: Duration,
    http_timeout: Duration,
    metrics: Metrics,
    /// What a connection over its client's limit is served: HTTP 429.
    refusal: Router,
}

impl Edge {
    pub(super) fn new(
        config: &Config,
        max_http: usize,
        clients: Clients,
        metrics: Metrics,
    ) -> Arc<Edge> {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .max_header_size(config.max_header_bytes)
            // hyper's smallest allowed read buffer is 8 KiB.
            .max_buf_size(config.max_header_bytes.max(8192))
            .keep_alive(true);
        let limit = config.max_connections_per_client;
        Arc::new(Edge {
            builder,
            http: Arc::new(HttpConns {
                cap: max_http.max(1),
                pool: Mutex::new(Pool::default()),
                live: std::sync::atomic::AtomicUsize::new(0),
                metrics: metrics.clone(),
            }),
            clients,
            proxy: config.proxy.clone(),
            header_timeout: config.header_timeout,
            http_timeout: config.http_timeout,
            metrics,
            refusal: Router::new().fallback(move || super::routes::client_over_limit(limit)),
        })
    }

    /// Counts a new connection and serves it in its own task.
    fn spawn(
        self: &Arc<Self>,
        tcp: TcpStream,
        addr: SocketAddr,
        router: &Router,
        tls: Option<&TlsAcceptor>,
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        let (slot, refused) = if self.proxy.is_proxy(addr.ip()) {
            (None, false)
        } else {
            match self.clients.connect(addr.ip()) {
                Admission::Admit(slot) => (Some(slot), false),
                Admission::Refuse(slot) => (Some(slot), true),
                Admission::Drop => {
                    debug!(client = %addr.ip(), "connection closed: client far over its connection limit");
                    return;
                }
            }
        };
        if refused {
            debug!(client = %addr.ip(), "connection refused (429): client over its connection limit");
        }
        let accepted = tokio::time::Instant::now();
        let pending = self.http.enter();
        let router = if refused { &self.refusal } else { router }.clone();
        let peer = Arc::new(Peer {
            addr,
            proxied: slot.is_none(),
            slot: Mutex::new(slot),
            requested: AtomicBool::new(false),
        });
        let edge = Arc::clone(self);
        let stop = stop.clone();
        let tls = tls.cloned();
        tracker.spawn(async move {
            if !edge.first_bytes(&tcp, &pending, &stop).await {
                return;
            }
            let Some(tls) = tls else {
                return edge.serve(tcp, peer, router, pending, accepted, stop).await;
            };
            // The handshake happens inside the connection's slot, under the
            // first request head's deadline.
            let Some(mut stream) = edge.handshake(&tls, tcp, &pending, accepted, &stop).await
            else {
                return;
            };
            if crate::tls::is_acme_validation(stream.get_ref().1) {
                // The CA has seen the challenge certificate: done.
                debug!(peer = %addr, "TLS-ALPN-01 validation answered");
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                return;
            }
            edge.serve(stream, peer, router, pending, accepted, stop)
                .await;
        });
    }

    /// The TLS handshake of a new connection, cut off at the first request
    /// head's deadline (`accepted` plus the header timeout), when the
    /// connection must make room, or at shutdown.
    async fn handshake(
        &self,
        tls: &TlsAcceptor,
        tcp: TcpStream,
        pending: &Pending,
        accepted: tokio::time::Instant,
        stop: &CancellationToken,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let peer = tcp.peer_addr().ok();
        let cut = tokio::select! {
            done = tls.accept(tcp) => match done {
                Ok(stream) => return Some(stream),
                Err(e) => {
                    self.metrics.tls_handshake_failed();
                    debug!(?peer, "TLS handshake failed: {e}");
                    return None;
                }
            },
            _ = tokio::time::sleep_until(accepted + self.header_timeout) => Limited::HeaderTimeout,
            _ = pending.evict.notified() => Limited::HttpEvicted,
            _ = stop.cancelled() => return None,
        };
        self.metrics.limited(cut);
        debug!(?peer, ?cut, "TLS handshake cut off");
        None
    }

    /// Waits for a new connection's first bytes, holding nothing but its
    /// task meanwhile (hyper reserves its 8 KiB read buffer at its first
    /// read): `false` if the connection must close first.
    async fn first_bytes(
        &self,
        tcp: &TcpStream,
        pending: &Pending,
        stop: &CancellationToken,
    ) -> bool {
        let mut byte = [0u8; 1];
        let cut = tokio::select! {
            // `readable` may wake without data; `peek` waits for a byte
            // (or the end) without taking it.
            peeked = tcp.peek(&mut byte) => return matches!(peeked, Ok(1..)),
            _ = tokio::time::sleep(self.header_timeout) => Limited::HeaderTimeout,
            _ = pending.evict.notified() => Limited::HttpEvicted,
            _ = stop.cancelled() => return false,
        };
        self.metrics.limited(cut);
        false
    }

    /// Serves one connection's HTTP requests until it ends, becomes a
    /// WebSocket, or a limit cuts it off. Its first request head must be
    /// complete within the header timeout of `accepted`; hyper times the
    /// later ones (and the idle time before them).
    async fn serve<IO>(
        &self,
        io: IO,
        peer: Arc<Peer>,
        router: Router,
        pending: Pending,
        accepted: tokio::time::Instant,
        stop: CancellationToken,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = peer.addr;
        let seen = Arc::clone(&peer);
        let service = router.map_request(move |request: Request<Incoming>| {
            peer.requested.store(true, Ordering::Relaxed);
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(Arc::clone(&peer));
            request
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(conn);
        let lifetime = tokio::time::sleep(self.http_timeout);
        tokio::pin!(lifetime);
        let evicted = pending.evict.notified();
        tokio::pin!(evicted);
        let first_head = tokio::time::sleep_until(accepted + self.header_timeout);
        tokio::pin!(first_head);
        let mut headed = false;
        let mut draining = false;
        let cut = loop {
            tokio::select! {
                _ = &mut first_head, if !headed => {
                    if !seen.requested.load(Ordering::Relaxed) {
                        break Some(Limited::HeaderTimeout);
                    }
                    headed = true;
                }
                result = conn.as_mut() => break match result {
                    Ok(()) => None,
                    Err(e) if e.is_timeout() => Some(Limited::HeaderTimeout),
                    Err(e) if e.is_parse_too_large() => Some(Limited::HeaderTooLarge),
                    Err(e) => {
                        debug!(peer = %addr, "HTTP connection failed: {e}");
                        None
                    }
                },
                _ = &mut evicted => break Some(Limited::HttpEvicted),
                _ = &mut lifetime => break Some(Limited::HttpLifetime),
                _ = stop.cancelled(), if !draining => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        };
        if let Some(why) = cut {
            self.metrics.limited(why);
            debug!(peer = %addr, ?why, "HTTP connection cut off");
        }
        // `pending` gives up its place as this returns.
    }
}

/// Connections told to close to make room that may still be closing before
/// the accept loop waits for them: what keeps the cap on descriptors hard
/// when a flood of connections outpaces their tasks.
const EVICTING: usize = 32;

/// The connections that are not WebSockets, oldest first.
struct HttpConns {
    cap: usize,
    pool: Mutex<Pool>,
    /// Connections whose tasks hold their socket: those in `pool`, and
    /// those told to close that have not closed yet.
    live: std::sync::atomic::AtomicUsize,
    metrics: Metrics,
}

#[derive(Default)]
struct Pool {
    next: u64,
    open: BTreeMap<u64, Arc<Notify>>,
}

/// A connection's place among those that are not WebSockets; dropping it
/// gives the place up.
struct Pending {
    conns: Arc<HttpConns>,
    id: u64,
    /// Notified when the connection must close to make room.
    evict: Arc<Notify>,
}

impl HttpConns {
    /// Waits while the connections told to close have not closed yet.
    async fn room(&self) {
        while self.live.load(Ordering::Relaxed) >= self.cap + EVICTING {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A place for a new connection; at the cap, the oldest is told to close.
    fn enter(self: &Arc<Self>) -> Pending {
        let evict = Arc::new(Notify::new());
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.open.len() >= self.cap {
            if let Some((_, oldest)) = pool.open.pop_first() {
                oldest.notify_one();
            }
        }
        let id = pool.next;
        pool.next += 1;
        pool.open.insert(id, Arc::clone(&evict));
        drop(pool);
        self.live.fetch_add(1, Ordering::Relaxed);
        self.metrics.http_connections_add(1);
        Pending {
            conns: Arc::clone(self),
            id,
            evict,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pool = self.conns.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.open.remove(&self.id);
        drop(pool);
        self.conns.live.fetch_sub(1, Ordering::Relaxed);
        self.conns.metrics.http_connections_add(-1);
    }
}

/// Accepts connections until `stop`, then drops the listener (new
/// connections are refused from then on); with `tls`, every connection is
/// TLS.
pub(super) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    edge: Arc<Edge>,
    stop: CancellationToken,
    tracker: TaskTracker,
) -> io::Result<()> {
    let mut backoff = Backoff::default();
    loop {
        // Not more connections than descriptors allow: evicted ones close
        // first.
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = edge.http.room() => {}
        }
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, addr)) => {
                backoff.reset();
                // Signalling messages are small and latency-bound.
                if let Err(err) = tcp.set_nodelay(true) {
                    debug!("TCP_NODELAY failed: {err}");
                }
                edge.spawn(tcp, addr, &router, tls.as_ref(), &stop, &tracker);
            }
            // One connection's trouble, not the listener's: go on.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                edge.metrics.accept_error();
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = backoff.wait(&e) => {}
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The back-off after failed accepts (at the open-files limit, say): from
/// 5 ms, doubling to 1 s; one log line a second at most.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
    logged: Option<Instant>,
    unlogged: u64,
}

impl Backoff {
    fn reset(&mut self) {
        self.delay = None;
    }

    async fn wait(&mut self, err: &io::Error) {
        let delay = self
            .delay
            .map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
        self.delay = Some(delay);
        if self
            .logged
            .map_or(true, |t| t.elapsed() >= Duration::from_secs(1))
        {
            warn!(
                more = self.unlogged,
                "accept error: {err}; retrying in {delay:?}"
            );
            self.logged = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        tokio::time::sleep(delay).await;
    }
}

/// Connections the kernel queues for the accept loop (capped by the
/// system's `somaxconn`): a burst of thousands of connections is accepted
/// in turn rather than dropped (the usual 128 drops the rest, and clients
/// retry a second later).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with a [`LISTEN_BACKLOG`]-deep queue.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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

/// The cap on connections that are not WebSockets: `--max-http-connections`,
/// or [`DEFAULT_MAX_HTTP_CONNECTIONS`] or an eighth of the open-files limit,
/// whichever is smaller. Warns when the limits do not fit in the open-files
/// limit.
pub(super) fn max_http_connections(config: &Config) -> usize {
    let nofile = open_files_limit();
    let max_http = config
        .max_http_connections
        .unwrap_or_else(|| {
            nofile.map_or(DEFAULT_MAX_HTTP_CONNECTIONS, |n| {
                usize::try_from(n / 8)
                    .unwrap_or(usize::MAX)
                    .min(DEFAULT_MAX_HTTP_CONNECTIONS)
            })
        })
        .max(1);
    if let Some(n) = nofile {
        let need = config.max_connections + max_http + RESERVED_DESCRIPTORS;
        if need as u64 > n {
            warn!(
                open_files_limit = n,
                "--max-connections {} + --max-http-connections {max_http} + {RESERVED_DESCRIPTORS} reserved \
                 descriptors exceed the open-files limit {n}: at full load, new connections wait \
                 unaccepted; lower --max-connections to {} or raise the limit",
                config.max_connections,
                (n as usize).saturating_sub(max_http + RESERVED_DESCRIPTORS),
            );
        }
    }
    max_http
}

/// The process's open-files limit (soft), if it has one.
fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit into `lim`, which it owns.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
            || lim.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        // `rlim_t` is not `u64` everywhere.
        #[allow(clippy::unnecessary_cast)]
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the open-files limit to its hard limit (as Go programs do), so
/// that the server's defaults fit; logs what it did. For the binary, once
/// at start.
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write `lim` only.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
                return;
            }
            let from = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                info!(
                    from,
                    to = lim.rlim_max,
                    "open-files limit raised to its hard limit"
                );
            }
        }
    }
}
