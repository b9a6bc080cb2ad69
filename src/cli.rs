//! The command line. Every limit and timeout of the protocol is a flag with an
//! environment variable, defaulting to the values in `config.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};

/// A fast, hardened WebRTC signalling server, and a bridge for ROS webrtc_ros
/// robots.
#[derive(Debug, Parser)]
#[command(
    name = "signal-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; the server when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options (when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Subcommands.
// Parsed once at start: the size of the server's options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the signalling server (the default).
    Serve(ServeArgs),
    /// Run on a robot next to ROS webrtc_ros: connect out to a signalling
    /// server, host a room, and give each viewer its own connection to
    /// webrtc_ros.
    Bridge(crate::bridge::BridgeArgs),
    /// Mint access tokens for `--auth token` (see docs/AUTH.md).
    Token(crate::auth::tool::TokenArgs),
}

/// Logging.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format: `text` for people, `json` for log drains. The level
    /// filter comes from RUST_LOG (default `info`).
    #[arg(long, env = "SIGNAL_SERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 20s, 500ms, 1m)"))
}

/// A size in bytes: a number, optionally with a unit (`KiB`, `MiB`, `GiB`,
/// or `k`, `M`, `G` as the same binary multiples), e.g. `4MiB`.
fn bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("not a size: {s:?} (examples: 65536, 64KiB, 4MiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "k" | "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        other => return Err(format!("unknown unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s} is too large"))
}

fn ice_servers(s: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?;
    match &value {
        serde_json::Value::Array(items) if items.iter().all(|i| i.get("urls").is_some()) => {
            Ok(value)
        }
        _ => Err("expected a JSON array of RTCIceServer objects, each with `urls`".into()),
    }
}

