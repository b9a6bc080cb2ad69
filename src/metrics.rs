//! Prometheus metrics, served at `GET /metrics`.
//!
//! Every labelled series is created up front and its handle kept, so counting
//! on the hot path is one atomic add: no label lookup, no lock. Labels are
//! closed sets (message types, error codes, reasons): never a token or a peer
//! id.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, RelayKind};

/// Why an upgrade was refused before it happened.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// `max_connections` reached (HTTP 503).
    TooManyConnections,
    /// `Origin` not allowed (HTTP 403).
    Origin,
    /// Query-string token matches no room (HTTP 404).
    UnknownToken,
    /// A malformed upgrade request: not GET, no `Host`, a missing, bad or
    /// repeated `Sec-WebSocket-Key`, another version (HTTP 400 or 426).
    BadHandshake,
    /// The client holds its maximum of connections (HTTP 429).
    ClientConnections,
    /// A `?join=`/`?watch=` upgrade from a client over its attaches per
    /// minute (HTTP 429).
    ClientAttaches,
    /// Token mode: a `?token=` (or a room token) refused (HTTP 401 or 403).
    Unauthorized,
}

impl Rejection {
    const ALL: [Rejection; 7] = [
        Rejection::TooManyConnections,
        Rejection::Origin,
        Rejection::UnknownToken,
        Rejection::BadHandshake,
        Rejection::ClientConnections,
        Rejection::ClientAttaches,
        Rejection::Unauthorized,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Rejection::TooManyConnections => "too_many_connections",
            Rejection::Origin => "origin",
            Rejection::UnknownToken => "unknown_token",
            Rejection::BadHandshake => "bad_handshake",
            Rejection::ClientConnections => "client_connections",
            Rejection::ClientAttaches => "client_attaches",
            Rejection::Unauthorized => "unauthorized",
        }
    }
}

/// A limit of the HTTP edge or of one client that fired.
#[derive(Debug, Clone, Copy)]
pub enum Limited {
    /// A connection sent no complete request head within the header
    /// timeout (or stayed idle that long between requests): closed.
    HeaderTimeout,
    /// A request head over the header size limit: HTTP 431, closed.
    HeaderTooLarge,
    /// The oldest connection that is not a WebSocket was closed to make
    /// room for a new one (`--max-http-connections`).
    HttpEvicted,
    /// A connection was still not a WebSocket at the end of `--http-timeout`.
    HttpLifetime,
    /// A client over its concurrent connections (HTTP 429, or closed at
    /// once when far over).
    ClientConnections,
    /// A client over its room creations per minute (`create_rate_limited`).
    ClientRoomCreations,
    /// A client over its attaches per minute (`attach_rate_limited`, or
    /// HTTP 429 for a query-string attach).
    ClientAttaches,
    /// The server holds its maximum of rooms (`server_full`).
    Rooms,
}

impl Limited {
    const ALL: [Limited; 8] = [
        Limited::HeaderTimeout,
        Limited::HeaderTooLarge,
        Limited::HttpEvicted,
        Limited::HttpLifetime,
        Limited::ClientConnections,
        Limited::ClientRoomCreations,
        Limited::ClientAttaches,
        Limited::Rooms,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Limited::HeaderTimeout => "header_timeout",
            Limited::HeaderTooLarge => "header_too_large",
            Limited::HttpEvicted => "http_evicted",
            Limited::HttpLifetime => "http_lifetime",
            Limited::ClientConnections => "client_connections",
            Limited::ClientRoomCreations => "client_room_creations",
            Limited::ClientAttaches => "client_attaches",
            Limited::Rooms => "rooms",
        }
    }
}

/// The limit that found a connection to be a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// Its outbox held `--outbox-capacity` messages.
    Messages,
    /// Its queued bytes reached `--outbox-max-bytes`.
    Bytes,
    /// Its queued bytes stayed above `--outbox-soft-bytes` for
    /// `--outbox-soft-time`.
    SoftBytes,
    /// Bytes waited `--write-stall-timeout` with the socket taking none.
    WriteStall,
    /// The server's `--max-queued-bytes` was reached and its queue was among
    /// the largest.
    ServerBudget,
}

impl QueueLimit {
    const ALL: [QueueLimit; 5] = [
        QueueLimit::Messages,
        QueueLimit::Bytes,
        QueueLimit::SoftBytes,
        QueueLimit::WriteStall,
        QueueLimit::ServerBudget,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueLimit::Messages => "messages",
            QueueLimit::Bytes => "bytes",
            QueueLimit::SoftBytes => "soft_bytes",
            QueueLimit::WriteStall => "write_stall",
            QueueLimit::ServerBudget => "server_budget",
        }
    }
}

