//! Reliability tests against the real binary over real sockets: origin
//! checks, token hygiene, and the server's behaviour under faults (SIGKILL
//! and restart, the open-files limit, a peer that stops reading, hostile
//! frames).
//!
//! Each test starts its own `signal-server` process on a free loopback port
//! and talks to it with tokio-tungstenite clients. Waits are event-driven
//! with timeouts; a timeout is a failure.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signal_server::protocol::{self, ErrorCode};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const STEP: Duration = Duration::from_secs(10);

// --- the server process ------------------------------------------------------------

struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

fn scratch_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signal-reliability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

impl Server {
    /// Starts the binary with `args` (plus `--bind`), logging to a file.
    fn start(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::start_on(name, free_port(), args, envs, None)
    }

    /// Starts it on `port`; with `nofile`, under that open-files limit.
    fn start_on(
        name: &str,
        port: u16,
        args: &[&str],
        envs: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Server {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = scratch_file(&format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let bind = addr.to_string();
        let mut cmd = match nofile {
            None => {
                let mut c = Command::new(BIN);
                c.arg("--bind").arg(&bind).args(args);
                c
            }
            Some(n) => {
                // `exec` keeps the pid, so /proc/PID is the server's.
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(BIN)
                    .arg("--bind")
                    .arg(&bind)
                    .args(args);
                c
            }
        };
        cmd.env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().expect("spawn signal-server");
        let server = Server { child, addr, log };
        server.wait_ready();
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.addr, "/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "server on {} not ready; log:\n{}",
            self.addr,
            self.log_text()
        );
    }

    fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let (status, body) = http_get(self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }

    /// The value of one series in `/metrics` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    fn health(&self) -> Value {
        let (status, body) = http_get(self.addr, "/healthz").expect("GET /healthz");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("healthz JSON")
    }

    /// Waits until `/healthz` reports `connections` and `rooms`.
    async fn wait_health(&self, connections: i64, rooms: i64) {
        let deadline = Instant::now() + STEP;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok((200, body)) = http_get(self.addr, "/healthz") {
                last = serde_json::from_str(&body).unwrap_or(Value::Null);
                if last["connections"] == connections && last["rooms"] == rooms {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("healthz never reached connections={connections} rooms={rooms}; last {last}");
    }

    /// The server's CPU time (user + system) so far.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat(5), counted from the state (field 3).
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 1000 / clock_ticks())
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A blocking HTTP/1.1 GET: (status, body).
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
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((status, body))
}

// --- WebSocket clients ---------------------------------------------------------------

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket at `url`, optionally with an `Origin` header; an HTTP
/// refusal comes back as `Err(status)`.
async fn connect_with(url: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut request = url.into_client_request().expect("request");
    if let Some(o) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(o).expect("origin header"));
    }
    let host = request.uri().authority().expect("authority").to_string();
    let tcp = timeout(STEP, TcpStream::connect(host))
        .await
        .expect("TCP connect timed out")
        .expect("TCP connect");
    tcp.set_nodelay(true).expect("nodelay");
    match timeout(STEP, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("handshake timed out")
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake with {url} failed: {e}"),
    }
}

async fn connect(url: &str) -> Ws {
    connect_with(url, None).await.expect("upgrade refused")
}

async fn send(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text message as JSON (pings and pongs skipped); panics on a
/// timeout or the end of the connection.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = timeout(STEP, ws.next())
            .await
            .expect("no message within the timeout");
        match frame {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).expect("server sent JSON")
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Receives until a message of `kind` arrives, returning it.
async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = recv(ws).await;
        if m["type"] == kind {
            return m;
        }
    }
}

async fn expect_error(ws: &mut Ws, code: &str) {
    let m = recv(ws).await;
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["code"], code, "{m}");
}

