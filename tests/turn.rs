//! The embedded TURN relay through real sockets: coturn's own client
//! (`turnutils_uclient`, Debian package `coturn`) relaying through it over
//! UDP, TCP and TLS to `turnutils_peer`, and a minimal STUN client of ours for
//! the refusals, read on the wire: expired and wrong credentials (401),
//! peers in internal ranges (403), quotas (486), bandwidth, expiry of a live
//! allocation's credential, and shutdown.

mod common;
mod tls_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::{require_tool, WAIT};
use testkit::tools::{echo_peer, output_within};

use signal_server::turn::credentials::{self, TurnSecret};
use signal_server::turn::filter::PeerRefusal;
use signal_server::turn::metrics::{Direction, Refusal, Transport};
use signal_server::turn::{RelayConfig, TurnMetrics, TurnRelay};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use turn_server_proto::types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_server_proto::types::message::{
    ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND,
};
use turn_server_proto::types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_server_proto::types::stun::message::{
    IntegrityAlgorithm, LongTermCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWriteVec, Method, TransactionId,
};
use turn_server_proto::types::stun::prelude::{MessageWrite, MessageWriteExt};

const SECRET: &str = "test-secret-7f3a";

/// A relay on loopback with its own metrics.
struct Relay {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    metrics: TurnMetrics,
    stop: CancellationToken,
    relay: Option<TurnRelay>,
}

impl Relay {
    async fn start(tune: impl FnOnce(&mut RelayConfig)) -> Relay {
        let mut config = RelayConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            TurnSecret::new(SECRET).unwrap(),
        );
        tune(&mut config);
        let metrics = TurnMetrics::new();
        let stop = CancellationToken::new();
        let relay = signal_server::turn::start(config, metrics.clone(), stop.clone())
            .await
            .expect("relay starts");
        Relay {
            addr: relay.local_addr(),
            tls_addr: relay.tls_addr(),
            metrics,
            stop,
            relay: Some(relay),
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let relay = self.relay.take().unwrap();
        tokio::time::timeout(WAIT, relay.closed())
            .await
            .expect("the relay shuts down");
    }
}

fn allow(cidrs: &'static [&'static str]) -> impl FnOnce(&mut RelayConfig) {
    move |c| c.allow_peers = cidrs.iter().map(|s| s.parse().unwrap()).collect()
}

/// A credential of the scheme, valid for `ttl` seconds (negative: expired).
fn credential(label: &str, ttl: i64) -> (String, String) {
    let now = credentials::unix_seconds(SystemTime::now()) as i64;
    let username = format!("{}:{label}", now + ttl);
    let password = credentials::password(&TurnSecret::new(SECRET).unwrap(), &username);
    (username, password)
}

/// A reply from the relay, owned.
struct Reply(Vec<u8>);

impl Reply {
    fn msg(&self) -> Message<'_> {
        Message::from_bytes(&self.0).expect("a STUN message")
    }

    fn is_success(&self) -> bool {
        self.msg().has_class(MessageClass::Success)
    }

    fn error(&self) -> Option<u16> {
        self.msg().attribute::<ErrorCode>().ok().map(|e| e.code())
    }

    fn relayed(&self) -> SocketAddr {
        let m = self.msg();
        m.attribute::<XorRelayedAddress>()
            .expect("XOR-RELAYED-ADDRESS")
            .addr(m.transaction_id())
    }
}

/// A minimal TURN client over UDP: long-term credentials, one request at a
/// time.
struct StunClient {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
}

