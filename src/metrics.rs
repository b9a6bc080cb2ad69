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

mod edge;
mod pressure;

use self::edge::Edge;
pub use self::edge::Limited;
use self::pressure::Pressure;
pub use self::pressure::{QueueLimit, RateLimit, Refusal, SenderClosed};

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

        let relayed = family(
            &mut registry,
            "messages_relayed",
            "Messages delivered to a peer, by type (a broadcast counts once per receiver)",
            "type",
            &RelayKind::ALL,
            RelayKind::as_str,
        );
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
        let rejected = family(
            &mut registry,
            "upgrades_rejected",
            "WebSocket upgrades refused before upgrading, by reason",
            "reason",
            &Rejection::ALL,
            Rejection::as_str,
        );
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
