//! signal-server: a WebRTC signalling server, and the bridge that lets a robot
//! running ROS `webrtc_ros` be watched from any browser through it.
//!
//! # Architecture at a glance
//!
//! ```text
//!  robot: webrtc_ros <-ws-> bridge ==ws==> [ signal-server ] <==ws== browsers
//!                                           |
//!   server.rs   HTTP routes, upgrade checks (origin, token, capacity), shutdown
//!   session/    one task per socket: reader + bounded outbox + writer, one select!
//!   ws.rs       WebSocket frames over the upgraded socket: buffers held only
//!               while they hold bytes (an idle connection keeps none)
//!   rooms/      the Registry trait; memory.rs (default) and redis/ (shared);
//!               budget.rs: byte budgets of queued output, and who pays
//!   protocol.rs wire types and validation, no I/O
//!   token.rs    random tokens and peer ids
//!   metrics.rs  Prometheus counters
//!   assets.rs   the embedded demo page
//!   config.rs   limits and their defaults; cli.rs the command line
//! ```
//!
//! A client sends `{"type":"init"}` and becomes the host of a new room, with two
//! tokens: `join` (full peers) and `watch` (receive-only viewers). Peers that
//! present a token are attached to the room; their messages go to the host with
//! `from` added, and the host's messages go to the peer named in `to`, or to all.
//! The wire contract is in `docs/PROTOCOL.md`.

#![warn(missing_docs)]

pub mod assets;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod rooms;
pub mod server;
pub mod session;
pub mod token;
pub mod ws;
