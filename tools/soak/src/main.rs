//! Soak and chaos test for signal-server.
//!
//! Starts the server binary on loopback, then for a fixed time runs, at once:
//! thousands of honest rooms doing full offer/answer/ICE/configure exchanges
//! (every message accounted for: delivered exactly once, in order, to the
//! right peer, never across rooms), hosts that drop without a close frame and
//! resume (or never return), and a stream of hostile clients (see
//! `chaos.rs`). It samples the server's RSS, descriptors and CPU from
//! /proc/PID. The load comes in waves; after each, every client leaves and
//! connections and rooms must return to zero and descriptors to their
//! baseline, and RSS must not grow from the first wave to the last (the
//! allocator keeps the peak's pages; a leak grows with the work). Finally no
//! token issued may be in the server's log, and SIGTERM must end the server
//! with status 0.
//!
//! Prints a JSON summary (and writes it to `--out`); exits 1 on any loss,
//! duplicate, misdelivery, leak, wrong answer or crash, 2 if it could not
//! run.

mod chaos;
mod edge;
mod net;
mod pressure;
mod room;
mod server;
mod stats;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use net::{Net, Rng};
use server::Server;
use stats::Stats;

/// Soak and chaos test for signal-server (loopback only, bounded in time).
#[derive(Debug, Parser, Clone)]
#[command(name = "soak")]
pub struct Opts {
    /// The server binary to run.
    #[arg(long, default_value = "target/release/signal-server")]
    pub server: PathBuf,
    /// Length of the load, in seconds, split into equal waves: each wave's
    /// clients all leave before the next starts.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Waves of load (the memory check compares the last with the first).
    #[arg(long, default_value_t = 3)]
    pub waves: usize,
    /// Honest rooms running at once.
    #[arg(long, default_value_t = 2000)]
    pub rooms: usize,
    /// Guests per honest room (1: a join guest; 2: plus a watcher by query
    /// string; 3: plus a join guest by query string).
    #[arg(long, default_value_t = 2)]
    pub guests: usize,
    /// Mean pause between two exchanges of a room, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub round_ms: u64,
    /// Rooms start spread over this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub ramp_ms: u64,
    /// Chance, after each exchange, that the host drops its connection.
    #[arg(long, default_value_t = 0.03)]
    pub drop_prob: f64,
    /// Chance that a dropped host never comes back (the room must close).
    #[arg(long, default_value_t = 0.15)]
    pub abandon_prob: f64,
    /// Chaos clients started per second (spread over every kind).
    #[arg(long, default_value_t = 40.0)]
    pub chaos_per_sec: f64,
    /// At most this many chaos clients at once.
    #[arg(long, default_value_t = 1500)]
    pub max_chaos: usize,
    /// Client source addresses (127.0.0.2, 127.0.0.3, ...): enough that
    /// honest clients stay inside the server's default per-client limits
    /// (256 connections, 60 rooms and 300 attaches a minute per address).
    /// The edge attackers come from 127.1.0.0/16 instead.
    #[arg(long, default_value_t = 128)]
    pub sources: usize,
    /// Random seed (the run is not fully deterministic: timing varies).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The server's --ping-interval (short, so half-open clients are reaped
    /// within the run).
    #[arg(long, value_parser = humantime_secs, default_value = "2")]
    pub ping_interval: Duration,
    /// The server's --host-grace.
    #[arg(long, value_parser = humantime_secs, default_value = "3")]
    pub host_grace: Duration,
    /// The server's --idle-timeout.
    #[arg(long, value_parser = humantime_secs, default_value = "5")]
    pub idle_timeout: Duration,
    /// The server's --max-message-size (what oversize clients exceed).
    #[arg(long, default_value_t = 65536)]
    pub max_message_size: usize,
    /// The server's --rate-burst (what flooders exceed).
    #[arg(long, default_value_t = 500)]
    pub rate_burst: u64,
    /// RSS after the last wave may exceed RSS after the first (the allocator
    /// keeps freed pages; a leak grows with the work done) by this many MiB
    /// at most.
    #[arg(long, default_value_t = 16)]
    pub rss_slack_mib: u64,
    /// The server's RSS may never exceed this many MiB (sampled every 0.5 s).
    /// The default is the honest load's (about 50 MiB at the default 2,000
    /// rooms) plus what the limits of queued output let the attackers make
    /// it hold at once (docs/RELIABILITY.md): a slow consumer's and each of
    /// four pong pumps' 4 MiB, six 256 KiB shares of a flooded slow host,
    /// a byte flooder's 512 KiB; with room for noise. Main's build, under the
    /// same attackers, peaked at 170 MiB.
    #[arg(long, default_value_t = 128)]
    pub rss_ceiling_mib: u64,
    /// Where the summary goes (also printed).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The server's log (stderr).
    #[arg(long, default_value = "target/soak-server.log")]
    pub log: PathBuf,
    /// More arguments for the server (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let s = s.trim_end_matches('s');
    s.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("seconds: {e}"))
}

