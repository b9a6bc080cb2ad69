//! The room registry: who is in which room, and how a message reaches a peer.
//!
//! Sessions see only the [`Registry`] and [`Member`] traits, so the registry can
//! be swapped without touching the session code. There are two:
//! [`MemoryRegistry`] (the default: one process, nothing to install) and
//! [`RedisRegistry`] (`--redis-url`: several instances serve the same rooms,
//! sharing them through Redis; see `docs/SCALING.md`).
//!
//! A registry reaches a session only through its [`PeerLink`]: a bounded
//! outbox drained by the session's writer, and a kick switch. Delivery never
//! waits: a full outbox, or one over its byte limits (`budget.rs`), means the
//! peer is not reading, so that peer is kicked and its room carries on;
//! except that a guest's or watcher's message its host cannot take now is
//! refused instead (`host_busy`), and the host kept.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::ws::Utf8Bytes;
use tokio::sync::mpsc;

use crate::metrics::QueueLimit;
use crate::protocol::{InitRequest, PeerError, RelayKind, Role};
use crate::token::{PeerId, Token};

pub mod budget;
pub mod errors;
pub mod info;
mod memory;
pub mod redis;

pub use self::budget::{Budget, GuestText, LinkState, QueueLimits};
pub use self::info::{EventReason, EventSink, PeerInfo, RoomEvent, RoomInfo, KICKED};

pub use self::memory::{MemoryMember, MemoryRegistry};
pub use self::redis::{RedisMember, RedisOptions, RedisRegistry};

/// What a session's writer sends on the socket.
#[derive(Debug, PartialEq)]
pub enum Outgoing {
    /// A text frame.
    Text(Utf8Bytes),
    /// A text frame from a guest or watcher to its host, holding its place
    /// in the sender's share of the host's queue until the writer takes it.
    FromGuest(Box<GuestText>),
    /// A WebSocket ping.
    Ping,
    /// A close frame with this code and reason; the writer stops after it.
    Close(u16, &'static str),
}

impl Outgoing {
    /// What the message counts for in its receiver's queue: its frame's
    /// bytes and [`crate::config::MESSAGE_OVERHEAD`].
    pub fn cost(&self) -> u64 {
        match self {
            Outgoing::Text(text) => budget::text_cost(text.len()),
            Outgoing::FromGuest(g) => g.credit.cost(),
            Outgoing::Ping => budget::text_cost(0),
            // Two bytes of code, and the reason as a close frame holds it.
            Outgoing::Close(_, reason) => budget::text_cost(2 + reason.len().min(123)),
        }
    }
}

/// Why a registry cut a peer off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Its outbox was full: it is not reading.
    SlowConsumer,
    /// Another socket resumed hosting its room.
    Replaced,
    /// Its queued output broke a byte or time limit (never
    /// [`QueueLimit::Messages`], which is [`Kick::SlowConsumer`]).
    Backlog(QueueLimit),
}

/// How a registry reaches one connection. Cheap to clone.
#[derive(Clone)]
pub struct PeerLink {
    tx: mpsc::Sender<Outgoing>,
    state: Arc<LinkState>,
}

/// What became of a message queued on a [`PeerLink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// In the outbox.
    Yes,
    /// The outbox was full, or over a byte limit: this send has kicked the
    /// peer as a slow consumer (the caller counts it with
    /// [`Metrics::slow_peer_dropped`](crate::metrics::Metrics::slow_peer_dropped)).
    Full,
    /// The connection is already gone (or already cut off).
    Gone,
    /// A guest's or watcher's message that its host's queue cannot take now
    /// (see [`PeerLink::send_guest`]); the host is kept.
    Refused,
}

impl PeerLink {
    /// A link with an outbox of `capacity` messages and no byte budget (for
    /// tests), and the outbox's receiving end for the writer.
    pub fn new(capacity: usize) -> (PeerLink, mpsc::Receiver<Outgoing>) {
        Self::make(capacity, None)
    }

