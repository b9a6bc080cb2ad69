//! The relay's options (`TurnArgs`, flattened into `serve`'s flags), and
//! what they resolve to: the relay to start and the URLs of the
//! credentials handed to peers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{
    advertised_host, Cidr, IceServers, Limits, TurnSecret, DEFAULT_PORT, DEFAULT_TLS_PORT,
};

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
    pub(crate) fn bind(&self, ip: IpAddr) -> Option<std::net::UdpSocket> {
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
pub(crate) fn url_host(ip: IpAddr) -> String {
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
pub(crate) fn default_urls_for(host: &str, port: u16) -> Vec<String> {
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
