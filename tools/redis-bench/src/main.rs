//! Relay throughput and latency of signal-server with two instances sharing
//! rooms through Redis, against one instance with rooms in memory, measured in
//! the same run with interleaved repeats; then what Redis does per room and
//! per relayed message, from its own counters.
//!
//! ```text
//! cargo build --release --bin signal-server -p redis-bench
//! target/release/redis-bench --server target/release/signal-server [--repeats 5]
//! ```
//!
//! Every server is the real binary in its own process on a loopback port; the
//! Redis is a fresh `redis-server` (no persistence) in a temporary directory.
//! In the Redis setup every room has its host on instance A and its guest on
//! instance B, so every message crosses Redis; in the memory setup both are on
//! the one instance. Prints a Markdown report.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Args {
    server: String,
    redis: String,
    repeats: usize,
    rooms: usize,
    messages: usize,
    latency_rooms: usize,
    latency_secs: f64,
}

fn args() -> Args {
    let mut a = Args {
        server: "target/release/signal-server".into(),
        redis: "redis-server".into(),
        repeats: 5,
        rooms: 20,
        messages: 2000,
        latency_rooms: 8,
        latency_secs: 3.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = val(),
            "--redis-server" => a.redis = val(),
            "--repeats" => a.repeats = val().parse().expect("--repeats N"),
            "--rooms" => a.rooms = val().parse().expect("--rooms N"),
            "--messages" => a.messages = val().parse().expect("--messages N"),
            "--latency-rooms" => a.latency_rooms = val().parse().expect("--latency-rooms N"),
            "--latency-secs" => a.latency_secs = val().parse().expect("--latency-secs S"),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

struct Redis {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Redis {
    async fn start(bin: &str) -> Redis {
        let port = free_port().await;
        let dir = std::env::temp_dir().join(format!("redis-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server");
        let r = Redis { port, child, dir };
        for _ in 0..200 {
            if r.command(&["PING"]).await.is_some() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command over RESP; the raw reply.
    async fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            out.extend_from_slice(&buf[..n]);
            if n == 0 || is_complete(&out) {
                break;
            }
        }
        Some(String::from_utf8_lossy(&out).to_string())
    }

    /// `INFO` fields as numbers.
    async fn info(&self) -> BTreeMap<String, f64> {
        let raw = self.command(&["INFO", "all"]).await.unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in raw.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if let Ok(n) = v.trim().parse::<f64>() {
                out.insert(k.to_string(), n);
            } else if k.starts_with("cmdstat_") {
                // calls=N,usec=...
                if let Some(calls) = v
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|c| c.parse::<f64>().ok())
                {
                    out.insert(k.to_string(), calls);
                }
            }
        }
        out
    }
}

fn is_complete(raw: &[u8]) -> bool {
    // Bulk string replies: `$N\r\n...N bytes...\r\n`; others end at CRLF.
    let s = String::from_utf8_lossy(raw);
    if let Some(rest) = s.strip_prefix('$') {
        if let Some((n, body)) = rest.split_once("\r\n") {
            if let Ok(n) = n.parse::<usize>() {
                return body.len() >= n + 2;
            }
        }
        return false;
    }
    s.ends_with("\r\n")
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Server {
    port: u16,
    child: Child,
}

async fn server(bin: &str, redis: Option<&str>, grace: &str) -> Server {
    let port = free_port().await;
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--rate-limit", "1000000", "--rate-burst", "1000000"])
        .args(["--outbox-capacity", "65536", "--host-grace", grace])
        .env("RUST_LOG", "warn")
        // Not capped by guests' byte rate (an older build ignores these).
        .env("SIGNAL_SERVER_RATE_BYTES", "1GiB")
        .env("SIGNAL_SERVER_RATE_BYTES_BURST", "1GiB")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("REDIS_BENCH_SERVER_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    if let Some(url) = redis {
        cmd.args(["--redis-url", url]);
    }
    let child = cmd.spawn().expect("spawn signal-server");
    let s = Server { port, child };
    for _ in 0..400 {
        if healthz(port).await == Some(200) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("signal-server on {port} did not become healthy");
}

impl Server {
    async fn stop(mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            // SIGTERM: a clean stop, as on Heroku.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.start_kill();
    }
}

async fn healthz(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

async fn connect(port: u16) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/webrtc"))
        .await
        .expect("connect");
    ws
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("JSON"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("connection failed: {other:?}"),
        }
    }
}

/// A room: host on `host_port`, one guest on `guest_port`.
struct Pair {
    host: Ws,
    guest: Ws,
    guest_id: String,
    join: String,
}

async fn pair(host_port: u16, guest_port: u16) -> Pair {
    let mut host = connect(host_port).await;
    host.send(Message::text(r#"{"type":"init"}"#))
        .await
        .expect("send");
    let init = recv(&mut host).await;
    let join = init["join"]
        .as_str()
        .unwrap_or_else(|| panic!("no room: {init}"))
        .to_string();
    let mut guest = connect(guest_port).await;
    guest
        .send(Message::text(format!(
            r#"{{"type":"init","join":"{join}"}}"#
        )))
        .await
        .expect("send");
    let ginit = recv(&mut guest).await;
    let guest_id = ginit["peer"].as_str().expect("peer").to_string();
    let joined = recv(&mut host).await;
    assert_eq!(joined["type"], "peer_joined");
    Pair {
        host,
        guest,
        guest_id,
        join,
    }
}

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 198.51.100.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0";

fn ice(seq: usize, to: Option<&str>) -> String {
    match to {
        Some(to) => format!(
            r#"{{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candidate":"{CANDIDATE} {seq}","to":"{to}"}}"#
        ),
        None => format!(
            r#"{{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candidate":"{CANDIDATE} {seq}"}}"#
        ),
    }
}

/// Guests flood their hosts: messages per second delivered, all rooms.
async fn throughput(host_port: u16, guest_port: u16, rooms: usize, messages: usize) -> f64 {
    let mut pairs = Vec::new();
    for _ in 0..rooms {
        pairs.push(pair(host_port, guest_port).await);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in pairs {
        let Pair {
            mut host,
            mut guest,
            ..
        } = p;
        tasks.push(tokio::spawn(async move {
            let sender = tokio::spawn(async move {
                for i in 0..messages {
                    guest.feed(Message::text(ice(i, None))).await.expect("feed");
                    if i % 64 == 63 {
                        guest.flush().await.expect("flush");
                    }
                }
                guest.flush().await.expect("flush");
                guest
            });
            let mut got = 0;
            while got < messages {
                let m = recv(&mut host).await;
                if m["type"] == "ice_candidate" {
                    got += 1;
                }
            }
            let guest = sender.await.expect("sender");
            (host, guest)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.expect("room"));
    }
    let took = t0.elapsed().as_secs_f64();
    for (mut h, mut g) in done {
        let _ = g.close(None).await;
        let _ = h.close(None).await;
    }
    (rooms * messages) as f64 / took
}

/// Closed loop: guest → host → guest round trips, one outstanding per room.
async fn latency(host_port: u16, guest_port: u16, rooms: usize, secs: f64) -> Vec<f64> {
    let mut pairs = Vec::new();
    for _ in 0..rooms {
        pairs.push(pair(host_port, guest_port).await);
    }
    let mut tasks = Vec::new();
    for p in pairs {
        let Pair {
            mut host,
            mut guest,
            guest_id,
            ..
        } = p;
        tasks.push(tokio::spawn(async move {
            let echo = tokio::spawn(async move {
                loop {
                    let m = match tokio::time::timeout(Duration::from_secs(5), host.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        _ => return host,
                    };
                    let v: Value = serde_json::from_str(&m).expect("JSON");
                    if v["type"] != "ice_candidate" {
                        continue;
                    }
                    let seq: usize = v["candidate"]
                        .as_str()
                        .and_then(|c| c.rsplit(' ').next())
                        .and_then(|n| n.parse().ok())
                        .expect("seq");
                    if host
                        .send(Message::text(ice(seq, Some(&guest_id))))
                        .await
                        .is_err()
                    {
                        return host;
                    }
                }
            });
            let mut rtts = Vec::new();
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut seq = 0;
            while Instant::now() < end {
                let t = Instant::now();
                guest
                    .send(Message::text(ice(seq, None)))
                    .await
                    .expect("send");
                loop {
                    let m = recv(&mut guest).await;
                    if m["type"] == "ice_candidate" {
                        break;
                    }
                }
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
                seq += 1;
            }
            let _ = guest.close(None).await;
            let mut host = echo.await.expect("echo");
            let _ = host.close(None).await;
            rtts
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("room"));
    }
    all
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[derive(Default)]
struct Samples {
    throughput: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

async fn run_memory(a: &Args, s: &mut Samples) {
    let srv = server(&a.server, None, "30s").await;
    s.throughput
        .push(throughput(srv.port, srv.port, a.rooms, a.messages).await);
    let mut rtts = latency(srv.port, srv.port, a.latency_rooms, a.latency_secs).await;
    s.p50.push(percentile(&mut rtts, 0.5));
    s.p99.push(percentile(&mut rtts, 0.99));
    srv.stop().await;
}

async fn run_redis(a: &Args, s: &mut Samples) {
    let redis = Redis::start(&a.redis).await;
    let ia = server(&a.server, Some(&redis.url()), "30s").await;
    let ib = server(&a.server, Some(&redis.url()), "30s").await;
    s.throughput
        .push(throughput(ia.port, ib.port, a.rooms, a.messages).await);
    let mut rtts = latency(ia.port, ib.port, a.latency_rooms, a.latency_secs).await;
    s.p50.push(percentile(&mut rtts, 0.5));
    s.p99.push(percentile(&mut rtts, 0.99));
    ia.stop().await;
    ib.stop().await;
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, k: &str) -> f64 {
    after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
}

/// Redis's own counters around a phase, less the background rate measured
/// while idle.
async fn costs(a: &Args) {
    let redis = Redis::start(&a.redis).await;
    let ia = server(&a.server, Some(&redis.url()), "1s").await;
    let ib = server(&a.server, Some(&redis.url()), "1s").await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Background: heartbeats, dead-instance checks, grace sweeps.
    let idle_secs = 5.0;
    let i0 = redis.info().await;
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let i1 = redis.info().await;
    let keys = [
        "total_commands_processed",
        "total_net_input_bytes",
        "total_net_output_bytes",
    ];
    let idle: Vec<f64> = keys
        .iter()
        .map(|k| delta(&i1, &i0, k) / idle_secs)
        .collect();
    println!("### Redis cost (two instances, counters from `INFO`)\n");
    println!(
        "Background, both instances together, idle: {:.1} commands/s, {:.0} B/s in, {:.0} B/s out.\n",
        idle[0], idle[1], idle[2]
    );

    // Room life cycle: create on A, a guest on B, guest leaves, host leaves,
    // grace (1 s) ends and the sweep closes it.
    let n = 200;
    let t0 = Instant::now();
    let b0 = redis.info().await;
    let mut pairs = Vec::new();
    for _ in 0..n {
        pairs.push(pair(ia.port, ib.port).await);
    }
    let b1 = redis.info().await;
    for p in pairs {
        let Pair {
            mut host,
            mut guest,
            ..
        } = p;
        let _ = guest.close(None).await;
        loop {
            let m = recv(&mut host).await;
            if m["type"] == "peer_left" {
                break;
            }
        }
        let _ = host.close(None).await;
    }
    // Wait for the sweeps to close every room.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let z = redis
            .command(&["ZCARD", "ss:grace"])
            .await
            .unwrap_or_default();
        if z.trim() == ":0" {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let b2 = redis.info().await;
    let secs = t0.elapsed().as_secs_f64();
    let per = |after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, i: usize, dt: f64| {
        (delta(after, before, keys[i]) - idle[i] * dt) / n as f64
    };
    println!("Per room ({n} rooms; host on A, one guest on B; background subtracted):\n");
    println!("| phase | commands | bytes in | bytes out |");
    println!("|---|---:|---:|---:|");
    println!(
        "| create + attach | {:.1} | {:.0} | {:.0} |",
        delta(&b1, &b0, keys[0]) / n as f64,
        delta(&b1, &b0, keys[1]) / n as f64,
        delta(&b1, &b0, keys[2]) / n as f64
    );
    println!(
        "| whole life (create, attach, guest leaves, host leaves, grace sweep) | {:.1} | {:.0} | {:.0} |",
        per(&b2, &b0, 0, secs),
        per(&b2, &b0, 1, secs),
        per(&b2, &b0, 2, secs)
    );
    println!(
        "\nCommand calls during the room life cycle (scripts' inner calls included), per room:\n"
    );
    println!("| command | calls per room |");
    println!("|---|---:|");
    for (k, v) in &b2 {
        if let Some(name) = k.strip_prefix("cmdstat_") {
            let d = v - b0.get(k).copied().unwrap_or(0.0);
            if d / n as f64 >= 0.05 {
                println!("| {name} | {:.2} |", d / n as f64);
            }
        }
    }

    // Relay: guest on B → host on A, and host → guest.
    let m = 20_000;
    let mut p = pair(ia.port, ib.port).await;
    let r0 = redis.info().await;
    let t = Instant::now();
    for i in 0..m {
        p.guest
            .feed(Message::text(ice(i, None)))
            .await
            .expect("feed");
        if i % 64 == 63 {
            p.guest.flush().await.expect("flush");
        }
    }
    p.guest.flush().await.expect("flush");
    let mut got = 0;
    while got < m {
        if recv(&mut p.host).await["type"] == "ice_candidate" {
            got += 1;
        }
    }
    let dt = t.elapsed().as_secs_f64();
    let r1 = redis.info().await;
    let text_len = ice(10_000, None).len() + r#""from":"xxxxxxxx","#.len();
    println!(
        "\nPer relayed message ({m} messages guest on B → host on A, {text_len} bytes of JSON each; background subtracted):\n"
    );
    println!("| commands | bytes in | bytes out |");
    println!("|---:|---:|---:|");
    println!(
        "| {:.2} | {:.0} | {:.0} |",
        (delta(&r1, &r0, keys[0]) - idle[0] * dt) / m as f64,
        (delta(&r1, &r0, keys[1]) - idle[1] * dt) / m as f64,
        (delta(&r1, &r0, keys[2]) - idle[2] * dt) / m as f64
    );
    println!("\nRedis memory with {n} rooms open (`used_memory` delta per room):\n");
    let mem0 = redis
        .info()
        .await
        .get("used_memory")
        .copied()
        .unwrap_or(0.0);
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(pair(ia.port, ib.port).await);
    }
    let mem1 = redis
        .info()
        .await
        .get("used_memory")
        .copied()
        .unwrap_or(0.0);
    println!(
        "Redis memory per open room (one guest): {:.0} bytes.\n",
        (mem1 - mem0) / n as f64
    );
    // One more guest in each open room: attach, then leave.
    let g0 = redis.info().await;
    let t = Instant::now();
    let mut extra = Vec::new();
    for p in open.iter_mut() {
        let mut ws = connect(ib.port).await;
        let join = p.join.clone();
        ws.send(Message::text(format!(
            r#"{{"type":"init","join":"{join}"}}"#
        )))
        .await
        .expect("send");
        assert_eq!(recv(&mut ws).await["type"], "init");
        assert_eq!(recv(&mut p.host).await["type"], "peer_joined");
        extra.push(ws);
    }
    let g1 = redis.info().await;
    let attach_dt = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (ws, p) in extra.iter_mut().zip(open.iter_mut()) {
        let _ = ws.close(None).await;
        loop {
            if recv(&mut p.host).await["type"] == "peer_left" {
                break;
            }
        }
    }
    let g2 = redis.info().await;
    let leave_dt = t.elapsed().as_secs_f64();
    let per_guest = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, i: usize, dt: f64| {
        (delta(a, b, keys[i]) - idle[i] * dt) / n as f64
    };
    println!("Each further guest ({n} rooms, one more guest on B each; background subtracted):\n");
    println!("| step | commands | bytes in | bytes out |");
    println!("|---|---:|---:|---:|");
    for (name, a, b, dt) in [
        ("attach", &g1, &g0, attach_dt),
        ("leave", &g2, &g1, leave_dt),
    ] {
        println!(
            "| {name} | {:.1} | {:.0} | {:.0} |",
            per_guest(a, b, 0, dt),
            per_guest(a, b, 1, dt),
            per_guest(a, b, 2, dt)
        );
    }
    println!(
        "\nRedis memory per further guest: {:.0} bytes.\n",
        (g1.get("used_memory").copied().unwrap_or(0.0)
            - g0.get("used_memory").copied().unwrap_or(0.0))
            / n as f64
    );
    drop(extra);
    drop(open);
    drop(p);
    ia.stop().await;
    ib.stop().await;
}

#[tokio::main]
async fn main() {
    let a = args();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## Relay over Redis vs in memory\n");
    println!(
        "{} repeats, interleaved (memory, Redis, memory, ...; the order alternates each repeat); {cpus} CPUs visible. Throughput: {} rooms, each guest sends {} ICE candidates to its host as fast as it can. Latency: {} rooms, closed loop, guest → host → guest round trips for {} s.\n",
        a.repeats, a.rooms, a.messages, a.latency_rooms, a.latency_secs
    );
    let mut mem = Samples::default();
    let mut red = Samples::default();
    for rep in 0..a.repeats {
        if rep % 2 == 0 {
            run_memory(&a, &mut mem).await;
            run_redis(&a, &mut red).await;
        } else {
            run_redis(&a, &mut red).await;
            run_memory(&a, &mut mem).await;
        }
        eprintln!(
            "repeat {}: memory {:.0} msg/s p50 {:.0} µs | redis {:.0} msg/s p50 {:.0} µs",
            rep + 1,
            mem.throughput.last().unwrap_or(&0.0),
            mem.p50.last().unwrap_or(&0.0),
            red.throughput.last().unwrap_or(&0.0),
            red.p50.last().unwrap_or(&0.0)
        );
    }
    if a.repeats == 0 {
        costs(&a).await;
        return;
    }
    println!("| setup | throughput (msg/s, median) | round trip p50 (µs, median) | round trip p99 (µs, median) |");
    println!("|---|---:|---:|---:|");
    for (name, s) in [
        ("one instance, rooms in memory", &mut mem),
        (
            "two instances, rooms in Redis (host on A, guest on B)",
            &mut red,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            median(&mut s.throughput),
            median(&mut s.p50),
            median(&mut s.p99)
        );
    }
    println!(
        "\nEvery sample (msg/s): memory {:?}; Redis {:?}\n",
        round(&mem.throughput),
        round(&red.throughput)
    );
    costs(&a).await;
}

fn round(v: &[f64]) -> Vec<i64> {
    v.iter().map(|x| x.round() as i64).collect()
}