    /// A link whose queued bytes count against `budget`'s limits.
    pub fn with_budget(
        capacity: usize,
        budget: &Arc<Budget>,
    ) -> (PeerLink, mpsc::Receiver<Outgoing>) {
        Self::make(capacity, Some(budget))
    }

    fn make(capacity: usize, budget: Option<&Arc<Budget>>) -> (PeerLink, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let state = LinkState::new(budget);
        (PeerLink { tx, state }, rx)
    }

    /// The link's counts and kick switch (for its session).
    pub fn state(&self) -> &Arc<LinkState> {
        &self.state
    }

    /// Queues a message without waiting; a full outbox, or one over its byte
    /// limits, kicks the peer.
    pub fn send(&self, message: Outgoing) -> Queued {
        if let Some(budget) = self.state.budget() {
            return budget::send::send(&self.tx, &self.state, budget, message);
        }
        match self.tx.try_send(message) {
            Ok(()) => Queued::Yes,
            // Only the send that cuts the peer off reports `Full` (and is
            // counted as a slow peer dropped); later ones, until its session
            // has left the room, find it gone.
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.state.kick(Kick::SlowConsumer) {
                    Queued::Full
                } else {
                    Queued::Gone
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Queued::Gone,
        }
    }

    /// Queues a text message.
    pub fn send_text(&self, text: impl Into<Utf8Bytes>) -> Queued {
        self.send(Outgoing::Text(text.into()))
    }

    /// Queues a guest's or watcher's message for this link's connection, a
    /// host; `from` is the sender's link's [`PeerLink::state`] (`None` for a
    /// sender on another instance). Refused (the host is kept) when the sender's share of the
    /// host's queue is full, when the host's queue holds all its guests'
    /// shares, or when the server's budget is reached.
    pub fn send_guest(&self, text: Utf8Bytes, from: Option<&Arc<LinkState>>) -> Queued {
        match self.state.budget() {
            Some(budget) => budget::send::send_guest(&self.tx, &self.state, budget, text, from),
            None => self.send(Outgoing::Text(text)),
        }
    }

    /// Cuts the peer off at once (its session aborts its writer and ends).
    pub fn kick(&self, why: Kick) {
        self.state.kick(why);
    }

    /// Completes when the peer is kicked. One task waits (the link's
    /// session): if several poll it, only the last one polled is woken.
    pub fn kicked(&self) -> impl Future<Output = ()> + Send + '_ {
        self.state.kicked()
    }

    /// Why the peer was kicked, if it was.
    pub fn kick_reason(&self) -> Option<Kick> {
        self.state.kick_reason()
    }

    /// Queues a close frame; if the outbox cannot take it, kicks instead.
    pub fn close(&self, code: u16, reason: &'static str) {
        // A full outbox kicks the peer inside `send`: nothing more to do.
        self.send(Outgoing::Close(code, reason));
    }
}

/// What the registry tells a session that has entered a room; the session
/// renders its `init` reply from it. Its `Debug` shows no token.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// A short label of the room for logs and metrics (not a token).
    pub room: String,
    /// The entering peer's id.
    pub peer: PeerId,
    /// The entering peer's role.
    pub role: Role,
    /// For the host: the room's join token.
    pub join: Option<Token>,
    /// For the host: the room's watch token.
    pub watch: Option<Token>,
    /// For the host: the secret to resume the room with.
    pub resume: Option<Token>,
    /// For a resumed host: the guests and watchers present, by id (they
    /// are also announced with `peer_joined` after the reply).
    pub peers: Option<Vec<(PeerId, Role)>>,
}

/// The registry's token for a named room (token mode, `--auth token`):
/// `NAME/join`, `NAME/watch`, or with `None` the host's `NAME/host`. A
/// named room is opened with these instead of random tokens, so they are
/// the same every time the room is opened again (after a restart, or once
/// it has closed), and a signed token for the name finds it. Peers never
/// see them, and no random token can equal one (`/` is not in its
/// alphabet).
pub fn named_token(name: &str, role: Option<Role>) -> Token {
    let kind = match role {
        None | Some(Role::Host) => "host",
        Some(Role::Join) => "join",
        Some(Role::Watch) => "watch",
    };
    Token::from(format!("{name}/{kind}"))
}

