//! Chaos clients that make the server queue bytes (issue 11, "who pays for
//! pressure"): byte flooders, pong pumps, watchers flooding a slow host, and
//! join churners. Each checks that whoever causes the pressure pays for it,
//! with the code `docs/PROTOCOL.md` gives, and that the host it is aimed at
//! stays; the memory they make the server hold is in the run's RSS ceiling
//! (`--rss-ceiling-mib`), and the honest rooms' accounting shows they
//! disturb no one else.
//!
//! Clients that must not read, or read slowly, are raw sockets with a small
//! receive buffer and segment size (so that what they leave unread stays in
//! the server's queues, not in loopback's kernel buffers), speaking just
//! enough WebSocket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::chaos::{Outcome, Res};
use crate::net::{self, Read, Stream, STEP};
use crate::Ctx;

/// The kinds, registered in `chaos::KINDS`.
pub const KINDS: [&str; 4] = ["byte_flood", "pong_pump", "watch_flood", "join_churn"];

/// Each of these moves megabytes or thousands of connections: one at a time.
static BYTE_FLOOD: AtomicBool = AtomicBool::new(false);
static WATCH_FLOOD: AtomicBool = AtomicBool::new(false);
static JOIN_CHURN: AtomicBool = AtomicBool::new(false);
/// Pong pumps at once.
static PUMPS: AtomicUsize = AtomicUsize::new(0);
const MAX_PUMPS: usize = 4;

/// A 63 KB message, as the issue's attacker sent.
fn big(kind: &str) -> String {
    json!({"type": kind, "sdp": "x".repeat(63_000), "chaos": "pressure"}).to_string()
}

/// Runs one client of `kind`.
pub async fn run(ctx: &Ctx, kind: &str) -> Res {
    match kind {
        "byte_flood" => one_at_a_time(&BYTE_FLOOD, byte_flood(ctx)).await,
        "watch_flood" => one_at_a_time(&WATCH_FLOOD, watch_flood(ctx)).await,
        "join_churn" => one_at_a_time(&JOIN_CHURN, join_churn(ctx)).await,
        "pong_pump" => {
            if PUMPS.fetch_add(1, Ordering::AcqRel) >= MAX_PUMPS {
                PUMPS.fetch_sub(1, Ordering::AcqRel);
                return Ok(Outcome::Skipped);
            }
            let result = pong_pump(ctx).await;
            PUMPS.fetch_sub(1, Ordering::AcqRel);
            result
        }
        _ => Err(format!("unknown pressure kind {kind}")),
    }
}

async fn one_at_a_time(flag: &AtomicBool, work: impl std::future::Future<Output = Res>) -> Res {
    if flag.swap(true, Ordering::AcqRel) {
        return Ok(Outcome::Skipped);
    }
    let result = work.await;
    flag.store(false, Ordering::Release);
    result
}

/// A guest sending 63 KB offers (20 a second, inside the message rate) to a
/// host that never reads but keeps its connection alive: the guest must get
/// `host_busy` and then close 1008; the host is not dropped for it.
async fn byte_flood(ctx: &Ctx) -> Res {
    let (mut host, join, _) = Raw::host(ctx).await?;
    let (mut sink, mut stream) = attach(ctx, "join", &join).await?;
    // The host never reads; four pings a second (in a task of their own,
    // whatever the flood's sends wait for) keep it alive.
    let keepalive = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if host.send_frame(0x9, b"alive").await.is_err() {
                return;
            }
        }
    });
    let text = big("offer");
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let mut busy = 0;
    // Each client ends well within the wave's time to finish (~56 s).
    let deadline = Instant::now() + Duration::from_secs(25);
    let close = loop {
        if Instant::now() > deadline {
            break Some(Some(0));
        }
        pace.tick().await;
        if sink.send(Message::text(text.clone())).await.is_err() {
            break None;
        }
        if let Some(code) = drain(&mut stream, &mut busy).await {
            break Some(code);
        }
    };
    let host_alive = !keepalive.is_finished();
    keepalive.abort();
    if busy == 0 || close != Some(Some(1008)) || !host_alive {
        return Err(format!(
            "byte flood: {busy} host_busy, then {close:?} (expected close 1008); host alive: {host_alive}"
        ));
    }
    ctx.stats.inc("pressure.byte_flood.closed_1008");
    Ok(Outcome::Done)
}