/// What chaos clients may know of an honest room.
#[derive(Debug, Clone)]
pub struct PublicRoom {
    pub join: String,
    pub watch: String,
    /// Peer ids, host first.
    pub peers: Vec<String>,
}

/// Everything the run's tasks share.
pub struct Ctx {
    pub opts: Opts,
    pub net: Net,
    pub stats: Arc<Stats>,
    pub load_end: CancellationToken,
    pub serial: AtomicU64,
    /// Open honest rooms, by driver slot.
    pub rooms: Mutex<Vec<Option<PublicRoom>>>,
    /// Tokens of honest rooms that have closed: (join, watch).
    pub closed: Mutex<Vec<(String, String)>>,
    /// Every token and resume secret the server issued.
    pub tokens: Arc<Mutex<HashSet<String>>>,
    /// A slow-consumer client is running (one at a time).
    pub slow_active: std::sync::atomic::AtomicBool,
}

impl Ctx {
    pub fn load_over(&self) -> bool {
        self.load_end.is_cancelled()
    }

    pub fn random_room(&self, rng: &mut Rng) -> Option<PublicRoom> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..8 {
            let i = rng.below(rooms.len() as u64) as usize;
            if let Some(Some(r)) = rooms.get(i) {
                return Some(r.clone());
            }
        }
        None
    }
}