/// Options of the server.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on. Without it: 0.0.0.0:$PORT when PORT is set (as
    /// Heroku requires), else 0.0.0.0:9090.
    #[arg(long, env = "SIGNAL_SERVER_BIND")]
    pub bind: Option<SocketAddr>,

    /// Runtime worker threads: 0 (the default) starts one per CPU the process
    /// may run on; 1 runs everything on a single-threaded runtime (what the
    /// benchmarks pin to one core).
    #[arg(long, env = "SIGNAL_SERVER_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Interval between WebSocket pings to each client; a client silent for a
    /// whole interval after a ping is closed. Keep it under 55s behind Heroku.
    #[arg(long, env = "SIGNAL_SERVER_PING_INTERVAL", value_parser = duration, default_value = "20s")]
    pub ping_interval: Duration,

    /// Close a connection that has not entered a room this long after
    /// connecting (close code 1008).
    #[arg(long, env = "SIGNAL_SERVER_IDLE_TIMEOUT", value_parser = duration, default_value = "60s")]
    pub idle_timeout: Duration,

    /// How long a room outlives its host's connection, waiting for it to
    /// resume with its `resume` secret.
    #[arg(long, env = "SIGNAL_SERVER_HOST_GRACE", value_parser = duration, default_value = "30s")]
    pub host_grace: Duration,

    /// Largest message accepted, in bytes; a larger one gets `too_large` and
    /// the connection is closed 1009.
    #[arg(long, env = "SIGNAL_SERVER_MAX_MESSAGE_SIZE", default_value_t = config::DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,

    /// Sustained messages per second allowed per connection.
    #[arg(long, env = "SIGNAL_SERVER_RATE_LIMIT", default_value_t = config::DEFAULT_RATE_PER_SEC)]
    pub rate_limit: u32,

    /// Messages a connection may send in a burst above the sustained rate.
    /// Over it messages are dropped with `rate_limited`; a client that keeps
    /// going for a further second's worth is closed 1008.
    #[arg(long, env = "SIGNAL_SERVER_RATE_BURST", default_value_t = config::DEFAULT_RATE_BURST)]
    pub rate_burst: u32,

    /// Guests and watchers per room (the host not counted).
    #[arg(long, env = "SIGNAL_SERVER_MAX_PEERS_PER_ROOM", default_value_t = config::DEFAULT_MAX_PEERS_PER_ROOM)]
    pub max_peers_per_room: usize,

    /// Simultaneous WebSocket connections; over it upgrades get HTTP 503.
    #[arg(long, env = "SIGNAL_SERVER_MAX_CONNECTIONS", default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Messages queued for one connection before it counts as not reading and
    /// is dropped (its room carries on).
    #[arg(long, env = "SIGNAL_SERVER_OUTBOX_CAPACITY", default_value_t = config::DEFAULT_OUTBOX_CAPACITY)]
    pub outbox_capacity: usize,

    /// On SIGTERM/SIGINT, how long to wait for connections to close.
    #[arg(long, env = "SIGNAL_SERVER_SHUTDOWN_TIMEOUT", value_parser = duration, default_value = "5s")]
    pub shutdown_timeout: Duration,

    /// Allow WebSocket upgrades only from pages of this origin (repeatable, or
    /// comma-separated in the variable), e.g. https://robots.example.com.
    /// Requests without an Origin header (non-browser clients) are allowed.
    /// Default: every origin.
    #[arg(
        long = "allowed-origin",
        env = "SIGNAL_SERVER_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// ICE servers handed to clients in the `init` reply, as a JSON array of
    /// RTCIceServer objects, e.g. '[{"urls":"stun:stun.example.org:3478"}]'.
    #[arg(long, env = "SIGNAL_SERVER_ICE_SERVERS", value_parser = ice_servers)]
    pub ice_servers: Option<serde_json::Value>,

    /// Serve the demo page from this directory instead of the copy embedded
    /// in the binary (for developing the page).
    #[arg(long, env = "SIGNAL_SERVER_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Share rooms through this Redis, so several instances behind one URL
    /// serve the same rooms (redis:// or rediss://; Heroku's Redis add-ons
    /// set REDIS_URL). Without it rooms live in this process's memory.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Do not verify the Redis server's TLS certificate (rediss:// only).
    /// Heroku Redis presents a self-signed chain, so it needs this; the
    /// connection stays encrypted. Same as a `#insecure` fragment on the URL.
    #[arg(long, env = "SIGNAL_SERVER_REDIS_INSECURE_TLS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_insecure_tls: bool,

    /// Prefix of the Redis keys and channels, to share one Redis between
    /// deployments.
    #[arg(long, env = "SIGNAL_SERVER_REDIS_PREFIX", default_value = "ss:")]
    pub redis_prefix: String,

    /// Hard limit of the bytes queued for one connection (its outbox, its
    /// writer, control frames, and 128 bytes per message; for a host, not
    /// what its guests and watchers sent it): over it the connection is
    /// dropped as a slow consumer at once.
    #[arg(long, env = "SIGNAL_SERVER_OUTBOX_MAX_BYTES", value_parser = bytes, default_value = "4MiB")]
    pub outbox_max_bytes: usize,

    /// Soft limit of the bytes queued for one connection: above it for
    /// --outbox-soft-time the connection is dropped as a slow consumer.
    #[arg(long, env = "SIGNAL_SERVER_OUTBOX_SOFT_BYTES", value_parser = bytes, default_value = "1MiB")]
    pub outbox_soft_bytes: usize,

    /// How long a connection may stay above --outbox-soft-bytes.
    #[arg(long, env = "SIGNAL_SERVER_OUTBOX_SOFT_TIME", value_parser = duration, default_value = "10s")]
    pub outbox_soft_time: Duration,

    /// A connection with bytes waiting that its socket takes none of for
    /// this long (its peer does not read) is dropped as a slow consumer;
    /// checked at each ping, so up to one --ping-interval later.
    #[arg(long, env = "SIGNAL_SERVER_WRITE_STALL_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub write_stall_timeout: Duration,

    /// Bytes queued for all connections together: when it is reached,
    /// guests' and watchers' messages to hosts are refused (host_busy) and
    /// the connections with the largest queues are dropped until it is 7/8
    /// full. Set it below the memory the server can spare.
    #[arg(long, env = "SIGNAL_SERVER_MAX_QUEUED_BYTES", value_parser = bytes, default_value = "256MiB")]
    pub max_queued_bytes: usize,

    /// Sustained bytes per second a guest or watcher may send (hosts are
    /// limited by --rate-limit only). Over it messages are dropped with
    /// `rate_limited`, as over the message rate.
    #[arg(long, env = "SIGNAL_SERVER_RATE_BYTES", value_parser = bytes, default_value = "256KiB")]
    pub rate_bytes: usize,

    /// Bytes a guest or watcher may send in a burst above --rate-bytes (at
    /// least --max-message-size).
    #[arg(long, env = "SIGNAL_SERVER_RATE_BYTES_BURST", value_parser = bytes, default_value = "1MiB")]
    pub rate_bytes_burst: usize,

    /// Bytes one guest or watcher may have waiting in its host's queue (its
    /// share; its share of messages is 15/16 of --outbox-capacity split
    /// between --max-peers-per-room, at least 64). Beyond it its messages
    /// are refused with `host_busy` and the host is kept.
    #[arg(long, env = "SIGNAL_SERVER_SENDER_SHARE_BYTES", value_parser = bytes, default_value = "256KiB")]
    pub sender_share_bytes: usize,

    /// A guest or watcher refused this many times with `host_busy` in one run
    /// (a run ends after 10 s without a refusal) is closed 1008.
    #[arg(long, env = "SIGNAL_SERVER_HOST_BUSY_LIMIT", default_value_t = config::DEFAULT_HOST_BUSY_LIMIT)]
    pub host_busy_limit: u32,

    /// Sustained peers per second that may enter one room with its join
    /// token (and as many with its watch token); over it `init` gets
    /// `too_many_joins`. Bounds the presence events a host is sent.
    #[arg(long, env = "SIGNAL_SERVER_ROOM_JOIN_RATE", default_value_t = config::DEFAULT_ROOM_JOIN_RATE)]
    pub room_join_rate: u32,

    /// Peers that may enter one room at once (per token) above
    /// --room-join-rate.
    #[arg(long, env = "SIGNAL_SERVER_ROOM_JOIN_BURST", default_value_t = config::DEFAULT_ROOM_JOIN_BURST)]
    pub room_join_burst: u32,
    /// Access control (`--auth`, the keys): see docs/AUTH.md.
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
    /// Webhook options (`--webhook-*`); boxed, to keep `Command` small.
    #[command(flatten)]
    pub webhooks: Box<crate::webhooks::WebhookArgs>,
    /// TURN: the embedded relay and short-lived credentials (boxed: they
    /// are many, and `Command` holds these options by value).
    #[command(flatten)]
    pub turn: Box<crate::turn::TurnArgs>,
    /// TLS: certificate files or ACME, and the plain-HTTP redirect port.
    #[command(flatten)]
    pub tls: Box<crate::tls::TlsArgs>,
    /// Time a client has to send a request's head (request line and
    /// headers), and the longest a plain HTTP connection may wait idle for
    /// its next request; then the connection is closed.
    #[arg(long, env = "SIGNAL_SERVER_HEADER_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub header_timeout: Duration,

    /// Largest request head, in bytes; a larger one gets HTTP 431 and the
    /// connection is closed (at least 1024).
    #[arg(long, env = "SIGNAL_SERVER_MAX_HEADER_BYTES", default_value_t = config::DEFAULT_MAX_HEADER_BYTES,
          value_parser = header_bytes)]
    pub max_header_bytes: usize,

    /// Longest time a connection may stay plain HTTP (not a WebSocket),
    /// whatever it is doing.
    #[arg(long, env = "SIGNAL_SERVER_HTTP_TIMEOUT", value_parser = duration, default_value = "60s")]
    pub http_timeout: Duration,

    /// TCP connections that are not WebSockets (reading or answering a
    /// request, or idle between requests) at once; when full, the oldest is
    /// closed to make room, so that descriptors stay free for /healthz and
    /// upgrades. Default: 1024, or an eighth of the open-files limit if
    /// that is smaller.
    #[arg(long, env = "SIGNAL_SERVER_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,

    /// Connections one client address (an IPv6 /64) may hold at once,
    /// counted from accept; over it requests get HTTP 429. 0: no limit.
    #[arg(long, env = "SIGNAL_SERVER_MAX_CONNECTIONS_PER_CLIENT", default_value_t = config::DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    pub max_connections_per_client: u32,

    /// Rooms one client address may create per minute; over it `init` gets
    /// `create_rate_limited`. 0: no limit.
    #[arg(long, env = "SIGNAL_SERVER_ROOM_CREATIONS_PER_MINUTE", default_value_t = config::DEFAULT_ROOM_CREATIONS_PER_MINUTE)]
    pub room_creations_per_minute: u32,

    /// Rooms one client address may enter (join or watch) per minute; over
    /// it `init` gets `attach_rate_limited`, a `?join=`/`?watch=` upgrade
    /// HTTP 429. 0: no limit.
    #[arg(long, env = "SIGNAL_SERVER_ATTACHES_PER_MINUTE", default_value_t = config::DEFAULT_ATTACHES_PER_MINUTE)]
    pub attaches_per_minute: u32,

    /// Rooms this server holds at most (rooms waiting for their host to
    /// resume included); over it `init` gets `server_full`. 0: no limit.
    #[arg(long, env = "SIGNAL_SERVER_MAX_ROOMS", default_value_t = config::DEFAULT_MAX_ROOMS)]
    pub max_rooms: usize,

    /// Take the client's address from X-Forwarded-For: the N-th address
    /// from its right, as appended by the last of N proxies in front of
    /// this server (Heroku's router: 1). 0 (the default): the header is
    /// ignored, unless --trusted-proxy is given.
    #[arg(long, env = "SIGNAL_SERVER_TRUST_PROXY_HOPS", default_value_t = 0)]
    pub trust_proxy_hops: usize,

    /// Only connections from this network (CIDR or address; repeatable, or
    /// comma-separated in the variable) are proxies whose X-Forwarded-For
    /// is believed. Without --trust-proxy-hops, the client is the
    /// rightmost address of the header that is not itself such a proxy.
    #[arg(long = "trusted-proxy", env = "SIGNAL_SERVER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = ip_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// The admin API and the fleet page (`--admin-key`).
    #[command(flatten)]
    pub admin: crate::admin::AdminArgs,
}