/// Reads what is waiting without blocking, counting `host_busy`; the close
/// code (`Some(None)` for an end without one) if the connection ended.
async fn drain(stream: &mut Stream, busy: &mut u32) -> Option<Option<u16>> {
    loop {
        match net::read(stream, Duration::ZERO).await {
            Read::Json(v) if v["code"] == "host_busy" => *busy += 1,
            Read::Json(_) | Read::NotJson(_) => {}
            Read::Closed(code) => return Some(code),
            Read::Ended(_) => return Some(None),
            Read::TimedOut => return None,
        }
    }
}

/// A client that pings inside the message rate and never reads: its pongs
/// count in its queue, and if its writes stall long enough
/// (`--write-stall-timeout`) it is dropped. It pumps for 12 s.
async fn pong_pump(ctx: &Ctx) -> Res {
    let (mut raw, _, _) = Raw::host(ctx).await?;
    // It may be dropped as a slow consumer (the run's accounting allows it).
    ctx.stats.inc("pressure.may_be_dropped");
    let payload = [b'p'; 125];
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < Duration::from_secs(12) {
        pace.tick().await;
        if raw.send_frame(0x9, &payload).await.is_err() {
            ctx.stats.inc("pressure.pong_pump.cut_off");
            break;
        }
    }
    Ok(Outcome::Done)
}

/// A host on a slow uplink (reading ~0.85 MB/s) with an honest guest, and
/// six watchers sending it 63 KB messages 20 times a second: the host must
/// stay and get every honest message once, in order; every watcher is held
/// to its byte rate (`rate_limited`) and, crowding the host, refused
/// (`host_busy`) or closed 1008.
async fn watch_flood(ctx: &Ctx) -> Res {
    const WATCHERS: usize = 6;
    let (host, join, watch) = Raw::host(ctx).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen_by_host = Arc::new(Seen::default());
    let reader =
        tokio::spawn(host.read_slowly(850_000, Arc::clone(&stop), Arc::clone(&seen_by_host)));
    let (mut guest, _guest_rx) = attach(ctx, "join", &join).await?;
    let mut floods = Vec::new();
    for _ in 0..WATCHERS {
        let (sink, stream) = attach(ctx, "watch", &watch).await?;
        floods.push(tokio::spawn(flood(sink, stream, big("offer"))));
    }
    let mut sent = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let m = json!({"type":"ice_candidate","candidate":"c","chaos":"pressure","honest":true,"seq":sent});
        net::send(&mut guest, &m).await?;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen = Vec::new();
    for f in floods {
        seen.push(f.await.map_err(|e| e.to_string())?);
    }
    // The honest messages drain behind what the watchers had queued.
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen_by_host.honest.load(Ordering::Acquire) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Release);
    let (_, honest, _) = reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the slow host: {e}"))?;
    if honest != sent {
        return Err(format!(
            "the slow host got {honest} of {sent} honest messages"
        ));
    }
    for (rate_limited, busy, close) in &seen {
        if *rate_limited == 0 && *busy == 0 {
            return Err(format!("a flooding watcher was never refused: {seen:?}"));
        }
        if close.is_some_and(|c| c != Some(1008)) {
            return Err(format!("a flooding watcher was closed with {close:?}"));
        }
    }
    ctx.stats.add(
        "pressure.watch_flood.watchers_closed_1008",
        seen.iter().filter(|s| s.2.is_some()).count() as u64,
    );
    ctx.stats
        .add("pressure.watch_flood.honest_delivered", honest);
    Ok(Outcome::Done)
}

