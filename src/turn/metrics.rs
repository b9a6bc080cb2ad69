//! The relay's Prometheus series (`signal_turn_*`), registered into the
//! server's registry by `Metrics::new`. As there, every labelled series is
//! made up front and counting is one atomic add.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::filter::PeerRefusal;

/// Why the relay refused a request or dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// MESSAGE-INTEGRITY did not match the username's credential (401).
    WrongCredential,
    /// The username's expiry has passed (401).
    Expired,
    /// The username is not of the REST scheme (401).
    MalformedUsername,
    /// A peer address the filter refuses (403).
    Peer(PeerRefusal),
    /// The credential's label holds its maximum of allocations (486).
    UserQuota,
    /// The relay holds its maximum of allocations (508).
    TotalQuota,
    /// No relay port was free, or too many clients are mid-handshake (508,
    /// or the request is dropped).
    Capacity,
    /// REQUESTED-TRANSPORT other than UDP (442).
    UnsupportedTransport,
    /// A relayed packet over a bandwidth bound, dropped.
    Bandwidth,
    /// A relayed packet dropped because the client's connection is not
    /// taking data fast enough (TCP) or its socket buffer is full (UDP).
    ClientBacklog,
}

impl Refusal {
    const COUNT: usize = 9 + PeerRefusal::ALL.len();

    fn index(self) -> usize {
        match self {
            Refusal::WrongCredential => 0,
            Refusal::Expired => 1,
            Refusal::MalformedUsername => 2,
            Refusal::UserQuota => 3,
            Refusal::TotalQuota => 4,
            Refusal::Capacity => 5,
            Refusal::UnsupportedTransport => 6,
            Refusal::Bandwidth => 7,
            Refusal::ClientBacklog => 8,
            Refusal::Peer(p) => 9 + p as usize,
        }
    }

    fn all() -> impl Iterator<Item = Refusal> {
        [
            Refusal::WrongCredential,
            Refusal::Expired,
            Refusal::MalformedUsername,
            Refusal::UserQuota,
            Refusal::TotalQuota,
            Refusal::Capacity,
            Refusal::UnsupportedTransport,
            Refusal::Bandwidth,
            Refusal::ClientBacklog,
        ]
        .into_iter()
        .chain(PeerRefusal::ALL.into_iter().map(Refusal::Peer))
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::WrongCredential => "wrong_credential",
            Refusal::Expired => "expired",
            Refusal::MalformedUsername => "malformed_username",
            Refusal::Peer(p) => p.as_str(),
            Refusal::UserQuota => "user_quota",
            Refusal::TotalQuota => "total_quota",
            Refusal::Capacity => "capacity",
            Refusal::UnsupportedTransport => "unsupported_transport",
            Refusal::Bandwidth => "bandwidth",
            Refusal::ClientBacklog => "client_backlog",
        }
    }
}

/// The client transport of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS (on TCP).
    Tls,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Which way a relayed packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the TURN client out to its peer.
    ToPeer,
    /// From a peer back to the TURN client.
    ToClient,
}

type Labels = [(&'static str, &'static str); 1];

/// Handles of every `signal_turn_*` series. Clones share the counters.
#[derive(Clone)]
pub struct TurnMetrics {
    families: Families,
    allocations: [Gauge; 3],
    allocations_total: [Counter; 3],
    packets: [Counter; 2],
    bytes: [Counter; 2],
    refusals: Vec<Counter>,
}

#[derive(Clone, Default)]
struct Families {
    allocations: Family<Labels, Gauge>,
    created: Family<Labels, Counter>,
    packets: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
}

