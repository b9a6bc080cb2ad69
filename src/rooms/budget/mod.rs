//! Byte budgets for what the server queues for its connections, and who
//! pays for them.
//!
//! Every connection's [`PeerLink`](super::PeerLink) counts the bytes queued
//! for it: its outbox, its WebSocket writer (control frames included) and
//! [`MESSAGE_OVERHEAD`] per queued message. It is judged as Redis judges a
//! client's output buffer (`client-output-buffer-limit`): over the hard limit
//! it is dropped as a slow consumer at once, above the soft limit for too
//! long likewise. All queues together are held to the server's budget: when
//! it is reached, the connections with the largest queues are dropped first,
//! as NATS drops its slow consumers.
//!
//! Who pays: a guest's or watcher's messages to its host are counted apart,
//! in the sender's *share* of the host's queue. A full share, a host queue
//! holding every guest's share, or a full server budget refuses the message
//! (the sender gets `host_busy`); and a host is judged only on the rest of
//! its queue, so it is never dropped for what its guests and watchers send.
//!
//! Counting is lock-free: one word per link (`queued`) packs its bytes, the
//! part of them its guests sent, and a `CLOSED` bit; one word per sender
//! (`sent`) packs its messages and bytes waiting at its host. A link's bytes
//! count in the server's total until the link is closed: whoever sets
//! `CLOSED` first (its session's teardown, or a kick) takes what the link
//! holds out of the total, and what happens to the link's word after that is
//! never counted again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use prometheus_client::metrics::gauge::Gauge;

use super::Kick;
use crate::config::{Config, MESSAGE_OVERHEAD};
use crate::metrics::{Metrics, QueueLimit, Refusal};
use crate::ws::Utf8Bytes;

/// The `queued` word: bit 63 closed, bits 32..62 bytes sent by guests and
/// watchers (a host's), bits 0..31 all bytes.
const CLOSED: u64 = 1 << 63;
const GUEST_SHIFT: u32 = 32;
const LOW: u64 = (1 << GUEST_SHIFT) - 1;
/// The `sent` word: messages from bit 40, bytes below.
const MESSAGE_SHIFT: u32 = 40;
const SENT_BYTES: u64 = (1 << MESSAGE_SHIFT) - 1;
/// The largest byte limit a link's word can hold with room to spare.
const MAX_LIMIT: u64 = 1 << 30;
/// The fewest messages a guest or watcher may have waiting at its host.
pub const MIN_SHARE_MESSAGES: u64 = 64;
/// The server's budget is relieved down to this fraction (7/8) of itself.
const RELIEF_TARGET_EIGHTHS: u64 = 7;

fn total(q: u64) -> u64 {
    q & LOW
}

fn guest(q: u64) -> u64 {
    (q & !CLOSED) >> GUEST_SHIFT
}

/// What a connection is judged on: its bytes less those its guests sent.
fn own(q: u64) -> u64 {
    total(q).saturating_sub(guest(q))
}

/// The bytes a server frame with a payload of `len` bytes takes on the wire.
pub fn frame_len(len: usize) -> u64 {
    let head = match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    len as u64 + head
}

/// What a queued text message of `len` bytes counts for.
pub fn text_cost(len: usize) -> u64 {
    frame_len(len) + MESSAGE_OVERHEAD as u64
}

/// The limits, in bytes, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Hard limit of a connection's own queued bytes.
    pub max_bytes: u64,
    /// Soft limit of a connection's own queued bytes.
    pub soft_bytes: u64,
    /// How long a connection may stay above the soft limit.
    pub soft_time: Duration,
    /// Bytes one guest or watcher may have waiting at its host.
    pub share_bytes: u64,
    /// The most guests and watchers a room may have: a host's outbox less
    /// the sixteenth kept for the server's own messages (presence events,
    /// replies) is split between them for each one's share of messages.
    pub peers: u64,
    /// Bytes all of a host's guests and watchers may have waiting at it.
    pub guest_bytes: u64,
    /// Budget of the whole server.
    pub server_bytes: u64,
}

