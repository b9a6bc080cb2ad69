//! The embedded TURN relay (RFC 8656) and its short-lived credentials.
//!
//! # Why `turn-server-proto`, and what this module adds
//!
//! Three Rust TURN servers were read before choosing:
//!
//! - **`turn-server-proto` 0.7** (ystreet/turn-proto, MIT/Apache): a sans-IO
//!   server, RFC 5766/6062/6156/8656, with stun-proto's long-term
//!   credential mechanism (nonces, MESSAGE-INTEGRITY and -SHA256, USERHASH).
//!   The user owns every socket: it asks for relay sockets
//!   (`AllocateSocket`) and hands back every datagram to send, so policy
//!   fits around it. Its gaps, checked in its source: credentials only
//!   through `add_user(name, password)` (no per-user key callback, no
//!   removal from `TurnServer`); clients kept in a `Vec` searched linearly
//!   on every packet; a nonce table per source address that is never
//!   pruned; its TCP framing (`TurnTcpBuffer`) reads ChannelData without the
//!   padding RFC 8656 §12.5 requires, and writes it unpadded; no peer
//!   filter, no quotas, no bandwidth bounds.
//! - **webrtc-rs `turn` 0.17**: an `AuthHandler` callback per username, but
//!   listeners are UDP `Conn`s only, its `LongTermAuthHandler` expects a
//!   bare timestamp as the username, and it has no hook to refuse peers or
//!   count allocations per user.
//! - **turn-rs** (`turn-server`): routes only between its own clients
//!   through "virtual" ports (no socket per allocation), so a peer that is
//!   not itself its client (a robot on the open internet) is unreachable.
//!
//! `turn-server-proto` keeps the protocol out of our hands and leaves the
//! I/O to us, so its gaps are closed by a small layer rather than a fork:
//!
//! - **one `TurnServer` per client 5-tuple** ([`client::Client`]): lookups
//!   are O(1) in our maps, the crate's per-client tables hold one entry,
//!   and dropping the instance is the missing `remove_user`;
//! - **credentials**: before the crate sees a request we check the REST
//!   username's expiry and verify MESSAGE-INTEGRITY under the password
//!   derived from the secret; only then is the user added — to that one
//!   instance. Expiry is enforced on *every* request (Allocate, Refresh,
//!   CreatePermission, ChannelBind) with a 401. coturn 4.6 checks the
//!   timestamp only when it first derives a session's key (`get_user_key`,
//!   then a cached `hmackey`), so there an allocation made before expiry
//!   can be refreshed indefinitely. Here it cannot: once the credential
//!   expires its permissions (300 s) and channels lapse and its allocation
//!   runs out, so a credential bounds how long a relay stays open; a peer
//!   whose session outlives it gets fresh credentials from the signalling
//!   server and restarts ICE;
//! - **policy** ([`filter`], [`quota`]): a 403 for peers in internal ranges
//!   or on the server's own addresses, 486/508 for allocation quotas, 442
//!   for RFC 6062 TCP allocations (WebRTC relays over UDP), bandwidth
//!   token buckets per allocation, per credential label and in total;
//! - **I/O** ([`udp`], [`tcp`]): one UDP socket and one TCP listener on the
//!   same port, a relay socket per allocation in the configured port range
//!   advertising `--turn-public-ip`; TCP framed by us with RFC 8656 padding
//!   both ways, generic over the stream, so TURN over TLS
//!   (`--turn-tls-listen`, [`tcp::run_tls`]) is the same code behind a
//!   rustls acceptor holding the server's certificate (reloaded or renewed
//!   with it, see [`crate::tls`]); the UDP listener keeps at most
//!   [`MAX_HANDSHAKES`] unauthenticated clients (oldest evicted, which costs
//!   an evicted client one 438 round trip), so spoofed Allocates cannot grow
//!   memory.
//!
//! Credentials for peers come from [`IceServers`]; the relay and the
//! signalling server share its secret.

pub mod client;
pub mod credentials;
pub mod filter;
pub mod metrics;
pub mod quota;
pub mod tcp;
pub mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use credentials::{IceServers, TurnSecret};
pub use filter::Cidr;
pub use metrics::TurnMetrics;
pub use quota::Limits;

