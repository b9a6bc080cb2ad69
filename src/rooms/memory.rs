//! The in-memory registry: the default, for a single instance.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::ws::Utf8Bytes;
use dashmap::DashMap;

use super::errors::{self, host_busy, room_not_found};
use super::info::{unix_now, EventSink, PeerInfo, RoomEvent, RoomInfo, KICKED};
use super::{
    named_token, Kick, LinkState, Member, PeerLink, Queued, Registry, RoomLimits, Welcome,
};
use crate::metrics::Metrics;
use crate::protocol::{InitRequest, PeerError, RelayKind, Role, ServerMessage};
use crate::token::{self, PeerId, Token};
use crate::webhooks::{EndReason, LeaveReason, RoomRef};

/// The in-memory registry: the default, for a single instance.
///
/// Locking: tokens live in a sharded concurrent map (`DashMap`), consulted only
/// when a peer enters a room; each room has its own mutex over its members,
/// taken for the few instructions of a relay. Unrelated rooms therefore never
/// wait for each other, no lock is held across an `.await`, and the token map
/// and a room's mutex are never held at the same time.
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    tokens: DashMap<Token, TokenEntry>,
    /// The open rooms, by label.
    rooms: DashMap<String, Arc<Room>>,
    limits: RoomLimits,
    metrics: Metrics,
    events: OnceLock<EventSink>,
}

#[derive(Clone)]
struct TokenEntry {
    room: Arc<Room>,
    kind: TokenKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Join,
    Watch,
    Resume,
}

struct Room {
    label: String,
    /// Whether `label` is the room's stable name (a host token's room).
    named: bool,
    join: Token,
    watch: Token,
    host_id: PeerId,
    /// When it opened (unix seconds).
    since: u64,
    state: Mutex<RoomState>,
}

struct RoomState {
    open: bool,
    /// Bumped each time a socket becomes host, so a replaced host's late
    /// `leave` cannot unseat its successor.
    epoch: u64,
    host: Option<PeerLink>,
    /// Since when the host is connected, or away (unix seconds).
    host_since: u64,
    resume: Token,
    peers: Vec<Guest>,
}

struct Guest {
    id: PeerId,
    role: Role,
    link: PeerLink,
    since: u64,
}

impl Room {
    /// What the host's `init` reply says, with this resume secret.
    fn host_welcome(&self, resume: &Token, st: &RoomState) -> Welcome {
        Welcome {
            room: self.label.clone(),
            peer: self.host_id.clone(),
            role: Role::Host,
            join: Some(self.join.clone()),
            watch: Some(self.watch.clone()),
            resume: Some(resume.clone()),
            peers: Some(st.peers.iter().map(|g| (g.id.clone(), g.role)).collect()),
        }
    }

