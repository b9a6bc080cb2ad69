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

use crate::metrics::Metrics;
use crate::protocol::{RelayKind, Role, ServerMessage};
use crate::rooms::{Kick, PeerLink, Queued};

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

/// An event received on this instance's channel.
#[derive(Debug, Clone)]
pub(super) enum Event {
    Joined {
        ver: u64,
        peer: String,
        role: Role,
        inst: String,
    },
    Left {
        ver: u64,
        peer: String,
    },
    HostLeft {
        ver: u64,
    },
    HostJoined {
        ver: u64,
        inst: String,
        epoch: u64,
        resume: String,
    },
    Closed {
        counted: bool,
    },
    ToPeers {
        kind: RelayKind,
        peers: Vec<String>,
        text: Utf8Bytes,
    },
    ToHost {
        kind: RelayKind,
        text: Utf8Bytes,
    },
}

impl Event {
    /// A one-line description for trace logs (no message text, no secrets).
    pub fn describe(&self) -> String {
        match self {
            Event::Joined {
                ver, peer, inst, ..
            } => format!("J ver {ver} peer {peer} on {inst}"),
            Event::Left { ver, peer } => format!("L ver {ver} peer {peer}"),
            Event::HostLeft { ver } => format!("HL ver {ver}"),
            Event::HostJoined {
                ver, inst, epoch, ..
            } => format!("HJ ver {ver} on {inst} epoch {epoch}"),
            Event::Closed { counted } => format!("C counted {counted}"),
            Event::ToPeers { peers, text, .. } => {
                format!("relay of {} bytes to {}", text.len(), peers.join(","))
            }
            Event::ToHost { text, .. } => format!("relay of {} bytes to the host", text.len()),
        }
    }
}

/// The room's state as a script returned it.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub ver: u64,
    pub host_id: String,
    pub host: Option<HostAt>,
    pub epoch: u64,
    pub join: String,
    pub watch: String,
    pub resume: String,
    pub grace_ms: u64,
    pub cinst: String,
    /// The full membership, when the script returned it.
    pub peers: Option<HashMap<String, PeerAt>>,
}

pub(super) fn role_code(role: Role) -> &'static str {
    if role == Role::Watch {
        "w"
    } else {
        "j"
    }
}

pub(super) fn role_from_code(code: &str) -> Option<Role> {
    match code {
        "j" => Some(Role::Join),
        "w" => Some(Role::Watch),
        _ => None,
    }
}

/// `role|inst` as stored in a room's peers hash.
pub(super) fn parse_peer_value(v: &str) -> Option<PeerAt> {
    let (role, inst) = v.split_once('|')?;
    Some(PeerAt {
        role: role_from_code(role)?,
        inst: inst.to_string(),
    })
}

/// Peers from `id, value, id, value...`.
pub(super) fn parse_peers(flat: &[String]) -> Option<HashMap<String, PeerAt>> {
    let mut peers = HashMap::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let [id, value] = pair else { return None };
        peers.insert(id.clone(), parse_peer_value(value)?);
    }
    Some(peers)
}

/// Parses a message of an instance channel into its room and event.
pub(super) fn parse_event(payload: &str) -> Option<(String, Event)> {
    let (kind, rest) = payload.split_once('|')?;
    let (room, rest) = rest.split_once('|').unwrap_or((rest, ""));
    let room = room.to_string();
    let event = match kind {
        "m" => {
            let mut it = rest.splitn(3, '|');
            let kind = relay_kind(it.next()?)?;
            let peers = it.next()?.split(',').map(str::to_string).collect();
            let text = Utf8Bytes::from(it.next()?.to_string());
            Event::ToPeers { kind, peers, text }
        }
        "h" => {
            let (kind, text) = rest.split_once('|')?;
            Event::ToHost {
                kind: relay_kind(kind)?,
                text: Utf8Bytes::from(text.to_string()),
            }
        }
        "J" => {
            let mut it = rest.split('|');
            let ver = it.next()?.parse().ok()?;
            let peer = it.next()?.to_string();
            let role = role_from_code(it.next()?)?;
            let inst = it.next()?.to_string();
            Event::Joined {
                ver,
                peer,
                role,
                inst,
            }
        }
        "L" => {
            let (ver, peer) = rest.split_once('|')?;
            Event::Left {
                ver: ver.parse().ok()?,
                peer: peer.to_string(),
            }
        }
        "HL" => Event::HostLeft {
            ver: rest.parse().ok()?,
        },
        "HJ" => {
            let mut it = rest.split('|');
            let ver = it.next()?.parse().ok()?;
            let inst = it.next()?.to_string();
            let epoch = it.next()?.parse().ok()?;
            let resume = it.next()?.to_string();
            Event::HostJoined {
                ver,
                inst,
                epoch,
                resume,
            }
        }
        "C" => {
            let (ver, counted) = rest.split_once('|')?;
            ver.parse::<u64>().ok()?;
            Event::Closed {
                counted: counted == "1",
            }
        }
        _ => return None,
    };
    Some((room, event))
}