/// The sans-IO clock of `turn-server-proto`.
pub type Instant = turn_server_proto::types::Instant;

/// The port of `--turn-listen` when none is given (RFC 8656).
pub const DEFAULT_PORT: u16 = 3478;
/// The port of `--turn-tls-listen` when none is given (RFC 8656's `turns`).
pub const DEFAULT_TLS_PORT: u16 = 5349;
/// A TURN-over-TLS connection must finish its handshake this soon.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client with no allocation this long after its first request is
/// forgotten (UDP) or disconnected (TCP).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Unauthenticated UDP clients kept at once (each holds one challenge nonce,
/// about 2 KB).
pub const MAX_HANDSHAKES: usize = 4096;
/// TCP connections that have not allocated yet, at once; more are closed at
/// accept.
pub const MAX_TCP_HANDSHAKES: usize = 1024;
/// Bytes queued towards one TCP client before relayed data is dropped.
pub const TCP_OUTBOX_LIMIT: usize = 256 * 1024;
/// The receive buffer of a relay socket: a larger datagram is dropped
/// (WebRTC keeps packets under the path MTU).
pub const RELAY_DATAGRAM_MAX: usize = 4096;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10m, 12h, 1d)"))
}

fn secret(s: &str) -> Result<TurnSecret, String> {
    TurnSecret::new(s)
}

fn turn_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with("turn:") || s.starts_with("turns:") {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a turn: or turns: URL"))
    }
}

fn listen_on(s: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, port))
        .map_err(|_| format!("{s:?} is not ADDRESS or ADDRESS:PORT"))
}

fn listen(s: &str) -> Result<SocketAddr, String> {
    listen_on(s, DEFAULT_PORT)
}

fn listen_tls(s: &str) -> Result<SocketAddr, String> {
    listen_on(s, DEFAULT_TLS_PORT)
}

/// A range of relay ports, `LOW-HIGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port (inclusive).
    pub high: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (low, high) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not LOW-HIGH"))?;
        let low: u16 = low
            .trim()
            .parse()
            .map_err(|_| format!("bad port in {s:?}"))?;
        let high: u16 = high
            .trim()
            .parse()
            .map_err(|_| format!("bad port in {s:?}"))?;
        if low == 0 || low > high {
            return Err(format!("{s:?}: need 1 <= LOW <= HIGH"));
        }
        Ok(PortRange { low, high })
    }
}

impl PortRange {
    /// Binds a UDP socket on `ip` at a random free port of the range.
    fn bind(&self, ip: IpAddr) -> Option<std::net::UdpSocket> {
        use rand::Rng as _;
        let span = u32::from(self.high - self.low) + 1;
        let mut rng = rand::rng();
        // Random probes, then a sweep from a random start, so a nearly full
        // range still finds its last free ports.
        let start = rng.random_range(0..span);
        let probes = (0..16).map(|_| rng.random_range(0..span));
        for offset in probes.chain((0..span).map(|i| (start + i) % span)) {
            let port = self.low + offset as u16;
            if let Ok(s) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
                if s.set_nonblocking(true).is_ok() {
                    return Some(s);
                }
            }
        }
        None
    }
}

/// TURN options of `serve` (flattened into its flags).
#[derive(Debug, Args, Clone)]
pub struct TurnArgs {
    /// Shared secret of the short-lived TURN credentials handed to peers
    /// (coturn's `static-auth-secret`); never logged. With `--turn-listen`
    /// and no secret, a random one is made at start.
    #[arg(long, env = "SIGNAL_SERVER_TURN_SECRET", value_parser = secret, hide_env_values = true)]
    pub turn_secret: Option<TurnSecret>,

    /// TURN URLs the credentials are for (repeatable, or comma-separated),
    /// e.g. turn:turn.example.com:3478?transport=udp. Default with
    /// `--turn-listen`: turn:ADDR:PORT?transport=udp and ?transport=tcp for
    /// the advertised address.
    #[arg(long = "turn-urls", env = "SIGNAL_SERVER_TURN_URLS", value_delimiter = ',', value_parser = turn_url)]
    pub turn_urls: Vec<String>,