/// How a connection ended, read to its end: `Some(code)` for a close frame.
async fn read_to_end(ws: &mut Ws, limit: Duration) -> Result<Option<u16>, &'static str> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("still open"),
            Ok(None) => return Ok(None),
            Ok(Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Ok(frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

struct Room {
    host: Ws,
    host_id: String,
    join: String,
    watch: String,
    resume: String,
}

async fn create_room(server: &Server) -> Room {
    let mut host = connect(&server.ws_url("/webrtc")).await;
    send(&mut host, &json!({"type": "init"})).await;
    let r = recv(&mut host).await;
    assert_eq!(r["type"], "init", "{r}");
    assert_eq!(r["role"], "host", "{r}");
    let s = |k: &str| {
        r[k].as_str()
            .unwrap_or_else(|| panic!("no {k} in {r}"))
            .to_string()
    };
    Room {
        host_id: s("peer"),
        join: s("join"),
        watch: s("watch"),
        resume: s("resume"),
        host,
    }
}

/// A guest via `{"type":"init","join"|"watch":T}`; returns its peer id.
async fn attach(server: &Server, role: &str, token: &str) -> (Ws, String) {
    let mut ws = connect(&server.ws_url("/webrtc")).await;
    send(&mut ws, &json!({"type": "init", role: token})).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "init", "{r}");
    assert_eq!(r["role"], role, "{r}");
    let id = r["peer"].as_str().expect("peer").to_string();
    (ws, id)
}

/// A guest via the query string (`/webrtc?join=T`); returns its peer id.
async fn attach_by_query(server: &Server, role: &str, token: &str) -> (Ws, String) {
    let mut ws = connect(&server.ws_url(&format!("/webrtc?{role}={token}"))).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "init", "{r}");
    assert_eq!(r["role"], role, "{r}");
    let id = r["peer"].as_str().expect("peer").to_string();
    (ws, id)
}

/// One full offer/answer/ICE/configure exchange between the host and a guest.
async fn exchange(room: &mut Room, guest: &mut Ws, guest_id: &str) {
    send(guest, &json!({"type":"offer","sdp":"v=0\r\n","n":1})).await;
    let m = recv_type(&mut room.host, "offer").await;
    assert_eq!(m["from"], guest_id);
    assert_eq!(m["n"], 1);
    send(
        &mut room.host,
        &json!({"type":"answer","sdp":"v=0\r\n","to":guest_id}),
    )
    .await;
    let m = recv_type(guest, "answer").await;
    assert!(m.get("from").is_none(), "{m}");
    send(
        guest,
        &json!({"type":"ice_candidate","candidate":"candidate:1 1 UDP 1 198.51.100.1 5000 typ host","sdp_mid":"0","sdp_mline_index":0}),
    )
    .await;
    let m = recv_type(&mut room.host, "ice_candidate").await;
    assert_eq!(m["from"], guest_id);
    send(
        &mut room.host,
        &json!({"type":"ice_candidate","candiate":"candidate:2","sdp_mid":"0","sdp_mline_index":0,"to":guest_id}),
    )
    .await;
    let m = recv_type(guest, "ice_candidate").await;
    assert_eq!(m["candidate"], "candidate:2");
    send(
        &mut room.host,
        &json!({"type":"configure","actions":[{"type":"add_stream","id":"s"},{"type":"add_video_track","stream_id":"s","id":"s/v","src":"ros_image:/camera/image_raw"}],"to":guest_id}),
    )
    .await;
    recv_type(guest, "configure").await;
}

// --- origin checks -------------------------------------------------------------------

#[tokio::test]
async fn origin_allowlist_refuses_unlisted_origins_with_403() {
    let server = Server::start(
        "origin",
        &[
            "--allowed-origin",
            "https://robots.example.com",
            "--allowed-origin",
            "http://localhost:8080",
        ],
        &[],
    );
    let mut refused = 0.0;
    for path in ["/webrtc", "/"] {
        let url = server.ws_url(path);
        // Listed origins and no origin at all (robots, scripts) are served.
        for origin in [
            Some("https://robots.example.com"),
            Some("http://localhost:8080"),
            Some("HTTPS://ROBOTS.EXAMPLE.COM"),
            None,
        ] {
            let mut ws = connect_with(&url, origin)
                .await
                .unwrap_or_else(|s| panic!("{origin:?} on {path} refused with {s}"));
            send(&mut ws, &json!({"type":"init"})).await;
            assert_eq!(recv(&mut ws).await["type"], "init");
        }
        // Anything else is refused before the upgrade.
        for origin in [
            "https://evil.example.com",
            "https://robots.example.com.evil.example",
            "http://robots.example.com",
            "https://robots.example.com:443",
            "http://localhost:8081",
            "null",
            "",
        ] {
            let got = connect_with(&url, Some(origin)).await.err();
            assert_eq!(got, Some(403), "origin {origin:?} on {path}");
            refused += 1.0;
        }
    }
    // The origin is checked before the token: a refused origin never learns
    // whether a token is valid.
    let room = create_room(&server).await;
    let url = server.ws_url(&format!("/webrtc?join={}", room.join));
    assert_eq!(
        connect_with(&url, Some("https://evil.example.com"))
            .await
            .err(),
        Some(403)
    );
    refused += 1.0;
    assert!(connect_with(&url, Some("https://robots.example.com"))
        .await
        .is_ok());
    assert_eq!(
        server.metric("signal_upgrades_rejected_total{reason=\"origin\"}"),
        refused
    );

    // Without --allowed-origin every origin is served.
    let open = Server::start("origin-open", &[], &[]);
    let mut ws = connect_with(&open.ws_url("/webrtc"), Some("https://anything.example"))
        .await
        .expect("no allow-list: every origin allowed");
    send(&mut ws, &json!({"type":"init"})).await;
    assert_eq!(recv(&mut ws).await["type"], "init");
}