/// Floods for 8 s or until closed: (rate_limited, host_busy, close).
async fn flood(
    mut sink: net::Sink,
    mut stream: Stream,
    text: String,
) -> (u32, u32, Option<Option<u16>>) {
    let (mut rate_limited, mut busy) = (0, 0);
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        pace.tick().await;
        if sink.send(Message::text(text.clone())).await.is_err() {
            return (rate_limited, busy, Some(None));
        }
        loop {
            match net::read(&mut stream, Duration::ZERO).await {
                Read::Json(v) if v["code"] == "host_busy" => busy += 1,
                Read::Json(v) if v["code"] == "rate_limited" => rate_limited += 1,
                Read::Json(_) | Read::NotJson(_) => {}
                Read::Closed(code) => return (rate_limited, busy, Some(code)),
                Read::Ended(_) => return (rate_limited, busy, Some(None)),
                Read::TimedOut => break,
            }
        }
    }
    let _ = sink.close().await;
    (rate_limited, busy, None)
}

/// A watcher connecting and disconnecting with `?watch=TOKEN` 50 times a
/// second (until it has been refused 20 times, for 10 s at most), against a
/// host reading 20 KB/s: it must get `too_many_joins` after the room's
/// burst, the host is sent a `peer_joined` and a `peer_left` for each entry
/// and nothing more, and it stays.
async fn join_churn(ctx: &Ctx) -> Res {
    let (host, _, watch) = Raw::host(ctx).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen_by_host = Arc::new(Seen::default());
    let reader =
        tokio::spawn(host.read_slowly(20_000, Arc::clone(&stop), Arc::clone(&seen_by_host)));
    let started = Instant::now();
    let (mut entered, mut refused) = (0u64, 0u64);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    while refused < 20 && started.elapsed() < Duration::from_secs(10) {
        pace.tick().await;
        let (sink, mut stream) = ctx
            .net
            .ws(&format!("/webrtc?watch={watch}"), false)
            .await
            .map_err(|e| format!("churn: {e}"))?
            .split();
        match net::read(&mut stream, STEP).await {
            Read::Json(v) if v["type"] == "init" => entered += 1,
            Read::Json(v) if v["code"] == "too_many_joins" => refused += 1,
            other => return Err(format!("churner got {other:?}")),
        }
        drop((sink, stream));
    }
    let took = started.elapsed().as_secs_f64();
    // The churner's last peer_left reach the host.
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = 2 * entered;
    while seen_by_host.presence.load(Ordering::Acquire) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more may come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let (_, _, presence_done) = reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the slow host: {e}"))?;
    if refused == 0 {
        return Err(format!("the churner was never refused ({entered} entries)"));
    }
    if entered as f64 > 64.0 + 4.0 * took + 1.0 {
        return Err(format!("{entered} entries in {took:.1} s"));
    }
    if presence_done != want {
        return Err(format!(
            "the host got {presence_done} presence events for {entered} entries"
        ));
    }
    ctx.stats.add("pressure.join_churn.refused", refused);
    Ok(Outcome::Done)
}

/// What a slow host has read so far, for its client to wait on.
#[derive(Default)]
struct Seen {
    honest: AtomicU64,
    presence: AtomicU64,
}

async fn attach(ctx: &Ctx, role: &str, token: &str) -> Result<(net::Sink, Stream), String> {
    let (sink, mut stream) = ctx
        .net
        .ws(&format!("/webrtc?{role}={token}"), false)
        .await
        .map_err(|e| format!("attach as {role}: {e}"))?
        .split();
    net::read_until(&mut stream, STEP, |v| v["type"] == "init").await?;
    Ok((sink, stream))
}

