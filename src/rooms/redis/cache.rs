//! What one instance knows of a shared room: the room's data as last seen in
//! Redis, and the links of the room's peers connected to this instance.
//!
//! It changes only through events and snapshots that carry the room's
//! version, so late or repeated ones are ignored. Membership (`J`/`L`) and
//! host presence (`HL`/`HJ`/`C`) have separate versions: membership is only
//! tracked while this instance holds the room's host, and membership events
//! that arrive before the host is registered here are held, then applied in
//! order above the snapshot the host registered with.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ws::Utf8Bytes;

use super::events::Event;
use super::scripts::Snapshot;
use crate::metrics::Metrics;
use crate::protocol::{RelayKind, Role, ServerMessage};
use crate::rooms::{errors, Kick, PeerLink, Queued, KICKED};
use crate::token::{PeerId, Token};

/// Held events per room at most (oldest dropped first).
pub(super) const HELD_MAX: usize = 256;

/// Where a room's host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostAt {
    pub inst: String,
    pub epoch: u64,
}

/// A member as the room's membership lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PeerAt {
    pub role: Role,
    pub inst: String,
}

pub(super) struct LocalHost {
    pub link: PeerLink,
    pub epoch: u64,
}

pub(super) struct LocalGuest {
    pub role: Role,
    pub link: PeerLink,
}

/// What applying an event did.
pub(super) enum Applied {
    Done,
    /// Not applicable yet: keep it.
    Hold(Event),
    /// The room closed: forget it.
    Closed,
    /// Its last member here was kicked: forget it if still empty.
    Emptied,
}

pub(super) struct LocalRoom {
    pub id: String,
    state: Mutex<RoomCache>,
}

