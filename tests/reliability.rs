//! Reliability tests against the real binary over real sockets: origin
//! checks, token hygiene, and the server's behaviour under faults (SIGKILL
//! and restart, the open-files limit, a peer that stops reading, hostile
//! frames).
//!
//! Each test starts its own `signal-server` process on a free loopback port
//! and talks to it with tokio-tungstenite clients. Waits are event-driven
//! with timeouts; a timeout is a failure.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{join, join_by_query, room, Client, ConnectError, Room, ServerProcess, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signal_server::protocol::{self, ErrorCode};
use testkit::frames;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const STEP: Duration = WAIT;

/// The binary on a free loopback port, its log in a file of its own.
async fn start(name: &str, args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
    common::binary()
        .name(name)
        .args(args)
        .envs(envs)
        .start()
        .await
        .expect("the server starts")
}

/// Opens a WebSocket at `url`, optionally with an `Origin` header; an HTTP
/// refusal comes back as `Err(status)`.
async fn connect_with(url: &str, origin: Option<&str>) -> Result<Client, u16> {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
    match Client::open_with(url, &headers).await {
        Ok(c) => Ok(c),
        Err(ConnectError::Http(status)) => Err(status),
        Err(e) => panic!("handshake with {url} failed: {e}"),
    }
}

/// One full offer/answer/ICE/configure exchange between the host and a guest.
async fn exchange(room: &mut Room, guest: &mut Client, guest_id: &str) {
    guest
        .send_json(json!({"type":"offer","sdp":"v=0\r\n","n":1}))
        .await;
    let m = room.host.skip_to("offer").await;
    assert_eq!(m["from"], guest_id);
    assert_eq!(m["n"], 1);
    room.host
        .send_json(json!({"type":"answer","sdp":"v=0\r\n","to":guest_id}))
        .await;
    let m = guest.skip_to("answer").await;
    assert!(m.get("from").is_none(), "{m}");
    guest.send_json(json!({"type":"ice_candidate","candidate":"candidate:1 1 UDP 1 198.51.100.1 5000 typ host","sdp_mid":"0","sdp_mline_index":0}))
    .await;
    let m = room.host.skip_to("ice_candidate").await;
    assert_eq!(m["from"], guest_id);
    room.host.send_json(json!({"type":"ice_candidate","candiate":"candidate:2","sdp_mid":"0","sdp_mline_index":0,"to":guest_id}))
    .await;
    let m = guest.skip_to("ice_candidate").await;
    assert_eq!(m["candidate"], "candidate:2");
    room.host.send_json(json!({"type":"configure","actions":[{"type":"add_stream","id":"s"},{"type":"add_video_track","stream_id":"s","id":"s/v","src":"ros_image:/camera/image_raw"}],"to":guest_id}))
    .await;
    guest.skip_to("configure").await;
}

// --- origin checks -------------------------------------------------------------------

#[tokio::test]
async fn origin_allowlist_refuses_unlisted_origins_with_403() {
    let server = start(
        "origin",
        &[
            "--allowed-origin",
            "https://robots.example.com",
            "--allowed-origin",
            "http://localhost:8080",
        ],
        &[],
    )
    .await;
    let mut refused = 0.0;
    for path in ["/webrtc", "/"] {
        let url = server.url(path);
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
            ws.send_json(json!({"type":"init"})).await;
            assert_eq!(ws.recv().await["type"], "init");
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
    let room = room(&server).await;
    let url = server.url(&format!("/webrtc?join={}", room.join));
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
        server
            .metric("signal_upgrades_rejected_total{reason=\"origin\"}")
            .await,
        refused
    );

    // Without --allowed-origin every origin is served.
    let open = start("origin-open", &[], &[]).await;
    let mut ws = connect_with(&open.url("/webrtc"), Some("https://anything.example"))
        .await
        .expect("no allow-list: every origin allowed");
    ws.send_json(json!({"type":"init"})).await;
    assert_eq!(ws.recv().await["type"], "init");
}

// --- token hygiene -------------------------------------------------------------------

