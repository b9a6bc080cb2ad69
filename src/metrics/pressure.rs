//! The series of the queue limits (`rooms::budget`) and of the session's
//! rate limiters.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{family, Metrics};

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

/// The series of the queue limits (`rooms::budget`, the session's limiters).
pub(super) struct Pressure {
    slow: Vec<Counter>,
    refused: Vec<Counter>,
    rate_limited: Vec<Counter>,
    closed: Vec<Counter>,
    queued_bytes: Gauge,
}

impl Pressure {
    pub(super) fn new(registry: &mut Registry) -> Self {
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

impl Metrics {
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
}