impl StunClient {
    async fn new(server: SocketAddr, (username, password): (String, String)) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        StunClient {
            sock,
            server,
            username,
            password,
            realm: None,
            nonce: None,
        }
    }

    fn key(&self) -> MessageIntegrityCredentials {
        LongTermCredentials::new(self.username.clone(), self.password.clone())
            .to_key(self.realm.clone().unwrap_or_default())
            .into()
    }

    /// Sends a request (signed once a nonce is known) and returns its reply.
    async fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageWriteVec, TransactionId),
    ) -> Reply {
        let mut msg = Message::builder_request(method, MessageWriteVec::new());
        let tid = msg.transaction_id();
        attrs(&mut msg, tid);
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            msg.add_attribute(&Username::new(&self.username).unwrap())
                .unwrap();
            msg.add_attribute(&Realm::new(realm).unwrap()).unwrap();
            msg.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
            msg.add_message_integrity(&self.key(), IntegrityAlgorithm::Sha1)
                .unwrap();
        }
        let bytes = msg.finish();
        let mut buf = vec![0u8; 2048];
        for _ in 0..3 {
            self.sock.send_to(&bytes, self.server).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await
            {
                let Ok(reply) = Message::from_bytes(&buf[..n]) else {
                    continue;
                };
                if reply.transaction_id() == tid && reply.is_response() {
                    return Reply(buf[..n].to_vec());
                }
            }
        }
        panic!("no reply to {method:?}");
    }

    /// A request, answering 401/438 challenges the way clients do.
    async fn authenticated(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageWriteVec, TransactionId) + Copy,
    ) -> Reply {
        for _ in 0..3 {
            let reply = self.request(method, attrs).await;
            let code = reply.error();
            let challenge = code == Some(438) || (code == Some(401) && self.nonce.is_none());
            if !challenge {
                return reply;
            }
            let m = reply.msg();
            self.realm = Some(m.attribute::<Realm>().unwrap().realm().to_owned());
            self.nonce = Some(m.attribute::<Nonce>().unwrap().nonce().to_owned());
        }
        panic!("challenged forever");
    }

    async fn allocate(&mut self) -> Reply {
        self.authenticated(ALLOCATE, |m, _| {
            m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        })
        .await
    }

    async fn permit(&mut self, peer: SocketAddr) -> Reply {
        self.authenticated(CREATE_PERMISSION, move |m, tid| {
            m.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        })
        .await
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut msg = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = msg.transaction_id();
        msg.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        msg.add_attribute(&Data::new(data)).unwrap();
        self.sock.send_to(&msg.finish(), self.server).await.unwrap();
    }

    /// The next Data indication's (peer, payload).
    async fn recv_data(&self) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, self.sock.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            let Ok(m) = Message::from_bytes(&buf[..n]) else {
                continue;
            };
            if m.method() == DATA && m.has_class(MessageClass::Indication) {
                let peer = m
                    .attribute::<XorPeerAddress>()
                    .ok()?
                    .addr(m.transaction_id());
                let data = m.attribute::<Data>().ok()?.data().to_vec();
                return Some((peer, data));
            }
        }
    }
}

#[tokio::test]
async fn an_expired_credential_is_refused_with_401() {
    let relay = Relay::start(|_| {}).await;
    let mut c = StunClient::new(relay.addr, credential("room/expired", -60)).await;
    let reply = c.allocate().await;
    assert_eq!(reply.error(), Some(401), "expired credential");
    assert!(relay.metrics.refusals(Refusal::Expired) >= 1);
    assert_eq!(relay.metrics.allocations(Transport::Udp), 0);
    relay.stop().await;
}

#[tokio::test]
async fn a_wrong_credential_is_refused_with_401() {
    let relay = Relay::start(|_| {}).await;
    let (username, _) = credential("room/wrong", 600);
    let mut c = StunClient::new(relay.addr, (username, "bm90IHRoZSBwYXNzd29yZA==".into())).await;
    let reply = c.allocate().await;
    assert_eq!(reply.error(), Some(401));
    assert!(relay.metrics.refusals(Refusal::WrongCredential) >= 1);
    // Not of the scheme at all: refused too.
    let mut c = StunClient::new(relay.addr, ("robot".into(), "pw".into())).await;
    assert_eq!(c.allocate().await.error(), Some(401));
    assert!(relay.metrics.refusals(Refusal::MalformedUsername) >= 1);
    assert_eq!(relay.metrics.allocations(Transport::Udp), 0);
    relay.stop().await;
}

