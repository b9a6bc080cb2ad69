//! Server limits and settings: plain data with the contract's defaults.
//!
//! The command line (`cli.rs`) fills this in from flags and environment
//! variables; tests build it directly with short timeouts.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::IceServersReply;

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
/// Default time a client has to send a request's head, and the longest a
/// plain HTTP connection may wait idle for its next request.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head (request line and headers), in bytes (HTTP
/// 431 above it). A browser's upgrade request with cookies is a few KB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default longest time a connection may stay a plain HTTP connection (not
/// a WebSocket), whatever it is doing.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on TCP connections that are not WebSockets; at start it is
/// lowered to an eighth of the open-files limit when that is smaller.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 1024;
/// Default connections one client address (an IPv6 /64) may hold at once,
/// counted from accept: an office of 50 viewers behind one NAT address,
/// each with its page's keep-alive connections, stays well under it.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 256;
/// Default rooms one client address may create per minute.
pub const DEFAULT_ROOM_CREATIONS_PER_MINUTE: u32 = 60;
/// Default rooms one client address may enter (join or watch) per minute:
/// 50 viewers behind one address reloading their page a few times.
pub const DEFAULT_ATTACHES_PER_MINUTE: u32 = 300;
/// Default maximum of rooms one server holds (rooms waiting for their
/// host included).
pub const DEFAULT_MAX_ROOMS: usize = 10_000;

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
    /// Time to send a request head, and the longest idle time between two
    /// requests of a plain HTTP connection.
    pub header_timeout: Duration,
    /// Largest request head, in bytes (HTTP 431 above it).
    pub max_header_bytes: usize,
    /// Longest time a connection may stay plain HTTP (not a WebSocket).
    pub http_timeout: Duration,
    /// TCP connections that are not WebSockets at once; when full, the
    /// oldest is closed to make room. `None`: [`DEFAULT_MAX_HTTP_CONNECTIONS`]
    /// or an eighth of the open-files limit, whichever is smaller.
    pub max_http_connections: Option<usize>,
    /// Connections one client may hold at once (0: no limit).
    pub max_connections_per_client: u32,
    /// Rooms one client may create per minute (0: no limit).
    pub room_creations_per_minute: u32,
    /// Rooms one client may enter per minute (0: no limit).
    pub attaches_per_minute: u32,
    /// Rooms this server holds at most (0: no limit).
    pub max_rooms: usize,
    /// Whose `X-Forwarded-For` names the client (by default no one's).
    pub proxy: crate::clients::ProxyTrust,
    /// Where to POST room and peer events; `None`: nowhere.
    pub webhooks: Option<crate::webhooks::WebhookOptions>,
    /// Short-lived TURN credentials for every peer (`--turn-secret` or
    /// `--turn-listen`): `ice_servers` then carries one more entry, minted
    /// for the peer; `None`: `ice_servers` as it is.
    pub turn: Option<crate::turn::IceServers>,
    /// The admin API's key (`--admin-key`); `None`: the API is off.
    pub admin_key: Option<crate::admin::AdminKey>,
    /// Access control (`--auth`): open, or tokens checked with these keys
    /// (docs/AUTH.md).
    pub auth: crate::auth::AuthConfig,
    /// TLS on the listening port (`--tls-cert`/`--tls-key` or
    /// `--acme-domain`); `None`: plain HTTP and `ws://`.
    pub tls: Option<crate::tls::ServerTls>,
    /// A plain-HTTP port answering every request but `/healthz` with a
    /// redirect to `https://` (`--http-redirect-bind`); only with `tls`.
    pub http_redirect: Option<std::net::SocketAddr>,
}

impl Config {
    /// The ICE servers for peer `peer` of the room labelled `room` (an `init`
    /// reply's, or an `ice_servers` reply's): the static list, plus, with
    /// TURN, credentials minted now for the label `room/peer` (never a
    /// token) and their lifetime in seconds.
    pub fn ice_servers_for(&self, room: &str, peer: &str) -> IceServersReply<'_> {
        match &self.turn {
            Some(turn) => IceServersReply {
                ice_servers: Cow::Owned(turn.for_peer(&format!("{room}/{peer}"))),
                ice_servers_ttl: Some(turn.ttl().as_secs()),
            },
            None => IceServersReply {
                ice_servers: Cow::Borrowed(&self.ice_servers),
                ice_servers_ttl: None,
            },
        }
    }
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
            webhooks: None,
            turn: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            max_http_connections: None,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            room_creations_per_minute: DEFAULT_ROOM_CREATIONS_PER_MINUTE,
            attaches_per_minute: DEFAULT_ATTACHES_PER_MINUTE,
            max_rooms: DEFAULT_MAX_ROOMS,
            proxy: crate::clients::ProxyTrust::default(),
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
            admin_key: None,
            auth: crate::auth::AuthConfig::Open,
            tls: None,
            http_redirect: None,
        }
    }
}