fn soft_nofile() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    match run(opts).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(opts: Opts) -> Result<bool, String> {
    let needed = (opts.rooms * (opts.guests + 1) + opts.max_chaos * 2 + 500) as u64;
    if let Some(soft) = soft_nofile() {
        if soft < needed {
            return Err(format!(
                "open-files limit {soft} is below the {needed} this run needs: run `ulimit -n {needed}` first (scripts/soak.sh does)"
            ));
        }
    }
    let mut server_args: Vec<String> = [
        "--ping-interval".to_string(),
        format!("{}ms", opts.ping_interval.as_millis()),
        "--host-grace".into(),
        format!("{}ms", opts.host_grace.as_millis()),
        "--idle-timeout".into(),
        format!("{}ms", opts.idle_timeout.as_millis()),
        "--max-message-size".into(),
        opts.max_message_size.to_string(),
        "--rate-burst".into(),
        opts.rate_burst.to_string(),
        "--max-connections".into(),
        "18000".into(),
    ]
    .into();
    server_args.extend(opts.server_args.iter().cloned());
    if let Some(dir) = opts.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut srv = server::start(&opts.server, &server_args, &opts.log).await?;
    let started = Instant::now();
    eprintln!(
        "soak: server pid {} on {}; {} rooms x {} guests for {} s, {} chaos clients/s",
        srv.pid, srv.addr, opts.rooms, opts.guests, opts.seconds, opts.chaos_per_sec
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = server::now_sample(srv.pid, started).ok_or("cannot read /proc of the server")?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop_sampling = CancellationToken::new();
    let sampler = tokio::spawn(server::sampler(
        srv.pid,
        started,
        Duration::from_millis(500),
        stop_sampling.clone(),
        Arc::clone(&samples),
    ));

    let stats = Arc::new(Stats::default());
    let tokens = Arc::new(Mutex::new(HashSet::new()));
    let mut rng = Rng::new(opts.seed);
    let waves_n = opts.waves.max(1);
    let wave_secs = (opts.seconds / waves_n as u64).max(5);
    let mut waves: Vec<Wave> = Vec::new();
    let mut after_wave: Vec<server::Sample> = Vec::new();
    for w in 0..waves_n {
        let name = format!("{}/{}", w + 1, waves_n);
        let result = wave(
            &opts,
            &mut srv,
            &stats,
            &tokens,
            wave_secs,
            rng.next(),
            &name,
        )
        .await;
        let dead = result.server_dead.is_some();
        waves.push(result);
        if dead {
            break;
        }
        // Let the allocator and the runtime settle, then take a reading.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(x) = server::now_sample(srv.pid, started) {
            after_wave.push(x);
        }
    }
    let last_wave = waves.last().cloned().ok_or("no wave ran")?;
    let mut server_dead = last_wave.server_dead.clone();
    let last_health = last_wave.last_health.clone();
    let peak_connections = waves.iter().map(|w| w.peak_connections).max().unwrap_or(0);
    let peak_rooms = waves.iter().map(|w| w.peak_rooms).max().unwrap_or(0);
    stop_sampling.cancel();
    let _ = sampler.await;
    let after = after_wave.last().copied();
    let metrics_text = net::http_get(srv.addr, "/metrics")
        .await
        .map(|x| x.1)
        .unwrap_or_default();
    if server_dead.is_none() {
        server_dead = srv.alive().err();
    }
    if let Some(e) = &server_dead {
        stats.fail("server.crashed", e.clone());
    }

    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let (after_rss, after_fds, after_cpu) = after
        .map(|a| (a.rss_kib, a.fds, a.cpu_s))
        .unwrap_or((0, 0, 0.0));
    // The allocator keeps the pages of the first wave's peak; a leak grows
    // with every wave of the same work.
    if peak_rss > opts.rss_ceiling_mib * 1024 {
        stats.fail(
            "memory.ceiling",
            format!(
                "peak RSS {peak_rss} KiB over the ceiling of {} MiB",
                opts.rss_ceiling_mib
            ),
        );
    }
    let first_rss = after_wave.first().map(|a| a.rss_kib).unwrap_or(0);
    if after_wave.len() >= 2 && after_rss > first_rss + opts.rss_slack_mib * 1024 {
        stats.fail(
            "leak.memory",
            format!(
                "RSS {after_rss} KiB after the last wave, {first_rss} KiB after the first + {} MiB allowed",
                opts.rss_slack_mib
            ),
        );
    }
    if after.is_some() && after_fds > baseline.fds + 2 {
        stats.fail(
            "leak.descriptors",
            format!("{after_fds} open after the run, {} before", baseline.fds),
        );
    }

    // No token issued may be in the server's log.
    let log = std::fs::read_to_string(&opts.log).unwrap_or_default();
    let tokens = tokens.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let leaked: Vec<&str> = log
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| w.len() == 16 && tokens.contains(*w))
        .collect();
    if !leaked.is_empty() {
        stats.fail_n(
            "leak.token_in_log",
            leaked.len() as u64,
            leaked[0].to_string(),
        );
    }
    let panics = log.lines().filter(|l| l.contains("panicked")).count();
    if panics > 0 {
        stats.fail_n("server.panicked", panics as u64, "see the server log");
    }
    let log_errors = log.lines().filter(|l| l.contains(" ERROR ")).count();

    // A clean stop.
    let exit = if server_dead.is_none() {
        match srv.terminate(Duration::from_secs(10)).await {
            Ok(0) => json!(0),
            Ok(code) => {
                stats.fail("server.exit_status", format!("exit {code} after SIGTERM"));
                json!(code)
            }
            Err(e) => {
                stats.fail("server.exit_status", e.clone());
                json!(e)
            }
        }
    } else {
        Value::Null
    };

    let s = &stats;
    let sent = s.get("honest.sent");
    let delivered = s.get("honest.delivered");
    if sent != delivered && s.get("honest.lost") == 0 {
        s.fail(
            "honest.sent_vs_delivered",
            format!("sent {sent}, delivered {delivered}"),
        );
    }
    if sent == 0 {
        s.fail("soak.no_traffic", "no honest message was sent");
    }
    // Each peer dropped for not reading counts once: the slow consumers
    // (all dropped) and at most the clients that stopped reading.
    let slow_dropped = server::metric(&metrics_text, "signal_slow_peers_dropped_total") as u64;
    let slow_ok = s.get("chaos.slow_consumer.ok");
    let slow_max = slow_ok + s.get("chaos.stop_reading.tried") + s.get("pressure.may_be_dropped");
    if slow_dropped < slow_ok || slow_dropped > slow_max {
        s.fail(
            "server.slow_peer_count",
            format!(
                "signal_slow_peers_dropped_total {slow_dropped}, expected {slow_ok}..={slow_max}"
            ),
        );
    }
    let failures = s.failure_count();
    let relayed: f64 = ["offer", "answer", "ice_candidate", "configure", "error"]
        .iter()
        .map(|t| {
            server::metric(
                &metrics_text,
                &format!("signal_messages_relayed_total{{type=\"{t}\"}}"),
            )
        })
        .sum();
    let timeline: Vec<Value> = samples
        .iter()
        .step_by(4)
        .map(|x| json!([(x.at * 10.0).round() / 10.0, x.rss_kib, x.fds]))
        .collect();
    let summary = json!({
        "ok": failures == 0,
        "failures": failures,
        "config": {
            "seconds": opts.seconds, "waves": waves_n, "wave_seconds": wave_secs, "rooms": opts.rooms, "guests_per_room": opts.guests,
            "round_ms": opts.round_ms, "drop_prob": opts.drop_prob, "abandon_prob": opts.abandon_prob,
            "chaos_per_sec": opts.chaos_per_sec, "sources": opts.sources, "seed": opts.seed,
            "server_args": server_args,
        },
        "messages": {
            "sent_to_live_peers": sent,
            "delivered": delivered,
            "lost": s.get("honest.lost"),
            "sent_while_host_absent": s.get("honest.sent_while_host_absent"),
            "host_absent_errors": s.get("honest.host_absent_errors"),
            "server_relayed_total": relayed,
        },
        "server": {
            "baseline": {"rss_kib": baseline.rss_kib, "fds": baseline.fds},
            "after_each_wave": after_wave.iter().map(|a| json!({"rss_kib": a.rss_kib, "fds": a.fds})).collect::<Vec<_>>(),
            "peak": {"rss_kib": peak_rss, "fds": peak_fds, "connections": peak_connections, "rooms": peak_rooms},
            "after": {"rss_kib": after_rss, "fds": after_fds, "cpu_s": (after_cpu * 10.0).round() / 10.0},
            "settled_to_zero_after_s": waves
                .iter()
                .map(|w| w.settled_after.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0))
                .collect::<Vec<_>>(),
            "final_health": last_health,
            "log_error_lines": log_errors,
            "exit_after_sigterm": exit,
            "metrics": server::metrics_json(&metrics_text),
            "timeline_s_rss_fds": timeline,
        },
        "tokens_issued": tokens.len(),
        "tokens_in_log": leaked.len(),
        "counters": s.counters_json(),
        "failure_details": s.failures_json(),
    });
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(out) = &opts.out {
        std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    eprintln!(
        "soak: {} — sent {sent}, delivered {delivered}, lost {}, failures {failures}; peak RSS {} MiB, peak fds {peak_fds}",
        if failures == 0 { "PASS" } else { "FAIL" },
        s.get("honest.lost"),
        peak_rss / 1024
    );
    Ok(failures == 0)
}