    /// Holds a name's place in the token map while its room is made.
    fn placeholder() -> Room {
        Room {
            label: String::new(),
            named: false,
            join: Token::default(),
            watch: Token::default(),
            host_id: PeerId::default(),
            since: 0,
            state: Mutex::new(RoomState {
                open: false,
                epoch: 0,
                host: None,
                host_since: 0,
                resume: Token::default(),
                peers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock cannot leave the state half-written in
        // a way later readers could not cope with, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new(limits: RoomLimits, metrics: Metrics) -> Self {
        MemoryRegistry {
            shared: Arc::new(Shared {
                tokens: DashMap::new(),
                rooms: DashMap::new(),
                limits,
                metrics,
                events: OnceLock::new(),
            }),
        }
    }

    /// Sends a room event, if events go anywhere.
    fn emit(&self, event: impl FnOnce() -> RoomEvent) {
        if let Some(sink) = self.shared.events.get() {
            sink.emit(event());
        }
    }

    /// A token no open room uses. With 96 random bits a clash never happens in
    /// practice; checking costs one lookup and makes it certain.
    fn fresh_token(&self) -> Token {
        loop {
            let t = token::new_token();
            if !self.shared.tokens.contains_key(&t) {
                return t;
            }
        }
    }

    fn insert_token(&self, room: &Arc<Room>, kind: TokenKind, token: Token) {
        self.shared.tokens.insert(
            token,
            TokenEntry {
                room: Arc::clone(room),
                kind,
            },
        );
    }

    fn lookup(&self, token: &str, kind: TokenKind) -> Option<Arc<Room>> {
        let entry = self.shared.tokens.get(token)?;
        (entry.kind == kind).then(|| Arc::clone(&entry.room))
    }

    fn create(&self, link: PeerLink, welcome: impl FnOnce(&Welcome) -> String) -> MemoryMember {
        let join = self.fresh_token();
        let mut watch = self.fresh_token();
        while watch == join {
            watch = self.fresh_token();
        }
        let resume = self.fresh_token();
        let mut label = token::new_peer_id().into_string();
        while self.shared.rooms.contains_key(&label) {
            label = token::new_peer_id().into_string();
        }
        self.create_with(label, false, [join, watch, resume], link, welcome)
    }

    /// Opens the room named `name` as its host, or takes it over (the old
    /// host is cut off with [`Kick::Replaced`]). Its tokens are the name's
    /// ([`named_token`]), so they are the same whenever the room is opened
    /// again; its resume secret stays the same across take-overs.
    fn host_named(
        &self,
        name: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> MemoryMember {
        let secret = named_token(name, None);
        let mut welcome = Some(welcome);
        loop {
            if let Some(room) = self.lookup(secret.as_str(), TokenKind::Resume) {
                if let Some(member) = self.take_over(&room, &secret, &link, &mut welcome) {
                    return member;
                }
                // Closed meanwhile: its tokens are about to go; replace them.
                self.shared
                    .tokens
                    .remove_if(&secret, |_, e| Arc::ptr_eq(&e.room, &room));
                continue;
            }
            let tokens = [
                named_token(name, Some(Role::Join)),
                named_token(name, Some(Role::Watch)),
                secret.clone(),
            ];
            // Claims the name first, so that two hosts opening it at once
            // make one room (the second takes it over).
            let placeholder = Arc::new(Room::placeholder());
            match self.shared.tokens.entry(secret.clone()) {
                dashmap::mapref::entry::Entry::Occupied(_) => {
                    // Another host is making it this instant (no `.await`
                    // in between): take it over once it is made.
                    std::hint::spin_loop();
                    continue;
                }
                dashmap::mapref::entry::Entry::Vacant(v) => {
                    v.insert(TokenEntry {
                        room: placeholder,
                        kind: TokenKind::Join,
                    });
                }
            }
            let Some(welcome) = welcome.take() else {
                unreachable!("the welcome is used once")
            };
            return self.create_with(name.to_string(), true, tokens, link, welcome);
        }
    }

    /// Makes `link` the host of `room` with the unchanged secret `secret`;
    /// `None` if the room has closed.
    fn take_over<F: FnOnce(&Welcome) -> String>(
        &self,
        room: &Arc<Room>,
        secret: &Token,
        link: &PeerLink,
        welcome: &mut Option<F>,
    ) -> Option<MemoryMember> {
        let mut st = room.lock();
        if !st.open || st.resume != *secret {
            return None;
        }
        let welcome = welcome.take()?;
        st.epoch += 1;
        let epoch = st.epoch;
        link.send_text(welcome(&room.host_welcome(secret, &st)));
        self.seat_host(room, st, link);
        Some(MemoryMember {
            registry: self.clone(),
            peer_id: room.host_id.clone(),
            role: Role::Host,
            epoch,
            room: Arc::clone(room),
            sender: Arc::clone(link.state()),
        })
    }

    /// Tells the new host `link` who is present and the guests that their
    /// host is back, then cuts off the host it replaces.
    fn seat_host(&self, room: &Room, mut st: MutexGuard<'_, RoomState>, link: &PeerLink) {
        for guest in &st.peers {
            self.deliver(
                link,
                ServerMessage::PeerJoined {
                    peer: guest.id.as_str().into(),
                    role: guest.role,
                }
                .to_json(),
            );
        }
        let host_joined = Utf8Bytes::from(ServerMessage::HostJoined.to_json());
        for guest in &st.peers {
            self.deliver(&guest.link, host_joined.clone());
        }
        let old_host = st.host.replace(link.clone());
        st.host_since = unix_now();
        self.emit(|| RoomEvent::host_joined(room_ref(room), room.host_id.as_str()));
        drop(st);
        if let Some(old) = old_host {
            old.kick(Kick::Replaced);
        }
    }

    fn create_with(
        &self,
        label: String,
        named: bool,
        [join, watch, resume]: [Token; 3],
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> MemoryMember {
        let now = unix_now();
        let room = Arc::new(Room {
            label,
            named,
            join: join.clone(),
            watch: watch.clone(),
            host_id: token::new_peer_id(),
            since: now,
            state: Mutex::new(RoomState {
                open: true,
                epoch: 1,
                host: Some(link.clone()),
                host_since: now,
                resume: resume.clone(),
                peers: Vec::new(),
            }),
        });
        let reply = welcome(&Welcome {
            room: room.label.clone(),
            peer: room.host_id.clone(),
            role: Role::Host,
            join: Some(join.clone()),
            watch: Some(watch.clone()),
            resume: Some(resume.clone()),
            peers: None,
        });
        link.send_text(reply);
        self.insert_token(&room, TokenKind::Join, join);
        self.insert_token(&room, TokenKind::Watch, watch);
        self.insert_token(&room, TokenKind::Resume, resume);
        self.shared
            .rooms
            .insert(room.label.clone(), Arc::clone(&room));
        self.shared.metrics.room_opened();
        self.emit(|| RoomEvent::room_started(room_ref(&room), room.host_id.as_str()));
        MemoryMember {
            registry: self.clone(),
            peer_id: room.host_id.clone(),
            role: Role::Host,
            epoch: 1,
            room,
            sender: Arc::clone(link.state()),
        }
    }

    fn attach(
        &self,
        role: Role,
        token: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> Result<MemoryMember, PeerError> {
        let kind = if role == Role::Watch {
            TokenKind::Watch
        } else {
            TokenKind::Join
        };
        let room = self.lookup(token, kind).ok_or_else(room_not_found)?;
        let mut st = room.lock();
        if !st.open {
            return Err(room_not_found());
        }
        if st.peers.len() >= self.shared.limits.max_peers {
            return Err(errors::room_full(self.shared.limits.max_peers));
        }
        let mut id = token::new_peer_id();
        while id == room.host_id || st.peers.iter().any(|g| g.id == id) {
            id = token::new_peer_id();
        }
        link.send_text(welcome(&Welcome {
            room: room.label.clone(),
            peer: id.clone(),
            role,
            join: None,
            watch: None,
            resume: None,
            peers: None,
        }));
        match &st.host {
            Some(host) => {
                self.deliver(
                    host,
                    ServerMessage::PeerJoined {
                        peer: id.as_str().into(),
                        role,
                    }
                    .to_json(),
                );
            }
            None => {
                link.send_text(ServerMessage::HostLeft.to_json());
            }
        }
        st.peers.push(Guest {
            id: id.clone(),
            role,
            link: link.clone(),
            since: unix_now(),
        });
        // Under the room's lock, so that the room's events keep their order.
        self.emit(|| RoomEvent::peer_joined(room_ref(&room), id.as_str(), role));
        drop(st);
        Ok(MemoryMember {
            registry: self.clone(),
            peer_id: id,
            role,
            epoch: 0,
            room,
            sender: Arc::clone(link.state()),
        })
    }

    fn resume(
        &self,
        secret: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> Result<MemoryMember, PeerError> {
        let room = self
            .lookup(secret, TokenKind::Resume)
            .ok_or_else(room_not_found)?;
        let new_secret = self.fresh_token();
        let mut st = room.lock();
        if !st.open || st.resume != secret {
            return Err(room_not_found());
        }
        let old_secret = std::mem::replace(&mut st.resume, new_secret.clone());
        st.epoch += 1;
        let epoch = st.epoch;
        link.send_text(welcome(&room.host_welcome(&new_secret, &st)));
        self.seat_host(&room, st, &link);
        self.shared.tokens.remove(&old_secret);
        self.insert_token(&room, TokenKind::Resume, new_secret);
        Ok(MemoryMember {
            registry: self.clone(),
            peer_id: room.host_id.clone(),
            role: Role::Host,
            epoch,
            room,
            sender: Arc::clone(link.state()),
        })
    }

    /// Queues `text` for `link`, counting a slow consumer if it was full.
    fn deliver(&self, link: &PeerLink, text: impl Into<Utf8Bytes>) -> Queued {
        let queued = link.send_text(text);
        if queued == Queued::Full {
            self.shared.metrics.slow_peer_dropped();
        }
        queued
    }

    fn start_grace(&self, room: Arc<Room>, epoch: u64) {
        let registry = self.clone();
        let grace = self.shared.limits.host_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            registry.close_if_abandoned(&room, epoch);
        });
    }

    fn close_if_abandoned(&self, room: &Arc<Room>, epoch: u64) {
        let st = room.lock();
        if !st.open || st.host.is_some() || st.epoch != epoch {
            return;
        }
        self.end(room, st, EndReason::HostGone);
        tracing::info!(room = %room.label, "room closed: its host did not come back");
    }

    /// Ends an open room now: everyone in it gets `room_closed` and the
    /// close; its tokens die.
    fn end(&self, room: &Arc<Room>, mut st: MutexGuard<'_, RoomState>, why: EndReason) {
        st.open = false;
        let guests = std::mem::take(&mut st.peers);
        let host = st.host.take();
        let resume = std::mem::take(&mut st.resume);
        self.emit(|| RoomEvent::room_ended(room_ref(room), why));
        drop(st);
        let closed = Utf8Bytes::from(ServerMessage::RoomClosed.to_json());
        for link in guests.iter().map(|g| &g.link).chain(host.as_ref()) {
            if self.deliver(link, closed.clone()) == Queued::Yes {
                errors::close_room_closed(link);
            }
        }
        // Only this room's: a named room opened again meanwhile has the same
        // tokens.
        let mine = |_: &Token, e: &TokenEntry| Arc::ptr_eq(&e.room, room);
        self.shared.tokens.remove_if(&room.join, mine);
        self.shared.tokens.remove_if(&room.watch, mine);
        self.shared.tokens.remove_if(&resume, mine);
        self.shared
            .rooms
            .remove_if(&room.label, |_, r| Arc::ptr_eq(r, room));
        self.shared.metrics.room_closed();
    }

    /// Starts the grace period of a room whose host is gone (left, or was
    /// kicked), under the room's lock.
    fn host_gone(&self, room: &Arc<Room>, mut st: MutexGuard<'_, RoomState>, why: LeaveReason) {
        st.host = None;
        st.host_since = unix_now();
        let host_left = Utf8Bytes::from(ServerMessage::HostLeft.to_json());
        for guest in &st.peers {
            self.deliver(&guest.link, host_left.clone());
        }
        self.emit(|| RoomEvent::host_left(room_ref(room), room.host_id.as_str(), why));
        let epoch = st.epoch;
        drop(st);
        self.start_grace(Arc::clone(room), epoch);
    }

    /// Takes guest `id` out of the room, telling the host; `None` if it
    /// is not there.
    fn remove_guest(
        &self,
        room: &Room,
        st: &mut RoomState,
        id: &str,
        why: LeaveReason,
    ) -> Option<Guest> {
        let at = st.peers.iter().position(|g| g.id == id)?;
        let guest = st.peers.remove(at);
        if let Some(host) = &st.host {
            self.deliver(
                host,
                ServerMessage::PeerLeft {
                    peer: guest.id.as_str().into(),
                }
                .to_json(),
            );
        }
        self.emit(|| RoomEvent::peer_left(room_ref(room), guest.id.as_str(), guest.role, why));
        Some(guest)
    }
}

impl Registry for MemoryRegistry {
    type Member = MemoryMember;

    async fn enter<F>(
        &self,
        request: InitRequest<'_>,
        link: PeerLink,
        welcome: F,
    ) -> Result<MemoryMember, PeerError>
    where
        F: FnOnce(&Welcome) -> String + Send,
    {
        match request {
            InitRequest::Create => Ok(self.create(link, welcome)),
            InitRequest::Attach(role, token) => self.attach(role, token, link, welcome),
            InitRequest::Resume(secret) => self.resume(secret, link, welcome),
            InitRequest::Host(name) => Ok(self.host_named(name, link, welcome)),
        }
    }

    async fn has_token(&self, role: Role, token: &str) -> bool {
        let kind = if role == Role::Watch {
            TokenKind::Watch
        } else {
            TokenKind::Join
        };
        self.lookup(token, kind)
            .is_some_and(|room| room.lock().open)
    }

    async fn rooms(&self) -> Result<Vec<RoomInfo>, PeerError> {
        let rooms: Vec<Arc<Room>> = self
            .shared
            .rooms
            .iter()
            .map(|r| Arc::clone(r.value()))
            .collect();
        Ok(rooms
            .iter()
            .filter_map(|room| {
                let st = room.lock();
                st.open.then(|| RoomInfo {
                    label: room.label.clone(),
                    name: room.named.then(|| room.label.clone()),
                    host: room.host_id.clone(),
                    host_connected: st.host.is_some(),
                    host_since: st.host_since,
                    since: room.since,
                    peers: st
                        .peers
                        .iter()
                        .map(|g| PeerInfo {
                            id: g.id.clone(),
                            role: g.role,
                            since: g.since,
                        })
                        .collect(),
                })
            })
            .collect())
    }

    async fn close_room(&self, room: &str) -> Result<bool, PeerError> {
        let Some(room) = self.shared.rooms.get(room).map(|r| Arc::clone(r.value())) else {
            return Ok(false);
        };
        let st = room.lock();
        if !st.open {
            return Ok(false);
        }
        self.end(&room, st, EndReason::Admin);
        tracing::info!(room = %room.label, "room closed by an administrator");
        Ok(true)
    }

    async fn kick(&self, room: &str, peer: &str) -> Result<bool, PeerError> {
        let Some(room) = self.shared.rooms.get(room).map(|r| Arc::clone(r.value())) else {
            return Ok(false);
        };
        let mut st = room.lock();
        if !st.open {
            return Ok(false);
        }
        if room.host_id == peer {
            let Some(link) = st.host.clone() else {
                return Ok(false);
            };
            // A later leave of this host's session must not start another
            // grace period: its epoch is no longer the room's.
            st.epoch += 1;
            self.host_gone(&room, st, LeaveReason::Kicked);
            link.close(KICKED.0, KICKED.1);
        } else {
            let Some(guest) = self.remove_guest(&room, &mut st, peer, LeaveReason::Kicked) else {
                return Ok(false);
            };
            drop(st);
            guest.link.close(KICKED.0, KICKED.1);
        }
        tracing::info!(room = %room.label, peer, "peer kicked by an administrator");
        Ok(true)
    }

    fn set_events(&self, sink: EventSink) {
        let _ = self.shared.events.set(sink);
    }

    fn events(&self) -> EventSink {
        self.shared.events.get().cloned().unwrap_or_default()
    }
}

/// The room as events name it.
fn room_ref(room: &Room) -> RoomRef {
    RoomRef::label(&room.label)
}

/// A peer's membership of an in-memory room.
pub struct MemoryMember {
    registry: MemoryRegistry,
    room: Arc<Room>,
    peer_id: PeerId,
    role: Role,
    /// For the host: the epoch it became host in.
    epoch: u64,
    /// The peer's own link's counts (a guest's messages to its host count
    /// in its share of the host's queue).
    sender: Arc<LinkState>,
}

impl Member for MemoryMember {
    fn peer_id(&self) -> &str {
        self.peer_id.as_str()
    }

    fn role(&self) -> Role {
        self.role
    }

    fn room(&self) -> &str {
        &self.room.label
    }

    async fn relay(
        &self,
        kind: RelayKind,
        to: Option<&str>,
        text: Utf8Bytes,
    ) -> Result<(), PeerError> {
        let metrics = &self.registry.shared.metrics;
        let len = text.len();
        let st = self.room.lock();
        if !st.open {
            return Err(room_not_found());
        }
        if self.role != Role::Host {
            let host = st.host.as_ref().ok_or_else(errors::host_absent)?;
            match host.send_guest(text, Some(&self.sender)) {
                Queued::Yes => metrics.relayed(kind, len),
                Queued::Refused => return Err(host_busy()),
                Queued::Full | Queued::Gone => {}
            }
            return Ok(());
        }
        if st.epoch != self.epoch {
            return Err(errors::replaced());
        }
        match to {
            Some(to) => {
                let guest = st
                    .peers
                    .iter()
                    .find(|g| g.id == to)
                    .ok_or_else(errors::peer_not_found)?;
                if self.registry.deliver(&guest.link, text) == Queued::Yes {
                    metrics.relayed(kind, len);
                }
            }
            None => {
                for guest in &st.peers {
                    if self.registry.deliver(&guest.link, text.clone()) == Queued::Yes {
                        metrics.relayed(kind, len);
                    }
                }
            }
        }
        Ok(())
    }

    async fn leave_for(self, why: LeaveReason) {
        let mut st = self.room.lock();
        if !st.open {
            return;
        }
        if self.role != Role::Host {
            self.registry
                .remove_guest(&self.room, &mut st, self.peer_id.as_str(), why);
            return;
        }
        if st.epoch != self.epoch {
            return; // replaced by a resumed host, or kicked
        }
        self.registry.host_gone(&self.room, st, why);
    }

    async fn close_room(&self) -> Result<(), PeerError> {
        if self.role != Role::Host {
            return Err(errors::not_host());
        }
        let st = self.room.lock();
        if !st.open {
            return Err(room_not_found());
        }
        if st.epoch != self.epoch {
            return Err(errors::replaced());
        }
        self.registry.end(&self.room, st, EndReason::Closed);
        tracing::info!(room = %self.room.label, "room closed by its host");
        Ok(())
    }
}
