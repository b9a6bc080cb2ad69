//! The events a webhook carries, and their JSON body (`docs/WEBHOOKS.md`).
//!
//! An [`Event`] says what happened; [`Webhooks::emit`](super::Webhooks::emit)
//! stamps it with a unique id, the time and (for room events) the room's next
//! sequence number. The body is serialised once, by the first delivery that
//! needs it, and shared by every URL.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};

use crate::protocol::Role;

/// What happened: the `type` of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A host opened a room.
    RoomStarted,
    /// A room closed; nothing more is sent for it.
    RoomEnded,
    /// The host's connection went away; the room waits for it to resume.
    HostLeft,
    /// A host came back (resumed), or replaced the previous one.
    HostJoined,
    /// A guest (`join`) or viewer (`watch`) entered the room.
    PeerJoined,
    /// A guest or viewer left the room.
    PeerLeft,
    /// Tokens were revoked (`--auth token`).
    TokenRevoked,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 7] = [
        EventKind::RoomStarted,
        EventKind::RoomEnded,
        EventKind::HostLeft,
        EventKind::HostJoined,
        EventKind::PeerJoined,
        EventKind::PeerLeft,
        EventKind::TokenRevoked,
    ];

    /// The wire name (`"room_started"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RoomStarted => "room_started",
            EventKind::RoomEnded => "room_ended",
            EventKind::HostLeft => "host_left",
            EventKind::HostJoined => "host_joined",
            EventKind::PeerJoined => "peer_joined",
            EventKind::PeerLeft => "peer_left",
            EventKind::TokenRevoked => "token_revoked",
        }
    }
}

/// The room an event is about. Only its label and name: never a `join` or
/// `watch` token, nor a resume secret (whoever reads the webhook must not be
/// able to enter the room with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRef {
    /// The room's label: the short id the server's logs use, unique to this
    /// life of the room (a named room that ends and opens again gets a new
    /// one). `seq` counts per label.
    pub label: String,
    /// The room's stable name (robot rooms of `--auth token`); absent for the
    /// random rooms of `--auth open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RoomRef {
    /// A room known by its label only.
    pub fn label(label: impl Into<String>) -> Self {
        RoomRef {
            label: label.into(),
            name: None,
        }
    }

    /// A named room.
    pub fn named(label: impl Into<String>, name: impl Into<String>) -> Self {
        RoomRef {
            label: label.into(),
            name: Some(name.into()),
        }
    }
}

/// The peer an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRef {
    /// The peer's id, as the room's other peers know it (`from`, `to`).
    pub id: String,
    /// `host`, `join` or `watch`.
    pub role: Role,
}

/// Why a room ended (`reason` of `room_ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Its host did not come back within the grace period.
    HostGone,
    /// Its host ended it (`close_room`).
    Closed,
    /// An administrator closed it (admin API).
    Admin,
    /// The server shut down with the room open (rooms kept in memory).
    Shutdown,
}

/// Why a peer or host left (`reason` of `peer_left` and `host_left`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It closed its connection.
    Left,
    /// Its connection was lost (no pong, a network error).
    Lost,
    /// It did not read its messages and was dropped.
    SlowConsumer,
    /// An administrator removed it.
    Kicked,
    /// Another connection took its place (a resume, a second host).
    Replaced,
    /// Its token expired.
    TokenExpired,
    /// Its token was revoked.
    TokenRevoked,
    /// Its room ended.
    RoomEnded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum Reason {
    Ended(EndReason),
    Left(LeaveReason),
}

/// What a `token_revoked` event revoked (`revoked`, tagged by `by`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Revocation {
    /// One token, by its `jti`.
    Jti {
        /// The token's id.
        jti: String,
    },
    /// Every token of a subject.
    Subject {
        /// The subject (`sub`).
        sub: String,
    },
    /// Every token for a room issued before a time.
    Room {
        /// The room's name.
        room: String,
        /// Tokens issued (`iat`) before this are revoked.
        #[serde(serialize_with = "rfc3339")]
        issued_before: SystemTime,
    },
}

