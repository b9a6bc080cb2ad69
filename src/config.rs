//! Server limits and settings: plain data with the contract's defaults.
//!
//! The command line (`cli.rs`) fills this in from flags and environment
//! variables; tests build it directly with short timeouts.

use std::path::PathBuf;
use std::time::Duration;

/// Default interval between the server's WebSocket pings. Heroku's router cuts a
/// WebSocket after 55 s without traffic, so this must stay well under that.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Default time a socket may stay connected without joining a room.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a room outlives its host's socket, waiting for a resume.
pub const DEFAULT_HOST_GRACE: Duration = Duration::from_secs(30);
/// Default maximum size of one message (close 1009 above it).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Default sustained messages per second per socket.
pub const DEFAULT_RATE_PER_SEC: u32 = 100;
/// Default burst of messages per socket above the sustained rate.
pub const DEFAULT_RATE_BURST: u32 = 500;
/// Default maximum guests and watchers in one room (the host not counted).
pub const DEFAULT_MAX_PEERS_PER_ROOM: usize = 32;
/// Default maximum simultaneous WebSocket connections (HTTP 503 above it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default capacity of each connection's outbox, in messages. A peer whose
/// outbox is full is not reading: it is disconnected, and its room carries on.
pub const DEFAULT_OUTBOX_CAPACITY: usize = 1024;
/// Default time given to sockets to close on shutdown before the process exits.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

// Queued output and who pays for it (docs/RELIABILITY.md, "Queued output").
// Every queue counts what it holds for the connection: its outbox, its
// WebSocket writer (control frames included), and a fixed
// [`MESSAGE_OVERHEAD`] per queued message.

/// Default hard limit of the bytes queued for one connection (not counting
/// what its guests and watchers sent a host): over it the connection is
/// dropped as a slow consumer at once.
pub const DEFAULT_OUTBOX_MAX_BYTES: usize = 4 << 20;
/// Default soft limit of the bytes queued for one connection: above it for
/// [`DEFAULT_OUTBOX_SOFT_TIME`] the connection is dropped as a slow consumer.
pub const DEFAULT_OUTBOX_SOFT_BYTES: usize = 1 << 20;
/// Default time a connection may stay above the soft limit.
pub const DEFAULT_OUTBOX_SOFT_TIME: Duration = Duration::from_secs(10);
/// Default time a connection may have bytes waiting without the socket taking
/// any of them (a peer that does not read); checked at each ping.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default budget of queued bytes for the whole server: when it is reached,
/// the connections with the largest queues are dropped first.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 << 20;
/// Default sustained bytes per second a guest or watcher may send (a host's
/// messages reach only its own room and count against the message rate).
pub const DEFAULT_RATE_BYTES_PER_SEC: usize = 256 << 10;
/// Default burst of bytes a guest or watcher may send above the sustained
/// byte rate.
pub const DEFAULT_RATE_BYTES_BURST: usize = 1 << 20;
/// Default share of its host's queue one guest or watcher may fill; its
/// messages beyond it are refused with `host_busy`.
pub const DEFAULT_SENDER_SHARE_BYTES: usize = 256 << 10;
/// Default number of `host_busy` refusals after which a sender that keeps
/// sending is closed 1008 (a run ends after [`HOST_BUSY_RUN_RESET`] without
/// a refusal).
pub const DEFAULT_HOST_BUSY_LIMIT: u32 = 20;
/// A run of `host_busy` refusals ends after this long without one.
pub const HOST_BUSY_RUN_RESET: Duration = Duration::from_secs(10);
/// Default sustained attaches per second to one room, per token (`join` and
/// `watch` each): bounds the `peer_joined`/`peer_left` a host is sent.
pub const DEFAULT_ROOM_JOIN_RATE: u32 = 4;
/// Default burst of attaches to one room, per token, above the sustained rate.
pub const DEFAULT_ROOM_JOIN_BURST: u32 = 64;
/// What each queued message is counted as beyond its frame's bytes: its
/// slot, its buffer's header and the allocator's rounding.
pub const MESSAGE_OVERHEAD: usize = 128;

/// Everything `server::run` needs to know besides its listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interval between pings; a socket that has sent nothing (not even a pong)
    /// for a whole interval after a ping is closed.
    pub ping_interval: Duration,
    /// A socket not attached to a room this long after connecting is closed 1008.
    pub idle_timeout: Duration,
    /// How long a room waits for its host to resume.
    pub host_grace: Duration,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Sustained messages per second per socket.
    pub rate_per_sec: u32,
    /// Burst size of the per-socket rate limit.
    pub rate_burst: u32,
    /// Guests and watchers per room.
    pub max_peers_per_room: usize,
    /// Simultaneous WebSocket connections.
    pub max_connections: usize,
    /// Messages queued per connection before it counts as not reading.
    pub outbox_capacity: usize,
    /// How long shutdown waits for sockets to close.
    pub shutdown_timeout: Duration,
    /// Allowed `Origin` values for upgrades; empty allows every origin.
    /// Requests without an `Origin` header (non-browser clients) are allowed.
    pub allowed_origins: Vec<String>,
    /// ICE servers handed to clients in the `init` reply (a JSON array of
    /// RTCIceServer objects).
    pub ice_servers: serde_json::Value,
    /// Serve the page from this directory instead of the embedded copy.
    pub static_dir: Option<PathBuf>,
    /// Hard limit of the bytes queued for one connection.
    pub outbox_max_bytes: usize,
    /// Soft limit of the bytes queued for one connection.
    pub outbox_soft_bytes: usize,
    /// How long a connection may stay above the soft limit.
    pub outbox_soft_time: Duration,
    /// How long bytes may wait for a socket that takes none of them.
    pub write_stall_timeout: Duration,
    /// Budget of queued bytes for the whole server.
    pub max_queued_bytes: usize,
    /// Sustained bytes per second per guest or watcher.
    pub rate_bytes_per_sec: usize,
    /// Burst of bytes per guest or watcher.
    pub rate_bytes_burst: usize,
    /// Bytes one guest or watcher may have waiting in its host's queue.
    pub sender_share_bytes: usize,
    /// `host_busy` refusals in a run after which the sender is closed 1008.
    pub host_busy_limit: u32,
    /// Sustained attaches per second per room token.
    pub room_join_rate: u32,
    /// Burst of attaches per room token.
    pub room_join_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            host_grace: DEFAULT_HOST_GRACE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_burst: DEFAULT_RATE_BURST,
            max_peers_per_room: DEFAULT_MAX_PEERS_PER_ROOM,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            outbox_capacity: DEFAULT_OUTBOX_CAPACITY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            allowed_origins: Vec::new(),
            ice_servers: serde_json::Value::Array(Vec::new()),
            static_dir: None,
            outbox_max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            outbox_soft_bytes: DEFAULT_OUTBOX_SOFT_BYTES,
            outbox_soft_time: DEFAULT_OUTBOX_SOFT_TIME,
            write_stall_timeout: DEFAULT_WRITE_STALL_TIMEOUT,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            rate_bytes_per_sec: DEFAULT_RATE_BYTES_PER_SEC,
            rate_bytes_burst: DEFAULT_RATE_BYTES_BURST,
            sender_share_bytes: DEFAULT_SENDER_SHARE_BYTES,
            host_busy_limit: DEFAULT_HOST_BUSY_LIMIT,
            room_join_rate: DEFAULT_ROOM_JOIN_RATE,
            room_join_burst: DEFAULT_ROOM_JOIN_BURST,
        }
    }
}