#[tokio::test]
async fn tokens_never_reach_logs_or_metrics_and_die_with_their_room() {
    let server = start("tokens", &["--host-grace", "1s"], &[("RUST_LOG", "debug")]).await;
    let mut issued: Vec<String> = Vec::new();
    let mut room = room(&server).await;
    issued.extend([room.join.clone(), room.watch.clone(), room.resume.clone()]);

    // Guests by init and by query string, a watcher by query string.
    let (mut g1, g1_id) = join(&server, "join", &room.join).await;
    let (mut g2, g2_id) = join_by_query(&server, "join", &room.join).await;
    let (mut w, w_id) = join_by_query(&server, "watch", &room.watch).await;
    let (mut w2, _) = join(&server, "watch", &room.watch).await;
    for _ in 0..4 {
        room.host.skip_to("peer_joined").await;
    }
    exchange(&mut room, &mut g1, &g1_id).await;
    exchange(&mut room, &mut g2, &g2_id).await;
    exchange(&mut room, &mut w, &w_id).await;

    // Misuse that echoes nothing secret: a second init with a token, both
    // tokens at once, a watcher's expect_* action, the join token as resume.
    g1.send_json(json!({"type":"init","join": room.join})).await;
    g1.expect_error("already_in_room").await;
    let mut stranger = Client::connect(&server.url("/webrtc")).await;
    stranger
        .send_json(json!({"type":"init","join": room.join, "watch": room.watch}))
        .await;
    stranger.expect_error("bad_message").await;
    stranger
        .send_json(json!({"type":"init","resume": room.join}))
        .await;
    stranger.expect_error("room_not_found").await;
    stranger
        .send_json(json!({"type":"init","watch": room.join}))
        .await;
    stranger.expect_error("room_not_found").await;
    w.send_json(json!({"type":"configure","actions":[{"type":"expect_stream","id":"x"}]}))
        .await;
    w.expect_error("forbidden").await;
    assert_eq!(
        connect_with(
            &server.url(&format!("/webrtc?join={}&watch={}", room.join, room.watch)),
            None
        )
        .await
        .err(),
        Some(400)
    );

    // The host drops and resumes: a fresh resume secret; the old one is dead.
    let old_resume = room.resume.clone();
    drop(room.host);
    g1.skip_to("host_left").await;
    let mut host = Client::connect(&server.url("/")).await;
    host.send_json(json!({"type":"init","resume": old_resume}))
        .await;
    let r = host.recv().await;
    assert_eq!(r["type"], "init", "{r}");
    assert_eq!(r["join"], room.join.as_str());
    assert_eq!(r["watch"], room.watch.as_str());
    let new_resume = r["resume"].as_str().expect("resume").to_string();
    assert_ne!(new_resume, old_resume);
    issued.push(new_resume.clone());
    g1.skip_to("host_joined").await;
    stranger
        .send_json(json!({"type":"init","resume": old_resume}))
        .await;
    stranger.expect_error("room_not_found").await;

    // The host leaves for good: after the grace period the room closes.
    drop(host);
    for g in [&mut g1, &mut g2, &mut w, &mut w2] {
        g.skip_to("room_closed").await;
        assert_eq!(frames::read_to_end(&mut g.ws, STEP).await, Ok(Some(1000)));
    }
    server.wait_health(1, 0).await; // only the stranger is left

    // Every token of the closed room is dead, by init and by query string.
    for (role, t) in [
        ("join", &room.join),
        ("watch", &room.watch),
        ("resume", &new_resume),
        ("resume", &old_resume),
    ] {
        stranger.send_json(json!({"type":"init", role: t})).await;
        stranger.expect_error("room_not_found").await;
    }
    for (role, t) in [("join", &room.join), ("watch", &room.watch)] {
        let url = server.url(&format!("/webrtc?{role}={t}"));
        assert_eq!(connect_with(&url, None).await.err(), Some(404), "{role}");
    }

    // And none of them was ever written to the log or the metrics.
    let metrics = server.metrics().await;
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
    let server = start(
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
    )
    .await;
    let url = server.url("/webrtc");
    // All rooms stay open at once, so the registry's own uniqueness check
    // cannot hide a collision of the generator.
    let mut tasks = tokio::task::JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Client, Value)>(ROOMS);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..ROOMS {
        let (url, tx, sem) = (url.clone(), tx.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let mut ws = Client::connect(&url).await;
            ws.send_json(json!({"type":"init"})).await;
            let reply = ws.recv().await;
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
    assert_eq!(server.health().await["rooms"], ROOMS);
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
async fn hostile_frames_get_their_error_and_nothing_else() {
    let server = start("hostile", &["--max-message-size", "4096"], &[]).await;
    let mut room = room(&server).await;
    let (mut guest, guest_id) = join(&server, "join", &room.join).await;
    room.host.skip_to("peer_joined").await;

    let mut c = Client::connect(&server.url("/webrtc")).await;
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
        c.ws.send(frame).await.expect("send");
        c.expect_error(code).await;
    }
    // None of it created a room or reached anyone.
    assert_eq!(server.health().await["rooms"], 1);

    // A guest's forged `from` is replaced; `to` from a guest is ignored (it
    // goes to its own host only).
    guest
        .send_json(json!({"type":"offer","sdp":"s","from":room.host_id,"to":"zzzzzzzz"}))
        .await;
    let m = room.host.skip_to("offer").await;
    assert_eq!(m["from"], guest_id.as_str());
    // The host's `to` naming nobody in the room is refused.
    room.host
        .send_json(json!({"type":"answer","sdp":"s","to":"zzzzzzzz"}))
        .await;
    room.host.expect_error("peer_not_found").await;

    // Oversize: `too_large`, then close 1009; the room carries on.
    let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "x".repeat(5000));
    guest.ws.send(Message::text(big)).await.expect("send");
    guest.expect_error("too_large").await;
    assert_eq!(
        frames::read_to_end(&mut guest.ws, STEP).await,
        Ok(Some(1009))
    );
    let left = room.host.skip_to("peer_left").await;
    assert_eq!(left["peer"], guest_id.as_str());
    let (mut g2, g2_id) = join(&server, "join", &room.join).await;
    room.host.skip_to("peer_joined").await;
    exchange(&mut room, &mut g2, &g2_id).await;
}

