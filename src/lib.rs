//! signal-server: a WebRTC signalling server, and the bridge that lets a robot
//! running ROS `webrtc_ros` be watched from any browser through it.
//!
//! # Architecture at a glance
//!
//! ```text
//!  robot: webrtc_ros <-ws-> bridge ==ws==> [ signal-server ] <==ws== browsers
//!                                           |
//!   server/     the accept loop and the HTTP edge's limits (edge.rs), routes
//!               and upgrade checks (routes.rs), graceful shutdown
//!   clients/    per-client limits: connections, room creations, attaches
//!   session/    one task per socket: reader + bounded outbox + writer, one select!
//!   ws/         the WebSocket layer over the upgraded socket (handshake, read,
//!               write, close codes): buffers held only while they hold bytes
//!               (an idle connection keeps none)
//!   rooms/      the Registry trait; memory.rs (default) and redis/ (shared);
//!               budget.rs: byte budgets of queued output, and who pays
//!   protocol/   wire types both ways (client and server messages), validation,
//!               the fast scanner and the relay rewrite; no I/O
//!   bridge/     the `bridge` subcommand: a robot's webrtc_ros as a room's host
//!   token.rs    random tokens and peer ids
//!   auth/       signed access tokens (JWT): keys, claims, grants, revocation
//!   admin/      the admin API (/api/v1/) and the fleet page (/fleet)
//!   webhooks/   signed POSTs of room and peer events (docs/WEBHOOKS.md)
//!   metrics.rs  Prometheus counters
//!   turn/       the embedded TURN relay and its short-lived credentials
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

pub mod admin;
pub mod assets;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod clients;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod rooms;
pub mod server;
pub mod session;
pub mod tls;
pub mod token;
pub mod turn;
pub mod webhooks;
pub mod ws;