fn header_bytes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1024 => Ok(n),
        Ok(_) => Err("at least 1024 bytes".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn ip_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a network (examples: 10.0.0.0/8, ::1)"))
}

/// The port used when neither `--bind` nor `PORT` is given.
pub const DEFAULT_PORT: u16 = 9090;

impl ServeArgs {
    /// The address to listen on, given the value of `PORT` (if set).
    pub fn bind_addr(&self, port_env: Option<&str>) -> Result<SocketAddr, String> {
        if let Some(addr) = self.bind {
            return Ok(addr);
        }
        let port = match port_env {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| format!("PORT must be a port number, not {p:?}"))?,
            None => DEFAULT_PORT,
        };
        Ok(SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// The shared registry's settings, when `--redis-url` is given.
    pub fn redis_options(&self) -> Option<crate::rooms::RedisOptions> {
        let url = self.redis_url.as_deref()?.trim();
        if url.is_empty() {
            return None;
        }
        let mut opts = crate::rooms::RedisOptions::new(url);
        opts.insecure_tls = self.redis_insecure_tls;
        opts.prefix.clone_from(&self.redis_prefix);
        Some(opts)
    }

    /// The server configuration these options describe.
    pub fn config(&self) -> Config {
        Config {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            host_grace: self.host_grace,
            max_message_size: self.max_message_size,
            rate_per_sec: self.rate_limit,
            rate_burst: self.rate_burst,
            max_peers_per_room: self.max_peers_per_room,
            max_connections: self.max_connections,
            outbox_capacity: self.outbox_capacity,
            shutdown_timeout: self.shutdown_timeout,
            allowed_origins: self.allowed_origins.clone(),
            ice_servers: self
                .ice_servers
                .clone()
                .unwrap_or_else(|| serde_json::Value::Array(Vec::new())),
            static_dir: self.static_dir.clone(),
            webhooks: self.webhooks.options(),
            // Set by `serve` once the TURN options are resolved (a random
            // secret is made once, for the relay and the credentials alike).
            turn: None,
            header_timeout: self.header_timeout,
            max_header_bytes: self.max_header_bytes,
            http_timeout: self.http_timeout,
            max_http_connections: self.max_http_connections,
            max_connections_per_client: self.max_connections_per_client,
            room_creations_per_minute: self.room_creations_per_minute,
            attaches_per_minute: self.attaches_per_minute,
            max_rooms: self.max_rooms,
            proxy: crate::clients::ProxyTrust {
                hops: self.trust_proxy_hops,
                proxies: self.trusted_proxies.clone(),
            },
            outbox_max_bytes: self.outbox_max_bytes,
            outbox_soft_bytes: self.outbox_soft_bytes,
            outbox_soft_time: self.outbox_soft_time,
            write_stall_timeout: self.write_stall_timeout,
            max_queued_bytes: self.max_queued_bytes,
            rate_bytes_per_sec: self.rate_bytes,
            rate_bytes_burst: self.rate_bytes_burst,
            sender_share_bytes: self.sender_share_bytes,
            host_busy_limit: self.host_busy_limit,
            room_join_rate: self.room_join_rate,
            room_join_burst: self.room_join_burst,
            admin_key: self.admin.admin_key.clone(),
            // Set by `serve` from `self.auth` (checked there: it can fail).
            auth: crate::auth::AuthConfig::Open,
            // Set by `serve` (certificates are loaded, ACME started, there).
            tls: None,
            http_redirect: self.tls.http_redirect_bind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["signal-server"]).unwrap();
        let c = cli.serve.config();
        let d = Config::default();
        assert_eq!(c.ping_interval, d.ping_interval);
        assert_eq!(c.idle_timeout, d.idle_timeout);
        assert_eq!(c.host_grace, d.host_grace);
        assert_eq!(c.max_message_size, 64 * 1024);
        assert_eq!(c.rate_per_sec, 100);
        assert_eq!(c.rate_burst, 500);
        assert_eq!(c.ping_interval, Duration::from_secs(20));
        // The byte limits' defaults, spelt with units in `--help`.
        assert_eq!(c.outbox_max_bytes, d.outbox_max_bytes);
        assert_eq!(c.outbox_soft_bytes, d.outbox_soft_bytes);
        assert_eq!(c.outbox_soft_time, d.outbox_soft_time);
        assert_eq!(c.write_stall_timeout, d.write_stall_timeout);
        assert_eq!(c.max_queued_bytes, d.max_queued_bytes);
        assert_eq!(c.rate_bytes_per_sec, d.rate_bytes_per_sec);
        assert_eq!(c.rate_bytes_burst, d.rate_bytes_burst);
        assert_eq!(c.sender_share_bytes, d.sender_share_bytes);
        assert_eq!(c.host_busy_limit, d.host_busy_limit);
        assert_eq!(c.room_join_rate, d.room_join_rate);
        assert_eq!(c.room_join_burst, d.room_join_burst);
        assert_eq!(c.header_timeout, d.header_timeout);
        assert_eq!(c.max_header_bytes, d.max_header_bytes);
        assert_eq!(c.http_timeout, d.http_timeout);
        assert_eq!(c.max_http_connections, None);
        assert_eq!(c.max_connections_per_client, d.max_connections_per_client);
        assert_eq!(c.room_creations_per_minute, d.room_creations_per_minute);
        assert_eq!(c.attaches_per_minute, d.attaches_per_minute);
        assert_eq!(c.max_rooms, d.max_rooms);
        assert_eq!(c.proxy, d.proxy);
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(bytes("65536"), Ok(65536));
        assert_eq!(bytes("64KiB"), Ok(65536));
        assert_eq!(bytes("4MiB"), Ok(4 << 20));
        assert_eq!(bytes("1G"), Ok(1 << 30));
        assert!(bytes("4 parsecs").is_err());
        assert!(bytes("MiB").is_err());
        let cli = Cli::try_parse_from(["signal-server", "--outbox-max-bytes", "512KiB"]).unwrap();
        assert_eq!(cli.serve.config().outbox_max_bytes, 512 << 10);
    }

    #[test]
    fn proxies_are_trusted_only_when_named() {
        let cli = Cli::try_parse_from(["signal-server"]).unwrap();
        if std::env::var_os("SIGNAL_SERVER_TRUST_PROXY_HOPS").is_none() {
            assert_eq!(cli.serve.config().proxy.hops, 0);
        }
        let cli = Cli::try_parse_from([
            "signal-server",
            "--trust-proxy-hops",
            "1",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1",
        ])
        .unwrap();
        let p = cli.serve.config().proxy;
        assert_eq!(p.hops, 1);
        assert_eq!(p.proxies.len(), 2);
        assert!(p.is_proxy("10.1.2.3".parse().unwrap()));
        assert!(p.is_proxy("::1".parse().unwrap()));
        assert!(!p.is_proxy("192.0.2.1".parse().unwrap()));
        assert!(Cli::try_parse_from(["signal-server", "--trusted-proxy", "nope"]).is_err());
        assert!(Cli::try_parse_from(["signal-server", "--max-header-bytes", "100"]).is_err());
    }

    #[test]
    fn port_is_used_only_without_bind() {
        let cli = Cli::try_parse_from(["signal-server"]).unwrap();
        assert_eq!(
            cli.serve.bind_addr(Some("5000")).unwrap(),
            "0.0.0.0:5000".parse().unwrap()
        );
        assert_eq!(
            cli.serve.bind_addr(None).unwrap(),
            "0.0.0.0:9090".parse().unwrap()
        );
        assert!(cli.serve.bind_addr(Some("web")).is_err());
        let cli = Cli::try_parse_from(["signal-server", "--bind", "127.0.0.1:7000"]).unwrap();
        assert_eq!(
            cli.serve.bind_addr(Some("5000")).unwrap(),
            "127.0.0.1:7000".parse().unwrap()
        );
    }

    #[test]
    fn parses_durations_origins_and_ice_servers() {
        let cli = Cli::try_parse_from([
            "signal-server",
            "--ping-interval",
            "500ms",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
            "--ice-servers",
            r#"[{"urls":"stun:stun.example.org:3478"}]"#,
        ])
        .unwrap();
        let c = cli.serve.config();
        assert_eq!(c.ping_interval, Duration::from_millis(500));
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.ice_servers[0]["urls"], "stun:stun.example.org:3478");
        assert!(Cli::try_parse_from(["signal-server", "--ice-servers", "{}"]).is_err());
        assert!(Cli::try_parse_from(["signal-server", "--idle-timeout", "soon"]).is_err());
    }

    #[test]
    fn redis_is_optional_and_explicitly_insecure() {
        let cli = Cli::try_parse_from(["signal-server"]).unwrap();
        if std::env::var_os("REDIS_URL").is_none() {
            assert!(cli.serve.redis_options().is_none());
        }
        let cli = Cli::try_parse_from([
            "signal-server",
            "--redis-url",
            "rediss://u:p@example.com:6380",
            "--redis-insecure-tls",
        ])
        .unwrap();
        let o = cli.serve.redis_options().unwrap();
        assert!(o.insecure_tls);
        assert_eq!(o.prefix, "ss:");
        assert!(!format!("{o:?}").contains(":p@"), "{o:?}");
    }

    #[test]
    fn serve_subcommand_takes_the_same_options() {
        let cli = Cli::try_parse_from(["signal-server", "serve", "--bind", "127.0.0.1:1"]).unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.bind, Some("127.0.0.1:1".parse().unwrap()));
    }
}
