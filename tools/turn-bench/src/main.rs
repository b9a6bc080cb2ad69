//! turn-bench: load for a TURN relay, the same for every relay.
//!
//! Makes `--allocations` allocations with REST credentials (the secret the
//! relay was started with), binds a channel on each to a UDP echo peer of
//! its own (on `--peer-ip`, so the relay must allow that loopback peer), and
//! keeps `--inflight` ChannelData packets of `--size` bytes in flight per
//! allocation: every echo that comes back is sent out again. Each echo is
//! two relayed packets (client to peer, peer to client).
//!
//! Over the measured window it counts relayed packets and reads the relay's
//! CPU time (utime+stime of `--relay-pid` from /proc), and prints one JSON
//! line: relayed packets per second and relay CPU per relayed packet.
//! Everything runs on one thread (pin it with taskset).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use signal_server::turn::credentials::{self, TurnSecret};
use testkit::procfs as procstat;
use tokio::net::UdpSocket;
use turn_server_proto::types::attribute::{ChannelNumber, RequestedTransport, XorPeerAddress};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND};
use turn_server_proto::types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_server_proto::types::stun::message::{
    IntegrityAlgorithm, LongTermCredentials, Message, MessageClass, MessageWriteVec, Method,
};
use turn_server_proto::types::stun::prelude::{MessageWrite, MessageWriteExt};

#[derive(Debug, Parser)]
#[command(about = "Closed-loop ChannelData through a TURN relay")]
struct Args {
    /// The relay (UDP).
    #[arg(long)]
    relay: SocketAddr,
    /// The relay's REST secret.
    #[arg(long)]
    secret: String,
    /// A name for the report line.
    #[arg(long, default_value = "relay")]
    name: String,
    /// Allocations (each its own client socket and channel).
    #[arg(long, default_value_t = 10)]
    allocations: usize,
    /// Packets in flight per allocation.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// ChannelData payload bytes.
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The relay's process id, for its CPU time.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Where the echo peer listens (any port).
    #[arg(long, default_value = "127.0.0.2")]
    peer_ip: IpAddr,
}

/// One request, signed when `auth` is given; its reply.
async fn request(
    sock: &UdpSocket,
    method: Method,
    auth: Option<(&str, &str, &str, &str)>,
    attrs: &dyn Fn(&mut MessageWriteVec),
) -> Result<Vec<u8>, String> {
    let mut msg = Message::builder_request(method, MessageWriteVec::new());
    attrs(&mut msg);
    let tid = msg.transaction_id();
    if let Some((user, pass, realm, nonce)) = auth {
        let key = LongTermCredentials::new(user.into(), pass.into()).to_key(realm.into());
        msg.add_attribute(&Username::new(user).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        msg.add_attribute(&Realm::new(realm).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        msg.add_attribute(&Nonce::new(nonce).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        msg.add_message_integrity(&key.into(), IntegrityAlgorithm::Sha1)
            .map_err(|e| e.to_string())?;
    }
    let bytes = msg.finish();
    let mut buf = vec![0u8; 2048];
    for _ in 0..5 {
        sock.send(&bytes).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            if Message::from_bytes(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                return Ok(buf[..n].to_vec());
            }
        }
    }
    Err(format!("no reply to {method:?}"))
}

fn error_code(reply: &[u8]) -> Option<u16> {
    let m = Message::from_bytes(reply).ok()?;
    m.attribute::<ErrorCode>().ok().map(|e| e.code())
}

/// An allocation with channel 0x4000 bound to `peer`; the socket is
/// connected to the relay.
async fn allocate(
    relay: SocketAddr,
    secret: &TurnSecret,
    i: usize,
    peer: SocketAddr,
) -> Result<UdpSocket, String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(relay).await.map_err(|e| e.to_string())?;
    let expiry = credentials::unix_seconds(SystemTime::now()) + 3600;
    let user = format!("{expiry}:bench-{i}");
    let pass = credentials::password(secret, &user);
    let transport = |m: &mut MessageWriteVec| {
        let _ = m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP));
    };
    let challenge = request(&sock, ALLOCATE, None, &transport).await?;
    let m = Message::from_bytes(&challenge).map_err(|e| e.to_string())?;
    let mut realm = m
        .attribute::<Realm>()
        .map_err(|e| e.to_string())?
        .realm()
        .to_owned();
    let mut nonce = m
        .attribute::<Nonce>()
        .map_err(|e| e.to_string())?
        .nonce()
        .to_owned();
    let mut reply = Vec::new();
    for _ in 0..3 {
        reply = request(
            &sock,
            ALLOCATE,
            Some((&user, &pass, &realm, &nonce)),
            &transport,
        )
        .await?;
        if error_code(&reply) != Some(438) {
            break;
        }
        let m = Message::from_bytes(&reply).map_err(|e| e.to_string())?;
        realm = m
            .attribute::<Realm>()
            .map_err(|e| e.to_string())?
            .realm()
            .to_owned();
        nonce = m
            .attribute::<Nonce>()
            .map_err(|e| e.to_string())?
            .nonce()
            .to_owned();
    }
    let ok = |r: &[u8]| Message::from_bytes(r).is_ok_and(|m| m.has_class(MessageClass::Success));
    if !ok(&reply) {
        return Err(format!("allocate refused: {:?}", error_code(&reply)));
    }
    let bind = |m: &mut MessageWriteVec| {
        let tid = m.transaction_id();
        let _ = m.add_attribute(&XorPeerAddress::new(peer, tid));
        let _ = m.add_attribute(&ChannelNumber::new(0x4000));
    };
    let reply = request(
        &sock,
        CHANNEL_BIND,
        Some((&user, &pass, &realm, &nonce)),
        &bind,
    )
    .await?;
    if !ok(&reply) {
        return Err(format!("channel bind refused: {:?}", error_code(&reply)));
    }
    Ok(sock)
}