/// The registry interface the session code is written against.
pub trait Registry: Clone + Send + Sync + 'static {
    /// A peer's membership of a room.
    type Member: Member;

    /// Creates a room, attaches to one, or resumes hosting one, as `request`
    /// says. On success, the `init` reply rendered by `welcome` is queued on
    /// `link` before any other message of the room can be.
    fn enter<F>(
        &self,
        request: InitRequest<'_>,
        link: PeerLink,
        welcome: F,
    ) -> impl Future<Output = Result<Self::Member, PeerError>> + Send
    where
        F: FnOnce(&Welcome) -> String + Send;

    /// Whether `token` is an open room's token for `role` (checked before a
    /// query-string attach is upgraded).
    fn has_token(&self, role: Role, token: &str) -> impl Future<Output = bool> + Send;

    /// Whether the registry can take new rooms and peers now (`/healthz`
    /// answers 503 when it cannot). An in-memory registry always can.
    fn healthy(&self) -> bool {
        true
    }

    /// Every open room (on every instance, with Redis): its label and name,
    /// whether its host is connected and since when, and its guests and
    /// watchers. In no particular order.
    fn rooms(&self) -> impl Future<Output = Result<Vec<RoomInfo>, PeerError>> + Send;

    /// Ends the room `room` (its label) at once, wherever its peers are:
    /// each, the host included, gets `room_closed` and the close 1000; its
    /// tokens and secret die; a `room_ended` event (reason `admin`) is
    /// emitted. `false` if no open room has that label.
    fn close_room(&self, room: &str) -> impl Future<Output = Result<bool, PeerError>> + Send;

    /// Removes peer `peer` (a guest, a watcher or the host) from room `room`
    /// at once: its connection is closed with [`KICKED`] (4003 `kicked by
    /// an administrator`); a kicked host leaves its room waiting for a
    /// resume, as if its connection had dropped. `false` if there is no
    /// such peer in an open room.
    fn kick(&self, room: &str, peer: &str) -> impl Future<Output = Result<bool, PeerError>> + Send;

    /// Sends this registry's room events into `sink` from now on (set once,
    /// when the server starts; later calls are ignored).
    fn set_events(&self, sink: EventSink);

    /// The sink set with [`Registry::set_events`] (one that sends nowhere
    /// before): for other events of the server (`token_revoked`, with
    /// [`EventSink::emit_webhook`]) and for live subscribers
    /// ([`EventSink::subscribe`]).
    fn events(&self) -> EventSink;
}

/// A peer attached to a room.
pub trait Member: Send + Sync + 'static {
    /// The peer's id.
    fn peer_id(&self) -> &str;

    /// The peer's role.
    fn role(&self) -> Role;

    /// The room's label (not a token).
    fn room(&self) -> &str;

    /// Delivers `text`: from a guest or watcher to the host; from the host to
    /// the peer `to`, or to every guest and watcher when `to` is `None`.
    fn relay(
        &self,
        kind: RelayKind,
        to: Option<&str>,
        text: Utf8Bytes,
    ) -> impl Future<Output = Result<(), PeerError>> + Send;

    /// Leaves the room, telling the others.
    fn leave(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        self.leave_for(crate::webhooks::LeaveReason::Left)
    }

    /// [`Member::leave`], saying why (in the `peer_left` or `host_left`
    /// event).
    fn leave_for(self, why: crate::webhooks::LeaveReason) -> impl Future<Output = ()> + Send;

    /// From the host: ends the room at once (`{"type":"close_room"}`), as
    /// [`Registry::close_room`] does (event reason `closed`). Refused
    /// (`forbidden`) for a guest or watcher.
    fn close_room(&self) -> impl Future<Output = Result<(), PeerError>> + Send;
}

/// Limits the registry enforces.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Guests and watchers per room.
    pub max_peers: usize,
    /// How long a room waits for its host to resume.
    pub host_grace: Duration,
}
