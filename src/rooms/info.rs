//! What a registry tells about its rooms, for operators: the rooms as they
//! are now ([`RoomInfo`], [`PeerInfo`], from [`Registry::rooms`]) and what
//! happens to them ([`RoomEvent`], sent into an [`EventSink`]: the webhooks,
//! and any live subscriber such as the fleet page's feed).
//!
//! [`Registry::rooms`]: super::Registry::rooms

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::protocol::Role;
use crate::token::PeerId;
use crate::webhooks::{EndReason, Event, EventKind, LeaveReason, PeerRef, RoomRef, Webhooks};

/// The close code and reason of a peer an administrator removed
/// ([`Registry::kick`](super::Registry::kick)).
pub const KICKED: (u16, &str) = (4003, "kicked by an administrator");

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One open room, as [`Registry::rooms`](super::Registry::rooms) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo {
    /// The room's label (the short id in logs, metrics and webhooks; not a
    /// token).
    pub label: String,
    /// The room's stable name (named robot rooms); `None` for the random
    /// rooms of open mode.
    pub name: Option<String>,
    /// The host's peer id.
    pub host: PeerId,
    /// Whether the host is connected now (if not, the room waits out its
    /// grace period for a resume).
    pub host_connected: bool,
    /// Since when the host is connected, or away (unix seconds).
    pub host_since: u64,
    /// When the room opened (unix seconds).
    pub since: u64,
    /// Its guests and watchers (not the host), by id.
    pub peers: Vec<PeerInfo>,
}

/// A guest or watcher of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// The peer's id.
    pub id: PeerId,
    /// `join` or `watch`.
    pub role: Role,
    /// When it entered the room (unix seconds).
    pub since: u64,
}

/// Why an event happened: `reason` of `room_ended`, `host_left`, `peer_left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventReason {
    /// Why a room ended.
    Ended(EndReason),
    /// Why a host or peer left.
    Left(LeaveReason),
}

/// Something that happened to a room: what the registries emit, exactly
/// once per change (with Redis, by the instance whose script made it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// What happened (`room_started`, ..., never `token_revoked`).
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The room.
    pub room: RoomRef,
    /// The room's shared sequence number of the event, when the registry
    /// keeps one (Redis); otherwise the webhooks number the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The host or peer concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerRef>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EventReason>,
    /// When (unix seconds).
    pub at: u64,
}

impl RoomEvent {
    fn new(kind: EventKind, room: RoomRef) -> Self {
        RoomEvent {
            kind,
            room,
            seq: None,
            peer: None,
            reason: None,
            at: unix_now(),
        }
    }

    fn peer(mut self, id: impl Into<String>, role: Role) -> Self {
        self.peer = Some(PeerRef {
            id: id.into(),
            role,
        });
        self
    }

    /// A host opened `room`.
    pub fn room_started(room: RoomRef, host: impl Into<String>) -> Self {
        Self::new(EventKind::RoomStarted, room).peer(host, Role::Host)
    }

    /// `room` closed.
    pub fn room_ended(room: RoomRef, reason: EndReason) -> Self {
        let mut e = Self::new(EventKind::RoomEnded, room);
        e.reason = Some(EventReason::Ended(reason));
        e
    }

    /// The host's connection went away.
    pub fn host_left(room: RoomRef, host: impl Into<String>, reason: LeaveReason) -> Self {
        let mut e = Self::new(EventKind::HostLeft, room).peer(host, Role::Host);
        e.reason = Some(EventReason::Left(reason));
        e
    }

    /// A host resumed `room`.
    pub fn host_joined(room: RoomRef, host: impl Into<String>) -> Self {
        Self::new(EventKind::HostJoined, room).peer(host, Role::Host)
    }

    /// A guest or watcher entered.
    pub fn peer_joined(room: RoomRef, peer: impl Into<String>, role: Role) -> Self {
        Self::new(EventKind::PeerJoined, room).peer(peer, role)
    }

