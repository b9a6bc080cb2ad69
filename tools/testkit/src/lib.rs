//! The one test kit of signal-server: what its integration tests
//! (`tests/`) and its tools (`tools/soak`, `tools/bench`,
//! `tools/redis-bench`, `tools/turn-bench`) need to drive a server through
//! real sockets, written once.
//!
//! - [`in_process`] (feature `in-process`): the server in this process on
//!   port 0, with rooms in memory or in Redis, and the configs tests use.
//! - [`process`]: the built binary as a child process (arguments,
//!   environment, its log in a file, `/proc` readings, signals).
//! - [`redis`]: a `redis-server` of its own (start, kill, restart, TLS).
//! - [`client`] and [`room`]: one WebSocket client that reads with
//!   timeouts, and the room helpers (`room`, `attach`, `join`).
//! - [`frames`]: the same reads over any WebSocket stream, returning what
//!   came instead of panicking (for load generators); [`flood`]: a client
//!   that sends one message over and over, counting the refusals.
//! - [`raw`]: a hand-written WebSocket client over a socket with a small
//!   receive buffer, for clients that read slowly or never;
//!   [`slowloris`]: connections that send a request head a byte at a time,
//!   or nothing.
//! - [`net`], [`http`], [`prom`], [`procfs`]: free ports and source
//!   addresses, a plain HTTP GET, `/metrics` parsing, `/proc` sampling (and
//!   the peak RSS over a period).
//! - [`tools`] and [`tls`]: the programs a test needs (a missing one fails
//!   the test, naming the package to install), and certificates made with
//!   `openssl`.
//!
//! Every wait is for an event, bounded by [`WAIT`]; a timeout is a failure.

pub mod client;
pub mod flood;
pub mod frames;
pub mod http;
#[cfg(feature = "in-process")]
pub mod in_process;
pub mod net;
pub mod process;
pub mod procfs;
pub mod prom;
pub mod raw;
pub mod redis;
pub mod room;
pub mod slowloris;
pub mod tls;
pub mod tools;

use std::time::Duration;

pub use client::{Client, Ended};
pub use net::{free_port, free_udp_port, ConnectError};
pub use process::{Launch, ServerProcess};
pub use prom::series_value;
pub use raw::RawClient;
pub use redis::RedisServer;
pub use room::{
    attach, attach_from, join, join_by_query, join_from, room, room_from, Endpoint, Room,
};
pub use tools::{require_python_modules, require_tool};

/// How long a test waits for something that should happen (a loaded
/// two-core machine included).
pub const WAIT: Duration = Duration::from_secs(10);

/// Seconds since the Unix epoch now (the unit of token and TURN credential
/// expiries).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