/// Echoes every datagram back to where it came from.
async fn echo(peer: UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = peer.recv_from(&mut buf).await {
        let _ = peer.send_to(&buf[..n], from).await;
    }
}

/// Keeps `inflight` packets going on one allocation.
async fn drive(
    sock: Arc<UdpSocket>,
    frame: Arc<Vec<u8>>,
    inflight: usize,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    for _ in 0..inflight {
        let _ = sock.send(&frame).await;
    }
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = sock.recv(&mut buf).await {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if n >= 4 && buf[0] & 0xc0 == 0x40 {
            received.fetch_add(1, Ordering::Relaxed);
            let _ = sock.send(&frame).await;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Args::parse();
    if let Err(e) = run(a).await {
        eprintln!("turn-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let secret = TurnSecret::new(&a.secret)?;
    let peer = UdpSocket::bind((a.peer_ip, 0))
        .await
        .map_err(|e| e.to_string())?;
    let peer_addr = peer.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(echo(peer));
    let mut socks = Vec::new();
    for i in 0..a.allocations {
        socks.push(Arc::new(allocate(a.relay, &secret, i, peer_addr).await?));
    }
    let mut frame = vec![0x40, 0x00];
    frame.extend_from_slice(&(a.size as u16).to_be_bytes());
    frame.resize(4 + a.size, 0x5a);
    let frame = Arc::new(frame);
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = socks.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (sock, count) in socks.iter().zip(&counters) {
        tokio::spawn(drive(
            sock.clone(),
            frame.clone(),
            a.inflight,
            count.clone(),
            stop.clone(),
        ));
    }
    // A lost datagram would shrink an allocation's window for good: refill
    // an allocation that has gone quiet.
    {
        let socks = socks.clone();
        let counters = counters.clone();
        let (frame, inflight) = (frame.clone(), a.inflight);
        tokio::spawn(async move {
            let mut last: Vec<u64> = vec![0; socks.len()];
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                for (i, (s, c)) in socks.iter().zip(&counters).enumerate() {
                    let now = c.load(Ordering::Relaxed);
                    if now == last[i] {
                        for _ in 0..inflight {
                            let _ = s.send(&frame).await;
                        }
                    }
                    last[i] = now;
                }
            }
        });
    }
    let total = |c: &[Arc<AtomicU64>]| c.iter().map(|x| x.load(Ordering::Relaxed)).sum::<u64>();
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let cpu0 = a.relay_pid.and_then(procstat::cpu_seconds);
    let own0 = procstat::own_cpu_seconds();
    let echoes0 = total(&counters);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
    let echoes1 = total(&counters);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = a.relay_pid.and_then(procstat::cpu_seconds);
    let own1 = procstat::own_cpu_seconds();
    stop.store(true, Ordering::Relaxed);
    let relayed = 2 * (echoes1 - echoes0);
    let relay_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let line = serde_json::json!({
        "relay": a.name,
        "allocations": a.allocations,
        "inflight": a.inflight,
        "size": a.size,
        "seconds": elapsed,
        "relayed": relayed,
        "relayed_per_sec": relayed as f64 / elapsed,
        "relay_cpu_share": relay_cpu.map(|c| c / elapsed),
        "relay_cpu_us_per_packet": relay_cpu.filter(|_| relayed > 0).map(|c| c * 1e6 / relayed as f64),
        "generator_cpu_share": (own1 - own0) / elapsed,
    });
    println!("{line}");
    Ok(())
}