#[tokio::test]
async fn relaying_to_loopback_private_or_own_addresses_is_refused_with_a_signed_403() {
    let relay = Relay::start(|_| {}).await;
    let mut c = StunClient::new(relay.addr, credential("room/peer", 600)).await;
    let reply = c.allocate().await;
    assert!(reply.is_success(), "allocation: {:?}", reply.error());
    for (peer, why) in [
        ("127.0.0.2:5000", PeerRefusal::Loopback),
        ("10.0.0.1:5000", PeerRefusal::Private),
        ("169.254.169.254:80", PeerRefusal::LinkLocal),
        ("0.0.0.0:9", PeerRefusal::Reserved),
        // The relay's own address, on its listening port.
        (relay.addr.to_string().as_str(), PeerRefusal::OwnAddress),
    ] {
        let reply = c.permit(peer.parse().unwrap()).await;
        assert_eq!(reply.error(), Some(403), "{peer}");
        assert!(
            reply.msg().validate_integrity(&c.key()).is_ok(),
            "the 403 is signed with the client's key"
        );
        assert_eq!(relay.metrics.refusals(Refusal::Peer(why)), 1, "{peer}");
    }
    let reply = c
        .authenticated(CHANNEL_BIND, |m, tid| {
            m.add_attribute(&XorPeerAddress::new("10.0.0.1:5000".parse().unwrap(), tid))
                .unwrap();
            m.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
        })
        .await;
    assert_eq!(reply.error(), Some(403), "channel bind to 10.0.0.1");
    // A forbidden peer never reaches the protocol layer, even with a stale
    // nonce: 401, and a retry with the current nonce is refused again.
    let nonce = c.nonce.replace("not-the-nonce".into());
    let forbidden: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let reply = c
        .request(CREATE_PERMISSION, move |m, tid| {
            m.add_attribute(&XorPeerAddress::new(forbidden, tid))
                .unwrap();
        })
        .await;
    assert_eq!(reply.error(), Some(401), "stale nonce, forbidden peer");
    c.nonce = nonce;
    assert_eq!(c.permit(forbidden).await.error(), Some(403));
    // A public address is fine (no packet is sent to it).
    assert!(c
        .permit("192.0.3.1:5000".parse().unwrap())
        .await
        .is_success());
    relay.stop().await;
}

#[tokio::test]
async fn two_clients_of_the_relay_reach_each_other_through_their_relayed_addresses() {
    let relay = Relay::start(|_| {}).await;
    let mut a = StunClient::new(relay.addr, credential("room/a", 600)).await;
    let mut b = StunClient::new(relay.addr, credential("room/b", 600)).await;
    let ra = a.allocate().await.relayed();
    let rb = b.allocate().await.relayed();
    assert_eq!(
        ra.ip(),
        relay.addr.ip(),
        "advertised: the listening address"
    );
    // Own address, but live relay ports: allowed without any allow-list.
    assert!(a.permit(rb).await.is_success());
    assert!(b.permit(ra).await.is_success());
    a.send_indication(rb, b"hello through two relays").await;
    // As a DATA indication (turn-types' `write_into` would make it a SEND).
    let (from, data) = b.recv_data().await.expect("data reaches b");
    assert_eq!(from, ra);
    assert_eq!(data, b"hello through two relays");
    assert_eq!(relay.metrics.packets(Direction::ToPeer), 1);
    assert_eq!(relay.metrics.packets(Direction::ToClient), 1);
    relay.stop().await;
}