/// Why a guest's or watcher's message to its host was refused (`host_busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender's share of the host's queue was full.
    Share,
    /// The host's queue held all its guests' and watchers' shares (or the
    /// slots kept for the server's own messages were reached).
    HostQueue,
    /// The server's budget of queued bytes was reached.
    ServerBudget,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::Share, Refusal::HostQueue, Refusal::ServerBudget];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::Share => "share",
            Refusal::HostQueue => "host_queue",
            Refusal::ServerBudget => "server_budget",
        }
    }
}

/// Which of a sender's rate limits dropped a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// `--rate-limit` / `--rate-burst` (messages).
    Messages,
    /// `--rate-bytes` / `--rate-bytes-burst`.
    Bytes,
}

impl RateLimit {
    const ALL: [RateLimit; 2] = [RateLimit::Messages, RateLimit::Bytes];

    fn as_str(self) -> &'static str {
        match self {
            RateLimit::Messages => "messages",
            RateLimit::Bytes => "bytes",
        }
    }
}

/// Why the server closed (1008) a sender that went on sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderClosed {
    /// After `rate_limited`.
    RateLimit,
    /// After `--host-busy-limit` refusals with `host_busy`.
    HostBusy,
}

impl SenderClosed {
    const ALL: [SenderClosed; 2] = [SenderClosed::RateLimit, SenderClosed::HostBusy];

    fn as_str(self) -> &'static str {
        match self {
            SenderClosed::RateLimit => "rate_limit",
            SenderClosed::HostBusy => "host_busy",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];

/// The server's metrics. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    connections: Gauge,
    connections_total: Counter,
    rooms: Gauge,
    rooms_total: Counter,
    relayed: Vec<Counter>,
    bytes_relayed: Counter,
    errors: Vec<Counter>,
    rejected: Vec<Counter>,
    slow_peers: Counter,
    webhooks: crate::webhooks::WebhookMetrics,
    edge: Edge,
    pressure: Pressure,
}

/// The series of the HTTP edge and the per-client limits.
struct Edge {
    http_connections: Gauge,
    limited: Vec<Counter>,
    accept_errors: Counter,
    clients_tracked: Gauge,
    tls_handshake_failures: Counter,
}

impl Edge {
    fn register(registry: &mut Registry) -> Edge {
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open TCP connections that are not WebSockets (reading or answering a request, or idle between requests)",
            http_connections.clone(),
        );
        let limited_family = Family::<Labels, Counter>::default();
        registry.register(
            "limited",
            "Connections, requests and room entries refused or cut off by a limit of the HTTP edge or of a client, by limit",
            limited_family.clone(),
        );
        let limited = Limited::ALL
            .iter()
            .map(|l| {
                limited_family
                    .get_or_create(&[("reason", l.as_str())])
                    .clone()
            })
            .collect();
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Failed accepts of a TCP connection (for example at the open-files limit), each followed by a back-off",
            accept_errors.clone(),
        );
        let clients_tracked = Gauge::default();
        registry.register(
            "clients_tracked",
            "Client addresses whose per-client limits are being kept",
            clients_tracked.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the listening port that failed (not TLS, no common cipher, certificate refused by the client, no certificate yet); those cut off by the header timeout count in limited",
            tls_handshake_failures.clone(),
        );
        Edge {
            http_connections,
            limited,
            accept_errors,
            clients_tracked,
            tls_handshake_failures,
        }
    }
}

/// The series of the queue limits (`rooms::budget`, the session's limiters).
struct Pressure {
    slow: Vec<Counter>,
    refused: Vec<Counter>,
    rate_limited: Vec<Counter>,
    closed: Vec<Counter>,
    queued_bytes: Gauge,
}

/// Registers a family with one series per label value, all created now.
fn family<T: Copy>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[T],
    as_str: fn(T) -> &'static str,
) -> Vec<Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    values
        .iter()
        .map(|&v| family.get_or_create(&[(label, as_str(v))]).clone())
        .collect()
}