/// What one wave of load left behind.
#[derive(Clone)]
struct Wave {
    peak_connections: i64,
    peak_rooms: i64,
    settled_after: Option<Duration>,
    last_health: Value,
    server_dead: Option<String>,
}

/// One wave: honest rooms and chaos clients for `seconds`, then every
/// client leaves and the server must return to no connections and no rooms.
async fn wave(
    opts: &Opts,
    srv: &mut Server,
    stats: &Arc<Stats>,
    tokens: &Arc<Mutex<HashSet<String>>>,
    seconds: u64,
    seed: u64,
    name: &str,
) -> Wave {
    let ctx = Arc::new(Ctx {
        net: Net::new(srv.addr, opts.sources),
        stats: Arc::clone(stats),
        load_end: CancellationToken::new(),
        serial: AtomicU64::new(seed % 1_000_000 * 1_000_000 + 1),
        rooms: Mutex::new(vec![None; opts.rooms]),
        closed: Mutex::new(Vec::new()),
        tokens: Arc::clone(tokens),
        slow_active: std::sync::atomic::AtomicBool::new(false),
        opts: opts.clone(),
    });
    let load_start = Instant::now();
    let mut rng = Rng::new(seed);
    let mut rooms = tokio::task::JoinSet::new();
    for i in 0..opts.rooms {
        rooms.spawn(room::run(Arc::clone(&ctx), i, rng.next()));
    }
    let chaos_ctx = Arc::clone(&ctx);
    let chaos_seed = rng.next();
    let spawner = tokio::spawn(async move { spawn_chaos(chaos_ctx, chaos_seed).await });
    let mut w = Wave {
        peak_connections: 0,
        peak_rooms: 0,
        settled_after: None,
        last_health: Value::Null,
        server_dead: None,
    };
    let load = Duration::from_secs(seconds);
    while load_start.elapsed() < load {
        tokio::time::sleep(Duration::from_secs(1).min(load.saturating_sub(load_start.elapsed())))
            .await;
        if let Err(e) = srv.alive() {
            w.server_dead = Some(e);
            break;
        }
        if let Ok((200, body)) = net::http_get(srv.addr, "/healthz").await {
            let h: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            w.peak_connections = w
                .peak_connections
                .max(h["connections"].as_i64().unwrap_or(0));
            w.peak_rooms = w.peak_rooms.max(h["rooms"].as_i64().unwrap_or(0));
        }
    }
    ctx.load_end.cancel();
    eprintln!(
        "soak: {name} wave: load over after {:.1} s; clients finishing",
        load_start.elapsed().as_secs_f64()
    );
    let mut chaos_tasks = match spawner.await {
        Ok(set) => set,
        Err(e) => {
            ctx.stats.fail("soak.chaos_spawner", e.to_string());
            tokio::task::JoinSet::new()
        }
    };
    // Rooms quiesce and close; chaos clients finish (the slowest wait out an
    // idle timeout or a ping timeout).
    let finish_by =
        opts.host_grace + opts.idle_timeout + opts.ping_interval * 4 + Duration::from_secs(40);
    let finishing = async {
        while let Some(r) = rooms.join_next().await {
            if let Err(e) = r {
                ctx.stats.fail("soak.room_task_panicked", e.to_string());
            }
        }
        while let Some(r) = chaos_tasks.join_next().await {
            if let Err(e) = r {
                ctx.stats.fail("soak.chaos_task_panicked", e.to_string());
            }
        }
    };
    if tokio::time::timeout(finish_by, finishing).await.is_err() {
        ctx.stats.fail(
            "soak.clients_did_not_finish",
            format!("{name} wave, within {finish_by:?}"),
        );
    }
    let clients_done = Instant::now();
    // Everyone has left: the server must come back to nothing.
    let settle_limit = opts.host_grace + opts.ping_interval * 3 + Duration::from_secs(15);
    while w.server_dead.is_none() && clients_done.elapsed() < settle_limit {
        if let Ok((200, body)) = net::http_get(srv.addr, "/healthz").await {
            w.last_health = serde_json::from_str(&body).unwrap_or(Value::Null);
            if w.last_health["connections"] == 0 && w.last_health["rooms"] == 0 {
                w.settled_after = Some(clients_done.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if w.settled_after.is_none() {
        ctx.stats.fail(
            "leak.server_state",
            format!("{name} wave, after {settle_limit:?}: {}", w.last_health),
        );
    }
    if w.server_dead.is_none() {
        w.server_dead = srv.alive().err();
    }
    w
}

/// Starts chaos clients at the configured rate until the load phase ends;
/// returns them, still running.
async fn spawn_chaos(ctx: Arc<Ctx>, seed: u64) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    if ctx.opts.chaos_per_sec <= 0.0 {
        return set;
    }
    let mut rng = Rng::new(seed);
    let limit = Arc::new(tokio::sync::Semaphore::new(ctx.opts.max_chaos.max(1)));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ctx.opts.chaos_per_sec));
    // Give the honest rooms a head start, so there are rooms to target.
    tokio::time::sleep(Duration::from_millis(ctx.opts.ramp_ms / 2)).await;
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = ctx.load_end.cancelled() => return set,
            _ = tick.tick() => {}
        }
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            ctx.stats.inc("chaos.skipped_at_limit");
            continue;
        };
        let kind = chaos::KINDS[n % chaos::KINDS.len()];
        n += 1;
        let ctx = Arc::clone(&ctx);
        let seed = rng.next();
        set.spawn(async move {
            chaos::run(ctx, kind, seed).await;
            drop(permit);
        });
        // Reap finished ones as we go.
        while set.try_join_next().is_some() {}
    }
}