    /// How long each minted credential is valid (also the longest a relay
    /// stays open on one credential).
    #[arg(long, env = "SIGNAL_SERVER_TURN_TTL", value_parser = duration, default_value = "24h")]
    pub turn_ttl: Duration,

    /// Run the embedded TURN relay on this address, UDP and TCP on one port
    /// (`--turn-listen` alone: 0.0.0.0:3478; a bare address takes port
    /// 3478).
    #[arg(long, env = "SIGNAL_SERVER_TURN_LISTEN", value_parser = listen,
          num_args = 0..=1, default_missing_value = "0.0.0.0:3478")]
    pub turn_listen: Option<SocketAddr>,

    /// The address to advertise as the relayed address (XOR-RELAYED-ADDRESS)
    /// and in the default URLs, when the host is behind a 1:1 NAT (cloud VMs).
    #[arg(long, env = "SIGNAL_SERVER_TURN_PUBLIC_IP")]
    pub turn_public_ip: Option<IpAddr>,

    /// UDP ports for relay sockets, one per allocation.
    #[arg(
        long,
        env = "SIGNAL_SERVER_TURN_RELAY_PORTS",
        default_value = "49152-65535"
    )]
    pub turn_relay_ports: PortRange,

    /// Local address the relay sockets bind to (default: the `--turn-listen`
    /// address).
    #[arg(long, env = "SIGNAL_SERVER_TURN_RELAY_IP")]
    pub turn_relay_ip: Option<IpAddr>,

    /// Allow relaying to peers in this range (repeatable, or comma-separated),
    /// over the default refusal of loopback, private, link-local, multicast,
    /// reserved and this server's own addresses.
    #[arg(
        long = "turn-allow-peer",
        env = "SIGNAL_SERVER_TURN_ALLOW_PEERS",
        value_delimiter = ','
    )]
    pub turn_allow_peer: Vec<Cidr>,

    /// The TURN realm.
    #[arg(
        long,
        env = "SIGNAL_SERVER_TURN_REALM",
        default_value = "signal-server"
    )]
    pub turn_realm: String,

    /// Live allocations per credential label (room and peer), 0 for no bound.
    #[arg(long, env = "SIGNAL_SERVER_TURN_USER_QUOTA", default_value_t = 16)]
    pub turn_user_quota: usize,

    /// Live allocations in total, 0 for no bound.
    #[arg(long, env = "SIGNAL_SERVER_TURN_TOTAL_QUOTA", default_value_t = 2000)]
    pub turn_total_quota: usize,

    /// Relayed bytes per second per allocation (both directions), 0 for no
    /// bound. Default 2.5 MB/s (20 Mbit/s).
    #[arg(
        long,
        env = "SIGNAL_SERVER_TURN_ALLOCATION_BANDWIDTH",
        default_value_t = 2_500_000
    )]
    pub turn_allocation_bandwidth: u64,

    /// Relayed bytes per second per credential label, 0 for no bound.
    #[arg(
        long,
        env = "SIGNAL_SERVER_TURN_USER_BANDWIDTH",
        default_value_t = 5_000_000
    )]
    pub turn_user_bandwidth: u64,

    /// Relayed bytes per second through the relay, 0 for no bound. Default
    /// 125 MB/s (1 Gbit/s).
    #[arg(
        long,
        env = "SIGNAL_SERVER_TURN_TOTAL_BANDWIDTH",
        default_value_t = 125_000_000
    )]
    pub turn_total_bandwidth: u64,

    /// Also serve TURN over TLS here (`turns:` URLs), with the server's
    /// certificate (--tls-cert or --acme-domain): for viewers behind
    /// firewalls that let only TLS out. `--turn-tls-listen` alone:
    /// 0.0.0.0:5349; a bare address takes port 5349. Off by default.
    /// Port 443 works too when the signalling server is on another address
    /// or port.
    #[arg(long, env = "SIGNAL_SERVER_TURN_TLS_LISTEN", value_parser = listen_tls,
          num_args = 0..=1, default_missing_value = "0.0.0.0:5349", requires = "turn_listen")]
    pub turn_tls_listen: Option<SocketAddr>,
}

