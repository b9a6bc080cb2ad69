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
//! reorder nothing. The harness is the test kit's (`testkit`).

mod common;

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::net::tcp_from;
use testkit::raw::upgrade_request;
use testkit::slowloris::{self, closed_within, Slow};
use testkit::{attach_from, room_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use common::{binary, Client, ConnectError, Room, ServerProcess, BIN, WAIT};

/// The documented bound on what one connection that is not a WebSocket
/// costs the server (docs/RELIABILITY.md): its read buffer (at most the
/// header limit, 16 KiB), hyper's state, its task, and a response in flight.
const PER_HTTP_CONNECTION_KIB: u64 = 32;
/// `--max-http-connections` by default, under this machine's open-files
/// limit of 20,000 (an eighth of it is larger).
const DEFAULT_MAX_HTTP: u64 = 1024;
/// Connections told to close to make room that may still hold their socket
/// before the server stops accepting (docs/RELIABILITY.md).
const EVICTING: u64 = 32;

// --- the harness (the test kit's) ----------------------------------------------------

/// The binary with `args` on a free loopback port, logging JSON lines.
async fn start(name: &str, args: &[&str]) -> ServerProcess {
    binary()
        .name(&format!("edge-{name}"))
        .args(["--log-format", "json"])
        .args(args)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("the server did not start: {e}"))
}

fn client(a: u8, b: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, a, b)
}

/// A TCP connection from the loopback address `from`.
async fn tcp(from: Ipv4Addr, server: &ServerProcess) -> TcpStream {
    tcp_from(from, server.addr, false)
        .await
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"))
}

