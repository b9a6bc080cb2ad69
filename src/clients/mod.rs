//! Per-client limits: how many connections one client holds at once, how
//! often it creates rooms and enters them, and the total room cap. One
//! handle, [`Clients`], whose methods are the only way in.
//!
//! A client is an IPv4 address or an IPv6 /64 ([`ClientKey`]), taken from
//! the TCP peer, or from `X-Forwarded-For` behind a proxy the operator
//! trusts ([`ProxyTrust`]). Its state is one small entry in a sharded map:
//! created by its first connection or room, kept while it has connections
//! and for a minute after its last creation or attach (when both its
//! buckets are full again), then dropped. The map has a fixed capacity;
//! when it is full, entries of clients without connections go first, so
//! its memory is bounded whatever the number of addresses an attacker
//! has (docs/RELIABILITY.md).

mod address;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub use address::{ClientKey, ProxyTrust};

use crate::metrics::{Limited, Metrics};
use crate::protocol::{ErrorCode, InitRequest, PeerError};

/// Connections a client may open beyond its limit that are still answered
/// (HTTP 429) rather than closed at once: enough for a client to learn why,
/// too few to hold descriptors with.
pub const REFUSED_SLACK: u32 = 8;
/// Entries the map holds at least room for.
pub const MIN_TABLE: usize = 65_536;
/// How long an entry without connections is kept: its buckets refill
/// completely in this time.
const KEEP: Duration = Duration::from_secs(60);

/// The per-client limits (0 turns one off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections one client may hold at once (from accept: HTTP requests
    /// and WebSockets alike).
    pub connections: u32,
    /// Rooms one client may create per minute (a bucket of this many,
    /// refilled over a minute).
    pub creations_per_minute: u32,
    /// Rooms one client may enter (join or watch) per minute.
    pub attaches_per_minute: u32,
    /// Rooms this server holds at most (those waiting for their host
    /// included).
    pub max_rooms: usize,
    /// Client entries the map may hold.
    pub table: usize,
}

/// The per-client state of the server. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Clients {
    inner: Arc<Inner>,
}

struct Inner {
    limits: ClientLimits,
    table: DashMap<ClientKey, Entry>,
    /// Entries in `table` (kept here: `DashMap::len` visits every shard).
    count: AtomicUsize,
    /// When the map is next swept of expired entries (by size).
    sweep_at: AtomicUsize,
    epoch: Instant,
    metrics: Metrics,
}

/// One client's state: 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    connections: u32,
    creations: Bucket,
    attaches: Bucket,
    /// Last creation or attach, in deciseconds since `epoch` ([`NEVER`]
    /// if none).
    touched: u32,
}

/// `Entry::touched` of a client that never created or entered a room.
const NEVER: u32 = u32::MAX;

impl Entry {
    /// Whether the entry holds nothing worth keeping at `now`: no
    /// connection, and buckets full again (or never used).
    fn expired(&self, now: u32) -> bool {
        let keep = (KEEP.as_millis() / 100) as u32;
        self.connections == 0 && (self.touched == NEVER || now.saturating_sub(self.touched) >= keep)
    }
}

/// A token bucket refilled over a minute; `at` in deciseconds.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f32,
    at: u32,
}

impl Bucket {
    fn full(per_minute: u32, now: u32) -> Self {
        Bucket {
            tokens: per_minute as f32,
            at: now,
        }
    }

    fn refill(&mut self, per_minute: u32, now: u32) {
        let elapsed = now.saturating_sub(self.at) as f32 / 10.0;
        self.tokens = (self.tokens + elapsed * per_minute as f32 / 60.0).min(per_minute as f32);
        self.at = now;
    }

    /// Seconds until one token is there.
    fn wait(&self, per_minute: u32) -> u32 {
        ((1.0 - self.tokens).max(0.0) * 60.0 / per_minute as f32).ceil() as u32
    }
}

/// What [`Clients::connect`] decides about a new connection.
pub enum Admission {
    /// Within the client's limit: serve it.
    Admit(ClientSlot),
    /// Over the limit: answer its request with HTTP 429, then close it.
    Refuse(ClientSlot),
    /// Far over the limit: close it at once.
    Drop,
}

/// One counted connection of a client; dropping it ends the count.
pub struct ClientSlot {
    clients: Clients,
    key: ClientKey,
}

impl ClientSlot {
    /// The client this connection counts for.
    pub fn key(&self) -> ClientKey {
        self.key
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.disconnect(self.key);
    }
}

impl std::fmt::Debug for ClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientSlot({})", self.key)
    }
}