/// Something that happened to a room or a peer, for the webhooks.
///
/// Built with one constructor per [`EventKind`]; the id, the timestamp and
/// the sequence number are added by `emit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    kind: EventKind,
    room: Option<RoomRef>,
    seq: Option<u64>,
    peer: Option<PeerRef>,
    reason: Option<Reason>,
    revoked: Option<Revocation>,
}

impl Event {
    fn new(kind: EventKind, room: Option<RoomRef>) -> Self {
        Event {
            kind,
            room,
            seq: None,
            peer: None,
            reason: None,
            revoked: None,
        }
    }

    fn peer(mut self, id: String, role: Role) -> Self {
        self.peer = Some(PeerRef { id, role });
        self
    }

    fn reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// `room_started`: `host` opened `room`.
    pub fn room_started(room: RoomRef, host: impl Into<String>) -> Self {
        Event::new(EventKind::RoomStarted, Some(room)).peer(host.into(), Role::Host)
    }

    /// `room_ended`: `room` closed, for `reason`.
    pub fn room_ended(room: RoomRef, reason: EndReason) -> Self {
        Event::new(EventKind::RoomEnded, Some(room)).reason(Reason::Ended(reason))
    }

    /// `host_left`: the host's connection went away (the room waits for a
    /// resume; a `room_ended` follows if none comes).
    pub fn host_left(room: RoomRef, host: impl Into<String>, reason: LeaveReason) -> Self {
        Event::new(EventKind::HostLeft, Some(room))
            .peer(host.into(), Role::Host)
            .reason(Reason::Left(reason))
    }

    /// `host_joined`: a host resumed `room`, or replaced its host.
    pub fn host_joined(room: RoomRef, host: impl Into<String>) -> Self {
        Event::new(EventKind::HostJoined, Some(room)).peer(host.into(), Role::Host)
    }

    /// `peer_joined`: a guest or viewer entered `room`.
    pub fn peer_joined(room: RoomRef, peer: impl Into<String>, role: Role) -> Self {
        Event::new(EventKind::PeerJoined, Some(room)).peer(peer.into(), role)
    }

    /// `peer_left`: a guest or viewer left `room`, for `reason`.
    pub fn peer_left(
        room: RoomRef,
        peer: impl Into<String>,
        role: Role,
        reason: LeaveReason,
    ) -> Self {
        Event::new(EventKind::PeerLeft, Some(room))
            .peer(peer.into(), role)
            .reason(Reason::Left(reason))
    }

    /// `token_revoked`: what was revoked. It concerns no one room's life, so
    /// it has no `room` and no `seq`.
    pub fn token_revoked(revoked: Revocation) -> Self {
        let mut event = Event::new(EventKind::TokenRevoked, None);
        event.revoked = Some(revoked);
        event
    }

    /// Uses `seq` as the room's sequence number instead of the one `emit`
    /// would count in this process. With Redis, events for one room are
    /// emitted by several instances, so the number must come from the room's
    /// shared state (incremented by the same Lua script that made the
    /// change). Ignored for events without a room.
    pub fn with_seq(mut self, seq: u64) -> Self {
        if self.room.is_some() {
            self.seq = Some(seq);
        }
        self
    }

    /// What happened.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The room it happened to, if any.
    pub fn room(&self) -> Option<&RoomRef> {
        self.room.as_ref()
    }

    /// The sequence number given with [`Event::with_seq`], if any.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }
}

/// Prefix of event ids (`evt_` and 22 URL-safe characters).
pub const EVENT_ID_PREFIX: &str = "evt_";

/// A new event id: 128 random bits. Ids need to be unique, not secret; they
/// contain no `.` (the signed content is `{id}.{timestamp}.{body}`).
fn new_event_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(EVENT_ID_PREFIX.len() + 22);
    id.push_str(EVENT_ID_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut id);
    id
}