impl Pressure {
    fn new(registry: &mut Registry) -> Self {
        let queued_bytes = Gauge::default();
        registry.register(
            "queued_bytes",
            "Bytes queued for all connections (outboxes, writers and a fixed overhead per message)",
            queued_bytes.clone(),
        );
        Pressure {
            slow: family(
                registry,
                "slow_consumers",
                "Connections dropped as slow consumers, by the limit that found them",
                "limit",
                &QueueLimit::ALL,
                QueueLimit::as_str,
            ),
            refused: family(
                registry,
                "host_busy",
                "Guest and watcher messages refused at their host (host_busy), by reason",
                "reason",
                &Refusal::ALL,
                Refusal::as_str,
            ),
            rate_limited: family(
                registry,
                "rate_limited",
                "Messages dropped by their sender's rate limits, by limit",
                "limit",
                &RateLimit::ALL,
                RateLimit::as_str,
            ),
            closed: family(
                registry,
                "senders_closed",
                "Connections closed 1008 for sending on after rate_limited or host_busy",
                "reason",
                &SenderClosed::ALL,
                SenderClosed::as_str,
            ),
            queued_bytes,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("signal");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            connections_total.clone(),
        );
        let rooms = Gauge::default();
        registry.register("rooms", "Open rooms", rooms.clone());
        let rooms_total = Counter::default();
        registry.register("rooms_created", "Rooms created", rooms_total.clone());

        let relayed_family = Family::<Labels, Counter>::default();
        registry.register(
            "messages_relayed",
            "Messages delivered to a peer, by type (a broadcast counts once per receiver)",
            relayed_family.clone(),
        );
        let relayed = RelayKind::ALL
            .iter()
            .map(|k| {
                relayed_family
                    .get_or_create(&[("type", k.as_str())])
                    .clone()
            })
            .collect();
        let bytes_relayed = Counter::default();
        registry.register(
            "bytes_relayed",
            "Bytes of message text delivered to peers",
            bytes_relayed.clone(),
        );
        let errors_family = Family::<Labels, Counter>::default();
        registry.register(
            "errors",
            "Error replies sent to peers, by code",
            errors_family.clone(),
        );
        // The bridge's codes are never the server's to send: no series.
        let errors = ErrorCode::ALL
            .iter()
            .map(|c| {
                if c.is_from_bridge() {
                    Counter::default()
                } else {
                    errors_family.get_or_create(&[("code", c.as_str())]).clone()
                }
            })
            .collect();
        let rejected_family = Family::<Labels, Counter>::default();
        registry.register(
            "upgrades_rejected",
            "WebSocket upgrades refused before upgrading, by reason",
            rejected_family.clone(),
        );
        let rejected = Rejection::ALL
            .iter()
            .map(|r| {
                rejected_family
                    .get_or_create(&[("reason", r.as_str())])
                    .clone()
            })
            .collect();
        let slow_peers = Counter::default();
        registry.register(
            "slow_peers_dropped",
            "Connections dropped as slow consumers (not reading), whatever the limit",
            slow_peers.clone(),
        );
        let webhooks = crate::webhooks::WebhookMetrics::register(&mut registry);
        // The embedded TURN relay's series (signal_turn_*), shared by the
        // process's one relay.
        crate::turn::TurnMetrics::process().register(&mut registry);
        let edge = Edge::register(&mut registry);
        let pressure = Pressure::new(&mut registry);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                connections,
                connections_total,
                rooms,
                rooms_total,
                relayed,
                bytes_relayed,
                errors,
                rejected,
                slow_peers,
                webhooks,
                edge,
                pressure,
            }),
        }
    }

    /// A WebSocket connection opened.
    pub fn connection_opened(&self) {
        self.inner.connections.inc();
        self.inner.connections_total.inc();
    }

    /// A WebSocket connection closed.
    pub fn connection_closed(&self) {
        self.inner.connections.dec();
    }

    /// Open WebSocket connections now.
    pub fn connections(&self) -> i64 {
        self.inner.connections.get()
    }

    /// A room opened.
    pub fn room_opened(&self) {
        self.inner.rooms.inc();
        self.inner.rooms_total.inc();
    }

    /// A room closed.
    pub fn room_closed(&self) {
        self.inner.rooms.dec();
    }

    /// Open rooms now.
    pub fn rooms(&self) -> i64 {
        self.inner.rooms.get()
    }

    /// A message of `kind`, `bytes` long, was queued for one receiver.
    pub fn relayed(&self, kind: RelayKind, bytes: usize) {
        self.inner.relayed[kind.index()].inc();
        self.inner.bytes_relayed.inc_by(bytes as u64);
    }

    /// An error reply was sent.
    pub fn error(&self, code: ErrorCode) {
        self.inner.errors[code.index()].inc();
    }

    /// An upgrade was refused.
    pub fn rejected(&self, why: Rejection) {
        self.inner.rejected[why as usize].inc();
    }

    /// A peer was dropped for not reading.
    pub fn slow_peer_dropped(&self) {
        self.inner.slow_peers.inc();
    }

    /// The webhook delivery series (`signal_webhook_*`).
    pub fn webhooks(&self) -> &crate::webhooks::WebhookMetrics {
        &self.inner.webhooks
    }

    /// A TCP connection that is not a WebSocket opened (`+1`) or ended,
    /// or became one (`-1`).
    pub fn http_connections_add(&self, delta: i64) {
        self.inner.edge.http_connections.inc_by(delta);
    }

    /// Open TCP connections that are not WebSockets now.
    pub fn http_connections(&self) -> i64 {
        self.inner.edge.http_connections.get()
    }

    /// A limit of the edge or of a client fired.
    pub fn limited(&self, what: Limited) {
        self.inner.edge.limited[what as usize].inc();
    }

    /// An accept failed.
    pub fn accept_error(&self) {
        self.inner.edge.accept_errors.inc();
    }

    /// A TLS handshake on the listening port failed.
    pub fn tls_handshake_failed(&self) {
        self.inner.edge.tls_handshake_failures.inc();
    }

    /// Client addresses whose limits are kept now.
    pub fn set_clients_tracked(&self, n: usize) {
        self.inner
            .edge
            .clients_tracked
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A slow consumer was found by `limit` (the total of all limits is
    /// counted by [`Metrics::slow_peer_dropped`]).
    pub fn slow_consumer(&self, limit: QueueLimit) {
        self.inner.pressure.slow[limit as usize].inc();
    }

    /// A guest's or watcher's message to its host was refused.
    pub fn host_busy(&self, why: Refusal) {
        self.inner.pressure.refused[why as usize].inc();
    }

    /// A message was dropped by its sender's rate limit.
    pub fn rate_limited(&self, limit: RateLimit) {
        self.inner.pressure.rate_limited[limit as usize].inc();
    }

    /// A sender was closed for going on after being told to stop.
    pub fn sender_closed(&self, why: SenderClosed) {
        self.inner.pressure.closed[why as usize].inc();
    }

    /// The gauge of the server's queued bytes (shared with the budget that
    /// keeps it).
    pub fn queued_bytes(&self) -> Gauge {
        self.inner.pressure.queued_bytes.clone()
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_labelled_series_from_the_start() {
        let m = Metrics::new();
        m.relayed(RelayKind::Offer, 100);
        m.error(ErrorCode::TooLarge);
        m.rejected(Rejection::Origin);
        let text = m.render();
        assert!(
            text.contains("signal_messages_relayed_total{type=\"offer\"} 1"),
            "{text}"
        );
        assert!(text.contains("signal_messages_relayed_total{type=\"answer\"} 0"));
        assert!(text.contains("signal_bytes_relayed_total 100"));
        assert!(text.contains("signal_errors_total{code=\"too_large\"} 1"));
        assert!(text.contains("signal_upgrades_rejected_total{reason=\"origin\"} 1"));
        assert!(text.contains("signal_connections 0"));
        assert!(text.contains("signal_rooms 0"));
        assert!(!text.contains("viewer_limit"), "{text}");
        m.limited(Limited::HeaderTimeout);
        let text = m.render();
        assert!(text.contains("signal_limited_total{reason=\"header_timeout\"} 1"));
        assert!(text.contains("signal_limited_total{reason=\"rooms\"} 0"));
        assert!(text.contains("signal_upgrades_rejected_total{reason=\"bad_handshake\"} 0"));
        assert!(text.contains("signal_http_connections 0"));
        assert!(text.contains("signal_accept_errors_total 0"));
        m.slow_consumer(QueueLimit::WriteStall);
        m.host_busy(Refusal::Share);
        let text = m.render();
        assert!(text.contains("signal_slow_consumers_total{limit=\"write_stall\"} 1"));
        assert!(text.contains("signal_slow_consumers_total{limit=\"server_budget\"} 0"));
        assert!(text.contains("signal_host_busy_total{reason=\"share\"} 1"));
        assert!(text.contains("signal_rate_limited_total{limit=\"bytes\"} 0"));
        assert!(text.contains("signal_senders_closed_total{reason=\"host_busy\"} 0"));
        assert!(text.contains("signal_queued_bytes 0"));
    }
}