// --- token hygiene -------------------------------------------------------------------

#[tokio::test]
async fn tokens_never_reach_logs_or_metrics_and_die_with_their_room() {
    let server = Server::start("tokens", &["--host-grace", "1s"], &[("RUST_LOG", "debug")]);
    let mut issued: Vec<String> = Vec::new();
    let mut room = create_room(&server).await;
    issued.extend([room.join.clone(), room.watch.clone(), room.resume.clone()]);

    // Guests by init and by query string, a watcher by query string.
    let (mut g1, g1_id) = attach(&server, "join", &room.join).await;
    let (mut g2, g2_id) = attach_by_query(&server, "join", &room.join).await;
    let (mut w, w_id) = attach_by_query(&server, "watch", &room.watch).await;
    let (mut w2, _) = attach(&server, "watch", &room.watch).await;
    for _ in 0..4 {
        recv_type(&mut room.host, "peer_joined").await;
    }
    exchange(&mut room, &mut g1, &g1_id).await;
    exchange(&mut room, &mut g2, &g2_id).await;
    exchange(&mut room, &mut w, &w_id).await;

    // Misuse that echoes nothing secret: a second init with a token, both
    // tokens at once, a watcher's expect_* action, the join token as resume.
    send(&mut g1, &json!({"type":"init","join": room.join})).await;
    expect_error(&mut g1, "already_in_room").await;
    let mut stranger = connect(&server.ws_url("/webrtc")).await;
    send(
        &mut stranger,
        &json!({"type":"init","join": room.join, "watch": room.watch}),
    )
    .await;
    expect_error(&mut stranger, "bad_message").await;
    send(&mut stranger, &json!({"type":"init","resume": room.join})).await;
    expect_error(&mut stranger, "room_not_found").await;
    send(&mut stranger, &json!({"type":"init","watch": room.join})).await;
    expect_error(&mut stranger, "room_not_found").await;
    send(
        &mut w,
        &json!({"type":"configure","actions":[{"type":"expect_stream","id":"x"}]}),
    )
    .await;
    expect_error(&mut w, "forbidden").await;
    assert_eq!(
        connect_with(
            &server.ws_url(&format!("/webrtc?join={}&watch={}", room.join, room.watch)),
            None
        )
        .await
        .err(),
        Some(400)
    );

    // The host drops and resumes: a fresh resume secret; the old one is dead.
    let old_resume = room.resume.clone();
    drop(room.host);
    recv_type(&mut g1, "host_left").await;
    let mut host = connect(&server.ws_url("/")).await;
    send(&mut host, &json!({"type":"init","resume": old_resume})).await;
    let r = recv(&mut host).await;
    assert_eq!(r["type"], "init", "{r}");
    assert_eq!(r["join"], room.join.as_str());
    assert_eq!(r["watch"], room.watch.as_str());
    let new_resume = r["resume"].as_str().expect("resume").to_string();
    assert_ne!(new_resume, old_resume);
    issued.push(new_resume.clone());
    recv_type(&mut g1, "host_joined").await;
    send(&mut stranger, &json!({"type":"init","resume": old_resume})).await;
    expect_error(&mut stranger, "room_not_found").await;

    // The host leaves for good: after the grace period the room closes.
    drop(host);
    for g in [&mut g1, &mut g2, &mut w, &mut w2] {
        recv_type(g, "room_closed").await;
        assert_eq!(read_to_end(g, STEP).await, Ok(Some(1000)));
    }
    server.wait_health(1, 0).await; // only the stranger is left

    // Every token of the closed room is dead, by init and by query string.
    for (role, t) in [
        ("join", &room.join),
        ("watch", &room.watch),
        ("resume", &new_resume),
        ("resume", &old_resume),
    ] {
        send(&mut stranger, &json!({"type":"init", role: t})).await;
        expect_error(&mut stranger, "room_not_found").await;
    }
    for (role, t) in [("join", &room.join), ("watch", &room.watch)] {
        let url = server.ws_url(&format!("/webrtc?{role}={t}"));
        assert_eq!(connect_with(&url, None).await.err(), Some(404), "{role}");
    }

    // And none of them was ever written to the log or the metrics.
    let metrics = server.metrics();
    let log = server.log_text();
    assert!(
        log.contains("DEBUG") && log.contains("attached") && log.contains("resumed room"),
        "the debug log is not what this test expects to search:\n{log}"
    );
    assert_eq!(issued.len(), 4);
    for t in &issued {
        assert!(!log.contains(t.as_str()), "token {t} is in the log");
        assert!(!metrics.contains(t.as_str()), "token {t} is in /metrics");
        // Not even URL-encoded or split by a redaction longer than 4 chars.
        assert!(
            !log.contains(&t[..8]),
            "8 characters of token {t} are in the log"
        );
    }
}

