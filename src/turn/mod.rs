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

mod args;
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

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use args::{default_urls, PortRange, RelayConfig, TlsListen, TurnArgs, TurnSetup};
use args::{default_urls_for, url_host};
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