#[tokio::test]
async fn allocations_are_bounded_per_credential_label_with_486() {
    let relay = Relay::start(|c| c.limits.per_user = 1).await;
    let mut a = StunClient::new(relay.addr, credential("room/same", 600)).await;
    assert!(a.allocate().await.is_success());
    // A fresh credential for the same label shares the quota.
    let mut b = StunClient::new(relay.addr, credential("room/same", 900)).await;
    let reply = b.allocate().await;
    assert_eq!(reply.error(), Some(486));
    assert!(reply.msg().validate_integrity(&b.key()).is_ok());
    assert_eq!(relay.metrics.refusals(Refusal::UserQuota), 1);
    let mut c = StunClient::new(relay.addr, credential("room/other", 600)).await;
    assert!(c.allocate().await.is_success());
    assert_eq!(relay.metrics.allocations(Transport::Udp), 2);
    // Deleting the first allocation frees its place.
    let reply = a
        .authenticated(REFRESH, |m, _| m.add_attribute(&Lifetime::new(0)).unwrap())
        .await;
    assert!(reply.is_success());
    let until = tokio::time::Instant::now() + WAIT;
    while relay.metrics.allocations(Transport::Udp) != 1 {
        assert!(tokio::time::Instant::now() < until, "allocation freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut d = StunClient::new(relay.addr, credential("room/same", 600)).await;
    assert!(d.allocate().await.is_success());
    relay.stop().await;
}

#[tokio::test]
async fn allocations_are_bounded_in_total_with_508() {
    let relay = Relay::start(|c| c.limits.total = 1).await;
    let mut a = StunClient::new(relay.addr, credential("room/a", 600)).await;
    assert!(a.allocate().await.is_success());
    let mut b = StunClient::new(relay.addr, credential("room/b", 600)).await;
    assert_eq!(b.allocate().await.error(), Some(508));
    assert_eq!(relay.metrics.refusals(Refusal::TotalQuota), 1);
    relay.stop().await;
}

#[tokio::test]
async fn tcp_relay_allocations_are_refused_with_442() {
    let relay = Relay::start(|_| {}).await;
    let mut c = StunClient::new(relay.addr, credential("room/tcp", 600)).await;
    let reply = c
        .authenticated(ALLOCATE, |m, _| {
            m.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
                .unwrap();
        })
        .await;
    assert_eq!(reply.error(), Some(442));
    relay.stop().await;
}

#[tokio::test]
async fn relayed_bandwidth_is_bounded_per_allocation() {
    let relay = Relay::start(|c| {
        c.allow_peers = vec!["127.0.0.2/32".parse().unwrap()];
        c.limits.allocation_rate = 1000;
    })
    .await;
    let peer = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut c = StunClient::new(relay.addr, credential("room/bw", 600)).await;
    assert!(c.allocate().await.is_success());
    assert!(c.permit(peer_addr).await.is_success());
    for _ in 0..40 {
        c.send_indication(peer_addr, &[7u8; 200]).await;
    }
    // The bucket holds one second's worth: 1000 bytes, five packets (and
    // what refills while they are sent).
    let until = tokio::time::Instant::now() + WAIT;
    while relay.metrics.packets(Direction::ToPeer) + relay.metrics.refusals(Refusal::Bandwidth) < 40
    {
        assert!(
            tokio::time::Instant::now() < until,
            "every packet accounted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relayed = relay.metrics.packets(Direction::ToPeer);
    assert!((5..20).contains(&relayed), "relayed {relayed} of 40");
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n, from.ip()), (200, relay.addr.ip()));
    relay.stop().await;
}

#[tokio::test]
async fn a_live_allocation_is_refused_once_its_credential_expires() {
    let relay = Relay::start(|_| {}).await;
    let mut c = StunClient::new(relay.addr, credential("room/short", 1)).await;
    assert!(c.allocate().await.is_success());
    let expiry: u64 = c.username.split(':').next().unwrap().parse().unwrap();
    // Wait out the credential's last second (a known time, not an event).
    while credentials::unix_seconds(SystemTime::now()) <= expiry {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refresh = c
        .request(REFRESH, |m, _| {
            m.add_attribute(&Lifetime::new(600)).unwrap()
        })
        .await;
    assert_eq!(refresh.error(), Some(401), "refresh after expiry");
    let permit = c
        .request(CREATE_PERMISSION, |m, tid| {
            m.add_attribute(&XorPeerAddress::new("192.0.3.1:1".parse().unwrap(), tid))
                .unwrap();
        })
        .await;
    assert_eq!(permit.error(), Some(401), "permission after expiry");
    assert!(relay.metrics.refusals(Refusal::Expired) >= 2);
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_frees_every_allocation_and_socket() {
    let relay = Relay::start(|_| {}).await;
    let mut c = StunClient::new(relay.addr, credential("room/stop", 600)).await;
    let relayed = c.allocate().await.relayed();
    let tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let metrics = relay.metrics.clone();
    let addr = relay.addr;
    relay.stop().await;
    assert_eq!(metrics.allocations(Transport::Udp), 0);
    // The listening port and the relay port can be bound again.
    UdpSocket::bind(addr)
        .await
        .expect("listening UDP port freed");
    tokio::net::TcpListener::bind(addr)
        .await
        .expect("listening TCP port freed");
    UdpSocket::bind(relayed).await.expect("relay port freed");
    // The open TCP connection was closed.
    use tokio::io::AsyncReadExt as _;
    let mut tcp = tcp;
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test]
async fn garbage_and_mangled_requests_do_not_disturb_the_relay() {
    let relay = Relay::start(|_| {}).await;
    // An authenticated client with an allocation, and a stranger.
    let mut c = StunClient::new(relay.addr, credential("room/fuzz", 600)).await;
    assert!(c.allocate().await.is_success());
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut valid = Message::builder_request(CREATE_PERMISSION, MessageWriteVec::new());
    let tid = valid.transaction_id();
    valid
        .add_attribute(&XorPeerAddress::new("192.0.3.1:1".parse().unwrap(), tid))
        .unwrap();
    valid
        .add_attribute(&Username::new(&c.username).unwrap())
        .unwrap();
    valid
        .add_message_integrity(&c.key(), IntegrityAlgorithm::Sha1)
        .unwrap();
    let valid = valid.finish();
    // A deterministic xorshift: the same mangling every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000 {
        let mut bytes = valid.clone();
        match i % 3 {
            0 => {
                let at = next() as usize % bytes.len();
                bytes[at] ^= (next() as u8) | 1;
            }
            1 => bytes.truncate(next() as usize % bytes.len()),
            _ => bytes = (0..next() % 200).map(|_| next() as u8).collect(),
        }
        c.sock.send_to(&bytes, relay.addr).await.unwrap();
        stranger.send_to(&bytes, relay.addr).await.unwrap();
    }
    // The relay still serves the client and newcomers.
    assert!(c
        .permit("192.0.3.1:5000".parse().unwrap())
        .await
        .is_success());
    let mut fresh = StunClient::new(relay.addr, credential("room/fresh", 600)).await;
    assert!(fresh.allocate().await.is_success());
    relay.stop().await;
}

/// The binary as users run it: one flag more starts the relay, its series
/// are on `/metrics`, and SIGTERM stops it with the server.
#[tokio::test]
async fn the_binary_relays_with_turn_listen_and_stops_on_sigterm() {
    let mut server = common::binary()
        .args(["--log-format", "json"])
        .args(["--turn-listen", "127.0.0.1:0", "--turn-secret", SECRET])
        .env("RUST_LOG", "info")
        .start()
        .await
        .expect("the server starts");
    let turn: SocketAddr = server
        .wait_log("the TURN relay's address", |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["message"] == "TURN relay listening (UDP and TCP)").then_some(())?;
            v["addr"].as_str()?.parse().ok()
        })
        .await;
    let mut c = StunClient::new(turn, credential("room/bin", 600)).await;
    assert!(c.allocate().await.is_success());
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("signal_turn_allocations{transport=\"udp\"} 1"),
        "{metrics}"
    );
    assert_eq!(server.terminate(WAIT).await, Ok(0), "exits 0 after SIGTERM");
    let log = server.log_text();
    assert!(!log.contains(SECRET), "the secret is never logged:\n{log}");
    UdpSocket::bind(turn)
        .await
        .expect("the TURN port is free again");
}