/// Where and with what configuration the relay serves TURN over TLS.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// The TCP address.
    pub listen: SocketAddr,
    /// The server's TLS configuration for TURN (`ServerTls::turn_config`).
    pub config: Arc<rustls::ServerConfig>,
}

/// What the TURN options resolve to: the relay to start (if any) and the
/// credentials to hand to peers (if any). Both share one secret.
#[derive(Debug, Clone)]
pub struct TurnSetup {
    /// The embedded relay, with `--turn-listen`.
    pub relay: Option<RelayConfig>,
    /// Per-peer ICE servers, with a secret (given or made) and URLs.
    pub ice: Option<IceServers>,
    /// Something the operator should know (logged at start).
    pub warning: Option<String>,
}

/// Settings of the embedded relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// UDP and TCP listening address (port 0: any free port, the same for
    /// both).
    pub listen: SocketAddr,
    /// Shared credential secret.
    pub secret: TurnSecret,
    /// TURN realm.
    pub realm: String,
    /// Advertised relayed address.
    pub public_ip: Option<IpAddr>,
    /// Address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Relay ports.
    pub relay_ports: PortRange,
    /// Peer ranges allowed over the default refusals.
    pub allow_peers: Vec<Cidr>,
    /// Quotas and bandwidth.
    pub limits: Limits,
    /// TURN over TLS, if any.
    pub tls: Option<TlsListen>,
}

impl RelayConfig {
    /// A relay on `listen` with the defaults of the flags (for tests).
    pub fn new(listen: SocketAddr, secret: TurnSecret) -> Self {
        RelayConfig {
            listen,
            secret,
            realm: "signal-server".into(),
            public_ip: None,
            relay_ip: listen.ip(),
            relay_ports: PortRange {
                low: 49152,
                high: 65535,
            },
            allow_peers: Vec::new(),
            limits: Limits {
                per_user: 16,
                total: 2000,
                allocation_rate: 2_500_000,
                user_rate: 5_000_000,
                total_rate: 125_000_000,
            },
            tls: None,
        }
    }
}

/// An address as the host of a URL (`[v6]`).
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// The default TURN URLs for a relay reachable at `host:port`.
pub fn default_urls(host: IpAddr, port: u16) -> Vec<String> {
    default_urls_for(&url_host(host), port)
}

/// The default TURN URLs for a relay reachable at `host` (a name, or an
/// address as a URL writes it) on `port`.
fn default_urls_for(host: &str, port: u16) -> Vec<String> {
    vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ]
}

impl TurnArgs {
    /// Resolves the options against the static `--ice-servers` list.
    pub fn setup(&self, ice_servers: &serde_json::Value) -> Result<TurnSetup, String> {
        let secret = self
            .turn_secret
            .clone()
            .or_else(|| self.turn_listen.map(|_| TurnSecret::random()));
        let relay = match (self.turn_listen, &secret) {
            (Some(listen), Some(secret)) => Some(RelayConfig {
                listen,
                secret: secret.clone(),
                realm: self.turn_realm.clone(),
                public_ip: self.turn_public_ip,
                relay_ip: self.turn_relay_ip.unwrap_or(listen.ip()),
                relay_ports: self.turn_relay_ports,
                allow_peers: self.turn_allow_peer.clone(),
                limits: Limits {
                    per_user: self.turn_user_quota,
                    total: self.turn_total_quota,
                    allocation_rate: self.turn_allocation_bandwidth,
                    user_rate: self.turn_user_bandwidth,
                    total_rate: self.turn_total_bandwidth,
                },
                // Set by `start_from_args`, which has the certificate.
                tls: None,
            }),
            _ => None,
        };
        let mut warning = None;
        let mut urls = self.turn_urls.clone();
        if urls.is_empty() {
            if let Some(r) = &relay {
                match advertised_host(r) {
                    Some(host) => urls = default_urls(host, r.listen.port()),
                    None => {
                        warning = Some(
                            "--turn-listen on an unspecified address without \
                             --turn-public-ip or --turn-urls: peers get no TURN URL"
                                .into(),
                        )
                    }
                }
            }
        }
        let ice = match secret {
            Some(s) if !urls.is_empty() => {
                Some(IceServers::new(s, urls, self.turn_ttl, ice_servers))
            }
            Some(_) if relay.is_none() => {
                return Err("--turn-secret needs --turn-urls (or --turn-listen)".into())
            }
            _ => None,
        };
        Ok(TurnSetup {
            relay,
            ice,
            warning,
        })
    }
}

