//! The HTTP edge and the per-client limits under attack, against the real
//! binary over real sockets (issue 11: slowloris, connection hoarding, room
//! spam; attach churn; oversized and idle requests; client addresses behind a
//! trusted proxy).
//!
//! Every test starts its own `signal-server` process, so that its memory
//! (RSS) and descriptors can be read from /proc. Attackers and honest
//! clients connect from distinct loopback addresses (every 127/8 address can
//! be bound as a source), so that per-client limits tell them apart. Each
//! test asserts what users care about: the attacker is refused or cut off
//! with the documented code, the server stays within the memory and
//! descriptor bounds of docs/RELIABILITY.md, `/healthz` answers during the
//! attack, and honest rooms running at the same time lose, duplicate and
//! reorder nothing.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// The documented bound on what one connection that is not a WebSocket
/// costs the server (docs/RELIABILITY.md): its read buffer (at most the
/// header limit, 16 KiB), hyper's state, its task, and a response in flight.
const PER_HTTP_CONNECTION_KIB: u64 = 32;
/// `--max-http-connections` by default, under this machine's open-files
/// limit of 20,000 (an eighth of it is larger).
const DEFAULT_MAX_HTTP: u64 = 1024;
/// Connections told to close to make room that may still hold their socket
/// before the server stops accepting (docs/RELIABILITY.md).
const EVICTING: usize = 32;

// --- the server process ------------------------------------------------------------

struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The binary on a free loopback port, logging JSON lines to a file.
    fn start(name: &str, args: &[&str]) -> Server {
        let log =
            std::env::temp_dir().join(format!("signal-edge-{}-{name}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn signal-server");
        let mut server = Server {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            log,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let text = server.log_text();
            let listening = text.lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == "listening").then(|| v["local"].as_str()?.parse().ok())?
            });
            if let Some(addr) = listening {
                server.addr = addr;
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Resident memory, from /proc.
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// Open descriptors, from /proc.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A GET from `from`: (status, body), within `within`.
    async fn get_from(
        &self,
        from: Ipv4Addr,
        path: &str,
        within: Duration,
    ) -> Result<(u16, String), String> {
        let exchange = async {
            let mut tcp = tcp_from(from, self.addr).await.map_err(|e| e.to_string())?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.addr
            );
            tcp.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut raw = Vec::new();
            tcp.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
            let raw = String::from_utf8_lossy(&raw).into_owned();
            let status = raw
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("no status line in {raw:?}"))?;
            let body = raw.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
            Ok((status, body))
        };
        timeout(within, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer to GET {path} within {within:?}")))
    }

    async fn metrics(&self) -> String {
        let (status, body) = self
            .get_from(Ipv4Addr::LOCALHOST, "/metrics", WAIT)
            .await
            .expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }

    /// One series of `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    async fn health(&self) -> Value {
        let (status, body) = self
            .get_from(Ipv4Addr::LOCALHOST, "/healthz", WAIT)
            .await
            .expect("GET /healthz");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("healthz JSON")
    }
}

fn client(a: u8, b: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, a, b)
}

/// A TCP connection from the loopback address `from`.
async fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let tcp = socket.connect(to).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

// --- WebSocket clients ---------------------------------------------------------------

type Ws = WebSocketStream<TcpStream>;

/// Why an upgrade did not happen.
#[derive(Debug, PartialEq)]
enum Refused {
    /// The server answered with this HTTP status.
    Http(u16),
    /// The connection ended without an answer.
    Closed,
}

