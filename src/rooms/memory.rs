//! The in-memory registry: the default, for a single instance.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::ws::Utf8Bytes;
use dashmap::DashMap;

use super::errors::{self, room_not_found};
use super::info::{unix_now, EventSink, RoomEvent, RoomInfo};
use super::{Kick, PeerLink, Queued, Registry, RoomLimits, Welcome};
use crate::metrics::Metrics;
use crate::protocol::{InitRequest, PeerError, Role, ServerMessage};
use crate::token::{self, PeerId, Token};
use crate::webhooks::{EndReason, LeaveReason, RoomRef};

mod member;
mod named;
mod ops;

pub use self::member::MemoryMember;

/// The in-memory registry: the default, for a single instance.
///
/// Locking: tokens live in a sharded concurrent map (`DashMap`), consulted only
/// when a peer enters a room; each room has its own mutex over its members,
/// taken for the few instructions of a relay. Unrelated rooms therefore never
/// wait for each other, no lock is held across an `.await`, and the token map
/// and a room's mutex are never held at the same time.
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<MemoryState>,
}

struct MemoryState {
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
            shared: Arc::new(MemoryState {
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
        self.list_rooms()
    }

    async fn close_room(&self, room: &str) -> Result<bool, PeerError> {
        self.close_by_label(room)
    }

    async fn kick(&self, room: &str, peer: &str) -> Result<bool, PeerError> {
        self.kick_peer(room, peer)
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