impl Clients {
    /// The state for `limits`, reporting to `metrics`.
    pub fn new(limits: ClientLimits, metrics: Metrics) -> Self {
        let limits = ClientLimits {
            table: limits.table.max(1024),
            ..limits
        };
        Clients {
            inner: Arc::new(Inner {
                limits,
                table: DashMap::new(),
                count: AtomicUsize::new(0),
                sweep_at: AtomicUsize::new(limits.table / 2),
                epoch: Instant::now(),
                metrics,
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ClientLimits {
        self.inner.limits
    }

    /// Client entries held now.
    pub fn tracked(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }

    fn counted(&self, delta: isize) {
        let inner = &self.inner;
        let n = if delta > 0 {
            inner.count.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            inner
                .count
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1)
        };
        inner.metrics.set_clients_tracked(n);
    }

    fn now(&self) -> u32 {
        (self.inner.epoch.elapsed().as_millis() / 100).min(u128::from(u32::MAX)) as u32
    }

    /// A new entry (counted).
    fn fresh(&self, now: u32) -> Entry {
        self.counted(1);
        let l = &self.inner.limits;
        Entry {
            connections: 0,
            creations: Bucket::full(l.creations_per_minute, now),
            attaches: Bucket::full(l.attaches_per_minute, now),
            touched: NEVER,
        }
    }

    /// Makes room for a new entry when the map is at its sweep mark:
    /// expired entries go, then, if it is still full, every entry of a
    /// client without connections.
    fn make_room(&self) {
        let inner = &self.inner;
        if self.tracked() < inner.sweep_at.load(Ordering::Relaxed) {
            return;
        }
        let now = self.now();
        inner.table.retain(|_, e| !e.expired(now));
        if inner.table.len() >= inner.limits.table {
            inner.table.retain(|_, e| e.connections > 0);
        }
        let len = inner.table.len();
        inner.count.store(len, Ordering::Relaxed);
        inner.metrics.set_clients_tracked(len);
        // The next sweep when the map has doubled, or at its capacity.
        let next = (len * 2).clamp(1024, inner.limits.table);
        inner.sweep_at.store(next, Ordering::Relaxed);
    }

    /// Counts a new connection of the client at `ip`.
    pub fn connect(&self, ip: IpAddr) -> Admission {
        let key = ClientKey::of(ip);
        let limit = self.inner.limits.connections;
        self.make_room();
        let now = self.now();
        let mut entry = self
            .inner
            .table
            .entry(key)
            .or_insert_with(|| self.fresh(now));
        let n = entry.connections;
        let admit = limit == 0 || n < limit;
        if !admit && n >= limit.saturating_add(REFUSED_SLACK) {
            drop(entry);
            self.inner.metrics.limited(Limited::ClientConnections);
            return Admission::Drop;
        }
        entry.connections += 1;
        drop(entry);
        let slot = ClientSlot {
            clients: self.clone(),
            key,
        };
        if admit {
            Admission::Admit(slot)
        } else {
            self.inner.metrics.limited(Limited::ClientConnections);
            Admission::Refuse(slot)
        }
    }

    fn disconnect(&self, key: ClientKey) {
        let now = self.now();
        // Gone with its last connection, unless its buckets still count.
        let removed = self.inner.table.remove_if_mut(&key, |_, e| {
            e.connections = e.connections.saturating_sub(1);
            e.expired(now)
        });
        if removed.is_some() {
            self.counted(-1);
        }
    }

    /// Whether the client at `ip` may enter a room now (nothing counted).
    pub fn may_attach(&self, ip: IpAddr) -> bool {
        let per_minute = self.inner.limits.attaches_per_minute;
        if per_minute == 0 {
            return true;
        }
        let now = self.now();
        self.inner.table.get(&ClientKey::of(ip)).map_or(true, |e| {
            let mut b = e.attaches;
            b.refill(per_minute, now);
            b.tokens >= 1.0
        })
    }

    /// Counts an `init` of the client at `ip` against its limits: a room
    /// creation against its creations per minute and the total room cap
    /// (`open_rooms` is how many this server holds), an attach against its
    /// attaches per minute. A resume is not limited here (it needs the
    /// room's secret, and replaces its host).
    pub fn admit_init(
        &self,
        ip: IpAddr,
        request: &InitRequest<'_>,
        open_rooms: usize,
    ) -> Result<(), PeerError> {
        let l = self.inner.limits;
        match request {
            // A named room's host may open it: counted as a creation.
            InitRequest::Create | InitRequest::Host(_) => {
                if l.max_rooms > 0 && open_rooms >= l.max_rooms {
                    self.inner.metrics.limited(Limited::Rooms);
                    return Err(PeerError::new(
                        ErrorCode::ServerFull,
                        format!(
                            "this server holds its maximum of {} rooms; try again later",
                            l.max_rooms
                        ),
                    ));
                }
                self.take(ip, l.creations_per_minute, |e| &mut e.creations)
                    .map_err(|wait| {
                        self.inner.metrics.limited(Limited::ClientRoomCreations);
                        PeerError::new(
                            ErrorCode::CreateRateLimited,
                            format!(
                                "too many rooms created from this address (limit {} per minute); try again in {wait} s",
                                l.creations_per_minute
                            ),
                        )
                    })
            }
            InitRequest::Attach(..) => self
                .take(ip, l.attaches_per_minute, |e| &mut e.attaches)
                .map_err(|wait| {
                    self.inner.metrics.limited(Limited::ClientAttaches);
                    PeerError::new(
                        ErrorCode::AttachRateLimited,
                        format!(
                            "rooms entered too often from this address (limit {} per minute); try again in {wait} s",
                            l.attaches_per_minute
                        ),
                    )
                }),
            InitRequest::Resume(_) => Ok(()),
        }
    }

    /// Takes a token from one of the client's buckets: `Err` with the
    /// seconds to wait when it is empty.
    fn take(
        &self,
        ip: IpAddr,
        per_minute: u32,
        bucket: impl FnOnce(&mut Entry) -> &mut Bucket,
    ) -> Result<(), u32> {
        if per_minute == 0 {
            return Ok(());
        }
        self.make_room();
        let now = self.now();
        let mut entry = self
            .inner
            .table
            .entry(ClientKey::of(ip))
            .or_insert_with(|| self.fresh(now));
        entry.touched = now;
        let b = bucket(&mut entry);
        b.refill(per_minute, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(b.wait(per_minute).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ClientLimits {
        ClientLimits {
            connections: 3,
            creations_per_minute: 2,
            attaches_per_minute: 4,
            max_rooms: 10,
            table: 1024,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_counted_per_client_and_released() {
        let c = Clients::new(limits(), Metrics::new());
        let a = ip("192.0.2.1");
        let mut held: Vec<_> = (0..3)
            .map(|_| match c.connect(a) {
                Admission::Admit(s) => s,
                _ => panic!("within the limit"),
            })
            .collect();
        // Over it: answered for a while, then closed at once.
        let mut refused = Vec::new();
        for _ in 0..REFUSED_SLACK {
            match c.connect(a) {
                Admission::Refuse(s) => refused.push(s),
                _ => panic!("refused with an answer"),
            }
        }
        assert!(matches!(c.connect(a), Admission::Drop));
        // Another client is not affected; the same /64 is the same client.
        assert!(matches!(c.connect(ip("192.0.2.2")), Admission::Admit(_)));
        drop(refused);
        held.pop();
        assert!(matches!(c.connect(a), Admission::Admit(_)));
        drop(held);
        assert_eq!(c.tracked(), 0, "entries go with their last connection");
        let v6: Vec<_> = (1..=3)
            .map(|i| c.connect(ip(&format!("2001:db8::{i}"))))
            .collect();
        assert!(matches!(
            c.connect(ip("2001:db8::ffff")),
            Admission::Refuse(_)
        ));
        drop(v6);
    }

    #[test]
    fn creations_and_attaches_are_limited_per_minute_and_rooms_in_all() {
        let c = Clients::new(limits(), Metrics::new());
        let a = ip("192.0.2.1");
        assert!(c.admit_init(a, &InitRequest::Create, 0).is_ok());
        assert!(c.admit_init(a, &InitRequest::Create, 0).is_ok());
        let err = c.admit_init(a, &InitRequest::Create, 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::CreateRateLimited);
        assert!(err.message.contains("try again in 30 s"), "{}", err.message);
        // Others still create, until the server is full.
        let b = ip("192.0.2.2");
        assert!(c.admit_init(b, &InitRequest::Create, 9).is_ok());
        let err = c.admit_init(b, &InitRequest::Create, 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::ServerFull);
        for _ in 0..4 {
            assert!(c.may_attach(a));
            assert!(c
                .admit_init(
                    a,
                    &InitRequest::Attach(crate::protocol::Role::Watch, "t"),
                    0
                )
                .is_ok());
        }
        assert!(!c.may_attach(a));
        let err = c
            .admit_init(a, &InitRequest::Attach(crate::protocol::Role::Join, "t"), 0)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::AttachRateLimited);
        assert!(c.admit_init(a, &InitRequest::Resume("r"), 0).is_ok());
        assert!(c.may_attach(b));
    }

    #[test]
    fn buckets_refill_over_a_minute() {
        let mut b = Bucket::full(60, 0);
        for _ in 0..60 {
            b.tokens -= 1.0;
        }
        assert_eq!(b.wait(60), 1);
        b.refill(60, 300); // 30 s later
        assert!((b.tokens - 30.0).abs() < 0.01, "{}", b.tokens);
        b.refill(60, 10_000);
        assert_eq!(b.tokens, 60.0);
    }

    #[test]
    fn the_table_stays_within_its_capacity() {
        let c = Clients::new(
            ClientLimits {
                table: 1024,
                ..limits()
            },
            Metrics::new(),
        );
        // Many addresses that create a room each and leave: their entries
        // outlive them (their buckets count) until the map is full.
        for i in 0..20_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = c.admit_init(a, &InitRequest::Create, 0);
            assert!(c.tracked() <= 1024, "{} entries", c.tracked());
        }
        // Clients with connections are never forgotten.
        let held = c.connect(ip("192.0.2.1"));
        for i in 0..5_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let _ = c.admit_init(a, &InitRequest::Create, 0);
        }
        assert_eq!(
            c.inner
                .table
                .get(&ClientKey::of(ip("192.0.2.1")))
                .map(|e| e.connections),
            Some(1)
        );
        drop(held);
    }
}