/// The address peers should use for the embedded relay, when one is known:
/// `--turn-public-ip`, else a specific `--turn-listen` address. (The
/// end-to-end tests take the relay's URL from here.)
pub fn advertised_host(relay: &RelayConfig) -> Option<IpAddr> {
    relay
        .public_ip
        .or_else(|| (!relay.listen.ip().is_unspecified()).then(|| relay.listen.ip()))
}

/// A monotonic clock mapped onto the crate's sans-IO [`Instant`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: std::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            base: std::time::Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(i64::try_from(self.base.elapsed().as_nanos()).unwrap_or(i64::MAX))
    }

    /// A tokio deadline for `at`.
    pub fn deadline(&self, at: Instant) -> tokio::time::Instant {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(0);
        tokio::time::Instant::from_std(self.base + Duration::from_nanos(nanos))
    }
}

/// What every client of one relay shares.
pub(crate) struct Context {
    pub secret: TurnSecret,
    pub realm: String,
    pub filter: filter::PeerFilter,
    pub quotas: Arc<quota::Quotas>,
    pub metrics: TurnMetrics,
    pub ports: PortRange,
    pub relay_ip: IpAddr,
    pub public_ip: Option<IpAddr>,
    pub shutdown: CancellationToken,
    pub clock: Clock,
    pub tcp_handshakes: std::sync::atomic::AtomicUsize,
}

