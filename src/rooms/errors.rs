//! What a registry tells a peer it refuses, and how it closes a room: one
//! place for the errors and texts that every [`Registry`](super::Registry)
//! gives, so that a peer cannot tell which registry serves it.

use super::PeerLink;
use crate::protocol::{ErrorCode, PeerError};

/// A token or secret that names no open room.
pub fn room_not_found() -> PeerError {
    PeerError::new(
        ErrorCode::RoomNotFound,
        "no open room has this token (it is wrong, or the room has closed)",
    )
}

/// A guest's or watcher's message its host's queue refused.
pub fn host_busy() -> PeerError {
    PeerError::new(
        ErrorCode::HostBusy,
        "the host is not keeping up: this message was not delivered (your share of its queue is full); send less",
    )
}

/// The room already has `max_peers` guests and watchers.
pub fn room_full(max_peers: usize) -> PeerError {
    PeerError::new(
        ErrorCode::RoomFull,
        format!("the room already has its maximum of {max_peers} peers"),
    )
}

/// A guest's or watcher's message while the host is away.
pub fn host_absent() -> PeerError {
    PeerError::new(
        ErrorCode::HostAbsent,
        "the host is disconnected; it may come back",
    )
}

/// A message from a host that another connection has replaced.
pub fn replaced() -> PeerError {
    PeerError::new(
        ErrorCode::NotInRoom,
        "another connection has resumed hosting this room",
    )
}

/// The host's `to` names nobody in its room.
pub fn peer_not_found() -> PeerError {
    PeerError::new(ErrorCode::PeerNotFound, "`to` names no peer of this room")
}

/// The registry cannot serve the request now (the shared registry while
/// Redis is unreachable).
pub fn unavailable() -> PeerError {
    PeerError::new(
        ErrorCode::Unavailable,
        "rooms are unavailable right now; try again",
    )
}

/// The close code and reason a peer gets when its room closes (after the
/// `room_closed` message).
pub const ROOM_CLOSED: (u16, &str) = (1000, "room closed");

/// Closes `link` because its room closed.
pub(crate) fn close_room_closed(link: &PeerLink) {
    link.close(ROOM_CLOSED.0, ROOM_CLOSED.1);
}

/// A guest's or watcher's `close_room`: only the host ends its room.
pub fn not_host() -> PeerError {
    PeerError::new(ErrorCode::Forbidden, "only the host may close its room")
}