impl QueueLimits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        let clamp = |n: usize| (n as u64).min(MAX_LIMIT);
        let peers = config.max_peers_per_room.max(1) as u64;
        let share_bytes = clamp(config.sender_share_bytes);
        QueueLimits {
            max_bytes: clamp(config.outbox_max_bytes),
            soft_bytes: clamp(config.outbox_soft_bytes),
            soft_time: config.outbox_soft_time,
            share_bytes,
            peers,
            guest_bytes: (share_bytes * peers).min(MAX_LIMIT),
            server_bytes: config.max_queued_bytes as u64,
        }
    }

    /// Outbox slots of an outbox of `capacity` kept for the server's own
    /// messages: guests' messages are refused when only these are free.
    pub fn guest_reserve(&self, capacity: usize) -> usize {
        capacity / 16
    }

    /// The messages one guest or watcher may have waiting at a host whose
    /// outbox holds `capacity`: its part of the outbox less the reserve, but
    /// at least [`MIN_SHARE_MESSAGES`] (two of the batches a session reads
    /// before its host's writer gets a turn).
    pub fn share_messages(&self, capacity: usize) -> u64 {
        let open = (capacity - self.guest_reserve(capacity)) as u64;
        (open / self.peers).max(MIN_SHARE_MESSAGES).min(open).max(1)
    }
}

/// The server-wide budget: the total queued, the limits, and every link
/// (for relieving the total when it is reached).
pub struct Budget {
    limits: QueueLimits,
    queued: Gauge,
    links: Mutex<Slots>,
    relieving: Mutex<()>,
    epoch: Instant,
    metrics: Metrics,
}

/// Every budgeted link, by slot; free slots are reused.
#[derive(Default)]
struct Slots {
    live: Vec<Weak<LinkState>>,
    free: Vec<u32>,
}

impl Budget {
    /// A budget reporting to `metrics` (its total is the
    /// `signal_queued_bytes` gauge).
    pub fn new(limits: QueueLimits, metrics: Metrics) -> Arc<Self> {
        Arc::new(Budget {
            limits,
            queued: metrics.queued_bytes(),
            links: Mutex::new(Slots::default()),
            relieving: Mutex::new(()),
            epoch: Instant::now(),
            metrics,
        })
    }

    /// The limits.
    pub fn limits(&self) -> &QueueLimits {
        &self.limits
    }

    /// Bytes queued for every connection now.
    pub fn queued(&self) -> u64 {
        self.queued.get().max(0) as u64
    }

    /// Connections with a budgeted link now (for tests and diagnostics).
    pub fn links(&self) -> usize {
        let slots = self.slots();
        slots.live.len() - slots.free.len()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which marks "not set".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Adds to the total; whether it is now over the budget.
    fn add(&self, n: u64) -> bool {
        let before = self.queued.inc_by(n as i64);
        before.max(0) as u64 + n > self.limits.server_bytes
    }

    fn sub(&self, n: u64) {
        self.queued.dec_by(n as i64);
    }

    fn register(&self, link: Weak<LinkState>) -> u32 {
        let mut slots = self.slots();
        match slots.free.pop() {
            Some(slot) => {
                slots.live[slot as usize] = link;
                slot
            }
            None => {
                slots.live.push(link);
                (slots.live.len() - 1) as u32
            }
        }
    }

    fn unregister(&self, slot: u32) {
        let mut slots = self.slots();
        if let Some(entry) = slots.live.get_mut(slot as usize) {
            *entry = Weak::new();
            slots.free.push(slot);
        }
    }

    fn refuse(&self, why: Refusal) -> super::Queued {
        self.metrics.host_busy(why);
        super::Queued::Refused
    }

    /// The total is over the budget: drops the connections with the largest
    /// queues of their own (what guests sent a host does not count) until
    /// it is back under 7/8 of the budget. One relief at a time (it looks at
    /// every connection); the next is due only after the total has grown by
    /// an eighth of the budget again. A queue of its own can always be
    /// found: guests' messages are refused near the budget, so only another
    /// message can cross it.
    fn relieve(&self) {
        let Ok(_one) = self.relieving.try_lock() else {
            return;
        };
        let mut left = self.queued();
        let target = self.limits.server_bytes / 8 * RELIEF_TARGET_EIGHTHS;
        if left <= self.limits.server_bytes {
            return;
        }
        let mut queues: Vec<(u64, Arc<LinkState>)> = self
            .slots()
            .live
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|link| {
                let q = link.queued.load(Ordering::Acquire);
                (q & CLOSED == 0 && own(q) > 0).then(|| (own(q), link))
            })
            .collect();
        queues.sort_unstable_by_key(|q| std::cmp::Reverse(q.0));
        for (_, link) in queues {
            if left <= target {
                break;
            }
            left = left.saturating_sub(link.queued_total());
            link.drop_slow(QueueLimit::ServerBudget);
        }
    }
}

