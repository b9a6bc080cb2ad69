//! Error codes, and the errors a peer causes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable error codes, sent as `{"type":"error","code":...}`.
///
/// Codes are part of the protocol: clients switch on them, so a code is never
/// renamed. The `message` beside it is for humans and may change. Most are
/// the server's; the last ones are sent by the bridge to a viewer (see
/// [`ErrorCode::is_from_bridge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// Valid JSON, but not a message: not an object, no string `type`, or a
    /// field missing or of the wrong type.
    BadMessage,
    /// A `type` this server does not know.
    UnknownType,
    /// A relayed message from a socket that is not attached to a room.
    NotInRoom,
    /// `init` on a socket that is already attached to a room.
    AlreadyInRoom,
    /// The token or resume secret matches no open room.
    RoomNotFound,
    /// The host's `to` names no peer of its room.
    PeerNotFound,
    /// The room's host is disconnected (within its grace period); nothing was
    /// delivered.
    HostAbsent,
    /// The sender's role may not send this (a watcher's `expect_*` action).
    /// The bridge sends it too, for the same reason.
    Forbidden,
    /// The room already has its maximum number of peers.
    RoomFull,
    /// Too many messages: this one was dropped.
    RateLimited,
    /// The message is larger than the server accepts; the socket is closed 1009.
    TooLarge,
    /// A binary frame; the protocol is text only.
    UnsupportedFrame,
    /// The server cannot take this request now (for example its shared room
    /// store is unreachable); try again later.
    Unavailable,
    /// From the bridge: a `src`/`dest` is not in the robot's allow-list.
    SourceNotAllowed,
    /// From the bridge: the robot already serves its maximum number of
    /// viewers.
    ViewerLimit,
    /// From the bridge: the robot's webrtc_ros could not be reached, or its
    /// connection for this viewer dropped. Send `configure` again to retry.
    RobotUnavailable,
    /// This client (address) created too many rooms in the last minute.
    CreateRateLimited,
    /// This client (address) entered rooms too often in the last minute.
    AttachRateLimited,
    /// The server holds its maximum number of rooms; try again later.
    ServerFull,
    /// A guest's or watcher's message was not delivered: the host is not
    /// reading fast enough and the sender's share of its queue is full.
    HostBusy,
    /// Too many peers have entered this room recently; try again shortly.
    TooManyJoins,
    /// Token mode (`--auth token`): no token, or one that proves nothing
    /// (forged, malformed, unknown key, not valid yet, revoked).
    Unauthorized,
    /// Token mode: the token's `exp` has passed (at connect, or during the
    /// session, which then closes 4001).
    TokenExpired,
}

impl ErrorCode {
    /// Every code, for metrics and documentation.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::RoomNotFound,
        ErrorCode::PeerNotFound,
        ErrorCode::HostAbsent,
        ErrorCode::Forbidden,
        ErrorCode::RoomFull,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedFrame,
        ErrorCode::Unavailable,
        ErrorCode::SourceNotAllowed,
        ErrorCode::ViewerLimit,
        ErrorCode::RobotUnavailable,
        ErrorCode::CreateRateLimited,
        ErrorCode::AttachRateLimited,
        ErrorCode::ServerFull,
        ErrorCode::HostBusy,
        ErrorCode::TooManyJoins,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
    ];

    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::AlreadyInRoom => "already_in_room",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::PeerNotFound => "peer_not_found",
            ErrorCode::HostAbsent => "host_absent",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::SourceNotAllowed => "source_not_allowed",
            ErrorCode::ViewerLimit => "viewer_limit",
            ErrorCode::RobotUnavailable => "robot_unavailable",
            ErrorCode::CreateRateLimited => "create_rate_limited",
            ErrorCode::AttachRateLimited => "attach_rate_limited",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::HostBusy => "host_busy",
            ErrorCode::TooManyJoins => "too_many_joins",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
        }
    }

    /// The index of the code in [`ErrorCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether only the bridge sends this code (to a viewer, as a relayed
    /// `error` with `to`); the server itself never does.
    pub fn is_from_bridge(self) -> bool {
        matches!(
            self,
            ErrorCode::SourceNotAllowed | ErrorCode::ViewerLimit | ErrorCode::RobotUnavailable
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error caused by a peer: recoverable, answered with an error
/// message, and the socket stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence for humans naming the problem.
    pub message: String,
}

impl PeerError {
    /// A new error with its code and human-readable message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PeerError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PeerError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn every_error_code_has_its_wire_name_both_ways() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            let wire = serde_json::to_value(c).unwrap();
            assert_eq!(wire, Value::from(c.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(wire).unwrap(), *c);
        }
        assert!(serde_json::from_str::<ErrorCode>("\"launch_missiles\"").is_err());
    }

    #[test]
    fn the_bridge_codes_are_told_apart() {
        let bridge: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.is_from_bridge())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            bridge,
            ["source_not_allowed", "viewer_limit", "robot_unavailable"]
        );
    }
}