#[tokio::test]
async fn tokens_over_the_wire_are_well_formed_and_never_collide() {
    const ROOMS: usize = 2000;
    // Every room comes from one address: the per-client limits are off.
    let server = Server::start(
        "collide",
        &[
            "--max-connections",
            "5000",
            "--max-connections-per-client",
            "0",
            "--room-creations-per-minute",
            "0",
        ],
        &[],
    );
    let url = server.ws_url("/webrtc");
    // All rooms stay open at once, so the registry's own uniqueness check
    // cannot hide a collision of the generator.
    let mut tasks = tokio::task::JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Ws, Value)>(ROOMS);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..ROOMS {
        let (url, tx, sem) = (url.clone(), tx.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let mut ws = connect(&url).await;
            send(&mut ws, &json!({"type":"init"})).await;
            let reply = recv(&mut ws).await;
            tx.send((ws, reply)).await.expect("collect");
        });
    }
    drop(tx);
    let mut hosts = Vec::with_capacity(ROOMS);
    let mut tokens = HashSet::new();
    let mut peers = HashSet::new();
    while let Some((ws, r)) = rx.recv().await {
        for k in ["join", "watch", "resume"] {
            let t = r[k].as_str().unwrap_or_else(|| panic!("{k} in {r}"));
            assert_eq!(t.len(), 16, "{k} {t}");
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{k} {t} is not base64url"
            );
            assert!(tokens.insert(t.to_string()), "token {t} issued twice");
        }
        let p = r["peer"].as_str().expect("peer");
        assert_eq!(p.len(), 8, "peer id {p}");
        assert!(signal_server::token::is_peer_id_shaped(p));
        peers.insert(p.to_string());
        hosts.push(ws);
    }
    while let Some(res) = tasks.join_next().await {
        res.expect("room task");
    }
    assert_eq!(hosts.len(), ROOMS);
    assert_eq!(tokens.len(), 3 * ROOMS);
    // Peer ids are 48 bits: ~7e-9 odds of a clash among 2000; a clash would
    // still be harmless across rooms, so this only reports.
    if peers.len() != ROOMS {
        eprintln!("note: {} host peer ids repeated", ROOMS - peers.len());
    }
    assert_eq!(server.health()["rooms"], ROOMS);
    drop(hosts);
}

// --- hostile input -------------------------------------------------------------------

#[test]
fn arrays_are_not_messages() {
    // Found by fuzz/fuzz_targets/message.rs: serde reads an internally tagged
    // enum from an array, so `["init"]` created a room.
    for text in [
        r#"["init"]"#,
        r#"["init","54ICxFae_Ip7TJE2"]"#,
        r#" ["offer","v=0"]"#,
    ] {
        let err = protocol::parse(text).expect_err(text);
        assert_eq!(err.code, ErrorCode::BadMessage, "{text}");
    }
    assert!(protocol::parse(" \r\n\t{\"type\":\"init\"}").is_ok());
}