/// A WebSocket from `from` at `path`, with extra request headers.
async fn ws_with(
    server: &ServerProcess,
    from: Ipv4Addr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, ConnectError> {
    Client::open_from(from, &server.url(path), headers).await
}

async fn ws_from(
    server: &ServerProcess,
    from: Ipv4Addr,
    path: &str,
) -> Result<Client, ConnectError> {
    ws_with(server, from, path, &[]).await
}

/// What `init` gets from a connection of `from`: the reply, and the
/// connection.
async fn init_from(server: &ServerProcess, from: Ipv4Addr, init: Value) -> (Value, Client) {
    let mut ws = ws_from(server, from, "/webrtc")
        .await
        .expect("an upgrade within the limits");
    ws.send_json(init).await;
    let reply = ws.recv().await;
    (reply, ws)
}

/// A guest of `room` from `from`, whose arrival the host has seen.
async fn join(server: &ServerProcess, from: Ipv4Addr, room: &mut Room) -> (Client, String) {
    attach_from(server, from, room, "join").await
}

/// `n` offers from the guest to the host: each arrives once, in order,
/// from the guest.
async fn exchange(room: &mut Room, guest: &mut Client, guest_id: &str, n: usize, tag: &str) {
    for i in 0..n {
        guest
            .send_json(json!({"type": "offer", "sdp": format!("{tag} {i}")}))
            .await;
    }
    for i in 0..n {
        let m = room.host.recv_type("offer").await;
        assert_eq!(m["sdp"], format!("{tag} {i}"), "{m}");
        assert_eq!(m["from"], guest_id, "{m}");
    }
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
    let server = start("slowloris", &["--header-timeout", "3s"]).await;
    let mut room = room_from(&server, client(9, 1)).await;
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
            let tcp = tcp_from(from, addr, false)
                .await
                .expect("attacker connects");
            let how = match i % 3 {
                0 => Slow::SILENT,
                1 => Slow::trickling(
                    b"GET /webrtc HTTP/1.1\r\nHost: x\r\nX-Slow: ",
                    Duration::from_millis(300),
                    b'a',
                ),
                _ => Slow::stalled(b"G"),
            };
            slowloris::hold(tcp, how).await;
            started.elapsed()
        });
    }

    // During the attack: /healthz, a new honest room, the old room's
    // traffic; memory and descriptors sampled.
    let mut peak_rss = 0;
    let mut peak_fds = 0;
    let mut health_checks = 0;
    let mut new_room = None;
    while started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(1) {
        let r = testkit::http::get_from(client(9, 3), addr, "/healthz", Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("/healthz during the attack: {e}"));
        assert_eq!(r.status, 200, "{}", r.body);
        health_checks += 1;
        if new_room.is_none() && started.elapsed() > Duration::from_secs(1) {
            let mut r = room_from(&server, client(9, 4)).await;
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
    let fd_bound = fds_before + DEFAULT_MAX_HTTP + EVICTING + 8;
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
    let server = start("hoarding", &[]).await;
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
        answered.push(tcp(hoarder, &server).await);
    }
    // ... further ones are closed at once, without reading a byte.
    let mut far_over = tcp(hoarder, &server).await;
    assert!(
        closed_within(&mut far_over, Duration::from_secs(2)).await,
        "a connection far over the limit is closed at once"
    );
    let upgrade = upgrade_request(server.addr, "/webrtc");
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
    let mut room = room_from(&server, client(2, 2)).await;
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
    let server = start("spam", &["--max-rooms", "100"]).await;
    let mut room = room_from(&server, client(3, 100)).await;
    let (mut guest, gid) = join(&server, client(3, 101), &mut room).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss_kib();

    /// `tries` rooms created from `from`, each host leaving at once: what
    /// each got (`init` or the error code), and how long it all took.
    async fn spam(server: &ServerProcess, from: Ipv4Addr, tries: usize) -> (Vec<String>, Duration) {
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
    let server = start("churn", &["--attaches-per-minute", "10"]).await;
    let mut room = room_from(&server, client(4, 1)).await;
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
            room.host.recv_type("peer_joined").await["peer"],
            reply["peer"]
        );
        drop(ws);
        assert_eq!(
            room.host.recv_type("peer_left").await["peer"],
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
        Some(ConnectError::Http(429))
    );
    // Another address is not affected, by query string or by init.
    let mut viewer = ws_from(&server, client(4, 3), &query)
        .await
        .expect("another address attaches");
    assert_eq!(viewer.recv_type("init").await["role"], "watch");
    room.host.recv_type("peer_joined").await;
    let (reply, _guest) = init_from(
        &server,
        client(4, 4),
        json!({"type": "init", "join": room.join}),
    )
    .await;
    assert_eq!(reply["role"], "join", "{reply}");
    room.host.recv_type("peer_joined").await;
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
    let server = start(
        "http",
        &[
            "--max-header-bytes",
            "4096",
            "--header-timeout",
            "1s",
            "--http-timeout",
            "3s",
        ],
    )
    .await;
    let me = client(5, 1);
    let mut conn = tcp(me, &server).await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
        "c".repeat(5000)
    );
    conn.write_all(big.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = timeout(WAIT, conn.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    // Under the limit, a browser-sized request is fine.
    let ok = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(3000)
    );
    let mut conn = tcp(me, &server).await;
    conn.write_all(ok.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = timeout(WAIT, conn.read_to_end(&mut response)).await;
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));

    // Keep-alive: one request answered, then idle: closed after ~1 s.
    let mut idle = tcp(me, &server).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let t = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(4)).await);
    let idle_for = t.elapsed();
    assert!(
        idle_for >= Duration::from_millis(900),
        "closed after {idle_for:?}"
    );
    // A connection that keeps asking is still closed at the HTTP timeout.
    let mut busy = tcp(me, &server).await;
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
    let server = start(
        "proxy",
        &[
            "--trust-proxy-hops",
            "1",
            "--max-connections-per-client",
            "3",
        ],
    )
    .await;
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut ws = ws_with(&server, router, "/webrtc", &xff("203.0.113.1"))
            .await
            .expect("within the forwarded client's limit");
        ws.send_json(json!({"type": "init"})).await;
        ws.recv_type("init").await;
        held.push(ws);
    }
    // The same client, whatever it wrote itself before the router's entry.
    assert_eq!(
        ws_with(&server, router, "/webrtc", &xff("6.6.6.6, 203.0.113.1"))
            .await
            .err(),
        Some(ConnectError::Http(429))
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
    let server = start("no-proxy", &["--max-connections-per-client", "3"]).await;
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
        Some(ConnectError::Http(429)),
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