// --- faults ----------------------------------------------------------------------------

#[tokio::test]
async fn sigkill_under_load_clients_see_the_close_and_a_restart_serves() {
    const ROOMS: usize = 20;
    let port = testkit::free_port();
    let mut server = common::binary()
        .name("sigkill")
        .port(port)
        .start()
        .await
        .expect("the server starts");
    // A robot's bridge hosts one more room through the same server.
    let mut bridge = Bridge::start(&server);
    let first = bridge.next_event(STEP);
    assert_eq!(first["event"], "room", "{first}");
    let old_watch = first["watch"].as_str().expect("watch token").to_string();
    let mut viewer = join_by_query(&server, "watch", &old_watch).await.0;
    let mut rooms = Vec::new();
    for _ in 0..ROOMS {
        let mut room = room(&server).await;
        let (guest, _) = join(&server, "join", &room.join).await;
        room.host.skip_to("peer_joined").await;
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
                    r = guest.ws.send(Message::text(r#"{"type":"offer","sdp":"s"}"#)), if ends.0.is_none() => {
                        match r {
                            Ok(()) => sent += 1,
                            Err(_) => ends.0 = Some(Instant::now()),
                        }
                        // Pace the load (well under the rate limit).
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    m = room.host.ws.next(), if ends.1.is_none() => match m {
                        Some(Ok(Message::Text(_))) => got += 1,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => ends.1 = Some(Instant::now()),
                    },
                }
            }
            // The guest's own reads end too.
            let guest_end = frames::read_to_end(&mut guest.ws, STEP).await;
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
        frames::read_to_end(&mut viewer.ws, STEP).await.is_ok(),
        "the bridge's viewer never saw the end"
    );
    let lost = bridge.next_event(STEP);
    assert_eq!(lost["event"], "disconnected", "{lost}");

    // Restart on the same port: it serves at once; rooms did not survive.
    let server = common::binary()
        .name("sigkill-restart")
        .port(port)
        .start()
        .await
        .expect("the server restarts");
    let mut room = room(&server).await;
    let (mut guest, guest_id) = join(&server, "join", &room.join).await;
    room.host.skip_to("peer_joined").await;
    exchange(&mut room, &mut guest, &guest_id).await;

    // The bridge reconnects by itself; its resume finds no room (the state
    // died with the process), so it opens a new one: new links that work,
    // old ones that do not.
    let again = bridge.next_event(STEP);
    assert_eq!(again["event"], "room", "{again}");
    assert_eq!(again["resumed"], false, "{again}");
    let new_watch = again["watch"].as_str().expect("watch token");
    assert_ne!(new_watch, old_watch);
    let _viewer = join_by_query(&server, "watch", new_watch).await;
    let url = server.url(&format!("/webrtc?watch={old_watch}"));
    assert_eq!(connect_with(&url, None).await.err(), Some(404));
    assert_eq!(server.health().await["rooms"], 2);
}