// ---- coturn's client against the embedded relay ----

/// coturn's test tools (a missing coturn fails the test, naming it).
fn coturn() -> (PathBuf, PathBuf) {
    (
        require_tool("turnutils_uclient", "coturn"),
        require_tool("turnutils_peer", "coturn"),
    )
}

/// How uclient reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    Udp,
    Tcp,
    /// TLS on the relay's `--turn-tls-listen` port. (uclient's `-E CA`
    /// does not make it refuse a certificate of another CA, checked by
    /// hand: the helper checks the certificate with rustls first.)
    Tls,
}

/// Runs uclient through the relay to an echo peer; returns its output.
async fn uclient_through_relay(via: Via, length: usize) -> (String, TurnMetrics) {
    let (uclient, peer_bin) = coturn();
    let certs = std::env::temp_dir().join(format!("ss-turn-tls-{}", std::process::id()));
    let certs = (via == Via::Tls).then(|| testkit::tls::ca_and_leaf(&certs, "turn-tls-ca"));
    let tls = certs.as_ref().map(|c| {
        let stop = CancellationToken::new();
        let files = signal_server::tls::CertFiles {
            cert: c.cert.clone(),
            key: c.key.clone(),
        };
        let resolver = signal_server::tls::files::watch(files, Duration::from_secs(60), stop)
            .expect("certificate loads");
        signal_server::tls::ServerTls::new(resolver, false, Vec::new()).expect("TLS config")
    });
    let relay = Relay::start(|c| {
        allow(&["127.0.0.0/8"])(c);
        c.tls = tls.map(|t| signal_server::turn::TlsListen {
            listen: "127.0.0.1:0".parse().unwrap(),
            config: t.turn_config(),
        });
    })
    .await;
    let port = testkit::free_udp_port();
    // The peer is up when it echoes.
    let mut peer = echo_peer(&peer_bin, port).await;
    let mut cmd = tokio::process::Command::new(uclient);
    let mut relay_port = relay.addr.port();
    match via {
        Via::Udp => {}
        Via::Tcp => {
            cmd.arg("-t");
        }
        Via::Tls => {
            let made = certs.as_ref().expect("certificates");
            let at = relay.tls_addr.expect("a TLS port");
            // The relay serves the server's certificate: it verifies under
            // its CA, and not under another.
            let trusting = tls_support::client_config(&[&made.ca], &[]);
            let tls = tls_support::connect(at, "localhost", &trusting)
                .await
                .expect("a TLS handshake with the relay");
            assert_eq!(
                tls_support::served_leaf(&tls),
                tls_support::pem_certs(&made.cert).remove(0)
            );
            drop(tls);
            let other = testkit::tls::ca_and_leaf(&made.ca.with_file_name("other"), "other-ca");
            let untrusting = tls_support::client_config(&[&other.ca], &[]);
            assert!(tls_support::connect(at, "localhost", &untrusting)
                .await
                .is_err());
            cmd.args(["-t", "-S", "-E"]).arg(&made.ca);
            relay_port = at.port();
        }
    }
    cmd.args(["-W", SECRET, "-u", "robot", "-e", "127.0.0.1"])
        .args(["-r", &port.to_string(), "-n", "20", "-m", "2"])
        .args(["-l", &length.to_string()])
        .args(["-p", &relay_port.to_string(), "127.0.0.1"]);
    let text = output_within(&mut cmd, Duration::from_secs(60)).await;
    let _ = peer.kill().await;
    let metrics = relay.metrics.clone();
    relay.stop().await;
    (text, metrics)
}