/// A WebSocket from `from` at `path`, with extra request headers.
async fn ws_with(
    server: &Server,
    from: Ipv4Addr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, Refused> {
    let tcp = tcp_from(from, server.addr)
        .await
        .map_err(|_| Refused::Closed)?;
    let mut request = server.url(path).into_client_request().expect("request");
    for (k, v) in headers {
        request
            .headers_mut()
            .insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    match timeout(WAIT, tokio_tungstenite::client_async(request, tcp)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => Err(Refused::Http(resp.status().as_u16())),
        Ok(Err(_)) => Err(Refused::Closed),
        Err(_) => panic!("the upgrade of {path} got no answer in time"),
    }
}

async fn ws_from(server: &Server, from: Ipv4Addr, path: &str) -> Result<Ws, Refused> {
    ws_with(server, from, path, &[]).await
}

async fn send(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text message, parsed (pings and pongs skipped).
async fn recv(ws: &mut Ws) -> Value {
    loop {
        match timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    let v = recv(ws).await;
    assert_eq!(v["type"], kind, "expected {kind}, got {v}");
    v
}

/// What `init` gets from a connection of `from`: the reply, and the
/// connection.
async fn init_from(server: &Server, from: Ipv4Addr, init: Value) -> (Value, Ws) {
    let mut ws = ws_from(server, from, "/webrtc")
        .await
        .expect("an upgrade within the limits");
    send(&mut ws, &init).await;
    let reply = recv(&mut ws).await;
    (reply, ws)
}

struct Room {
    host: Ws,
    join: String,
    watch: String,
}

async fn create_room(server: &Server, from: Ipv4Addr) -> Room {
    let (reply, host) = init_from(server, from, json!({"type": "init"})).await;
    assert_eq!(reply["type"], "init", "{reply}");
    Room {
        host,
        join: reply["join"].as_str().expect("join").to_string(),
        watch: reply["watch"].as_str().expect("watch").to_string(),
    }
}

/// A guest of `room` from `from`, whose arrival the host has seen.
async fn join(server: &Server, from: Ipv4Addr, room: &mut Room) -> (Ws, String) {
    let (reply, ws) = init_from(server, from, json!({"type": "init", "join": room.join})).await;
    assert_eq!(reply["type"], "init", "{reply}");
    let id = reply["peer"].as_str().expect("peer").to_string();
    let joined = recv_type(&mut room.host, "peer_joined").await;
    assert_eq!(joined["peer"], id.as_str());
    (ws, id)
}

/// `n` offers from the guest to the host: each arrives once, in order,
/// from the guest.
async fn exchange(room: &mut Room, guest: &mut Ws, guest_id: &str, n: usize, tag: &str) {
    for i in 0..n {
        send(
            guest,
            &json!({"type": "offer", "sdp": format!("{tag} {i}")}),
        )
        .await;
    }
    for i in 0..n {
        let m = recv_type(&mut room.host, "offer").await;
        assert_eq!(m["sdp"], format!("{tag} {i}"), "{m}");
        assert_eq!(m["from"], guest_id, "{m}");
    }
}

/// Waits until the connection ends (EOF, reset, or a close frame and EOF).
async fn wait_closed(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

// --- the attacks ---------------------------------------------------------------------

/// Slowloris (issue 11, class 3): thousands of connections that send a
/// request head one byte at a time, or nothing at all. Each is closed after
/// the header timeout, or sooner to make room, and counted; meanwhile
/// `/healthz` answers, honest upgrades succeed and an honest room loses
/// nothing, within the documented memory and descriptor bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_off_and_counted_while_healthz_upgrades_and_rooms_carry_on() {
    const ATTACKERS: usize = 3000;
    const ADDRESSES: usize = 30;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
    let server = Server::start("slowloris", &["--header-timeout", "3s"]);
    let mut room = create_room(&server, client(9, 1)).await;
    let (mut guest, guest_id) = join(&server, client(9, 2), &mut room).await;
    exchange(&mut room, &mut guest, &guest_id, 10, "before").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kib();
    let fds_before = server.fds();

    // The attackers: a third send nothing, a third a request line and then
    // a header byte every 300 ms, a third one byte and nothing more. Each
    // task ends when the server has closed its connection.
    let addr = server.addr;
    let started = Instant::now();
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..ATTACKERS {
        let from = client(1, 1 + (i % ADDRESSES) as u8);
        attackers.spawn(async move {
            let mut tcp = tcp_from(from, addr).await.expect("attacker connects");
            match i % 3 {
                0 => {}
                1 => {
                    let _ = tcp
                        .write_all(b"GET /webrtc HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        .await;
                }
                _ => {
                    let _ = tcp.write_all(b"G").await;
                }
            }
            let mut tick = tokio::time::interval(Duration::from_millis(300));
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = tcp.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return started.elapsed(),
                        Ok(_) => {}
                    },
                    _ = tick.tick(), if i % 3 == 1 => {
                        if tcp.write_all(b"a").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
            }
        });
    }

    // During the attack: /healthz, a new honest room, the old room's
    // traffic; memory and descriptors sampled.
    let mut peak_rss = 0;
    let mut peak_fds = 0;
    let mut health_checks = 0;
    let mut new_room = None;
    while started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(1) {
        let (status, body) = server
            .get_from(client(9, 3), "/healthz", Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("/healthz during the attack: {e}"));
        assert_eq!(status, 200, "{body}");
        health_checks += 1;
        if new_room.is_none() && started.elapsed() > Duration::from_secs(1) {
            let mut r = create_room(&server, client(9, 4)).await;
            let (mut g, gid) = join(&server, client(9, 5), &mut r).await;
            exchange(&mut r, &mut g, &gid, 20, "new").await;
            new_room = Some((r, g, gid));
        }
        exchange(&mut room, &mut guest, &guest_id, 20, "during").await;
        peak_rss = peak_rss.max(server.rss_kib());
        peak_fds = peak_fds.max(server.fds());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        new_room.is_some(),
        "no honest room was made during the attack"
    );

    // Every attacker is cut off: by the header timeout, or earlier, the
    // oldest first, when the cap on connections that are not WebSockets
    // is reached.
    let mut last_closed = Duration::ZERO;
    let mut ended = 0;
    let all_closed = timeout(HEADER_TIMEOUT + WAIT, async {
        while let Some(closed_at) = attackers.join_next().await {
            last_closed = last_closed.max(closed_at.expect("attacker task"));
            ended += 1;
        }
    })
    .await;
    assert!(
        all_closed.is_ok(),
        "{ended} of {ATTACKERS} attackers cut off"
    );
    assert!(
        last_closed < HEADER_TIMEOUT + Duration::from_secs(3),
        "the last attacker was cut off after {last_closed:?}"
    );
    let timed_out = server
        .metric("signal_limited_total{reason=\"header_timeout\"}")
        .await;
    let evicted = server
        .metric("signal_limited_total{reason=\"http_evicted\"}")
        .await;
    assert_eq!(
        timed_out + evicted,
        ATTACKERS as f64,
        "every attacker counted once: {timed_out} timed out, {evicted} evicted"
    );
    assert!(
        evicted >= (ATTACKERS as u64 - DEFAULT_MAX_HTTP) as f64,
        "{evicted} evicted"
    );
    let h = server.health().await;
    assert_eq!(h["connections"], 4, "{h}");
    assert_eq!(h["http_connections"], 1, "only this request: {h}");
    // The honest rooms lost nothing.
    exchange(&mut room, &mut guest, &guest_id, 10, "after").await;
    let (mut r, mut g, gid) = new_room.expect("the new room");
    exchange(&mut r, &mut g, &gid, 10, "after").await;

    let grown = peak_rss.saturating_sub(rss_before);
    let bound = DEFAULT_MAX_HTTP * PER_HTTP_CONNECTION_KIB;
    eprintln!(
        "slowloris: {ATTACKERS} attackers from {ADDRESSES} addresses; {timed_out} timed out, \
         {evicted} evicted, the last after {last_closed:?}; {health_checks} /healthz answered; \
         RSS {rss_before} -> peak {peak_rss} KiB (+{grown} KiB, bound {bound} KiB); \
         descriptors {fds_before} -> peak {peak_fds}"
    );
    assert!(grown <= bound, "RSS grew by {grown} KiB, bound {bound} KiB");
    // The connections that are not WebSockets, those still closing, and
    // the new honest room's and /healthz's.
    let fd_bound = fds_before + DEFAULT_MAX_HTTP as usize + EVICTING + 8;
    assert!(
        peak_fds <= fd_bound,
        "{peak_fds} descriptors open at the peak, bound {fd_bound}"
    );
}

/// Connection hoarding (issue 11, class 6): one address opens WebSockets
/// until its limit; beyond it, requests get HTTP 429, and connections far
/// over it are closed at once; another address connects and its room works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_hoarding_by_one_address_is_refused_above_its_limit_while_another_connects() {
    const LIMIT: usize = 256; // the default of --max-connections-per-client
    const SLACK: usize = 8; // answered with 429 before being closed at once
    let server = Server::start("hoarding", &[]);
    let hoarder = client(2, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss_kib();
    let mut held = Vec::new();
    for i in 0..LIMIT {
        match ws_from(&server, hoarder, "/webrtc").await {
            Ok(ws) => held.push(ws),
            Err(e) => panic!("connection {i} within the limit refused: {e:?}"),
        }
    }
    // Over the limit: a few connections are answered (429), ...
    let mut answered = Vec::new();
    for _ in 0..SLACK {
        answered.push(tcp_from(hoarder, server.addr).await.expect("connect"));
    }
    // ... further ones are closed at once, without reading a byte.
    let mut far_over = tcp_from(hoarder, server.addr).await.expect("connect");
    assert!(
        wait_closed(&mut far_over, Duration::from_secs(2)).await,
        "a connection far over the limit is closed at once"
    );
    let upgrade = format!(
        "GET /webrtc HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    for tcp in &mut answered {
        tcp.write_all(upgrade.as_bytes()).await.expect("request");
        let mut response = Vec::new();
        timeout(WAIT, tcp.read_to_end(&mut response))
            .await
            .expect("an answer in time")
            .expect("read");
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 429"), "{response}");
        assert!(
            response.to_ascii_lowercase().contains("retry-after:"),
            "{response}"
        );
    }
    drop(answered);

    // Everyone else is served: /healthz, and a room from other addresses.
    let h = server.health().await;
    assert_eq!(h["connections"], LIMIT, "{h}");
    let mut room = create_room(&server, client(2, 2)).await;
    let (mut guest, gid) = join(&server, client(2, 3), &mut room).await;
    exchange(&mut room, &mut guest, &gid, 50, "honest").await;
    let refused = server
        .metric("signal_limited_total{reason=\"client_connections\"}")
        .await;
    assert!(refused >= (SLACK + 1) as f64, "{refused} refusals counted");
    let grown = server.rss_kib().saturating_sub(rss_before);
    let bound = LIMIT as u64 * PER_HTTP_CONNECTION_KIB;
    eprintln!(
        "hoarding: {LIMIT} WebSockets held by one address, {refused} refused; RSS +{grown} KiB \
         (bound {bound} KiB)"
    );
    assert!(grown <= bound, "RSS grew by {grown} KiB, bound {bound} KiB");

    // When the hoarder lets connections go, it may open new ones.
    held.truncate(LIMIT - 10);
    let deadline = Instant::now() + WAIT;
    loop {
        match ws_from(&server, hoarder, "/webrtc").await {
            Ok(ws) => {
                held.push(ws);
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "never admitted again: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Room spam (issue 11, class 7): a connect / `init` / disconnect loop. Each
/// address gets `create_rate_limited` after its creations per minute, and
/// the server stops at its room cap with `server_full`; an honest room
/// created before carries on, and may still be joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_spam_is_refused_per_client_and_by_the_room_cap_while_an_honest_room_carries_on() {
    const PER_MINUTE: usize = 60; // the default of --room-creations-per-minute
    const MAX_ROOMS: usize = 100;
    let server = Server::start("spam", &["--max-rooms", "100"]);
    let mut room = create_room(&server, client(3, 100)).await;
    let (mut guest, gid) = join(&server, client(3, 101), &mut room).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss_kib();

    /// `tries` rooms created from `from`, each host leaving at once: what
    /// each got (`init` or the error code), and how long it all took.
    async fn spam(server: &Server, from: Ipv4Addr, tries: usize) -> (Vec<String>, Duration) {
        let started = Instant::now();
        let mut got = Vec::new();
        for _ in 0..tries {
            let (reply, ws) = init_from(server, from, json!({"type": "init"})).await;
            got.push(match reply["type"].as_str() {
                Some("init") => "init".to_string(),
                _ => {
                    assert!(
                        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "{reply}"
                    );
                    reply["code"].as_str().unwrap_or("?").to_string()
                }
            });
            drop(ws);
        }
        (got, started.elapsed())
    }
    let count = |got: &[String], what: &str| got.iter().filter(|g| *g == what).count();
    // One address: its first 60 rooms, then refusals (the bucket refills at
    // one a second, so a slow run may fit a few more).
    let (a, took) = spam(&server, client(3, 1), PER_MINUTE + 20).await;
    assert!(a[..PER_MINUTE].iter().all(|g| g == "init"), "{a:?}");
    let a_rooms = count(&a, "init");
    let a_refused = count(&a, "create_rate_limited");
    assert_eq!(a_rooms + a_refused, a.len(), "{a:?}");
    assert!(
        a_rooms <= PER_MINUTE + took.as_secs() as usize + 1,
        "{a_rooms} rooms in {took:?}"
    );
    assert!(a_refused >= 1, "{a:?}");
    exchange(&mut room, &mut guest, &gid, 30, "during").await;
    let (b, _) = spam(&server, client(3, 2), 30).await;
    assert_eq!(count(&b, "init"), 30, "{b:?}");
    // Up to the cap, then `server_full` for 21 more.
    let before = 1 + a_rooms + 30;
    assert_eq!(server.health().await["rooms"], before);
    let fit = MAX_ROOMS - before;
    let (c, _) = spam(&server, client(3, 3), fit + 21).await;
    assert!(c[..fit].iter().all(|g| g == "init"), "{c:?}");
    assert!(c[fit..].iter().all(|g| g == "server_full"), "{c:?}");
    // The rooms wait out their host's grace period: the cap holds them.
    assert_eq!(server.health().await["rooms"], MAX_ROOMS);
    exchange(&mut room, &mut guest, &gid, 30, "at the cap").await;
    // A room at the cap is still joined; a new one is refused.
    let (mut viewer, vid) = join(&server, client(3, 102), &mut room).await;
    exchange(&mut room, &mut viewer, &vid, 10, "viewer").await;
    let (reply, _ws) = init_from(&server, client(3, 103), json!({"type": "init"})).await;
    assert_eq!(reply["code"], "server_full", "{reply}");

    let a_refused = a_refused as f64;
    for (series, want) in [
        (
            "signal_errors_total{code=\"create_rate_limited\"}",
            a_refused,
        ),
        ("signal_errors_total{code=\"server_full\"}", 22.0),
        (
            "signal_limited_total{reason=\"client_room_creations\"}",
            a_refused,
        ),
        ("signal_limited_total{reason=\"rooms\"}", 22.0),
    ] {
        assert_eq!(server.metric(series).await, want, "{series}");
    }
    let grown = server.rss_kib().saturating_sub(rss_before);
    eprintln!("room spam: {MAX_ROOMS} rooms at the cap; RSS +{grown} KiB");
    // 100 rooms (docs/RELIABILITY.md: about 1.4 KB each) and the spam's
    // connections come and gone: well under a MiB.
    assert!(grown <= 1024, "RSS grew by {grown} KiB");
}

/// Attach churn: one address entering a room over and over gets
/// `attach_rate_limited` after its attaches per minute, and HTTP 429 for
/// a query-string attach; the host saw each of its visits exactly once, and
/// another address still joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_churn_from_one_address_is_limited_and_another_still_attaches() {
    let server = Server::start("churn", &["--attaches-per-minute", "10"]);
    let mut room = create_room(&server, client(4, 1)).await;
    let churner = client(4, 2);
    // Ten visits, each seen by the host once, then a refusal (the bucket
    // refills one every 6 s, so a slow run may fit one more).
    let started = Instant::now();
    let mut visits = 0;
    let refusal = loop {
        let (reply, ws) = init_from(
            &server,
            churner,
            json!({"type": "init", "watch": room.watch}),
        )
        .await;
        if reply["type"] != "init" {
            break reply;
        }
        visits += 1;
        assert!(visits <= 12, "never refused");
        assert_eq!(
            recv_type(&mut room.host, "peer_joined").await["peer"],
            reply["peer"]
        );
        drop(ws);
        assert_eq!(
            recv_type(&mut room.host, "peer_left").await["peer"],
            reply["peer"]
        );
    };
    let took = started.elapsed();
    assert!(
        (10..=10 + took.as_secs() as usize / 6 + 1).contains(&visits),
        "{visits} visits in {took:?}"
    );
    assert_eq!(refusal["code"], "attach_rate_limited", "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("10 per minute")),
        "{refusal}"
    );
    let query = format!("/webrtc?watch={}", room.watch);
    assert_eq!(
        ws_from(&server, churner, &query).await.err(),
        Some(Refused::Http(429))
    );
    // Another address is not affected, by query string or by init.
    let mut viewer = ws_from(&server, client(4, 3), &query)
        .await
        .expect("another address attaches");
    assert_eq!(recv_type(&mut viewer, "init").await["role"], "watch");
    recv_type(&mut room.host, "peer_joined").await;
    let (reply, _guest) = init_from(
        &server,
        client(4, 4),
        json!({"type": "init", "join": room.join}),
    )
    .await;
    assert_eq!(reply["role"], "join", "{reply}");
    recv_type(&mut room.host, "peer_joined").await;
    assert_eq!(
        server
            .metric("signal_upgrades_rejected_total{reason=\"client_attaches\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("signal_limited_total{reason=\"client_attaches\"}")
            .await,
        2.0
    );
}

/// The request head: over `--max-header-bytes` it gets HTTP 431; a
/// keep-alive connection idle for the header timeout is closed; a plain HTTP
/// connection ends at `--http-timeout` whatever it does. Each counted.
#[tokio::test]
async fn oversized_idle_and_long_lived_plain_http_connections_are_cut_off_and_counted() {
    let server = Server::start(
        "http",
        &[
            "--max-header-bytes",
            "4096",
            "--header-timeout",
            "1s",
            "--http-timeout",
            "3s",
        ],
    );
    let me = client(5, 1);
    let mut tcp = tcp_from(me, server.addr).await.expect("connect");
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
        "c".repeat(5000)
    );
    tcp.write_all(big.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = timeout(WAIT, tcp.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    // Under the limit, a browser-sized request is fine.
    let ok = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(3000)
    );
    let mut tcp = tcp_from(me, server.addr).await.expect("connect");
    tcp.write_all(ok.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = timeout(WAIT, tcp.read_to_end(&mut response)).await;
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));

    // Keep-alive: one request answered, then idle: closed after ~1 s.
    let mut idle = tcp_from(me, server.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let t = Instant::now();
    assert!(wait_closed(&mut idle, Duration::from_secs(4)).await);
    let idle_for = t.elapsed();
    assert!(
        idle_for >= Duration::from_millis(900),
        "closed after {idle_for:?}"
    );
    // A connection that keeps asking is still closed at the HTTP timeout.
    let mut busy = tcp_from(me, server.addr).await.expect("connect");
    let t = Instant::now();
    let cut = timeout(Duration::from_secs(6), async {
        let mut buf = [0u8; 4096];
        loop {
            if busy
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            match timeout(Duration::from_millis(500), busy.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a busy plain HTTP connection lived on");
    let lived = t.elapsed();
    assert!(lived >= Duration::from_millis(2800), "cut after {lived:?}");
    for (series, at_least) in [
        ("signal_limited_total{reason=\"header_too_large\"}", 1.0),
        ("signal_limited_total{reason=\"header_timeout\"}", 1.0),
        ("signal_limited_total{reason=\"http_lifetime\"}", 1.0),
    ] {
        let v = server.metric(series).await;
        assert!(v >= at_least, "{series} = {v}");
    }
}

/// Behind a proxy: only with `--trust-proxy-hops` is `X-Forwarded-For`
/// believed; then the per-client limits count the client it names (the
/// last hop's, whatever the client wrote before it), and logs show that
/// address. Without it, the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_limits_count_the_forwarded_client_and_logs_show_it() {
    let router = client(6, 1);
    let server = Server::start(
        "proxy",
        &[
            "--trust-proxy-hops",
            "1",
            "--max-connections-per-client",
            "3",
        ],
    );
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut ws = ws_with(&server, router, "/webrtc", &xff("203.0.113.1"))
            .await
            .expect("within the forwarded client's limit");
        send(&mut ws, &json!({"type": "init"})).await;
        recv_type(&mut ws, "init").await;
        held.push(ws);
    }
    // The same client, whatever it wrote itself before the router's entry.
    assert_eq!(
        ws_with(&server, router, "/webrtc", &xff("6.6.6.6, 203.0.113.1"))
            .await
            .err(),
        Some(Refused::Http(429))
    );
    // Another client through the same router is fine.
    let other = ws_with(&server, router, "/webrtc", &xff("203.0.113.2")).await;
    assert!(other.is_ok(), "{:?}", other.err());
    let log = server.log_text();
    let created: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "created room")
        .collect();
    assert_eq!(created.len(), 3, "{log}");
    for v in &created {
        assert_eq!(v["span"]["remote"], "203.0.113.1:0", "{v}");
    }
    drop(held);

    // Without the flag the header is the client's own words: ignored.
    let server = Server::start("no-proxy", &["--max-connections-per-client", "3"]);
    let mut held = Vec::new();
    for i in 0..3 {
        let v = ["203.0.113.1", "203.0.113.2", "203.0.113.3"][i];
        held.push(
            ws_with(&server, router, "/webrtc", &[("x-forwarded-for", v)])
                .await
                .expect("within the limit"),
        );
    }
    assert_eq!(
        ws_with(&server, router, "/webrtc", &xff("203.0.113.9"))
            .await
            .err(),
        Some(Refused::Http(429)),
        "the limit counts the TCP peer"
    );
}

#[test]
fn every_new_limit_is_in_the_help() {
    let mut out = String::new();
    Command::new(BIN)
        .arg("--help")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn")
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("help");
    for flag in [
        "--header-timeout",
        "--max-header-bytes",
        "--http-timeout",
        "--max-http-connections",
        "--max-connections-per-client",
        "--room-creations-per-minute",
        "--attaches-per-minute",
        "--max-rooms",
        "--trust-proxy-hops",
        "--trusted-proxy",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help:\n{out}");
    }
}