/// `signal-server bridge`, hosting a room on `server` for a robot that is
/// not there (it is only reached when a viewer asks for media).
struct Bridge {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Bridge {
    fn start(server: &ServerProcess) -> Bridge {
        let mut child = Command::new(common::BIN)
            .args([
                "bridge",
                "--json",
                "--backoff-min",
                "50ms",
                "--backoff-max",
                "300ms",
            ])
            .arg("--server")
            .arg(server.url("/webrtc"))
            .arg("--robot")
            .arg(format!("ws://127.0.0.1:{}/webrtc", testkit::free_port()))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the bridge");
        let lines = testkit::process::lines(child.stdout.take().expect("bridge stdout"));
        Bridge { child, lines }
    }

    /// The bridge's next JSON line (`{"event":"room",...}` or
    /// `{"event":"disconnected",...}`).
    fn next_event(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("no event from the bridge in time");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                return v;
            }
        }
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
    let server = common::binary()
        .name("emfile")
        .args(["--host-grace", "1s"])
        .nofile(NOFILE)
        .start()
        .await
        .expect("the server starts");
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", server.pid)).expect("limits");
    assert!(
        limit
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&format!(" {NOFILE} "))),
        "{limit}"
    );
    let url = server.url("/webrtc");
    let host = server.addr.to_string();
    // Fill every descriptor with hosts of rooms.
    let mut held = Vec::new();
    let mut pending = Vec::new();
    loop {
        assert!(held.len() < NOFILE as usize, "never reached the limit");
        let tcp = TcpStream::connect(&host).await.expect("connect");
        let request = url.as_str().into_client_request().expect("request");
        match timeout(Duration::from_millis(1500), Client::over(request, tcp)).await {
            Ok(Ok(mut ws)) => {
                ws.send_json(json!({"type":"init"})).await;
                ws.skip_to("init").await;
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
    let fds_at_limit = server.fds();

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
        if let Ok(Ok(ws)) = timeout(Duration::from_millis(1500), Client::over(request, tcp)).await {
            break ws;
        }
    };
    ws.send_json(json!({"type":"init"})).await;
    let r = ws.skip_to("init").await;
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
    let server = start(
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
    )
    .await;
    let mut room = room(&server).await;
    let (mut slow, slow_id) = join(&server, "join", &room.join).await;
    let (r1, r1_id) = join(&server, "join", &room.join).await;
    let (r2, r2_id) = join(&server, "watch", &room.watch).await;
    for _ in 0..3 {
        room.host.skip_to("peer_joined").await;
    }
    // The readers count what they get; `slow` is never polled from here on.
    let progress: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut counting = tokio::task::JoinSet::new();
    for (i, mut ws) in [r1, r2].into_iter().enumerate() {
        let progress = Arc::clone(&progress);
        counting.spawn(async move {
            let started = Instant::now();
            for next in 0..MESSAGES {
                let m = ws.recv().await;
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
        room.host
            .send_json(json!({"type":"offer","sdp":padding,"seq":seq}))
            .await;
        // The host reads its own events as it goes.
        while let Ok(Some(Ok(Message::Text(t)))) =
            timeout(Duration::ZERO, room.host.ws.next()).await
        {
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
        let v = room.host.skip_to("peer_left").await;
        left.push(v["peer"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        left,
        std::slice::from_ref(&slow_id),
        "readers: {r1_id} {r2_id}"
    );
    // Counted once for the one peer, however many messages it missed.
    assert_eq!(server.metric("signal_slow_peers_dropped_total").await, 1.0);
    server.wait_health(1 + readers.len() as i64, 1).await;
    // The slow peer finds its connection ended once it reads what was
    // buffered: dropped, without a close frame (its outbox had no room).
    let mut buffered = 0;
    loop {
        match timeout(STEP, slow.ws.next())
            .await
            .expect("slow peer's socket still open")
        {
            Some(Ok(Message::Text(_))) => buffered += 1,
            Some(Ok(Message::Close(frame))) => {
                panic!("a slow peer is dropped, not closed; got a close frame {frame:?}")
            }
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