/// A running relay.
pub struct TurnRelay {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl TurnRelay {
    /// The UDP and TCP address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TCP address it serves TURN over TLS on, if it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Completes once the relay has shut down (after `shutdown` is
    /// cancelled): every allocation freed, every socket closed.
    pub async fn closed(self) {
        self.shutdown.cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Binds the relay's UDP and TCP sockets and starts serving until
/// `shutdown` is cancelled.
pub async fn start(
    config: RelayConfig,
    metrics: TurnMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<TurnRelay> {
    let (udp, tcp) = bind_pair(config.listen).await?;
    let addr = udp.local_addr()?;
    let tls = match &config.tls {
        Some(t) => Some((
            TcpListener::bind(t.listen).await?,
            tokio_rustls::TlsAcceptor::from(Arc::clone(&t.config)),
        )),
        None => None,
    };
    let clock = Clock::new();
    let mut own = vec![addr.ip(), config.relay_ip];
    own.extend(config.public_ip);
    let ctx = Arc::new(Context {
        filter: filter::PeerFilter::new(config.allow_peers, own),
        quotas: quota::Quotas::new(config.limits, clock.now()),
        secret: config.secret,
        realm: config.realm,
        metrics,
        ports: config.relay_ports,
        relay_ip: config.relay_ip,
        public_ip: config.public_ip,
        shutdown: shutdown.clone(),
        clock,
        tcp_handshakes: std::sync::atomic::AtomicUsize::new(0),
    });
    let tracker = TaskTracker::new();
    tracker.spawn(udp::run(udp, ctx.clone(), tracker.clone()));
    let mut tls_addr = None;
    if let Some((listener, acceptor)) = tls {
        let at = listener.local_addr()?;
        tls_addr = Some(at);
        tracker.spawn(tcp::run_tls(
            listener,
            acceptor,
            ctx.clone(),
            tracker.clone(),
        ));
        tracing::info!(%at, "TURN relay listening (TLS)");
    }
    tracker.spawn(tcp::run(tcp, ctx, tracker.clone()));
    tracing::info!(%addr, "TURN relay listening (UDP and TCP)");
    Ok(TurnRelay {
        addr,
        tls_addr,
        tracker,
        shutdown,
    })
}

/// What `serve` does with the TURN flags: resolves them, logs what an
/// operator should know, and starts the embedded relay if `--turn-listen`
/// is given (its series go to the process's [`TurnMetrics`]), with TURN
/// over TLS on the server's certificate (`tls`) if `--turn-tls-listen` is.
pub async fn start_from_args(
    args: &TurnArgs,
    ice_servers: &serde_json::Value,
    tls: Option<&crate::tls::ServerTls>,
    shutdown: CancellationToken,
) -> Result<Started, String> {
    let mut setup = args.setup(ice_servers)?;
    if let (Some(listen), Some(relay)) = (args.turn_tls_listen, setup.relay.as_mut()) {
        let Some(tls) = tls else {
            return Err(
                "--turn-tls-listen serves the server's certificate: it needs \
                        --tls-cert/--tls-key or --acme-domain"
                    .into(),
            );
        };
        relay.tls = Some(TlsListen {
            listen,
            config: tls.turn_config(),
        });
    }
    // The name peers use: the certificate's (what a `turns:` client
    // checks), else the advertised address.
    let domain = tls.and_then(|t| t.domains().first().cloned());
    if let (Some(warning), None) = (&setup.warning, &domain) {
        tracing::warn!("{warning}");
    }
    let mut ice = setup.ice;
    let relay = match setup.relay {
        Some(config) => {
            let listen = config.listen;
            let secret = config.secret.clone();
            let host = domain
                .clone()
                .or_else(|| advertised_host(&config).map(url_host));
            let relay = start(config, TurnMetrics::process().clone(), shutdown)
                .await
                .map_err(|e| format!("cannot start the TURN relay on {listen}: {e}"))?;
            // `--turn-listen ADDR:0` picks its port now: the default URLs
            // name the port it got (and the TLS port, with TLS).
            if let (Some(host), true) = (host, args.turn_urls.is_empty()) {
                let mut urls = default_urls_for(&host, relay.local_addr().port());
                if let Some(at) = relay.tls_addr() {
                    urls.push(format!("turns:{host}:{}?transport=tcp", at.port()));
                }
                ice = Some(IceServers::new(secret, urls, args.turn_ttl, ice_servers));
            }
            Some(relay)
        }
        None => None,
    };
    if let Some(ice) = &ice {
        tracing::info!(urls = ?ice.urls(), ttl = ?ice.ttl(), "TURN credentials for peers");
    }
    Ok(Started { relay, ice })
}

/// The TURN side of a running server.
pub struct Started {
    /// The embedded relay, if `--turn-listen` was given.
    pub relay: Option<TurnRelay>,
    /// Per-peer ICE servers (static entries plus fresh TURN credentials), if
    /// a secret and URLs are known.
    pub ice: Option<IceServers>,
}

/// A UDP socket and a TCP listener on the same port (port 0: the first
/// free port both can take).
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        turn: TurnArgs,
    }

    fn parse(args: &[&str]) -> TurnArgs {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().turn
    }

    #[test]
    fn turn_is_off_by_default() {
        let setup = parse(&[]).setup(&serde_json::json!([])).unwrap();
        assert!(setup.relay.is_none());
        assert!(setup.ice.is_none());
    }

    #[test]
    fn one_flag_starts_the_relay_with_a_random_secret() {
        let args = parse(&["--turn-listen", "--turn-public-ip", "203.0.113.4"]);
        assert_eq!(args.turn_listen, Some("0.0.0.0:3478".parse().unwrap()));
        let setup = args.setup(&serde_json::json!([])).unwrap();
        let relay = setup.relay.unwrap();
        let ice = setup.ice.unwrap();
        assert_eq!(relay.secret, *ice.secret(), "minting and relay share it");
        assert_eq!(
            ice.urls(),
            [
                "turn:203.0.113.4:3478?transport=udp",
                "turn:203.0.113.4:3478?transport=tcp"
            ]
        );
        assert_eq!(
            relay.relay_ports,
            PortRange {
                low: 49152,
                high: 65535
            }
        );
    }

    #[test]
    fn an_external_relay_needs_a_secret_and_urls() {
        let args = parse(&[
            "--turn-secret",
            "s3cret",
            "--turn-urls",
            "turn:turn.example.com:3478?transport=udp,turns:turn.example.com:443?transport=tcp",
            "--turn-ttl",
            "10m",
        ]);
        let setup = args.setup(&serde_json::json!([])).unwrap();
        assert!(setup.relay.is_none());
        let ice = setup.ice.unwrap();
        assert_eq!(ice.urls().len(), 2);
        assert_eq!(ice.ttl(), Duration::from_secs(600));
        assert!(!format!("{args:?}").contains("s3cret"));
        assert!(parse(&["--turn-secret", "s"])
            .setup(&serde_json::json!([]))
            .is_err());
    }

    /// A resolver with no certificate (the URLs are what is tested).
    #[derive(Debug)]
    struct NoCert;

    impl rustls::server::ResolvesServerCert for NoCert {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    #[tokio::test]
    async fn turn_over_tls_adds_a_turns_url_for_the_certificates_name() {
        let args = parse(&[
            "--turn-listen",
            "127.0.0.1:0",
            "--turn-tls-listen",
            "127.0.0.1:0",
        ]);
        let stop = CancellationToken::new();
        let err = start_from_args(&args, &serde_json::json!([]), None, stop.clone()).await;
        assert!(err.err().is_some_and(|e| e.contains("--tls-cert")));
        let tls =
            crate::tls::ServerTls::new(Arc::new(NoCert), true, vec!["turn.example.com".into()])
                .unwrap();
        let started = start_from_args(&args, &serde_json::json!([]), Some(&tls), stop.clone())
            .await
            .unwrap();
        let relay = started.relay.unwrap();
        let (port, tls_port) = (relay.local_addr().port(), relay.tls_addr().unwrap().port());
        assert_eq!(
            started.ice.unwrap().urls(),
            [
                format!("turn:turn.example.com:{port}?transport=udp"),
                format!("turn:turn.example.com:{port}?transport=tcp"),
                format!("turns:turn.example.com:{tls_port}?transport=tcp"),
            ]
        );
        stop.cancel();
        relay.closed().await;
        // A bare address takes the turns port; TLS needs the relay.
        let args = parse(&["--turn-listen", "--turn-tls-listen", "10.0.0.1"]);
        assert_eq!(args.turn_tls_listen, Some("10.0.0.1:5349".parse().unwrap()));
        assert_eq!(
            parse(&["--turn-listen", "--turn-tls-listen"]).turn_tls_listen,
            Some("0.0.0.0:5349".parse().unwrap())
        );
        assert!(Cli::try_parse_from(["x", "--turn-tls-listen"]).is_err());
    }

    #[test]
    fn flags_are_checked() {
        let bad = |args: &[&str]| {
            let mut all = vec!["x"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).is_err()
        };
        assert!(bad(&["--turn-urls", "stun:x:3478"]));
        assert!(bad(&["--turn-relay-ports", "5000-4000"]));
        assert!(bad(&["--turn-allow-peer", "10.0.0.0/99"]));
        assert!(bad(&["--turn-listen", "nowhere"]));
        let args = parse(&[
            "--turn-listen",
            "127.0.0.1",
            "--turn-allow-peer",
            "127.0.0.0/8",
            "--turn-allow-peer",
            "10.8.0.0/16",
        ]);
        assert_eq!(args.turn_listen, Some("127.0.0.1:3478".parse().unwrap()));
        assert_eq!(args.turn_allow_peer.len(), 2);
        let setup = args.setup(&serde_json::json!([])).unwrap();
        assert_eq!(
            setup.ice.unwrap().urls()[0],
            "turn:127.0.0.1:3478?transport=udp"
        );
        let unspecified = parse(&["--turn-listen"])
            .setup(&serde_json::json!([]))
            .unwrap();
        assert!(unspecified.ice.is_none());
        assert!(unspecified.warning.is_some());
        assert_eq!(
            default_urls("::1".parse().unwrap(), 3478)[0],
            "turn:[::1]:3478?transport=udp"
        );
    }
}
