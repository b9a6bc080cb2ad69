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
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use testkit::{Client, Endpoint, Launch, RedisServer, Room, ServerProcess};
use tokio_tungstenite::tungstenite::Message;

/// Relay throughput and latency over Redis against in memory, then Redis's
/// costs per room and per message.
#[derive(Parser, Debug)]
#[command(name = "redis-bench")]
struct Args {
    /// The signal-server binary.
    #[arg(long, default_value = "target/release/signal-server")]
    server: PathBuf,
    /// The redis-server binary (a name is looked up on PATH).
    #[arg(long = "redis-server", default_value = "redis-server")]
    redis: PathBuf,
    /// Interleaved repeats of both setups (0: only the Redis costs).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Rooms of the throughput run.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// ICE candidates each guest sends its host in the throughput run.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Rooms of the latency run.
    #[arg(long, default_value_t = 8)]
    latency_rooms: usize,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 3.0)]
    latency_secs: f64,
    /// Keep each server's log in this directory (server-N.log).
    #[arg(long, env = "REDIS_BENCH_SERVER_LOGS")]
    server_logs: Option<PathBuf>,
}

/// How long a bench waits for one message before calling the run broken.
const RECV: Duration = Duration::from_secs(20);

async fn redis(a: &Args) -> RedisServer {
    let bin = if a.redis.components().count() > 1 {
        a.redis.clone()
    } else {
        let name = a.redis.to_string_lossy();
        testkit::require_tool(&name, "redis-server")
    };
    RedisServer::launch(&bin, testkit::free_port(), false)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn server(a: &Args, redis: Option<&str>, grace: &str) -> ServerProcess {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let mut launch = Launch::new(&a.server)
        .args(["--rate-limit", "1000000", "--rate-burst", "1000000"])
        .args(["--outbox-capacity", "65536", "--host-grace", grace])
        .env("RUST_LOG", "warn")
        // Not capped by guests' byte rate (an older build ignores these).
        .env("SIGNAL_SERVER_RATE_BYTES", "1GiB")
        .env("SIGNAL_SERVER_RATE_BYTES_BURST", "1GiB");
    if let Some(url) = redis {
        launch = launch.args(["--redis-url", url]);
    }
    if let Some(dir) = &a.server_logs {
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        launch = launch.log_file(dir.join(format!("server-{n}.log")));
    }
    launch.start().await.unwrap_or_else(|e| panic!("{e}"))
}

/// SIGTERM: a clean stop, as on Heroku.
async fn stop(mut s: ServerProcess) {
    let _ = s.terminate(Duration::from_secs(10)).await;
}

/// A room: host on `host`, one guest on `guest`.
struct Pair {
    host: Client,
    guest: Client,
    guest_id: String,
    join: String,
}

async fn pair(host: &impl Endpoint, guest: &impl Endpoint) -> Pair {
    let mut room: Room = testkit::room(host).await;
    let (guest, guest_id) = testkit::attach(guest, &mut room, "join").await;
    Pair {
        host: room.host,
        guest,
        guest_id,
        join: room.join,
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
async fn throughput(host: SocketAddr, guest: SocketAddr, rooms: usize, messages: usize) -> f64 {
    let mut pairs = Vec::new();
    for _ in 0..rooms {
        pairs.push(pair(&host, &guest).await);
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
                    guest
                        .ws
                        .feed(Message::text(ice(i, None)))
                        .await
                        .expect("feed");
                    if i % 64 == 63 {
                        guest.ws.flush().await.expect("flush");
                    }
                }
                guest.ws.flush().await.expect("flush");
                guest
            });
            let mut got = 0;
            while got < messages {
                let m = host.recv_within(RECV).await;
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
        let _ = g.ws.close(None).await;
        let _ = h.ws.close(None).await;
    }
    (rooms * messages) as f64 / took
}

/// Closed loop: guest → host → guest round trips, one outstanding per room.
async fn latency(host: SocketAddr, guest: SocketAddr, rooms: usize, secs: f64) -> Vec<f64> {
    let mut pairs = Vec::new();
    for _ in 0..rooms {
        pairs.push(pair(&host, &guest).await);
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
                    let m = match tokio::time::timeout(Duration::from_secs(5), host.ws.next()).await
                    {
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
                        .ws
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
                    .ws
                    .send(Message::text(ice(seq, None)))
                    .await
                    .expect("send");
                loop {
                    let m = guest.recv_within(RECV).await;
                    if m["type"] == "ice_candidate" {
                        break;
                    }
                }
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
                seq += 1;
            }
            let _ = guest.ws.close(None).await;
            let mut host = echo.await.expect("echo");
            let _ = host.ws.close(None).await;
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
    let srv = server(a, None, "30s").await;
    s.throughput
        .push(throughput(srv.addr, srv.addr, a.rooms, a.messages).await);
    let mut rtts = latency(srv.addr, srv.addr, a.latency_rooms, a.latency_secs).await;
    s.p50.push(percentile(&mut rtts, 0.5));
    s.p99.push(percentile(&mut rtts, 0.99));
    stop(srv).await;
}

async fn run_redis(a: &Args, s: &mut Samples) {
    let redis = redis(a).await;
    let ia = server(a, Some(&redis.url()), "30s").await;
    let ib = server(a, Some(&redis.url()), "30s").await;
    s.throughput
        .push(throughput(ia.addr, ib.addr, a.rooms, a.messages).await);
    let mut rtts = latency(ia.addr, ib.addr, a.latency_rooms, a.latency_secs).await;
    s.p50.push(percentile(&mut rtts, 0.5));
    s.p99.push(percentile(&mut rtts, 0.99));
    stop(ia).await;
    stop(ib).await;
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, k: &str) -> f64 {
    after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
}

/// Redis's own counters around a phase, less the background rate measured
/// while idle.
async fn costs(a: &Args) {
    let redis = redis(a).await;
    let ia = server(a, Some(&redis.url()), "1s").await;
    let ib = server(a, Some(&redis.url()), "1s").await;
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
        pairs.push(pair(&ia, &ib).await);
    }
    let b1 = redis.info().await;
    for p in pairs {
        let Pair {
            mut host,
            mut guest,
            ..
        } = p;
        let _ = guest.ws.close(None).await;
        loop {
            let m = host.recv_within(RECV).await;
            if m["type"] == "peer_left" {
                break;
            }
        }
        let _ = host.ws.close(None).await;
    }
    // Wait for the sweeps to close every room.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let z = redis
            .try_command(&["ZCARD", "ss:grace"])
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
    let mut p = pair(&ia, &ib).await;
    let r0 = redis.info().await;
    let t = Instant::now();
    for i in 0..m {
        p.guest
            .ws
            .feed(Message::text(ice(i, None)))
            .await
            .expect("feed");
        if i % 64 == 63 {
            p.guest.ws.flush().await.expect("flush");
        }
    }
    p.guest.ws.flush().await.expect("flush");
    let mut got = 0;
    while got < m {
        if p.host.recv_within(RECV).await["type"] == "ice_candidate" {
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
        open.push(pair(&ia, &ib).await);
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
        let (ws, _) = testkit::join(&ib, "join", &p.join).await;
        assert_eq!(p.host.recv_within(RECV).await["type"], "peer_joined");
        extra.push(ws);
    }
    let g1 = redis.info().await;
    let attach_dt = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (ws, p) in extra.iter_mut().zip(open.iter_mut()) {
        let _ = ws.ws.close(None).await;
        loop {
            if p.host.recv_within(RECV).await["type"] == "peer_left" {
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
    stop(ia).await;
    stop(ib).await;
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
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