/// Just enough WebSocket for a client that reads slowly or not at all.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(server: SocketAddr, path: &str) -> Result<Raw, String> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(|e| e.to_string())?;
        socket
            .set_recv_buffer_size(8192)
            .and_then(|()| socket.set_tcp_mss(536))
            .and_then(|()| socket.set_nonblocking(true))
            .map_err(|e| format!("socket options: {e}"))?;
        let socket = TcpSocket::from_std_stream(socket.into());
        let mut tcp = timeout(STEP, socket.connect(server))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = timeout(STEP, tcp.read(&mut chunk))
                .await
                .map_err(|_| "handshake timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during the handshake".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            return Err(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        buf.drain(..end);
        Ok(Raw { tcp, buf })
    }

    /// A room of its own: the host, and the join and watch tokens (recorded
    /// for the run's check of the server's log).
    async fn host(ctx: &Ctx) -> Result<(Raw, String, String), String> {
        let mut raw = Raw::connect(ctx.net.server, "/webrtc").await?;
        raw.send_frame(0x1, br#"{"type":"init"}"#)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + STEP;
        let reply = loop {
            if Instant::now() > deadline {
                return Err("no init reply".into());
            }
            let (_, frames) = raw.read_some(16 * 1024, STEP).await?;
            if let Some((_, p)) = frames.into_iter().find(|f| f.0 == 0x1) {
                break serde_json::from_slice::<Value>(&p).map_err(|e| e.to_string())?;
            }
        };
        if reply["role"] != "host" {
            return Err(format!("init answered {reply}"));
        }
        let mut tokens = ctx.tokens.lock().unwrap_or_else(|e| e.into_inner());
        for k in ["join", "watch", "resume"] {
            if let Some(t) = reply[k].as_str() {
                tokens.insert(t.to_string());
            }
        }
        drop(tokens);
        let t = |k: &str| reply[k].as_str().unwrap_or_default().to_string();
        let (join, watch) = (t("join"), t("watch"));
        Ok((raw, join, watch))
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mask = [0x5a, 0xa5, 0x3c, 0xc3];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&out).await
    }

    fn parse(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let frame = (b[0] & 0x0f, b[at..at + len].to_vec());
        self.buf.drain(..at + len);
        Some(frame)
    }

    async fn read_some(
        &mut self,
        max: usize,
        within: Duration,
    ) -> Result<(usize, Vec<(u8, Vec<u8>)>), String> {
        let mut chunk = vec![0u8; max.max(1)];
        let n = match timeout(within, self.tcp.read(&mut chunk)).await {
            Err(_) => 0,
            Ok(Ok(0)) => return Err("connection closed".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
        };
        self.buf.extend_from_slice(&chunk[..n]);
        let mut frames = Vec::new();
        while let Some(f) = self.parse() {
            frames.push(f);
        }
        Ok((n, frames))
    }

    /// Reads at about `bytes_per_sec` until `stop`, answering pings and
    /// checking that the honest guest's numbered messages arrive once and in
    /// order (publishing counts in `seen`). Returns (bytes read, honest
    /// messages, presence events), or why the host failed (it was closed or
    /// dropped, or a message was lost).
    async fn read_slowly(
        mut self,
        bytes_per_sec: usize,
        stop: Arc<AtomicBool>,
        seen: Arc<Seen>,
    ) -> Result<(u64, u64, u64), String> {
        let per_tick = bytes_per_sec / 100;
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        let (mut read, mut next, mut presence) = (0u64, 0u64, 0u64);
        let mut last_ping = Instant::now();
        while !stop.load(Ordering::Acquire) {
            pace.tick().await;
            let (n, frames) = self.read_some(per_tick, Duration::from_millis(1)).await?;
            read += n as u64;
            for (op, payload) in frames {
                match op {
                    0x1 => {
                        let v: Value =
                            serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                        if v["type"] == "peer_joined" || v["type"] == "peer_left" {
                            presence += 1;
                            seen.presence.store(presence, Ordering::Release);
                        }
                        if v["honest"] == true {
                            if v["seq"] != next {
                                return Err(format!("honest seq {} expected {next}", v["seq"]));
                            }
                            next += 1;
                            seen.honest.store(next, Ordering::Release);
                        }
                    }
                    0x9 => self
                        .send_frame(0xA, &payload)
                        .await
                        .map_err(|e| e.to_string())?,
                    0x8 => return Err("the host was sent a close frame".into()),
                    _ => {}
                }
            }
            if last_ping.elapsed() > Duration::from_secs(1) {
                last_ping = Instant::now();
                self.send_frame(0x9, b"alive")
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok((read, next, presence))
    }
}