impl LocalRoom {
    pub fn new(id: String, cache: RoomCache) -> Self {
        LocalRoom {
            id,
            state: Mutex::new(cache),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, RoomCache> {
        // A panic while holding the lock leaves nothing half-written that
        // later readers could not cope with.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) struct RoomCache {
    pub open: bool,
    /// Removed from the instance's map: a late registration must look again.
    pub detached: bool,
    /// Version of the host fields.
    pub hver: u64,
    /// Version of the membership.
    pub pver: u64,
    pub host_id: PeerId,
    pub host: Option<HostAt>,
    pub epoch: u64,
    pub join: Token,
    pub watch: Token,
    pub resume: Token,
    pub grace_ms: u64,
    pub cinst: String,
    /// The room's members; kept only while the host is registered here.
    pub peers: HashMap<String, PeerAt>,
    pub local_host: Option<LocalHost>,
    pub local_guests: HashMap<String, LocalGuest>,
    pub held: Vec<(Instant, Event)>,
    /// Peers of other instances that a re-sync did not find, since when: they
    /// are reported as left only if a later re-sync still misses them (their
    /// instance may not have put them back yet).
    pub suspects: HashMap<String, Instant>,
}

/// What the cache needs from its instance.
pub(super) struct Ctx<'a> {
    pub metrics: &'a Metrics,
}

impl Ctx<'_> {
    pub fn deliver(&self, link: &PeerLink, text: impl Into<Utf8Bytes>) -> Queued {
        let queued = link.send_text(text);
        if queued == Queued::Full {
            self.metrics.slow_peer_dropped();
        }
        queued
    }
}

impl RoomCache {
    pub fn from_snapshot(s: &Snapshot) -> Self {
        RoomCache {
            open: true,
            detached: false,
            hver: s.ver,
            pver: s.ver,
            host_id: s.host_id.clone(),
            host: s.host.clone(),
            epoch: s.epoch,
            join: s.join.clone(),
            watch: s.watch.clone(),
            resume: s.resume.clone(),
            grace_ms: s.grace_ms,
            cinst: s.cinst.clone(),
            peers: s.peers.clone().unwrap_or_default(),
            local_host: None,
            local_guests: HashMap::new(),
            held: Vec::new(),
            suspects: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.local_host.is_none() && self.local_guests.is_empty()
    }

    pub fn hold(&mut self, at: Instant, event: Event) {
        if self.held.len() >= HELD_MAX {
            self.held.remove(0);
        }
        self.held.push((at, event));
    }

    /// Applies the host fields and (when given and the host is here) the
    /// membership of a snapshot newer than what the cache has. Returns
    /// whether it was newer.
    pub fn apply_snapshot(&mut self, s: &Snapshot, ctx: &Ctx<'_>) -> bool {
        if s.ver <= self.hver {
            return false;
        }
        self.hver = s.ver;
        self.join.clone_from(&s.join);
        self.watch.clone_from(&s.watch);
        self.resume.clone_from(&s.resume);
        self.grace_ms = s.grace_ms;
        if !s.cinst.is_empty() {
            self.cinst.clone_from(&s.cinst);
        }
        self.set_host(s.host.clone(), s.epoch, ctx);
        if let Some(peers) = &s.peers {
            if s.ver > self.pver {
                self.pver = s.ver;
                self.replace_peers(peers.clone(), ctx);
            }
        }
        true
    }

    /// Applies a re-sync snapshot (see [`Self::apply_snapshot`]), except that
    /// a peer of another instance missing from it is reported as left only
    /// once it has been missing for `settle`. Returns whether some peer is
    /// still in doubt (the caller re-syncs later).
    pub fn apply_sync(&mut self, s: &Snapshot, me: &str, settle: Duration, ctx: &Ctx<'_>) -> bool {
        let Some(fresh) = s.peers.as_ref().filter(|_| self.local_host.is_some()) else {
            self.apply_snapshot(s, ctx);
            return false;
        };
        // Host fields first (they may show that the host here was replaced).
        self.apply_snapshot(
            &Snapshot {
                peers: None,
                ..s.clone()
            },
            ctx,
        );
        if self.local_host.is_none() {
            return false;
        }
        if s.ver < self.pver {
            // Newer membership events arrived meanwhile, so this snapshot
            // cannot show who is gone: look again later.
            return true;
        }
        // Not older: a re-sync that changed nothing returns the same version,
        // and is how suspects are confirmed.
        self.pver = s.ver;
        let mut peers = fresh.clone();
        let now = Instant::now();
        let mut doubt = false;
        for (id, p) in &self.peers {
            if fresh.contains_key(id) || p.inst == me {
                continue;
            }
            let since = *self.suspects.entry(id.clone()).or_insert(now);
            if now.duration_since(since) < settle {
                peers.insert(id.clone(), p.clone());
                doubt = true;
            }
        }
        self.suspects
            .retain(|id, _| peers.contains_key(id) && !fresh.contains_key(id));
        self.replace_peers(peers, ctx);
        doubt
    }

    /// Replaces the membership, telling a host registered here what changed.
    pub fn replace_peers(&mut self, peers: HashMap<String, PeerAt>, ctx: &Ctx<'_>) {
        if let Some(host) = &self.local_host {
            for id in self.peers.keys() {
                if !peers.contains_key(id) {
                    ctx.deliver(
                        &host.link,
                        ServerMessage::PeerLeft { peer: id.into() }.to_json(),
                    );
                }
            }
            for (id, p) in &peers {
                if !self.peers.contains_key(id) {
                    ctx.deliver(
                        &host.link,
                        ServerMessage::PeerJoined {
                            peer: id.into(),
                            role: p.role,
                        }
                        .to_json(),
                    );
                }
            }
        }
        self.peers = peers;
    }

    /// Sets where the host is, telling local guests when it leaves or (re)joins
    /// and cutting off a local host that another connection has replaced.
    pub fn set_host(&mut self, host: Option<HostAt>, epoch: u64, ctx: &Ctx<'_>) {
        let replaced = self.local_host.as_ref().is_some_and(|h| epoch > h.epoch);
        if replaced {
            if let Some(old) = self.local_host.take() {
                old.link.kick(Kick::Replaced);
            }
            self.peers.clear();
        }
        let was = self.host.is_some();
        let rejoined = host.is_some() && (!was || epoch != self.epoch);
        self.epoch = self.epoch.max(epoch);
        if was && host.is_none() {
            self.tell_guests(ServerMessage::HostLeft.to_json(), ctx);
        } else if rejoined {
            self.tell_guests(ServerMessage::HostJoined.to_json(), ctx);
        }
        self.host = host;
    }

    fn tell_guests(&self, text: String, ctx: &Ctx<'_>) {
        let text = Utf8Bytes::from(text);
        for g in self.local_guests.values() {
            ctx.deliver(&g.link, text.clone());
        }
    }

    /// Closes the room here: guests get `room_closed` and close 1000.
    pub fn close(&mut self, ctx: &Ctx<'_>) {
        self.open = false;
        let closed = Utf8Bytes::from(ServerMessage::RoomClosed.to_json());
        for (_, g) in self.local_guests.drain() {
            if ctx.deliver(&g.link, closed.clone()) == Queued::Yes {
                errors::close_room_closed(&g.link);
            }
        }
        if let Some(h) = self.local_host.take() {
            if ctx.deliver(&h.link, closed) == Queued::Yes {
                errors::close_room_closed(&h.link);
            }
        }
        self.peers.clear();
        self.held.clear();
    }

    /// An administrator removed `peer` of this instance (the host of
    /// `epoch`, when not `0`): its connection closes with 4003. Returns
    /// whether the room has no member here any more.
    fn kicked(&mut self, peer: &str, epoch: u64) -> bool {
        let (code, reason) = KICKED;
        if epoch != 0 {
            if self.local_host.as_ref().is_some_and(|h| h.epoch == epoch) {
                if let Some(h) = self.local_host.take() {
                    h.link.close(code, reason);
                }
                self.peers.clear();
            }
        } else if let Some(g) = self.local_guests.remove(peer) {
            g.link.close(code, reason);
        }
        self.is_empty()
    }

    /// Applies one event.
    pub fn apply(&mut self, event: Event, ctx: &Ctx<'_>) -> Applied {
        if !self.open {
            return Applied::Done;
        }
        match event {
            held @ (Event::Joined { .. } | Event::Left { .. }) if self.local_host.is_none() => {
                Applied::Hold(held)
            }
            Event::Joined {
                ver,
                peer,
                role,
                inst,
            } => {
                self.peer_joined(ver, peer, PeerAt { role, inst }, ctx);
                Applied::Done
            }
            Event::Left { ver, peer } => {
                self.peer_left(ver, &peer, ctx);
                Applied::Done
            }
            Event::HostLeft { ver } => {
                if ver > self.hver {
                    self.hver = ver;
                    let epoch = self.epoch;
                    self.set_host(None, epoch, ctx);
                }
                Applied::Done
            }
            Event::HostJoined {
                ver,
                inst,
                epoch,
                resume,
            } => {
                if ver > self.hver {
                    self.hver = ver;
                    self.resume = resume;
                    self.set_host(Some(HostAt { inst, epoch }), epoch, ctx);
                }
                Applied::Done
            }
            Event::Closed { .. } => {
                self.close(ctx);
                Applied::Closed
            }
            Event::Kicked { peer, epoch } => {
                if self.kicked(&peer, epoch) {
                    Applied::Emptied
                } else {
                    Applied::Done
                }
            }
            Event::ToPeers { kind, peers, text } => self.relay_to_peers(kind, peers, text, ctx),
            Event::ToHost { kind, text } => self.relay_to_host(kind, text, ctx),
        }
    }

    /// A member joined (the host is here): the host is told, once.
    fn peer_joined(&mut self, ver: u64, peer: String, at: PeerAt, ctx: &Ctx<'_>) {
        if ver <= self.pver {
            tracing::trace!(ver, pver = self.pver, "stale J ignored");
            return;
        }
        self.pver = ver;
        self.suspects.remove(&peer);
        let role = at.role;
        if self.peers.insert(peer.clone(), at).is_none() {
            if let Some(host) = &self.local_host {
                ctx.deliver(
                    &host.link,
                    ServerMessage::PeerJoined {
                        peer: peer.as_str().into(),
                        role,
                    }
                    .to_json(),
                );
            }
        }
    }

    /// A member left (the host is here): the host is told, once.
    fn peer_left(&mut self, ver: u64, peer: &str, ctx: &Ctx<'_>) {
        if ver <= self.pver {
            return;
        }
        self.pver = ver;
        self.suspects.remove(peer);
        if self.peers.remove(peer).is_some() {
            if let Some(host) = &self.local_host {
                ctx.deliver(
                    &host.link,
                    ServerMessage::PeerLeft { peer: peer.into() }.to_json(),
                );
            }
        }
    }

    /// A relay from the host on another instance to peers here; those not
    /// registered here yet are held.
    fn relay_to_peers(
        &mut self,
        kind: RelayKind,
        peers: Vec<String>,
        text: Utf8Bytes,
        ctx: &Ctx<'_>,
    ) -> Applied {
        let mut missing = Vec::new();
        for id in peers {
            match self.local_guests.get(&id) {
                Some(g) => {
                    if ctx.deliver(&g.link, text.clone()) == Queued::Yes {
                        ctx.metrics.relayed(kind, text.len());
                    }
                }
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            return Applied::Done;
        }
        Applied::Hold(Event::ToPeers {
            kind,
            peers: missing,
            text,
        })
    }

    /// A relay from a peer on another instance to the host here; held until
    /// the host is registered.
    fn relay_to_host(&mut self, kind: RelayKind, text: Utf8Bytes, ctx: &Ctx<'_>) -> Applied {
        match &self.local_host {
            Some(h) => {
                // From another instance: no share of its own here.
                if h.link.send_guest(text.clone(), None) == Queued::Yes {
                    ctx.metrics.relayed(kind, text.len());
                }
                Applied::Done
            }
            None => Applied::Hold(Event::ToHost { kind, text }),
        }
    }

    /// Retries the held events (after a registration). Returns whether the
    /// room closed.
    pub fn drain_held(&mut self, ctx: &Ctx<'_>) -> bool {
        let held = std::mem::take(&mut self.held);
        for (at, event) in held {
            match self.apply(event, ctx) {
                Applied::Done | Applied::Emptied => {}
                Applied::Hold(event) => self.held.push((at, event)),
                Applied::Closed => return true,
            }
        }
        false
    }

    /// Drops held events older than `before`.
    pub fn prune(&mut self, before: Instant) {
        self.held.retain(|(at, _)| *at >= before);
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