#[test]
fn the_rewrite_path_keeps_numbers_exactly() {
    // Found by fuzz/fuzz_targets/message.rs (10-minute run): when the relay
    // rewrites a message (a forged `from`, the `candiate` spelling) it goes
    // through serde_json values, and serde_json's default float parsing is
    // best-effort: 222…220 (past u64) came out as 2.2222222222222226e50, one
    // ulp from what the sender wrote and what a browser's JSON.parse reads.
    let big = "222222222222222222222222222222222222222222222222220";
    for text in [
        format!(
            r#"{{"type":"ice_candidate","candiate":"c","x":{big},"y":0.1000000000000000055511151231257827}}"#
        ),
        format!(
            r#"{{"type":"offer","sdp":"s","from":"forged","x":{big},"y":0.1000000000000000055511151231257827}}"#
        ),
    ] {
        let msg = protocol::parse(&text).expect("valid");
        let relay = msg.relay().expect("relayed");
        for from in [Some("AbCdEf12"), None] {
            let out = protocol::with_from(&text, from, &relay);
            for (key, original) in [("x", big), ("y", "0.1000000000000000055511151231257827")] {
                // Read the number back with Rust's correctly rounded parser,
                // not serde_json's.
                let at = out.find(&format!("\"{key}\":")).expect("field kept") + key.len() + 3;
                let num: String = out[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || "+-.eE".contains(*c))
                    .collect();
                assert_eq!(
                    num.parse::<f64>().expect("a number"),
                    original.parse::<f64>().expect("a number"),
                    "{key} changed: {out}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_slow_peer_is_counted_once_however_many_messages_it_misses() {
    // Found by the soak (tools/soak): signal_slow_peers_dropped_total said 13
    // for 9 peers dropped. Every send to a full outbox counted, also those
    // made after the peer was cut off and before its session left the room.
    use signal_server::metrics::Metrics;
    use signal_server::protocol::{InitRequest, RelayKind, Role};
    use signal_server::rooms::{
        Kick, Member, MemoryRegistry, PeerLink, Queued, Registry, RoomLimits, Welcome,
    };
    use signal_server::ws::Utf8Bytes;

    let (link, _outbox) = PeerLink::new(1);
    assert_eq!(link.send_text("a"), Queued::Yes);
    assert_eq!(link.send_text("b"), Queued::Full);
    assert_eq!(link.kick_reason(), Some(Kick::SlowConsumer));
    assert_eq!(link.send_text("c"), Queued::Gone);

    let metrics = Metrics::new();
    let registry = MemoryRegistry::new(
        RoomLimits {
            max_peers: 8,
            host_grace: Duration::from_secs(1),
        },
        metrics.clone(),
    );
    let (host_link, _host_outbox) = PeerLink::new(64);
    let mut join = None;
    let host = registry
        .enter(InitRequest::Create, host_link, |w: &Welcome| {
            join = w.join.clone();
            String::from("{}")
        })
        .await
        .expect("room");
    let join = join.expect("join token");
    // The guest's outbox holds its init reply and one more message.
    let (guest_link, _guest_outbox) = PeerLink::new(2);
    let _guest = registry
        .enter(
            InitRequest::Attach(Role::Join, &join),
            guest_link.clone(),
            |_: &Welcome| String::from("{}"),
        )
        .await
        .expect("guest");
    for _ in 0..10 {
        host.relay(
            RelayKind::Offer,
            None,
            Utf8Bytes::from_static(r#"{"type":"offer","sdp":"s"}"#),
        )
        .await
        .expect("relay");
    }
    assert_eq!(guest_link.kick_reason(), Some(Kick::SlowConsumer));
    assert_eq!(
        metric_value(&metrics.render(), "signal_slow_peers_dropped_total"),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics.render(),
            "signal_messages_relayed_total{type=\"offer\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn hostile_frames_get_their_error_and_nothing_else() {
    let server = Server::start("hostile", &["--max-message-size", "4096"], &[]);
    let mut room = create_room(&server).await;
    let (mut guest, guest_id) = attach(&server, "join", &room.join).await;
    recv_type(&mut room.host, "peer_joined").await;

    let mut c = connect(&server.ws_url("/webrtc")).await;
    for (frame, code) in [
        (Message::text("{not json"), "bad_json"),
        (Message::text(r#"["init"]"#), "bad_message"),
        (Message::text(r#"["init","x"]"#), "bad_message"),
        (Message::text(r#"{"type":"hello"}"#), "unknown_type"),
        (Message::text(r#"{"type":"offer","sdp":7}"#), "bad_message"),
        (
            Message::binary(vec![0u8, 159, 146, 150]),
            "unsupported_frame",
        ),
        (
            Message::text(r#"{"type":"offer","sdp":"s"}"#),
            "not_in_room",
        ),
        (
            Message::text(r#"{"type":"init","join":"AAAAAAAAAAAAAAAA"}"#),
            "room_not_found",
        ),
        (
            Message::text(r#"{"type":"init","join":"short"}"#),
            "room_not_found",
        ),
    ] {
        c.send(frame).await.expect("send");
        expect_error(&mut c, code).await;
    }
    // None of it created a room or reached anyone.
    assert_eq!(server.health()["rooms"], 1);

    // A guest's forged `from` is replaced; `to` from a guest is ignored (it
    // goes to its own host only).
    send(
        &mut guest,
        &json!({"type":"offer","sdp":"s","from":room.host_id,"to":"zzzzzzzz"}),
    )
    .await;
    let m = recv_type(&mut room.host, "offer").await;
    assert_eq!(m["from"], guest_id.as_str());
    // The host's `to` naming nobody in the room is refused.
    send(
        &mut room.host,
        &json!({"type":"answer","sdp":"s","to":"zzzzzzzz"}),
    )
    .await;
    expect_error(&mut room.host, "peer_not_found").await;

    // Oversize: `too_large`, then close 1009; the room carries on.
    let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "x".repeat(5000));
    guest.send(Message::text(big)).await.expect("send");
    expect_error(&mut guest, "too_large").await;
    assert_eq!(read_to_end(&mut guest, STEP).await, Ok(Some(1009)));
    let left = recv_type(&mut room.host, "peer_left").await;
    assert_eq!(left["peer"], guest_id.as_str());
    let (mut g2, g2_id) = attach(&server, "join", &room.join).await;
    recv_type(&mut room.host, "peer_joined").await;
    exchange(&mut room, &mut g2, &g2_id).await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_1008() {
    // One token a second: the burst is all the flood gets, whatever the
    // machine's speed; ten drops in a row close the connection.
    let server = Server::start("flood", &["--rate-limit", "1", "--rate-burst", "100"], &[]);
    let mut room = create_room(&server).await;
    let (mut guest, _) = attach(&server, "join", &room.join).await;
    recv_type(&mut room.host, "peer_joined").await;
    let mut sent = 0;
    let mut write_failed = false;
    for i in 0..400 {
        let m = Message::text(json!({"type":"offer","sdp":"s","i":i}).to_string());
        if guest.feed(m).await.is_err() {
            write_failed = true;
            break;
        }
        sent += 1;
    }
    let _ = guest.flush().await;
    let mut rate_limited = 0;
    let end = loop {
        match timeout(STEP, guest.next())
            .await
            .expect("flood never closed")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(v["code"], "rate_limited", "{v}");
                rate_limited += 1;
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    // One per run of drops (a refill mid-flood would start a second run).
    assert!(
        (1..=2).contains(&rate_limited),
        "{rate_limited} rate_limited replies"
    );
    assert_eq!(end, Some(1008), "sent {sent}, write failed {write_failed}");
    // The host got the burst, in order, and then the guest left.
    let mut got = 0;
    loop {
        let m = recv(&mut room.host).await;
        if m["type"] == "peer_left" {
            break;
        }
        assert_eq!(m["i"], got, "{m}");
        got += 1;
    }
    // The burst is 100 messages, and `init` took one of them.
    assert!(
        (99..=101).contains(&got),
        "host received {got} of the flood"
    );
}

// --- faults ----------------------------------------------------------------------------

#[tokio::test]
async fn sigkill_under_load_clients_see_the_close_and_a_restart_serves() {
    const ROOMS: usize = 20;
    let port = free_port();
    let mut server = Server::start_on("sigkill", port, &[], &[], None);
    // A robot's bridge hosts one more room through the same server.
    let mut bridge = Bridge::start(&server);
    let first = bridge.next_event(STEP);
    assert_eq!(first["event"], "room", "{first}");
    let old_watch = first["watch"].as_str().expect("watch token").to_string();
    let mut viewer = attach_by_query(&server, "watch", &old_watch).await.0;
    let mut rooms = Vec::new();
    for _ in 0..ROOMS {
        let mut room = create_room(&server).await;
        let (guest, _) = attach(&server, "join", &room.join).await;
        recv_type(&mut room.host, "peer_joined").await;
        rooms.push((room, guest));
    }
    // Load: every guest sends offers without pause, every host reads them.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = tokio::task::JoinSet::new();
    for (mut room, mut guest) in rooms {
        let stop = stop.clone();
        load.spawn(async move {
            let (mut sent, mut got) = (0u64, 0u64);
            let mut ends = (None, None);
            while ends.0.is_none() || ends.1.is_none() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = guest.send(Message::text(r#"{"type":"offer","sdp":"s"}"#)), if ends.0.is_none() => {
                        match r {
                            Ok(()) => sent += 1,
                            Err(_) => ends.0 = Some(Instant::now()),
                        }
                        // Pace the load (well under the rate limit).
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    m = room.host.next(), if ends.1.is_none() => match m {
                        Some(Ok(Message::Text(_))) => got += 1,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => ends.1 = Some(Instant::now()),
                    },
                }
            }
            // The guest's own reads end too.
            let guest_end = read_to_end(&mut guest, STEP).await;
            (sent, got, ends, guest_end)
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    server.kill9();
    let mut total_sent = 0;
    let mut total_got = 0;
    let mut worst = Duration::ZERO;
    let watchdog = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(STEP).await;
            stop.cancel();
        }
    });
    while let Some(r) = load.join_next().await {
        let (sent, got, ends, guest_end) = r.expect("load task");
        let host_end = ends.1.expect("the host never saw the connection end");
        assert!(guest_end.is_ok(), "a guest never saw the connection end");
        worst = worst.max(host_end.saturating_duration_since(killed_at));
        total_sent += sent;
        total_got += got;
    }
    watchdog.abort();
    assert!(total_got > 0 && total_sent >= total_got);
    assert!(
        worst < Duration::from_secs(2),
        "a client took {worst:?} to see the kill"
    );
    eprintln!(
        "sigkill: {ROOMS} rooms, {total_sent} sent, {total_got} received before the kill; \
         every client saw the end within {worst:?}"
    );

    assert!(
        read_to_end(&mut viewer, STEP).await.is_ok(),
        "the bridge's viewer never saw the end"
    );
    let lost = bridge.next_event(STEP);
    assert_eq!(lost["event"], "disconnected", "{lost}");

    // Restart on the same port: it serves at once; rooms did not survive.
    let server = Server::start_on("sigkill-restart", port, &[], &[], None);
    let mut room = create_room(&server).await;
    let (mut guest, guest_id) = attach(&server, "join", &room.join).await;
    recv_type(&mut room.host, "peer_joined").await;
    exchange(&mut room, &mut guest, &guest_id).await;

    // The bridge reconnects by itself; its resume finds no room (the state
    // died with the process), so it opens a new one: new links that work,
    // old ones that do not.
    let again = bridge.next_event(STEP);
    assert_eq!(again["event"], "room", "{again}");
    assert_eq!(again["resumed"], false, "{again}");
    let new_watch = again["watch"].as_str().expect("watch token");
    assert_ne!(new_watch, old_watch);
    let _viewer = attach_by_query(&server, "watch", new_watch).await;
    let url = server.ws_url(&format!("/webrtc?watch={old_watch}"));
    assert_eq!(connect_with(&url, None).await.err(), Some(404));
    assert_eq!(server.health()["rooms"], 2);
}

/// `signal-server bridge`, hosting a room on `server` for a robot that is
/// not there (it is only reached when a viewer asks for media).
struct Bridge {
    child: Child,
    events: std::sync::mpsc::Receiver<Value>,
}

impl Bridge {
    fn start(server: &Server) -> Bridge {
        let log = std::fs::File::create(scratch_file("bridge.log")).expect("bridge log");
        let mut child = Command::new(BIN)
            .args([
                "bridge",
                "--json",
                "--backoff-min",
                "50ms",
                "--backoff-max",
                "300ms",
            ])
            .arg("--server")
            .arg(server.ws_url("/webrtc"))
            .arg("--robot")
            .arg(format!("ws://127.0.0.1:{}/webrtc", free_port()))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn the bridge");
        let stdout = child.stdout.take().expect("bridge stdout");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Bridge { child, events }
    }

    /// The bridge's next JSON line (`{"event":"room",...}` or
    /// `{"event":"disconnected",...}`).
    fn next_event(&mut self, within: Duration) -> Value {
        self.events
            .recv_timeout(within)
            .expect("no event from the bridge in time")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn at_the_open_files_limit_accept_errors_back_off_and_service_resumes() {
    const NOFILE: u32 = 64;
    let server = Server::start_on(
        "emfile",
        free_port(),
        &["--host-grace", "1s"],
        &[],
        Some(NOFILE),
    );
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    assert!(
        limit
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&format!(" {NOFILE} "))),
        "{limit}"
    );
    let url = server.ws_url("/webrtc");
    let host = server.addr.to_string();
    // Fill every descriptor with hosts of rooms.
    let mut held = Vec::new();
    let mut pending = Vec::new();
    loop {
        assert!(held.len() < NOFILE as usize, "never reached the limit");
        let tcp = TcpStream::connect(&host).await.expect("connect");
        let request = url.as_str().into_client_request().expect("request");
        match timeout(
            Duration::from_millis(1500),
            tokio_tungstenite::client_async(request, tcp),
        )
        .await
        {
            Ok(Ok((mut ws, _))) => {
                send(&mut ws, &json!({"type":"init"})).await;
                recv_type(&mut ws, "init").await;
                held.push(ws);
            }
            Ok(Err(e)) => panic!("handshake failed: {e}"),
            // Not accepted: the limit is reached.
            Err(_) => break,
        }
    }
    // More clients queue up in the backlog while the server is at its limit.
    for _ in 0..3 {
        pending.push(
            TcpStream::connect(&host)
                .await
                .expect("connect into the backlog"),
        );
    }
    assert!(
        held.len() > 20,
        "only {} connections before the limit",
        held.len()
    );
    let fds_at_limit = server.open_fds();

    // At the limit: the accept loop logs and sleeps, it does not spin.
    let log_before = server.log_text().matches("accept error").count();
    let cpu_before = server.cpu_time();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = server.cpu_time() - cpu_before;
    let log = server.log_text();
    let errors = log.matches("accept error").count() - log_before;
    assert!(log.contains("Too many open files"), "{log}");
    assert!(
        cpu < Duration::from_millis(300),
        "server used {cpu:?} of CPU in 3 s at the limit"
    );
    assert!(
        (1..=8).contains(&errors),
        "{errors} accept errors logged in 3 s (a 1 s back-off gives about 3)"
    );
    eprintln!(
        "emfile: limit {NOFILE}, {} connections held, {fds_at_limit} fds open, \
         {cpu:?} CPU and {errors} accept errors in 3 s at the limit",
        held.len()
    );

    // The clients leave: the server serves again.
    let rooms_held = held.len();
    drop(held);
    drop(pending);
    let deadline = Instant::now() + STEP;
    let mut ws = loop {
        assert!(Instant::now() < deadline, "the server never served again");
        let tcp = TcpStream::connect(&host).await.expect("connect");
        let request = url.as_str().into_client_request().expect("request");
        if let Ok(Ok((ws, _))) = timeout(
            Duration::from_millis(1500),
            tokio_tungstenite::client_async(request, tcp),
        )
        .await
        {
            break ws;
        }
    };
    send(&mut ws, &json!({"type":"init"})).await;
    let r = recv_type(&mut ws, "init").await;
    assert_eq!(r["role"], "host");
    drop(ws);
    server.wait_health(0, 0).await;
    assert!(rooms_held > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_dropped_and_its_room_keeps_going() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const MESSAGES: usize = 2000;
    const OUTBOX: usize = 32;
    // The host never gets more than this ahead of the slower reader, so the
    // readers' outboxes never fill: only the peer that does not read at all
    // can be dropped.
    const WINDOW: usize = 8;
    let server = Server::start(
        "slow",
        &[
            "--outbox-capacity",
            &OUTBOX.to_string(),
            "--rate-limit",
            "100000",
            "--rate-burst",
            "100000",
        ],
        &[],
    );
    let mut room = create_room(&server).await;
    let (mut slow, slow_id) = attach(&server, "join", &room.join).await;
    let (r1, r1_id) = attach(&server, "join", &room.join).await;
    let (r2, r2_id) = attach(&server, "watch", &room.watch).await;
    for _ in 0..3 {
        recv_type(&mut room.host, "peer_joined").await;
    }
    // The readers count what they get; `slow` is never polled from here on.
    let progress: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut counting = tokio::task::JoinSet::new();
    for (i, mut ws) in [r1, r2].into_iter().enumerate() {
        let progress = Arc::clone(&progress);
        counting.spawn(async move {
            let started = Instant::now();
            for next in 0..MESSAGES {
                let m = recv(&mut ws).await;
                assert_eq!(m["type"], "offer", "{m}");
                assert_eq!(m["seq"], next, "out of order or lost");
                progress[i].store(next + 1, Ordering::Release);
            }
            (started.elapsed(), ws)
        });
    }
    let padding = "x".repeat(16 * 1024);
    let started = Instant::now();
    let mut left = Vec::new();
    for seq in 0..MESSAGES {
        let deadline = Instant::now() + STEP;
        while progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
            + WINDOW
            < seq
        {
            assert!(Instant::now() < deadline, "the readers stalled at {seq}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        send(
            &mut room.host,
            &json!({"type":"offer","sdp":padding,"seq":seq}),
        )
        .await;
        // The host reads its own events as it goes.
        while let Ok(Some(Ok(Message::Text(t)))) = timeout(Duration::ZERO, room.host.next()).await {
            let v: Value = serde_json::from_str(&t).expect("JSON");
            if v["type"] == "peer_left" {
                left.push(v["peer"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    let send_time = started.elapsed();
    let mut worst = Duration::ZERO;
    let mut readers = Vec::new();
    while let Some(r) = timeout(Duration::from_secs(60), counting.join_next())
        .await
        .expect("readers stalled")
    {
        let (took, ws) = r.expect("reader");
        worst = worst.max(took);
        readers.push(ws);
    }
    if left.is_empty() {
        let v = recv_type(&mut room.host, "peer_left").await;
        left.push(v["peer"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        left,
        std::slice::from_ref(&slow_id),
        "readers: {r1_id} {r2_id}"
    );
    // Counted once for the one peer, however many messages it missed.
    assert_eq!(server.metric("signal_slow_peers_dropped_total"), 1.0);
    server.wait_health(1 + readers.len() as i64, 1).await;
    // The slow peer finds its connection ended once it reads what was buffered.
    let mut buffered = 0;
    loop {
        match timeout(STEP, slow.next())
            .await
            .expect("slow peer's socket still open")
        {
            Some(Ok(Message::Text(_))) => buffered += 1,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(
        buffered < MESSAGES,
        "the slow peer got everything: it was not dropped"
    );
    eprintln!(
        "slow peer: {MESSAGES} x 16 KiB broadcast in {send_time:?}; readers got all, in order, \
         the slowest in {worst:?}; the slow peer had {buffered} in its socket buffers when dropped"
    );
}
