//! Who pays for pressure: clients that make the server queue bytes for them
//! or for others, against the real binary (a child process, so that its
//! memory can be read from /proc/PID/status) through real sockets. One test
//! per attack of issue 11 on queued output: a host that never reads while a
//! guest sends it 63 KB offers, a pong pump, watchers flooding a slow host,
//! and join/leave churn against a slow host. Each asserts that the attacker
//! is refused or cut off with the code `docs/PROTOCOL.md` gives, that the
//! host stays, that the server's memory stays within the bound
//! `docs/RELIABILITY.md` derives ("Queued output"), and that an honest room
//! running at the same time loses, duplicates and reorders nothing.
//!
//! Clients that must not read (or must read slowly) are raw sockets with a
//! small receive buffer, speaking just enough WebSocket; the others are
//! tokio-tungstenite clients. Waits are event-driven with timeouts.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const STEP: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;

// --- the server process ------------------------------------------------------------

struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(name: &str, args: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = std::env::temp_dir().join(format!("signal-pressure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .arg("--bind")
            .arg(addr.to_string())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn signal-server");
        let server = Server { child, addr, log };
        let deadline = Instant::now() + STEP;
        while !matches!(http_get(addr, "/healthz"), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "server not ready; log:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory now, in bytes.
    fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// One series of `/metrics` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let (status, body) = http_get(self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// Connections dropped as slow consumers so far, by every limit.
    fn slow_consumers(&self) -> f64 {
        self.metric("signal_slow_peers_dropped_total")
    }

    fn connections(&self) -> i64 {
        let (_, body) = http_get(self.addr, "/healthz").expect("GET /healthz");
        let v: Value = serde_json::from_str(&body).expect("healthz JSON");
        v["connections"].as_i64().expect("connections")
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    Ok((status, body))
}

/// The server's RSS from now on: sampled every 10 ms until stopped.
struct RssWatch {
    before: u64,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<u64>>,
}

impl RssWatch {
    fn start(server: &Server) -> RssWatch {
        let pid = server.child.id();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
                        peak = peak.max(kib * 1024);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        RssWatch {
            before: server.rss(),
            stop,
            sampler: Some(sampler),
        }
    }

    /// Stops sampling: (RSS at the start, peak since).
    fn stop(&mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self
            .sampler
            .take()
            .map_or(0, |s| s.join().expect("sampler"));
        (self.before, peak.max(self.before))
    }
}

// --- a raw WebSocket client ---------------------------------------------------------

/// Just enough WebSocket for clients that read slowly or not at all: a
/// socket with a small receive buffer and a small segment size (loopback's
/// is 64 KB, for which the kernel sizes the server's send buffer in
/// megabytes), so that what the client leaves unread stays in the server's
/// queues, not in the kernel's.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server: opcode and payload.
type Frame = (u8, Vec<u8>);

impl Raw {
    async fn connect(addr: SocketAddr, path: &str, rcvbuf: u32) -> Raw {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .set_recv_buffer_size(rcvbuf as usize)
            .expect("SO_RCVBUF");
        socket.set_tcp_mss(536).expect("TCP_MAXSEG");
        socket.set_nonblocking(true).expect("non-blocking");
        let socket = TcpSocket::from_std_stream(socket.into());
        let mut tcp = timeout(STEP, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("upgrade request");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = timeout(STEP, tcp.read(&mut chunk))
                .await
                .expect("upgrade response in time")
                .expect("read");
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        Raw { tcp, buf }
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mask = [0x11, 0x22, 0x33, 0x44];
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

    async fn send_json(&mut self, v: &Value) -> std::io::Result<()> {
        self.send_frame(0x1, v.to_string().as_bytes()).await
    }

    /// A whole frame from the buffer, if there is one.
    fn parse(&mut self) -> Option<Frame> {
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

    /// Reads at most `max` bytes (waiting up to `within`); the bytes read
    /// and the frames they complete. `Err` when the connection has ended.
    async fn read_some(
        &mut self,
        max: usize,
        within: Duration,
    ) -> Result<(usize, Vec<Frame>), String> {
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

    /// The next text message as JSON.
    async fn recv_json(&mut self) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "no text message in time");
            for (op, payload) in self.read_some(16 * 1024, STEP).await.expect("open").1 {
                if op == 0x1 {
                    return serde_json::from_slice(&payload).expect("JSON");
                }
            }
        }
    }

    /// Creates a room; its join and watch tokens.
    async fn host(addr: SocketAddr, rcvbuf: u32) -> (Raw, String, String) {
        let mut raw = Raw::connect(addr, "/webrtc", rcvbuf).await;
        raw.send_json(&json!({"type":"init"})).await.expect("init");
        let r = raw.recv_json().await;
        assert_eq!(r["role"], "host", "{r}");
        let t = |k: &str| r[k].as_str().expect("token").to_string();
        let (join, watch) = (t("join"), t("watch"));
        // Frames after the reply (none yet) are the caller's.
        (raw, join, watch)
    }
}

/// Reads `raw` at about `bytes_per_sec`, as a host on a slow uplink does,
/// until `stop`; counts what it reads and checks the honest guest's numbered
/// messages (`"seq"`) arrive once and in order. Returns (bytes read, the
/// honest guest's messages, presence events), or why it failed.
fn slow_reader(
    mut raw: Raw,
    bytes_per_sec: usize,
    stop: Arc<AtomicBool>,
    honest_got: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Result<(u64, u64, u64), String>> {
    tokio::spawn(async move {
        let tick = Duration::from_millis(10);
        let per_tick = bytes_per_sec / 100;
        let (mut read, mut next_seq, mut presence) = (0u64, 0u64, 0u64);
        let mut pace = tokio::time::interval(tick);
        let mut last_ping = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await;
            let (n, frames) = raw.read_some(per_tick, Duration::from_millis(1)).await?;
            read += n as u64;
            for (op, payload) in frames {
                match op {
                    0x1 => {
                        let v: Value =
                            serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                        if v["type"] == "peer_joined" || v["type"] == "peer_left" {
                            presence += 1;
                        }
                        if v["honest"] == true {
                            if v["seq"] != next_seq {
                                return Err(format!("honest seq {} expected {next_seq}", v["seq"]));
                            }
                            next_seq += 1;
                            honest_got.store(next_seq, Ordering::Release);
                        }
                    }
                    // The server's ping: answer it.
                    0x9 => raw
                        .send_frame(0xA, &payload)
                        .await
                        .map_err(|e| e.to_string())?,
                    0x8 => return Err("the host was sent a close frame".into()),
                    _ => {}
                }
            }
            if last_ping.elapsed() > Duration::from_secs(1) {
                last_ping = Instant::now();
                raw.send_frame(0x9, b"alive")
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok((read, next_seq, presence))
    })
}

// --- ordinary clients ---------------------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str) -> Ws {
    timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .0
}

async fn send(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match timeout(STEP, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// An attached guest or watcher; its peer id.
async fn attach(server: &Server, role: &str, token: &str) -> (Ws, String) {
    let mut ws = connect(&server.url(&format!("/webrtc?{role}={token}"))).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "init", "{r}");
    (ws, r["peer"].as_str().expect("peer").to_string())
}

/// An honest room beside the attack: the guest sends numbered offers, the
/// host answers each to it; every message must arrive once and in order
/// (each round waits for its answer: a loss is a timeout, a duplicate or a
/// reordering a wrong number).
struct Honest {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<u64, String>>,
}

impl Honest {
    async fn start(server: &Server) -> Honest {
        let mut host = connect(&server.url("/webrtc")).await;
        send(&mut host, &json!({"type":"init"})).await;
        let r = recv(&mut host).await;
        let join = r["join"].as_str().expect("join").to_string();
        let (mut guest, gid) = attach(server, "join", &join).await;
        assert_eq!(recv(&mut host).await["type"], "peer_joined");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let sdp = "v=0\r\n".repeat(200);
            let mut seq = 0u64;
            while !flag.load(Ordering::Relaxed) {
                send(&mut guest, &json!({"type":"offer","sdp":sdp,"seq":seq})).await;
                let m = recv(&mut host).await;
                if m["type"] != "offer" || m["seq"] != seq || m["from"] != gid.as_str() {
                    return Err(format!("host got {m} for offer {seq}"));
                }
                send(
                    &mut host,
                    &json!({"type":"answer","sdp":"s","seq":seq,"to":gid}),
                )
                .await;
                let m = recv(&mut guest).await;
                if m["type"] != "answer" || m["seq"] != seq {
                    return Err(format!("guest got {m} for answer {seq}"));
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(seq)
        });
        Honest { stop, task }
    }

    /// Stops it; the rounds it completed, all of them whole.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let rounds = timeout(STEP * 2, self.task)
            .await
            .expect("the honest room stalled")
            .expect("honest task")
            .unwrap_or_else(|e| panic!("the honest room lost a message: {e}"));
        assert!(rounds > 0, "the honest room made no progress");
        rounds
    }
}

/// What a flooding client saw.
#[derive(Debug, Default)]
struct Seen {
    host_busy: u32,
    rate_limited: u32,
    close: Option<(u16, String)>,
    sent: u64,
}

/// Sends `text` every `every` until the server closes the connection (or
/// `limit` passes), reading what comes back.
async fn flood(mut ws: Ws, text: String, every: Duration, limit: Duration) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + limit;
    let mut pace = tokio::time::interval(every);
    while Instant::now() < deadline {
        pace.tick().await;
        if ws.send(Message::text(text.clone())).await.is_err() {
            break;
        }
        seen.sent += 1;
        while let Ok(frame) = timeout(Duration::ZERO, ws.next()).await {
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v["code"].as_str() {
                        Some("host_busy") => seen.host_busy += 1,
                        Some("rate_limited") => seen.rate_limited += 1,
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    seen.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return seen;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return seen,
            }
        }
    }
    seen
}

// --- the attacks --------------------------------------------------------------------

/// Issue 11, attack 1: a host that never reads (but keeps its connection
/// alive with pings) while its guest sends it 63 KB offers inside the
/// message rate. It used to pin ~63 MB per pair. Now the guest's bytes stop
/// at its share of the host's queue (256 KiB): the guest gets `host_busy`,
/// then, going on, close 1008; the host is not dropped for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_flooding_a_host_that_never_reads_is_refused_then_closed() {
    const PAIRS: usize = 8;
    let server = Server::start("never-reads", &[]);
    let honest = Honest::start(&server).await;
    let mut rss = RssWatch::start(&server);
    let offer = json!({"type":"offer","sdp":"x".repeat(63_000)}).to_string();
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let (mut host, join, _) = Raw::host(server.addr, 4096).await;
        let (guest, _) = attach(&server, "join", &join).await;
        // The host never reads again; a ping a second keeps it alive.
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if host.send_frame(0x9, b"still here").await.is_err() {
                    return;
                }
            }
        });
        let flooding = tokio::spawn(flood(
            guest,
            offer.clone(),
            Duration::from_millis(50),
            Duration::from_secs(60),
        ));
        pairs.push((keepalive, flooding));
    }
    let started = Instant::now();
    let mut queued_peak = 0f64;
    let mut seen = Vec::new();
    for (keepalive, flooding) in pairs {
        while !flooding.is_finished() {
            queued_peak = queued_peak.max(server.metric("signal_queued_bytes"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen.push((flooding.await.expect("flooder"), keepalive));
    }
    let took = started.elapsed();
    let (rss_before, rss_peak) = rss.stop();
    for (s, _) in &seen {
        assert!(s.host_busy >= 1, "{s:?}");
        let (code, reason) = s
            .close
            .clone()
            .expect("the guest was closed with a close frame");
        assert_eq!(code, 1008, "{s:?}");
        assert!(reason.contains("host busy"), "{s:?}");
    }
    // The hosts were not dropped for what their guests sent.
    assert_eq!(server.slow_consumers(), 0.0);
    for (_, keepalive) in &seen {
        assert!(!keepalive.is_finished(), "a host's connection ended");
    }
    assert_eq!(
        server.metric("signal_senders_closed_total{reason=\"host_busy\"}"),
        PAIRS as f64
    );
    assert!(server.metric("signal_host_busy_total{reason=\"share\"}") >= PAIRS as f64);
    // Memory: per pair, the guest's share (256 KiB) and the host's writer
    // (64 KiB and one message) at most; counted, and resident.
    let bound = PAIRS as u64 * 512 * 1024;
    assert!(
        queued_peak <= bound as f64,
        "{queued_peak} bytes queued, bound {bound}"
    );
    let grew = rss_peak.saturating_sub(rss_before);
    assert!(
        grew <= PAIRS as u64 * MIB + 16 * MIB,
        "RSS grew {grew} bytes over {PAIRS} pairs"
    );
    let rounds = honest.finish().await;
    eprintln!(
        "{PAIRS} non-reading hosts, each flooded by a guest with 63 KB offers: every guest \
         closed 1008 within {took:?}; queued at most {queued_peak} B; RSS {rss_before} -> \
         peak {rss_peak} (+{grew} B); honest room: {rounds} rounds, nothing lost"
    );
    for (_, keepalive) in seen {
        keepalive.abort();
    }
}

/// Issue 11, attack 2: a client that pings within the rate limit and never
/// reads. Its pongs count in its queue like everything else, and once its
/// socket takes nothing it is a slow consumer: dropped after
/// `--write-stall-timeout`. Scaled down here: 1 s pings, 3 s stall, and 500
/// pings a second under a message rate raised to 1,000/s, so that the
/// server's socket send buffer (~370 KB on loopback, sized by the kernel)
/// fills in seconds; at the default 100/s it takes a minute, then the same
/// rule applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_pump_is_counted_and_cut_off_when_its_writes_stall() {
    let server = Server::start(
        "pong-pump",
        &[
            "--ping-interval",
            "1s",
            "--write-stall-timeout",
            "3s",
            "--rate-limit",
            "1000",
            "--rate-burst",
            "1000",
        ],
    );
    let honest = Honest::start(&server).await;
    let mut rss = RssWatch::start(&server);
    let (mut pump, _, _) = Raw::host(server.addr, 4096).await;
    let payload = [b'p'; 125];
    let started = Instant::now();
    let mut queued_peak = 0f64;
    let mut pings = 0u64;
    // 500 pings a second, inside the message rate; never a read.
    let ended = loop {
        if started.elapsed() > Duration::from_secs(60) {
            break None;
        }
        if pump.send_frame(0x9, &payload).await.is_err() {
            break Some(started.elapsed());
        }
        pings += 1;
        if pings % 250 == 0 {
            queued_peak = queued_peak.max(server.metric("signal_queued_bytes"));
            if server.metric("signal_slow_consumers_total{limit=\"write_stall\"}") == 1.0 {
                break Some(started.elapsed());
            }
        }
        if pings % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let took = ended.expect("the pong pump was never cut off");
    let (rss_before, rss_peak) = rss.stop();
    assert_eq!(
        server.metric("signal_slow_consumers_total{limit=\"write_stall\"}"),
        1.0
    );
    assert_eq!(server.slow_consumers(), 1.0);
    // Its pongs were counted while they waited (one pong of 127 bytes and
    // its overhead at least), and never beyond the hard limit.
    assert!(
        queued_peak >= 127.0,
        "pongs were not counted: {queued_peak}"
    );
    assert!(queued_peak <= (4 * MIB) as f64, "{queued_peak}");
    let grew = rss_peak.saturating_sub(rss_before);
    assert!(grew <= 16 * MIB, "RSS grew {grew} bytes");
    let rounds = honest.finish().await;
    eprintln!(
        "pong pump: {pings} pings, cut off (write stall) after {took:?}; queued at most \
         {queued_peak} B; RSS +{grew} B; honest room: {rounds} rounds, nothing lost"
    );
}

/// Issue 11, attack 4: a host on a slow uplink (reading ~0.85 MB/s) and
/// watchers sending it 63 KB messages inside the message rate. It used to be
/// dropped within 15 s by one watcher. Now each watcher is held to its byte
/// rate (`rate_limited`), the crowd to its shares of the host's queue
/// (`host_busy`, then close 1008 for those that go on); the host stays, and
/// an honest guest of the same room loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_flooding_a_slow_host_are_refused_and_the_host_stays() {
    const WATCHERS: usize = 8;
    let server = Server::start("slow-host", &[]);
    let honest = Honest::start(&server).await;
    let mut rss = RssWatch::start(&server);
    let (host, join, watch) = Raw::host(server.addr, 16 * 1024).await;
    let reading = Arc::new(AtomicBool::new(false));
    let honest_got = Arc::new(AtomicU64::new(0));
    let reader = slow_reader(host, 850_000, Arc::clone(&reading), Arc::clone(&honest_got));
    // An honest guest of the attacked room: numbered messages, 5 a second.
    let (mut guest, _) = attach(&server, "join", &join).await;
    let guest_sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&guest_sent);
    let guest_task = tokio::spawn(async move {
        for seq in 0.. {
            let m = json!({"type":"ice_candidate","candidate":"c","honest":true,"seq":seq});
            if guest.send(Message::text(m.to_string())).await.is_err() {
                return;
            }
            counter.store(seq + 1, Ordering::Release);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let message = json!({"type":"offer","sdp":"w".repeat(63_000)}).to_string();
    let mut floods = Vec::new();
    for _ in 0..WATCHERS {
        let (w, _) = attach(&server, "watch", &watch).await;
        floods.push(tokio::spawn(flood(
            w,
            message.clone(),
            Duration::from_millis(50),
            Duration::from_secs(25),
        )));
    }
    let mut seen = Vec::new();
    for f in floods {
        seen.push(f.await.expect("flooder"));
    }
    // The honest guest's last messages drain (behind what the watchers had
    // queued), then the host stops reading.
    guest_task.abort();
    let sent = guest_sent.load(Ordering::Acquire);
    let deadline = Instant::now() + Duration::from_secs(30);
    while honest_got.load(Ordering::Acquire) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reading.store(true, Ordering::Relaxed);
    let (read, got, _) = reader
        .await
        .expect("reader")
        .unwrap_or_else(|e| panic!("the slow host: {e}"));
    let (rss_before, rss_peak) = rss.stop();
    // The host stayed, and got every honest message once, in order.
    assert_eq!(server.slow_consumers(), 0.0);
    assert_eq!(got, sent, "honest guest sent {sent}, host got {got}");
    // Each watcher was held to its byte rate; the crowd was refused at the
    // host's queue, and those that went on were closed.
    for s in &seen {
        assert!(s.rate_limited >= 1, "{s:?}");
        if let Some((code, reason)) = &s.close {
            assert_eq!(*code, 1008, "{s:?}");
            assert!(reason.contains("host busy"), "{s:?}");
        }
    }
    let refused = server.metric("signal_host_busy_total{reason=\"share\"}");
    assert!(refused >= 1.0, "no watcher was refused at the host");
    let closed = seen.iter().filter(|s| s.close.is_some()).count();
    assert!(closed >= 1, "no watcher was closed: {seen:?}");
    // Memory: the watchers' shares at the host (8 x 256 KiB), the host's
    // writer, and what is being relayed.
    let grew = rss_peak.saturating_sub(rss_before);
    assert!(
        grew <= 16 * MIB + WATCHERS as u64 * 256 * 1024,
        "RSS grew {grew} bytes"
    );
    let rounds = honest.finish().await;
    eprintln!(
        "slow host (0.85 MB/s) and {WATCHERS} flooding watchers: host stayed, read {read} B, \
         {got}/{sent} honest messages in order; {refused} refused (host_busy), {closed} watchers \
         closed 1008; RSS +{grew} B; other room: {rounds} rounds, nothing lost; watchers: {:?}",
        seen.iter()
            .map(|s| (s.sent, s.rate_limited, s.host_busy, s.close.is_some()))
            .collect::<Vec<_>>()
    );
}

/// Issue 11, attack 5: a watcher connecting and disconnecting with
/// `?watch=TOKEN` in a loop (no messages, so no message rate applies) used to
/// fill a slow host's queue with presence events. Now a room takes 64
/// entries at once and 4 a second (per token): the churner, connecting as
/// fast as it can, gets `too_many_joins`, the host's presence events are
/// bounded, and it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_churn_against_a_slow_host_is_bounded_and_the_host_stays() {
    // One churner address: its per-client attach limit (HTTP 429 after 300
    // a minute, tests/edge.rs) is off, so that the room's own gate is what
    // bounds it here.
    let server = Server::start("churn", &["--attaches-per-minute", "0"]);
    let honest = Honest::start(&server).await;
    let rss_before = server.rss();
    let (host, join, watch) = Raw::host(server.addr, 4096).await;
    let reading = Arc::new(AtomicBool::new(false));
    // A very slow host: 20 KB/s.
    let reader = slow_reader(
        host,
        20_000,
        Arc::clone(&reading),
        Arc::new(AtomicU64::new(0)),
    );
    let (mut guest, _) = attach(&server, "join", &join).await;
    let started = Instant::now();
    let (mut entered, mut refused) = (0u64, 0u64);
    let mut seq = 0u64;
    let mut last_honest = Instant::now();
    // For 6 s, and until refused (however slow the machine), 60 s at most.
    while (started.elapsed() < Duration::from_secs(6) || refused == 0)
        && started.elapsed() < Duration::from_secs(60)
    {
        let mut w = connect(&server.url(&format!("/webrtc?watch={watch}"))).await;
        let r = recv(&mut w).await;
        match (r["type"].as_str(), r["code"].as_str()) {
            (Some("init"), _) => entered += 1,
            (Some("error"), Some("too_many_joins")) => refused += 1,
            _ => panic!("churner got {r}"),
        }
        drop(w);
        if last_honest.elapsed() > Duration::from_millis(200) {
            last_honest = Instant::now();
            let m = json!({"type":"ice_candidate","candidate":"c","honest":true,"seq":seq});
            send(&mut guest, &m).await;
            seq += 1;
        }
    }
    let took = started.elapsed().as_secs_f64();
    // Let the host read what is queued for it (presence events are small).
    let deadline = Instant::now() + Duration::from_secs(20);
    // Left: the honest room's two, the slow host and its guest.
    while server.connections() > 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    reading.store(true, Ordering::Relaxed);
    let (_, got, presence) = reader
        .await
        .expect("reader")
        .unwrap_or_else(|e| panic!("the slow host: {e}"));
    let rss_after = server.rss();
    assert!(
        refused > 0,
        "the churner was never refused ({entered} entries)"
    );
    // The burst, the rate over the run, and one more for timing.
    let allowed = 64.0 + 4.0 * took + 1.0;
    assert!(
        entered as f64 <= allowed,
        "{entered} entries in {took:.1} s, at most {allowed:.0} allowed"
    );
    assert_eq!(server.slow_consumers(), 0.0);
    // Every entry gave the host a peer_joined and a peer_left (the guest's
    // own peer_joined is the one more), and nothing else reached it.
    assert_eq!(
        presence,
        2 * entered + 1,
        "{presence} presence events, {entered} entries"
    );
    assert_eq!(got, seq, "honest guest sent {seq}, host got {got}");
    assert!(server.metric("signal_errors_total{code=\"too_many_joins\"}") >= refused as f64);
    let grew = rss_after.saturating_sub(rss_before);
    assert!(grew <= 16 * MIB, "RSS grew {grew} bytes");
    let rounds = honest.finish().await;
    eprintln!(
        "join churn for {took:.1} s: {entered} entries, {refused} refused (too_many_joins); the \
         slow host got {presence} presence events and all {got} honest messages; RSS +{grew} B; \
         honest room: {rounds} rounds, nothing lost"
    );
}

/// The server-wide budget: a crowd of watchers that never read, in a room
/// whose host broadcasts. With `--max-queued-bytes 8MiB` the total is held
/// near 8 MiB: the largest queues are dropped first, and the honest room
/// (whose queues are small) is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_server_budget_the_largest_queues_are_dropped_first() {
    const STUCK: usize = 12;
    let server = Server::start(
        "server-budget",
        &[
            "--max-queued-bytes",
            "8MiB",
            "--rate-limit",
            "1000",
            "--rate-burst",
            "1000",
        ],
    );
    let honest = Honest::start(&server).await;
    let rss_before = server.rss();
    let mut host = connect(&server.url("/webrtc")).await;
    send(&mut host, &json!({"type":"init"})).await;
    let r = recv(&mut host).await;
    let watch = r["watch"].as_str().expect("watch").to_string();
    let mut stuck = Vec::new();
    for _ in 0..STUCK {
        stuck.push(Raw::connect(server.addr, &format!("/webrtc?watch={watch}"), 4096).await);
    }
    for _ in 0..STUCK {
        assert_eq!(recv(&mut host).await["type"], "peer_joined");
    }
    // Broadcast 32 KB messages: each stuck watcher's queue grows by 32 KB a
    // message; 12 of them reach 8 MiB in about 20 messages.
    let pad = "b".repeat(32 * 1024);
    let mut queued_peak = 0f64;
    let mut left = 0;
    for seq in 0..400 {
        send(
            &mut host,
            &json!({"type":"configure","actions":[],"seq":seq,"pad":pad}),
        )
        .await;
        if seq % 10 == 0 {
            queued_peak = queued_peak.max(server.metric("signal_queued_bytes"));
        }
        while let Ok(Some(Ok(Message::Text(t)))) = timeout(Duration::ZERO, host.next()).await {
            if t.contains("peer_left") {
                left += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let dropped = server.metric("signal_slow_consumers_total{limit=\"server_budget\"}");
    assert!(dropped >= 1.0, "nobody was dropped at the server budget");
    // Never far above the budget: a relief runs in the send that crosses
    // it, late by the sends of other threads at most.
    assert!(
        queued_peak <= (8 * MIB + STUCK as u64 * 64 * 1024) as f64,
        "{queued_peak}"
    );
    let grew = server.rss().saturating_sub(rss_before);
    assert!(grew <= 8 * MIB + 16 * MIB, "RSS grew {grew} bytes");
    let rounds = honest.finish().await;
    eprintln!(
        "server budget 8 MiB, {STUCK} watchers not reading a broadcast of 32 KB messages: \
         {dropped} dropped at the budget ({left} peer_left seen so far), queued at most \
         {queued_peak} B, RSS +{grew} B; honest room: {rounds} rounds, nothing lost"
    );
}

/// The worst case under default flags, measured (docs/RELIABILITY.md,
/// "Queued output"): how much one connection that never reads, and then a
/// crowd of them, can make the server hold. Each is a watcher whose host
/// sends it distinct 60 KB messages as fast as the message rate allows.
/// Moves about 600 MB through the server: run it on its own with
/// `cargo test --release --test pressure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: moves ~600 MB; see docs/RELIABILITY.md"]
async fn worst_case_memory_under_default_flags() {
    async fn stuck_room(server: &Server) -> (Ws, Raw) {
        let mut host = connect(&server.url("/webrtc")).await;
        send(&mut host, &json!({"type":"init"})).await;
        let r = recv(&mut host).await;
        let watch = r["watch"].as_str().expect("watch").to_string();
        let raw = Raw::connect(server.addr, &format!("/webrtc?watch={watch}"), 4096).await;
        assert_eq!(recv(&mut host).await["type"], "peer_joined");
        (host, raw)
    }
    /// Sends up to `n` distinct 60 KB messages, one every `every`, until its
    /// watcher is dropped.
    async fn pour(mut host: Ws, n: usize, every: Duration) -> Ws {
        for i in 0..n {
            tokio::time::sleep(every).await;
            let pad = format!("{i:08}").repeat(60_000 / 8);
            send(
                &mut host,
                &json!({"type":"configure","actions":[],"pad":pad}),
            )
            .await;
            while let Ok(Some(Ok(m))) = timeout(Duration::ZERO, host.next()).await {
                if m.to_text().is_ok_and(|t| t.contains("peer_left")) {
                    return host;
                }
            }
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(900)).await;
            }
        }
        host
    }
    let limits = [
        "messages",
        "bytes",
        "soft_bytes",
        "write_stall",
        "server_budget",
    ];
    let fired = |server: &Server| -> Vec<(&str, f64)> {
        limits
            .iter()
            .map(|l| {
                let series = format!("signal_slow_consumers_total{{limit=\"{l}\"}}");
                (*l, server.metric(&series))
            })
            .filter(|x| x.1 > 0.0)
            .collect()
    };

    // One connection.
    let server = Server::start("worst-one", &[]);
    let mut rss = RssWatch::start(&server);
    let (host, raw) = stuck_room(&server).await;
    let pouring = tokio::spawn(pour(host, 500, Duration::from_millis(5)));
    let mut queued_peak = 0f64;
    while !pouring.is_finished() {
        queued_peak = queued_peak.max(server.metric("signal_queued_bytes"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let host = pouring.await.expect("host");
    let (before, peak) = rss.stop();
    eprintln!(
        "one connection: queued at most {queued_peak} B; RSS {before} -> peak {peak} (+{} B); \
         dropped by {:?}",
        peak.saturating_sub(before),
        fired(&server)
    );
    assert!(queued_peak <= (4 * MIB + 64 * 1024) as f64);
    assert!(peak.saturating_sub(before) <= 4 * MIB + 4 * MIB);
    drop((host, raw));
    drop(server);

    // A crowd: 100 of them, 1.5 times the server's budget if none were
    // dropped (each would be dropped at its own 4 MiB).
    const CROWD: usize = 100;
    let server = Server::start("worst-crowd", &[]);
    let mut rss = RssWatch::start(&server);
    let mut rooms = Vec::new();
    for _ in 0..CROWD {
        rooms.push(stuck_room(&server).await);
    }
    let started = Instant::now();
    let mut pouring = Vec::new();
    let mut raws = Vec::new();
    for (host, raw) in rooms {
        raws.push(raw);
        pouring.push(tokio::spawn(pour(host, 80, Duration::ZERO)));
    }
    let mut queued_peak = 0f64;
    while pouring.iter().any(|p| !p.is_finished()) {
        queued_peak = queued_peak.max(server.metric("signal_queued_bytes"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let (before, peak) = rss.stop();
    let budget = 256 * MIB;
    eprintln!(
        "{CROWD} connections: queued at most {queued_peak} B (budget {budget}); RSS {before} -> \
         peak {peak} (+{} B) in {took:?}; dropped by {:?}",
        peak.saturating_sub(before),
        fired(&server)
    );
    assert!(queued_peak <= (budget + 2 * MIB) as f64);
    drop(raws);
}
