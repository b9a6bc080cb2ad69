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
//!   came instead of panicking (for load generators).
//! - [`net`], [`http`], [`prom`], [`procfs`]: free ports and source
//!   addresses, a plain HTTP GET, `/metrics` parsing, `/proc` sampling.
//! - [`tools`] and [`tls`]: the programs a test needs (a missing one fails
//!   the test, naming the package to install), and certificates made with
//!   `openssl`.
//!
//! Every wait is for an event, bounded by [`WAIT`]; a timeout is a failure.

pub mod client;
pub mod frames;
pub mod http;
#[cfg(feature = "in-process")]
pub mod in_process;
pub mod net;
pub mod process;
pub mod procfs;
pub mod prom;
pub mod redis;
pub mod room;
pub mod tls;
pub mod tools;

use std::time::Duration;

pub use client::{Client, Ended};
pub use net::{free_port, free_udp_port, ConnectError};
pub use process::{Launch, ServerProcess};
pub use prom::series_value;
pub use redis::RedisServer;
pub use room::{attach, join, join_by_query, room, Endpoint, Room};
pub use tools::{require_python_modules, require_tool};

/// How long a test waits for something that should happen (a loaded
/// two-core machine included).
pub const WAIT: Duration = Duration::from_secs(10);
