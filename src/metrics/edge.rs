//! The series of the HTTP edge and of the per-client limits.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{family, Metrics};

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

/// The series of the HTTP edge and the per-client limits.
pub(super) struct Edge {
    http_connections: Gauge,
    limited: Vec<Counter>,
    accept_errors: Counter,
    clients_tracked: Gauge,
    tls_handshake_failures: Counter,
}

impl Edge {
    pub(super) fn register(registry: &mut Registry) -> Edge {
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open TCP connections that are not WebSockets (reading or answering a request, or idle between requests)",
            http_connections.clone(),
        );
        let limited = family(
            registry,
            "limited",
            "Connections, requests and room entries refused or cut off by a limit of the HTTP edge or of a client, by limit",
            "reason",
            &Limited::ALL,
            Limited::as_str,
        );
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

impl Metrics {
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
}