    /// A guest or watcher left.
    pub fn peer_left(
        room: RoomRef,
        peer: impl Into<String>,
        role: Role,
        reason: LeaveReason,
    ) -> Self {
        let mut e = Self::new(EventKind::PeerLeft, room).peer(peer, role);
        e.reason = Some(EventReason::Left(reason));
        e
    }

    /// With the room's shared sequence number.
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    /// The webhook event.
    pub fn to_webhook(&self) -> Event {
        let room = self.room.clone();
        let peer = self.peer.clone().unwrap_or(PeerRef {
            id: String::new(),
            role: Role::Host,
        });
        let left = match self.reason {
            Some(EventReason::Left(r)) => r,
            _ => LeaveReason::Left,
        };
        let event = match self.kind {
            EventKind::RoomStarted => Event::room_started(room, peer.id),
            EventKind::RoomEnded => {
                let reason = match self.reason {
                    Some(EventReason::Ended(r)) => r,
                    _ => EndReason::HostGone,
                };
                Event::room_ended(room, reason)
            }
            EventKind::HostLeft => Event::host_left(room, peer.id, left),
            EventKind::HostJoined => Event::host_joined(room, peer.id),
            EventKind::PeerJoined => Event::peer_joined(room, peer.id, peer.role),
            EventKind::PeerLeft | EventKind::TokenRevoked => {
                Event::peer_left(room, peer.id, peer.role, left)
            }
        };
        match self.seq {
            Some(seq) => event.with_seq(seq),
            None => event,
        }
    }
}

/// Events a live subscriber may lag behind by before it misses some.
pub const FEED_CAPACITY: usize = 1024;

/// Where room events go: the webhooks (never waiting: a full queue drops
/// and counts) and a broadcast feed for live subscribers on this instance
/// (a lagging subscriber misses events, it never slows the registry).
/// Cheap to clone. `EventSink::default()` sends nowhere.
#[derive(Clone, Default)]
pub struct EventSink {
    inner: Option<Arc<SinkInner>>,
}

struct SinkInner {
    webhooks: Webhooks,
    feed: broadcast::Sender<RoomEvent>,
}

impl EventSink {
    /// A sink into `webhooks` and a feed for [`EventSink::subscribe`].
    pub fn new(webhooks: Webhooks) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        EventSink {
            inner: Some(Arc::new(SinkInner { webhooks, feed })),
        }
    }

    /// Sends a room event to the webhooks and the feed, without waiting.
    pub fn emit(&self, event: RoomEvent) {
        let Some(inner) = &self.inner else { return };
        inner.webhooks.emit_with(|| event.to_webhook());
        if inner.feed.receiver_count() > 0 {
            let _ = inner.feed.send(event);
        }
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Hands a room event another instance emitted (and sent to the
    /// webhooks itself) to this instance's live subscribers only.
    pub fn feed(&self, event: RoomEvent) {
        if let Some(inner) = &self.inner {
            if inner.feed.receiver_count() > 0 {
                let _ = inner.feed.send(event);
            }
        }
    }

    /// Sends any webhook event (`token_revoked`, from the auth side) to the
    /// webhooks, without waiting.
    pub fn emit_webhook(&self, event: Event) {
        if let Some(inner) = &self.inner {
            inner.webhooks.emit(event);
        }
    }

    /// The webhooks handle.
    pub fn webhooks(&self) -> Webhooks {
        self.inner
            .as_ref()
            .map(|i| i.webhooks.clone())
            .unwrap_or_default()
    }

    /// The room events from now on (`None` for the sink that sends
    /// nowhere): those of this instance and, with Redis, of every instance
    /// (each event once; an instance's events in its order).
    pub fn subscribe(&self) -> Option<broadcast::Receiver<RoomEvent>> {
        self.inner.as_ref().map(|i| i.feed.subscribe())
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("EventSink(none)"),
            Some(i) => write!(f, "EventSink({:?})", i.webhooks),
        }
    }
}