fn assert_every_packet_echoed(text: &str, metrics: &TurnMetrics) {
    assert!(
        text.contains("tot_send_msgs=40, tot_recv_msgs=40"),
        "uclient output:\n{text}"
    );
    assert!(
        text.contains("Total lost packets 0"),
        "uclient output:\n{text}"
    );
    assert!(metrics.packets(Direction::ToPeer) >= 40);
    assert!(metrics.packets(Direction::ToClient) >= 40);
}

#[tokio::test]
async fn coturn_uclient_relays_every_packet_over_udp() {
    let (text, metrics) = uclient_through_relay(Via::Udp, 200).await;
    assert_every_packet_echoed(&text, &metrics);
}

#[tokio::test]
async fn coturn_uclient_relays_every_packet_over_tcp_with_channel_data_padding() {
    // 201 bytes: ChannelData on TCP carries 3 bytes of padding each way
    // (RFC 8656 §12.5), which a relay must strip and add.
    let (text, metrics) = uclient_through_relay(Via::Tcp, 201).await;
    assert_every_packet_echoed(&text, &metrics);
}

#[tokio::test]
async fn coturn_uclient_relays_every_packet_over_tls_with_the_servers_certificate() {
    // TURN over TLS (`turns:`) with the server's certificate (checked by
    // rustls in the helper); ChannelData padded as on TCP.
    let (text, metrics) = uclient_through_relay(Via::Tls, 201).await;
    assert_every_packet_echoed(&text, &metrics);
    assert!(
        metrics.allocations_created(Transport::Tls) >= 1,
        "counted as TLS"
    );
}

#[tokio::test]
async fn coturn_uclient_is_refused_a_loopback_peer_without_an_allow_list() {
    let (uclient, _) = coturn();
    let relay = Relay::start(|_| {}).await;
    let mut cmd = tokio::process::Command::new(uclient);
    cmd.args(["-W", SECRET, "-u", "robot", "-e", "127.0.0.2", "-r", "3480"])
        .args(["-n", "5", "-m", "1", "-l", "200"])
        .args(["-p", &relay.addr.port().to_string(), "127.0.0.1"]);
    let text = output_within(&mut cmd, Duration::from_secs(60)).await;
    assert!(text.contains("403"), "uclient output:\n{text}");
    assert!(relay.metrics.refusals(Refusal::Peer(PeerRefusal::Loopback)) >= 1);
    assert_eq!(relay.metrics.packets(Direction::ToPeer), 0);
    relay.stop().await;
}