/// One connection's side of its [`PeerLink`](super::PeerLink): its kick
/// switch and its byte counts.
pub struct LinkState {
    /// Wakes the one task waiting for a kick, the link's session
    /// ([`PeerLink::kicked`](super::PeerLink::kicked)), once `reason` is
    /// set. Not a `CancellationToken`: that is a second allocation per
    /// connection (its tree node) and a waiter list, for a switch with a
    /// single waiter.
    kick: AtomicWaker,
    reason: OnceLock<Kick>,
    /// `None` for a link made without a budget (tests): nothing is counted.
    budget: Option<Arc<Budget>>,
    /// See [`CLOSED`].
    queued: AtomicU64,
    /// Since when (ms of the budget's clock) its own bytes have been above
    /// the soft limit; 0 when they are not.
    soft_since: AtomicU64,
    /// Its own messages and bytes waiting in its host's queue.
    sent: AtomicU64,
    slot: AtomicU32,
}

impl LinkState {
    pub(super) fn new(budget: Option<&Arc<Budget>>) -> Arc<Self> {
        Arc::new_cyclic(|weak| {
            let slot = budget.map_or(0, |b| b.register(weak.clone()));
            LinkState {
                kick: AtomicWaker::new(),
                reason: OnceLock::new(),
                budget: budget.cloned(),
                queued: AtomicU64::new(0),
                soft_since: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                slot: AtomicU32::new(slot),
            }
        })
    }

    pub(super) fn budget(&self) -> Option<&Arc<Budget>> {
        self.budget.as_ref()
    }