fn rfc3339<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// An emitted event: the event, its id, its time and its sequence number,
/// shared by every URL's queue.
#[derive(Debug)]
pub(crate) struct Stamped {
    pub(crate) id: String,
    at: SystemTime,
    event: Event,
    /// The delivery order key: the room's label, or `None` for events without
    /// a room (delivered in order among themselves).
    pub(crate) lane: Option<Arc<str>>,
    body: OnceLock<Bytes>,
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(serialize_with = "rfc3339")]
    timestamp: SystemTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a RoomRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a PeerRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<&'a Revocation>,
}

impl Stamped {
    /// Stamps `event` now, with a new id. `seq` is the room's sequence
    /// number when the event did not bring one.
    pub(crate) fn new(mut event: Event, seq: impl FnOnce(&RoomRef) -> u64) -> Self {
        if let (Some(room), None) = (&event.room, event.seq) {
            event.seq = Some(seq(room));
        }
        let lane = event.room.as_ref().map(|r| Arc::from(r.label.as_str()));
        Stamped {
            id: new_event_id(),
            at: SystemTime::now(),
            event,
            lane,
            body: OnceLock::new(),
        }
    }

    /// What happened.
    pub(crate) fn kind(&self) -> EventKind {
        self.event.kind
    }

    /// The JSON body, serialised on first use.
    pub(crate) fn body(&self) -> &Bytes {
        self.body.get_or_init(|| {
            let e = &self.event;
            let body = Body {
                id: &self.id,
                kind: e.kind,
                timestamp: self.at,
                room: e.room.as_ref(),
                seq: e.seq,
                peer: e.peer.as_ref(),
                reason: e.reason,
                revoked: e.revoked.as_ref(),
            };
            // Plain strings, numbers and enums: serialising cannot fail.
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::time::Duration;

    fn body(event: Event) -> Value {
        let stamped = Stamped::new(event, |_| 7);
        serde_json::from_slice(stamped.body()).unwrap()
    }

    #[test]
    fn each_kind_has_its_wire_name() {
        for kind in EventKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn a_peer_event_carries_room_seq_peer_and_reason() {
        let v = body(Event::peer_left(
            RoomRef::named("Qx3k9QaB", "robot-7"),
            "k3J9sPqa",
            Role::Watch,
            LeaveReason::Left,
        ));
        assert!(v["id"].as_str().unwrap().starts_with(EVENT_ID_PREFIX));
        assert_eq!(v["id"].as_str().unwrap().len(), 26);
        assert_eq!(v["type"], "peer_left");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert_eq!(v["room"], json!({"label": "Qx3k9QaB", "name": "robot-7"}));
        assert_eq!(v["seq"], 7);
        assert_eq!(v["peer"], json!({"id": "k3J9sPqa", "role": "watch"}));
        assert_eq!(v["reason"], "left");
        assert!(v.get("revoked").is_none());
    }

    #[test]
    fn a_given_sequence_number_wins_over_the_local_one() {
        let v =
            body(Event::room_ended(RoomRef::label("Qx3k9QaB"), EndReason::HostGone).with_seq(41));
        assert_eq!(v["seq"], 41);
        assert_eq!(v["reason"], "host_gone");
        assert_eq!(v["room"], json!({"label": "Qx3k9QaB"}));
        assert!(v.get("peer").is_none());
    }

    #[test]
    fn a_revocation_has_no_room_and_no_sequence_number() {
        let v = body(
            Event::token_revoked(Revocation::Room {
                room: "robot-7".into(),
                issued_before: SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000),
            })
            .with_seq(3),
        );
        assert_eq!(
            v["revoked"],
            json!({"by": "room", "room": "robot-7", "issued_before": "2025-06-15T15:06:40.000Z"})
        );
        assert!(v.get("room").is_none() && v.get("seq").is_none(), "{v}");
    }

    #[test]
    fn event_ids_are_unique_and_dotless() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_event_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| !id.contains('.')));
    }
}