fn relay_kind(code: &str) -> Option<RelayKind> {
    RelayKind::ALL.get(code.parse::<usize>().ok()?).copied()
}

/// The envelope of a relay from the host to peers on another instance.
pub(super) fn to_peers_envelope(room: &str, kind: RelayKind, peers: &[&str], text: &str) -> String {
    let mut out = String::with_capacity(room.len() + text.len() + 16 + peers.len() * 9);
    out.push_str("m|");
    out.push_str(room);
    out.push('|');
    out.push_str(&kind.index().to_string());
    out.push('|');
    for (n, p) in peers.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(p);
    }
    out.push('|');
    out.push_str(text);
    out
}

/// The envelope of a relay from a peer to its host on another instance.
pub(super) fn to_host_envelope(room: &str, kind: RelayKind, text: &str) -> String {
    format!("h|{room}|{}|{text}", kind.index())
}

/// What applying an event did.
pub(super) enum Applied {
    Done,
    /// Not applicable yet: keep it.
    Hold(Event),
    /// The room closed: forget it.
    Closed,
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
    pub host_id: String,
    pub host: Option<HostAt>,
    pub epoch: u64,
    pub join: String,
    pub watch: String,
    pub resume: String,
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
                    ctx.deliver(&host.link, ServerMessage::PeerLeft { peer: id }.to_json());
                }
            }
            for (id, p) in &peers {
                if !self.peers.contains_key(id) {
                    ctx.deliver(
                        &host.link,
                        ServerMessage::PeerJoined {
                            peer: id,
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
                g.link.close(1000, "room closed");
            }
        }
        if let Some(h) = self.local_host.take() {
            h.link.close(1000, "room closed");
        }
        self.peers.clear();
        self.held.clear();
    }

    /// Applies one event.
    pub fn apply(&mut self, event: Event, ctx: &Ctx<'_>) -> Applied {
        if !self.open {
            return Applied::Done;
        }
        match event {
            Event::Joined {
                ver,
                peer,
                role,
                inst,
            } => {
                let Some(host) = &self.local_host else {
                    return Applied::Hold(Event::Joined {
                        ver,
                        peer,
                        role,
                        inst,
                    });
                };
                if ver <= self.pver {
                    tracing::trace!(ver, pver = self.pver, "stale J ignored");
                    return Applied::Done;
                }
                self.pver = ver;
                let link = host.link.clone();
                self.suspects.remove(&peer);
                if self
                    .peers
                    .insert(peer.clone(), PeerAt { role, inst })
                    .is_none()
                {
                    ctx.deliver(
                        &link,
                        ServerMessage::PeerJoined { peer: &peer, role }.to_json(),
                    );
                }
            }
            Event::Left { ver, peer } => {
                let Some(host) = &self.local_host else {
                    return Applied::Hold(Event::Left { ver, peer });
                };
                if ver <= self.pver {
                    return Applied::Done;
                }
                self.pver = ver;
                let link = host.link.clone();
                self.suspects.remove(&peer);
                if self.peers.remove(&peer).is_some() {
                    ctx.deliver(&link, ServerMessage::PeerLeft { peer: &peer }.to_json());
                }
            }
            Event::HostLeft { ver } => {
                if ver > self.hver {
                    self.hver = ver;
                    let epoch = self.epoch;
                    self.set_host(None, epoch, ctx);
                }
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
            }
            Event::Closed { .. } => {
                self.close(ctx);
                return Applied::Closed;
            }
            Event::ToPeers { kind, peers, text } => {
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
                if !missing.is_empty() {
                    return Applied::Hold(Event::ToPeers {
                        kind,
                        peers: missing,
                        text,
                    });
                }
            }
            Event::ToHost { kind, text } => match &self.local_host {
                Some(h) => {
                    // From another instance: no share of its own here.
                    if h.link.send_guest(text.clone(), None) == Queued::Yes {
                        ctx.metrics.relayed(kind, text.len());
                    }
                }
                None => return Applied::Hold(Event::ToHost { kind, text }),
            },
        }
        Applied::Done
    }

    /// Retries the held events (after a registration). Returns whether the
    /// room closed.
    pub fn drain_held(&mut self, ctx: &Ctx<'_>) -> bool {
        let held = std::mem::take(&mut self.held);
        for (at, event) in held {
            match self.apply(event, ctx) {
                Applied::Done => {}
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
mod tests {
    use super::*;
    use crate::rooms::Outgoing;

    fn snapshot(ver: u64, peers: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            ver,
            host_id: "h0st0000".into(),
            host: Some(HostAt {
                inst: "A".into(),
                epoch: 1,
            }),
            epoch: 1,
            join: "j".into(),
            watch: "w".into(),
            resume: "r".into(),
            grace_ms: 1000,
            cinst: "A".into(),
            peers: Some(
                peers
                    .iter()
                    .map(|(id, inst)| {
                        (
                            id.to_string(),
                            PeerAt {
                                role: Role::Join,
                                inst: inst.to_string(),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn texts(rx: &mut tokio::sync::mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Text(t)) = rx.try_recv() {
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn a_resync_confirms_a_missing_foreign_peer_before_reporting_it() {
        let metrics = Metrics::new();
        let ctx = Ctx { metrics: &metrics };
        let mut room = RoomCache::from_snapshot(&snapshot(10, &[("p1", "B"), ("p2", "A")]));
        let (link, mut rx) = PeerLink::new(16);
        room.local_host = Some(LocalHost { link, epoch: 1 });
        // B has not put p1 back yet: not reported, re-check asked.
        let settle = Duration::from_secs(60);
        assert!(room.apply_sync(&snapshot(11, &[("p2", "A")]), "A", settle, &ctx));
        assert!(texts(&mut rx).is_empty());
        assert!(room.peers.contains_key("p1"));
        // B puts it back: nothing to report, nothing in doubt.
        assert!(!room.apply_sync(
            &snapshot(12, &[("p1", "B"), ("p2", "A")]),
            "A",
            settle,
            &ctx
        ));
        assert!(texts(&mut rx).is_empty());
        assert!(room.suspects.is_empty());
        // Missing again, and still missing after the settle time: reported.
        assert!(!room.apply_sync(&snapshot(13, &[("p2", "A")]), "A", Duration::ZERO, &ctx));
        let got = texts(&mut rx);
        assert_eq!(got, [r#"{"type":"peer_left","peer":"p1"}"#], "{got:?}");
        // A peer of this instance missing from Redis is reported at once.
        assert!(!room.apply_sync(&snapshot(14, &[]), "A", settle, &ctx));
        assert_eq!(texts(&mut rx), [r#"{"type":"peer_left","peer":"p2"}"#]);
        // A snapshot older than applied events changes nothing, and asks
        // for another look.
        room.apply(
            Event::Joined {
                ver: 20,
                peer: "p3".into(),
                role: Role::Watch,
                inst: "B".into(),
            },
            &ctx,
        );
        assert_eq!(
            texts(&mut rx),
            [r#"{"type":"peer_joined","peer":"p3","role":"watch"}"#]
        );
        assert!(room.apply_sync(&snapshot(15, &[]), "A", Duration::ZERO, &ctx));
        assert!(room.peers.contains_key("p3"));
        assert!(texts(&mut rx).is_empty());
    }

    #[test]
    fn membership_events_wait_for_the_host_and_stale_ones_are_ignored() {
        let metrics = Metrics::new();
        let ctx = Ctx { metrics: &metrics };
        let mut room = RoomCache::from_snapshot(&snapshot(10, &[]));
        let joined = Event::Joined {
            ver: 11,
            peer: "p1".into(),
            role: Role::Join,
            inst: "B".into(),
        };
        // No host registered here yet: held.
        assert!(matches!(room.apply(joined.clone(), &ctx), Applied::Hold(_)));
        room.hold(Instant::now(), joined.clone());
        let (link, mut rx) = PeerLink::new(16);
        room.local_host = Some(LocalHost { link, epoch: 1 });
        assert!(!room.drain_held(&ctx));
        assert_eq!(
            texts(&mut rx),
            [r#"{"type":"peer_joined","peer":"p1","role":"join"}"#]
        );
        // The same event again, or an older one: ignored.
        room.apply(joined, &ctx);
        room.apply(
            Event::Left {
                ver: 9,
                peer: "p1".into(),
            },
            &ctx,
        );
        assert!(texts(&mut rx).is_empty());
        assert!(room.peers.contains_key("p1"));
    }

    #[test]
    fn events_parse() {
        let (room, e) = parse_event("J|r00m|17|p33r|w|inst").unwrap();
        assert_eq!(room, "r00m");
        assert!(
            matches!(e, Event::Joined { ver: 17, ref peer, role: Role::Watch, ref inst } if peer == "p33r" && inst == "inst")
        );
        let text = r#"{"type":"offer","sdp":"a|b,c","to":"p1"}"#;
        let env = to_peers_envelope("r00m", RelayKind::Offer, &["p1", "p2"], text);
        let (_, e) = parse_event(&env).unwrap();
        match e {
            Event::ToPeers {
                kind,
                peers,
                text: t,
            } => {
                assert_eq!(kind, RelayKind::Offer);
                assert_eq!(peers, ["p1", "p2"]);
                assert_eq!(t.as_str(), text);
            }
            other => panic!("{other:?}"),
        }
        let env = to_host_envelope("r00m", RelayKind::IceCandidate, "{|}");
        let (_, e) = parse_event(&env).unwrap();
        assert!(
            matches!(e, Event::ToHost { kind: RelayKind::IceCandidate, ref text } if text.as_str() == "{|}")
        );
        assert!(matches!(
            parse_event("HJ|r|5|i|2|secret").unwrap().1,
            Event::HostJoined {
                ver: 5,
                epoch: 2,
                ..
            }
        ));
        assert!(matches!(
            parse_event("C|r|9|1").unwrap().1,
            Event::Closed { counted: true }
        ));
        assert!(parse_event("X|r|1").is_none());
        assert!(parse_event("J|r|x|p|j|i").is_none());
    }
}
