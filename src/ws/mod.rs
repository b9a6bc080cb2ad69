//! The server side of a WebSocket connection (RFC 6455) over the upgraded
//! TCP socket, one concern per file:
//!
//! - [`handshake`]: the checks made on an upgrade request (§4.2.1) and the
//!   `Sec-WebSocket-Accept` answer;
//! - [`read`]: the frame [`Reader`], which assembles messages;
//! - [`write`]: the frame [`Writer`];
//! - [`close`]: the close codes the server sends and accepts.
//!
//! Why not tungstenite's `WebSocket` (which axum wraps): its read and write
//! buffers belong to the connection, grow to the largest frame it has seen
//! and are never released, so an idle connection that once carried a 4 KB
//! SDP keeps about 10 KB of buffers for its whole life; its split halves
//! share the stream through a lock, and each poll goes through a waker proxy.
//! Signalling connections are idle nearly all the time and busy in short
//! bursts, so here every buffer is held only while it has bytes in it:
//!
//! - reads go into one scratch buffer per thread; only bytes not yet handled
//!   (the rest of a burst, or a frame header still arriving) are copied into
//!   the connection's own buffer, which is freed as soon as it is drained;
//!   the payload of a text frame still arriving goes straight into the
//!   message being assembled, and a binary payload is dropped as it arrives;
//! - frames to send are queued with their payloads' own buffers, written
//!   with as few system calls as the socket allows, and the queue is freed
//!   once it is written.
//!
//! Frames are checked as early as their bytes allow: reserved bits and
//! opcodes, masking, a control frame's length and fragmentation, and the
//! order of data frames from a frame's first two bytes; a 64-bit length's
//! top bit and the message size from the full header, before any payload
//! is read; UTF-8 as each piece of a text message arrives, so a bad byte is
//! refused when it arrives, not when the message ends. The conformance of
//! the whole is checked by Autobahn|Testsuite (`scripts/autobahn.sh`,
//! against `examples/ws_echo.rs`).

pub mod close;
pub mod handshake;
pub mod read;
pub mod write;

pub use handshake::{accept_key, NotUpgrade};
pub use read::{unmask, Incoming, ReadError, Reader, READ_CHUNK};
pub use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
pub use tokio_tungstenite::tungstenite::Utf8Bytes;
pub use write::Writer;

/// The longest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Frame opcodes (RFC 6455 §5.2).
mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}