    /// Ready once the peer is kicked; registers `cx` to be woken by the
    /// kick otherwise (the last task to poll is the one woken).
    fn poll_kicked(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.reason.get().is_some() {
            return std::task::Poll::Ready(());
        }
        self.kick.register(cx.waker());
        // A kick between the check and the registration woke no one: check
        // again now that a wake cannot be missed.
        if self.reason.get().is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Completes when the peer is kicked. One task waits (the link's
    /// session): if several poll it, only the last one polled is woken.
    pub fn kicked(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_kicked(cx))
    }

    /// Why the peer was kicked, if it was.
    pub fn kick_reason(&self) -> Option<Kick> {
        self.reason.get().copied()
    }

    /// Whether the link's bytes no longer count (it was cut off, or its
    /// connection ended).
    pub fn is_closed(&self) -> bool {
        self.queued.load(Ordering::Acquire) & CLOSED != 0
    }

    /// All bytes queued for it, its guests' included.
    pub fn queued_total(&self) -> u64 {
        total(self.queued.load(Ordering::Acquire))
    }

    /// The bytes it is judged on (its guests' not included).
    pub fn queued_own(&self) -> u64 {
        own(self.queued.load(Ordering::Acquire))
    }

    /// Its own messages and bytes waiting in its host's queue.
    pub fn waiting_at_host(&self) -> (u64, u64) {
        let sent = self.sent.load(Ordering::Acquire);
        (sent >> MESSAGE_SHIFT, sent & SENT_BYTES)
    }

    /// Cuts the peer off for `why`; whether this was the first kick.
    pub(super) fn kick(&self, why: Kick) -> bool {
        let first = self.reason.set(why).is_ok();
        self.close_accounting();
        self.kick.wake();
        first
    }

    /// Cuts the peer off as a slow consumer found by `limit`; whether this
    /// was the first kick (then `limit` is counted; the caller of a send
    /// that returns [`Queued::Full`](super::Queued::Full) counts the drop).
    pub(super) fn cut_slow(&self, limit: QueueLimit) -> bool {
        let why = match limit {
            QueueLimit::Messages => Kick::SlowConsumer,
            limit => Kick::Backlog(limit),
        };
        let first = self.kick(why);
        if first {
            if let Some(b) = &self.budget {
                b.metrics.slow_consumer(limit);
            }
        }
        first
    }

    /// Cuts the peer off as a slow consumer from outside a send, counting
    /// the drop too.
    pub fn drop_slow(&self, limit: QueueLimit) {
        if self.cut_slow(limit) {
            if let Some(b) = &self.budget {
                b.metrics.slow_peer_dropped();
            }
        }
    }

    /// Stops counting the link: its bytes leave the server's total. Done
    /// once, by its session's teardown or by whatever cut it off first.
    pub fn close_accounting(&self) {
        let prev = self.queued.fetch_or(CLOSED, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            return;
        }
        if let Some(b) = &self.budget {
            b.sub(total(prev));
            b.unregister(self.slot.load(Ordering::Relaxed));
        }
    }

    /// Counts `cost` more bytes queued (guest bytes too when `from_guest`).
    /// `None` if the link is closed; else the word before.
    fn charge(&self, budget: &Budget, cost: u64, from_guest: bool) -> Option<(u64, bool)> {
        let word = if from_guest {
            cost | cost << GUEST_SHIFT
        } else {
            cost
        };
        let prev = self.queued.fetch_add(word, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            // Not counted in the total; the word is not read again.
            return None;
        }
        Some((prev, budget.add(cost)))
    }

    /// Takes back a charge whose message was not queued.
    fn uncharge(&self, budget: &Budget, cost: u64, from_guest: bool) {
        let word = if from_guest {
            cost | cost << GUEST_SHIFT
        } else {
            cost
        };
        let prev = self.queued.fetch_sub(word, Ordering::AcqRel);
        if prev & CLOSED == 0 {
            budget.sub(cost);
        }
    }

    /// Whether its own bytes have now been above the soft limit too long
    /// (they are above it now).
    fn soft_expired(&self, budget: &Budget) -> bool {
        let now = budget.now_ms();
        match self.soft_since.load(Ordering::Relaxed) {
            0 => {
                let _ =
                    self.soft_since
                        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                false
            }
            since => now.saturating_sub(since) >= budget.limits.soft_time.as_millis() as u64,
        }
    }

    /// The writer's side: `delta` bytes more (or fewer) in its queue, of
    /// which `guest_taken` fewer are guests' (they moved into the writer).
    /// Returns its own bytes now.
    pub fn settle(&self, delta: i64, guest_taken: u64) -> u64 {
        let Some(budget) = &self.budget else {
            return 0;
        };
        let word = (delta as u64).wrapping_sub(guest_taken << GUEST_SHIFT);
        let prev = self.queued.fetch_add(word, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            return 0;
        }
        if delta > 0 {
            if budget.add(delta as u64) {
                budget.relieve();
            }
        } else if delta < 0 {
            budget.sub(delta.unsigned_abs());
        }
        let own = own(prev.wrapping_add(word));
        if own <= budget.limits.soft_bytes && self.soft_since.load(Ordering::Relaxed) != 0 {
            self.soft_since.store(0, Ordering::Relaxed);
        }
        own
    }

    /// The session's checks of what it queued itself (control frames) and of
    /// a queue that no longer grows: the hard limit, and the soft limit's
    /// time. Drops the connection (counted) if one is broken.
    pub fn check_limits(&self) {
        let Some(budget) = &self.budget else {
            return;
        };
        let own = self.queued_own();
        if own > budget.limits.max_bytes {
            self.drop_slow(QueueLimit::Bytes);
        } else if own > budget.limits.soft_bytes && self.soft_expired(budget) {
            self.drop_slow(QueueLimit::SoftBytes);
        }
    }
}

impl Drop for LinkState {
    fn drop(&mut self) {
        self.close_accounting();
    }
}

/// A guest's or watcher's place in its host's queue: the message's bytes
/// count in its sender's share until the host's writer takes the message
/// (or it is dropped).
pub struct Credit {
    sender: Option<Arc<LinkState>>,
    cost: u64,
}

impl Credit {
    fn charge(sender: Option<&Arc<LinkState>>, cost: u64) -> Self {
        if let Some(s) = sender {
            s.sent
                .fetch_add(1 << MESSAGE_SHIFT | cost, Ordering::AcqRel);
        }
        Credit {
            sender: sender.cloned(),
            cost,
        }
    }

    /// What the message counts for in its host's queue.
    pub fn cost(&self) -> u64 {
        self.cost
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        if let Some(s) = &self.sender {
            s.sent
                .fetch_sub(1 << MESSAGE_SHIFT | self.cost, Ordering::AcqRel);
        }
    }
}

impl std::fmt::Debug for Credit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credit({})", self.cost)
    }
}

/// A guest's or watcher's message to its host, with its credit.
#[derive(Debug)]
pub struct GuestText {
    /// The message.
    pub text: Utf8Bytes,
    /// Its place in the sender's share.
    pub credit: Credit,
}

impl PartialEq for GuestText {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// Queueing on a budgeted link (see [`super::PeerLink`]).
pub(super) mod send;

#[cfg(test)]
mod tests;
