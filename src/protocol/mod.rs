//! Wire protocol v1, free of I/O, used in both directions: the server reads
//! client messages and writes its own; a client (the bridge) writes client
//! messages and reads the server's, with the same types.
//!
//! - [`client`]: what peers send ([`ClientMessage`]), read with [`parse`]
//!   and written with [`ClientMessage::to_json`];
//! - `parse` and `fast`: validation, the fast scanner and its differential
//!   tests against serde;
//! - [`rewrite`]: the relay's changes to a message's text (`from`, and a
//!   host's `to`);
//! - [`server`]: the server's own messages ([`ServerMessage`]), written with
//!   [`ServerMessage::to_json`] and read with [`ServerMessage::parse`], and
//!   what a host reads ([`ToHost`]);
//! - `error`: the stable [`ErrorCode`]s, the bridge's among them.
//!
//! The reference for users is `docs/PROTOCOL.md`; the tests pin the wire
//! format with literal JSON.
//!
//! Inbound messages are deserialised into borrowed, typed values so that
//! validation is complete (a mistyped field is an error, not a surprise for the
//! robot), but they are relayed as the text the sender wrote: unknown fields are
//! kept and nothing is re-serialised on the hot path.

pub mod client;
mod error;
mod fast;
mod parse;
pub mod rewrite;
pub mod server;

use serde::{Deserialize, Serialize};

pub use client::{
    Action, ClientMessage, Configure, ExpectedTrack, IceCandidate, Init, InitRequest, Present,
    Relay, RelayKind, RelayedError, Route, Sdp, Stream, Track,
};
pub use error::{ErrorCode, PeerError};
pub use parse::{parse, CLIENT_TYPES};
pub use rewrite::{with_from, with_to, without_from};
pub use server::{
    error_json, IceServersReply, InitReply, PresentPeer, ServerMessage, ToHost, Unreadable,
};

/// A peer's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the room (a robot's bridge, or a sharing browser). Receives every
    /// message of the room's other peers; addresses them with `to`.
    Host,
    /// Attached with the `join` token: a full peer.
    Join,
    /// Attached with the `watch` token: a receive-only viewer, which may not ask
    /// the host to take media in (`expect_*` actions).
    Watch,
}

impl Role {
    /// The wire name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Join => "join",
            Role::Watch => "watch",
        }
    }
}