impl Default for TurnMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TurnMetrics {
    /// Fresh series, registered nowhere yet.
    pub fn new() -> Self {
        let f = Families::default();
        let transports = [Transport::Udp, Transport::Tcp, Transport::Tls];
        let allocations = transports.map(|t| {
            f.allocations
                .get_or_create(&[("transport", t.as_str())])
                .clone()
        });
        let allocations_total = transports.map(|t| {
            f.created
                .get_or_create(&[("transport", t.as_str())])
                .clone()
        });
        let directions = ["to_peer", "to_client"];
        let packets = directions.map(|d| f.packets.get_or_create(&[("direction", d)]).clone());
        let bytes = directions.map(|d| f.bytes.get_or_create(&[("direction", d)]).clone());
        let mut refusals = vec![Counter::default(); Refusal::COUNT];
        for r in Refusal::all() {
            refusals[r.index()] = f.refusals.get_or_create(&[("reason", r.as_str())]).clone();
        }
        TurnMetrics {
            families: f,
            allocations,
            allocations_total,
            packets,
            bytes,
            refusals,
        }
    }

    /// The series of this process's relay (there is at most one per
    /// process); `Metrics::new` registers them, so `/metrics` shows them.
    pub fn process() -> &'static TurnMetrics {
        static PROCESS: std::sync::OnceLock<TurnMetrics> = std::sync::OnceLock::new();
        PROCESS.get_or_init(TurnMetrics::new)
    }

    /// Registers the series into `registry`, prefixed `turn_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("turn");
        let f = self.families.clone();
        sub.register(
            "allocations",
            "Live TURN allocations, by client transport",
            f.allocations,
        );
        sub.register(
            "allocations_created",
            "TURN allocations granted, by client transport",
            f.created,
        );
        sub.register(
            "relayed_packets",
            "Packets relayed, by direction",
            f.packets,
        );
        sub.register(
            "relayed_bytes",
            "Payload bytes relayed, by direction",
            f.bytes,
        );
        sub.register(
            "refusals",
            "Requests refused and packets dropped by the relay, by reason",
            f.refusals,
        );
    }

    /// An allocation was granted.
    pub fn allocation_opened(&self, t: Transport) {
        self.allocations[t as usize].inc();
        self.allocations_total[t as usize].inc();
    }

    /// An allocation ended.
    pub fn allocation_closed(&self, t: Transport) {
        self.allocations[t as usize].dec();
    }

    /// Live allocations over `t`.
    pub fn allocations(&self, t: Transport) -> i64 {
        self.allocations[t as usize].get()
    }

    /// Allocations granted so far over transport `t`.
    pub fn allocations_created(&self, t: Transport) -> u64 {
        self.allocations_total[t as usize].get()
    }

    /// A packet with `bytes` of payload was relayed.
    pub fn relayed(&self, d: Direction, bytes: usize) {
        self.packets[d as usize].inc();
        self.bytes[d as usize].inc_by(bytes as u64);
    }

    /// Packets relayed in direction `d`.
    pub fn packets(&self, d: Direction) -> u64 {
        self.packets[d as usize].get()
    }

    /// Something was refused.
    pub fn refused(&self, r: Refusal) {
        self.refusals[r.index()].inc();
    }

    /// Refusals for `r` so far.
    pub fn refusals(&self, r: Refusal) -> u64 {
        self.refusals[r.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn every_series_is_exported_from_the_start() {
        let mut registry = Registry::with_prefix("signal");
        let m = TurnMetrics::new();
        m.register(&mut registry);
        m.allocation_opened(Transport::Udp);
        m.relayed(Direction::ToPeer, 200);
        m.refused(Refusal::Peer(PeerRefusal::Loopback));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "signal_turn_allocations{transport=\"udp\"} 1",
            "signal_turn_allocations{transport=\"tcp\"} 0",
            "signal_turn_allocations_created_total{transport=\"udp\"} 1",
            "signal_turn_relayed_packets_total{direction=\"to_peer\"} 1",
            "signal_turn_relayed_bytes_total{direction=\"to_peer\"} 200",
            "signal_turn_relayed_packets_total{direction=\"to_client\"} 0",
            "signal_turn_refusals_total{reason=\"peer_loopback\"} 1",
            "signal_turn_refusals_total{reason=\"expired\"} 0",
            "signal_turn_refusals_total{reason=\"bandwidth\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(m.refusals(Refusal::Peer(PeerRefusal::Loopback)), 1);
    }
}
