//! signal-bench: drives a signalling server through its real protocol and
//! measures what it costs.
//!
//! `signal-bench run` runs one mode against one server and prints (and
//! appends to `--out`) one JSON line; `signal-bench report` turns those lines
//! into the Markdown tables of docs/BENCHMARKS.md. The modes:
//!
//! - `closed`: N rooms of a host and K viewers set up with a full
//!   offer/answer/ICE exchange; then each viewer keeps `--inflight` messages
//!   of `--size` bytes in flight to its host, which echoes each one back.
//!   Every delivery counts as one relayed message.
//! - `open`: the same rooms, the viewers sending at fixed times whatever the
//!   replies do (one pacer spinning on the clock, round robin over the
//!   viewers); latency is measured from the intended send time (no
//!   coordinated omission): one hop (viewer to host) and the round trip, and
//!   the generator's own send lag.
//! - `setup`: memory per room (RSS growth over `--rooms` rooms held open),
//!   then the rate of host init + viewer join + first relayed offer, with
//!   `--concurrency` set-ups in flight, each closed when done.
//! - `idle`: `--conns` connections in rooms, spread over 127.0.0.x sources;
//!   RSS per connection idle, then after one 4 KB message per connection.
//!
//! Server CPU is utime+stime of `--server-pid` from /proc over the measured
//! window; the generator's own CPU likewise.

mod proto;
mod report;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::task::{spawn_local, LocalSet};
use tokio_tungstenite::tungstenite::Message;

use proto::{Kind, Proto, Room, Target, Templates, Ws};
use testkit::procfs as procstat;

type BoxError = Box<dyn std::error::Error>;

#[derive(Parser)]
#[command(name = "signal-bench", about = "Load generator for signalling servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one mode against one server; prints one JSON line.
    Run(RunArgs),
    /// Turn JSON lines into Markdown tables (medians, ranges, ratios).
    Report(report::ReportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Closed,
    Open,
    Setup,
    Idle,
}

#[derive(Parser, Debug)]
struct RunArgs {
    /// The server's protocol.
    #[arg(long, value_enum)]
    proto: Proto,
    /// What to measure.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    server: SocketAddr,
    /// The server's process id, for its CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's name in the report (default: the protocol's).
    #[arg(long)]
    label: Option<String>,
    /// Repeat number: runs with the same repeat number are compared.
    #[arg(long, default_value_t = 0)]
    repeat: u32,
    /// Append the JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rooms (closed, open: rooms with traffic; setup: rooms held for the
    /// memory figure).
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// Viewers per room.
    #[arg(long, default_value_t = 1)]
    viewers: usize,
    /// Bytes per message as the client sends it.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Messages in flight per viewer (closed loop).
    #[arg(long, default_value_t = 10)]
    inflight: usize,
    /// Offered load, relayed messages per second in total (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Seconds of warm-up before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to let memory settle before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Connections (idle mode).
    #[arg(long, default_value_t = 19_000)]
    conns: usize,
    /// Source addresses, 127.0.0.2 onwards.
    #[arg(long, default_value_t = 64)]
    sources: usize,
    /// Room set-ups in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The scenario's name in the report (default: from mode and sizes).
    #[arg(long)]
    scenario: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Report(args) => {
            if let Err(e) = report::run(&args) {
                eprintln!("signal-bench report: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Run(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let local = LocalSet::new();
            match local.block_on(&rt, run(args)) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("signal-bench: {e}");
                    std::process::exit(1);
                }
            }
            // Drop the connections without waiting for anything.
            std::process::exit(0);
        }
    }
}

async fn run(a: RunArgs) -> Result<String, BoxError> {
    let t = Rc::new(Target::new(a.proto, a.server, a.sources));
    if a.proto == Proto::Minimal && a.viewers != 1 {
        return Err("the minimal relay pairs two connections: use --viewers 1".into());
    }
    let mut out = Map::new();
    out.insert(
        "label".into(),
        json!(a
            .label
            .clone()
            .unwrap_or_else(|| format!("{:?}", a.proto).to_lowercase())),
    );
    out.insert(
        "proto".into(),
        json!(format!("{:?}", a.proto).to_lowercase()),
    );
    out.insert("mode".into(), json!(format!("{:?}", a.mode).to_lowercase()));
    out.insert("repeat".into(), json!(a.repeat));
    let metrics = match a.mode {
        Mode::Closed => {
            out.insert(
                "scenario".into(),
                json!(format!(
                    "closed loop, {} B, {} in flight",
                    a.size, a.inflight
                )),
            );
            closed_or_open(&a, &t, None).await?
        }
        Mode::Open => {
            out.insert("scenario".into(), json!(format!("open loop, {} B", a.size)));
            closed_or_open(&a, &t, Some(a.rate)).await?
        }
        Mode::Setup => {
            out.insert("scenario".into(), json!("room set-up"));
            setup(&a, &t).await?
        }
        Mode::Idle => {
            out.insert(
                "scenario".into(),
                json!(format!("idle connections ({})", a.conns)),
            );
            idle(&a, &t).await?
        }
    };
    out.insert(
        "params".into(),
        json!({
            "rooms": a.rooms, "viewers": a.viewers, "size": a.size, "inflight": a.inflight,
            "rate": a.rate, "warmup_s": a.warmup, "duration_s": a.duration, "conns": a.conns,
            "concurrency": a.concurrency,
        }),
    );
    if let Some(name) = &a.scenario {
        out.insert("scenario".into(), json!(name));
    }
    out.insert("metrics".into(), Value::Object(metrics));
    let line = Value::Object(out).to_string();
    if let Some(path) = &a.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    Ok(line)
}

/// Counters shared by the tasks of one run.
struct Stats {
    t0: Instant,
    /// Data messages received (each one relayed by the server).
    recv: Cell<u64>,
    stop: Cell<bool>,
    /// The measured window, in ns since t0 (intended send times).
    window: (u64, u64),
    /// One hop: viewer's intended send time to the host's receipt.
    hop: RefCell<Vec<u64>>,
    /// Round trip: viewer's intended send time to the echo's receipt.
    rtt: RefCell<Vec<u64>>,
    /// Open loop: the generator's own send lag, from the intended send time
    /// to the start of the write (the frame built and buffered).
    lag: RefCell<Vec<u64>>,
    /// Open loop: the time the write system call takes (on loopback it
    /// includes handing the segment to the server's socket and waking it).
    write: RefCell<Vec<u64>>,
}

impl Stats {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
    fn in_window(&self, t: u64) -> bool {
        t >= self.window.0 && t < self.window.1
    }
}

async fn build_rooms(
    t: &Target,
    n: usize,
    k: usize,
    exchange: bool,
    conc: usize,
) -> Result<Vec<Room>, BoxError> {
    let results: Vec<Result<Room, BoxError>> = futures_util::stream::iter(0..n)
        .map(|i| proto::setup_room(t, i, k, exchange))
        .buffer_unordered(conc.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn server_cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(procstat::cpu_seconds)
}

fn kind_of(size: usize) -> Kind {
    if size >= 1024 {
        Kind::Sdp
    } else {
        Kind::Ice
    }
}

async fn closed_or_open(
    a: &RunArgs,
    t: &Target,
    rate: Option<f64>,
) -> Result<Map<String, Value>, BoxError> {
    let rooms = build_rooms(t, a.rooms, a.viewers, true, a.concurrency).await?;
    let t0 = Instant::now();
    let w0 = secs(a.warmup).as_nanos() as u64;
    let w1 = w0 + secs(a.duration).as_nanos() as u64;
    // Open loop: room for every sample of the window, so that no push has
    // to reallocate (and copy) while messages are being timed.
    let cap = rate.map_or(0, |r| (r / 2.0 * a.duration.max(0.0) * 1.1) as usize + 1024);
    let samples = || RefCell::new(Vec::with_capacity(cap));
    let st = Rc::new(Stats {
        t0,
        recv: Cell::new(0),
        stop: Cell::new(false),
        window: (w0, w1),
        hop: samples(),
        rtt: samples(),
        lag: samples(),
        write: samples(),
    });
    // Open loop: one pacer writes every viewer's messages on the global
    // schedule; each viewer's read half is read by its own task.
    let mut sinks = Vec::new();
    for room in rooms {
        let tmpl = Rc::new(t.templates(&room.host_id, &room.viewer_ids, kind_of(a.size), a.size));
        spawn_local(host_task(room.host, Rc::clone(&tmpl), Rc::clone(&st)));
        for (v, ws) in room.viewers.into_iter().enumerate() {
            match rate {
                None => {
                    spawn_local(viewer_closed(
                        ws,
                        Rc::clone(&tmpl),
                        v,
                        a.inflight,
                        Rc::clone(&st),
                    ));
                }
                Some(_) => {
                    let (sink, stream) = ws.split();
                    spawn_local(viewer_open_reader(stream, Rc::clone(&st)));
                    sinks.push(PacedViewer {
                        sink,
                        tmpl: Rc::clone(&tmpl),
                        v,
                        seq: 0,
                    });
                }
            }
        }
    }
    if let Some(rate) = rate {
        // Each send is relayed twice (there and back).
        spawn_local(pacer(sinks, rate / 2.0, Rc::clone(&st)));
    }
    tokio::time::sleep_until((t0 + secs(a.warmup)).into()).await;
    let (r0, s0, g0, i0) = (
        st.recv.get(),
        server_cpu(a.server_pid),
        procstat::own_cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep_until((t0 + secs(a.warmup + a.duration)).into()).await;
    let (r1, s1, g1, i1) = (
        st.recv.get(),
        server_cpu(a.server_pid),
        procstat::own_cpu_seconds(),
        Instant::now(),
    );
    st.stop.set(true);
    let wall = (i1 - i0).as_secs_f64();
    let msgs = (r1 - r0) as f64;
    let mut m = Map::new();
    m.insert("msgs_per_s".into(), json!(msgs / wall));
    if let (Some(s0), Some(s1)) = (s0, s1) {
        m.insert(
            "server_cpu_us_per_msg".into(),
            json!((s1 - s0) * 1e6 / msgs.max(1.0)),
        );
        m.insert("server_cpu_util".into(), json!((s1 - s0) / wall));
    }
    m.insert(
        "gen_cpu_us_per_msg".into(),
        json!((g1 - g0) * 1e6 / msgs.max(1.0)),
    );
    m.insert("gen_cpu_util".into(), json!((g1 - g0) / wall));
    if let Some(rate) = rate {
        m.insert("offered_per_s".into(), json!(rate));
        // Let messages sent at the end of the window arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        const ALL: &[(f64, &str)] = &[(0.5, "p50"), (0.99, "p99"), (0.999, "p999")];
        // The generator's own share: lag before the write, and the write.
        for (name, v, qs) in [
            ("hop", &st.hop, ALL),
            ("rtt", &st.rtt, ALL),
            ("send_lag", &st.lag, &ALL[..2]),
            ("send_write", &st.write, &ALL[..2]),
        ] {
            let mut v = v.borrow_mut();
            v.sort_unstable();
            for &(q, qn) in qs {
                m.insert(format!("{name}_{qn}_us"), json!(quantile(&v, q) / 1e3));
            }
            m.insert(format!("{name}_samples"), json!(v.len()));
        }
    } else {
        let mut v = st.rtt.borrow_mut();
        v.sort_unstable();
        m.insert("rtt_p50_us".into(), json!(quantile(&v, 0.5) / 1e3));
        m.insert("rtt_p99_us".into(), json!(quantile(&v, 0.99) / 1e3));
    }
    if let Some(rss) = a.server_pid.and_then(procstat::rss_bytes) {
        m.insert("server_rss_bytes".into(), json!(rss));
    }
    Ok(m)
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64
}

/// Takes the messages that are ready without waiting.
fn ready(ws: &mut Ws) -> Result<Option<Message>, ()> {
    match ws.next().now_or_never() {
        None => Ok(None),
        Some(Some(Ok(m))) => Ok(Some(m)),
        Some(_) => Err(()),
    }
}

fn data(m: &Message) -> Option<(usize, u64, u64)> {
    match m {
        Message::Text(t) => proto::marker(t.as_str()),
        _ => None,
    }
}

/// The host: echoes every data message to the viewer that sent it.
async fn host_task(mut ws: Ws, tmpl: Rc<Templates>, st: Rc<Stats>) {
    while let Some(Ok(m)) = ws.next().await {
        let mut next = Some(m);
        while let Some(m) = next.take() {
            if let Some((v, seq, t)) = data(&m) {
                st.recv.set(st.recv.get() + 1);
                if st.in_window(t) && !st.stop.get() {
                    st.hop.borrow_mut().push(st.now().saturating_sub(t));
                }
                if ws.feed(tmpl.to_viewer(v, seq, t)).await.is_err() {
                    return;
                }
            }
            match ready(&mut ws) {
                Ok(m) => next = m,
                Err(()) => return,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// A viewer keeping `inflight` messages in flight.
async fn viewer_closed(mut ws: Ws, tmpl: Rc<Templates>, v: usize, inflight: usize, st: Rc<Stats>) {
    let mut seq = 0;
    for _ in 0..inflight {
        if ws.feed(tmpl.to_host(v, seq, st.now())).await.is_err() {
            return;
        }
        seq += 1;
    }
    if ws.flush().await.is_err() {
        return;
    }
    while let Some(Ok(m)) = ws.next().await {
        let mut next = Some(m);
        while let Some(m) = next.take() {
            if let Some((_, _, t)) = data(&m) {
                st.recv.set(st.recv.get() + 1);
                let now = st.now();
                if st.in_window(t) {
                    st.rtt.borrow_mut().push(now.saturating_sub(t));
                }
                if !st.stop.get() {
                    if ws.feed(tmpl.to_host(v, seq, now)).await.is_err() {
                        return;
                    }
                    seq += 1;
                }
            }
            match ready(&mut ws) {
                Ok(m) => next = m,
                Err(()) => return,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// An open-loop viewer's write half, driven by the pacer.
struct PacedViewer {
    sink: SplitSink<Ws, Message>,
    tmpl: Rc<Templates>,
    v: usize,
    seq: u64,
}

/// The open loop's sender: message `i` is intended at `t0 + i / per_s` and
/// goes to viewer `i mod n` (round robin). Timers have a 1 ms granularity and
/// would make sends leave late, in bursts; instead the pacer spins on the
/// clock (the generator has a core of its own), writing each message as soon
/// as it is due, and yields to the runtime between checks so that replies
/// are still read at once (`yield_now` resumes it after the I/O driver has
/// been polled, without blocking).
async fn pacer(mut viewers: Vec<PacedViewer>, per_s: f64, st: Rc<Stats>) {
    if viewers.is_empty() || per_s <= 0.0 {
        return;
    }
    let n = viewers.len();
    let due = |i: u64| (i as f64 * 1e9 / per_s) as u64;
    let mut i = 0u64;
    while !st.stop.get() {
        let mut next = due(i);
        // When behind, catch up in bursts of at most 32 sends, so that the
        // replies (and the end of the window) are still seen.
        let mut burst = 0;
        while next <= st.now() && burst < 32 {
            burst += 1;
            let pv = &mut viewers[(i % n as u64) as usize];
            let m = pv.tmpl.to_host(pv.v, pv.seq, next);
            pv.seq += 1;
            // Feed (frame it into the write buffer), then flush: one write
            // system call, which waits only if the socket's send buffer is
            // full.
            if pv.sink.feed(m).await.is_err() {
                return;
            }
            let t_write = st.now();
            if pv.sink.flush().await.is_err() {
                return;
            }
            if st.in_window(next) {
                st.lag.borrow_mut().push(t_write.saturating_sub(next));
                st.write.borrow_mut().push(st.now().saturating_sub(t_write));
            }
            i += 1;
            next = due(i);
        }
        tokio::task::yield_now().await;
    }
}

/// An open-loop viewer's read half: records the round trip of every echo.
async fn viewer_open_reader(mut rx: SplitStream<Ws>, st: Rc<Stats>) {
    while let Some(Ok(m)) = rx.next().await {
        if let Some((_, _, t)) = data(&m) {
            st.recv.set(st.recv.get() + 1);
            if st.in_window(t) {
                st.rtt.borrow_mut().push(st.now().saturating_sub(t));
            }
        }
    }
}

async fn setup(a: &RunArgs, t: &Rc<Target>) -> Result<Map<String, Value>, BoxError> {
    let pid = a.server_pid;
    let rss0 = pid.and_then(procstat::rss_bytes);
    let held = build_rooms(t, a.rooms, a.viewers, true, a.concurrency).await?;
    tokio::time::sleep(secs(a.settle)).await;
    let rss1 = pid.and_then(procstat::rss_bytes);
    let mut m = Map::new();
    if let (Some(r0), Some(r1)) = (rss0, rss1) {
        m.insert(
            "rss_per_room_bytes".into(),
            json!((r1 as f64 - r0 as f64) / held.len() as f64),
        );
    }

    let done = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    let stop = Rc::new(Cell::new(false));
    let next_room = Rc::new(Cell::new(a.rooms + 1));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (t, done, errors, stop, next_room) = (
            Rc::clone(t),
            done.clone(),
            errors.clone(),
            stop.clone(),
            next_room.clone(),
        );
        tasks.push(spawn_local(async move {
            while !stop.get() {
                let room = next_room.get();
                next_room.set(room + 1);
                match proto::setup_first_relay(&t, room).await {
                    Ok((h, v)) => {
                        done.set(done.get() + 1);
                        drop((h, v));
                    }
                    Err(e) => {
                        if errors.get() == 0 {
                            eprintln!("set-up failed: {e}");
                        }
                        errors.set(errors.get() + 1);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(secs(a.warmup)).await;
    let (d0, s0, g0, i0) = (
        done.get(),
        server_cpu(pid),
        procstat::own_cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep(secs(a.duration)).await;
    let (d1, s1, g1, i1) = (
        done.get(),
        server_cpu(pid),
        procstat::own_cpu_seconds(),
        Instant::now(),
    );
    stop.set(true);
    let wall = (i1 - i0).as_secs_f64();
    let n = (d1 - d0) as f64;
    m.insert("setups_per_s".into(), json!(n / wall));
    if let (Some(s0), Some(s1)) = (s0, s1) {
        m.insert(
            "server_cpu_us_per_setup".into(),
            json!((s1 - s0) * 1e6 / n.max(1.0)),
        );
    }
    m.insert(
        "gen_cpu_us_per_setup".into(),
        json!((g1 - g0) * 1e6 / n.max(1.0)),
    );
    m.insert("setup_errors".into(), json!(errors.get()));
    for task in tasks {
        task.abort();
    }
    drop(held);
    Ok(m)
}

async fn idle(a: &RunArgs, t: &Rc<Target>) -> Result<Map<String, Value>, BoxError> {
    let pid = a.server_pid;
    let per_room = 1 + a.viewers;
    let n_rooms = a.conns / per_room;
    let rss0 = pid.and_then(procstat::rss_bytes);
    let c0 = server_cpu(pid);
    let i0 = Instant::now();
    let rooms = build_rooms(t, n_rooms, a.viewers, false, a.concurrency).await?;
    let connect_s = i0.elapsed().as_secs_f64();
    let c1 = server_cpu(pid);
    let conns = rooms.len() * per_room;
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let recv = Rc::new(Cell::new(0u64));
    for room in rooms {
        let tmpl = Rc::new(t.templates(&room.host_id, &room.viewer_ids, Kind::Sdp, 4096));
        let k = room.viewers.len();
        spawn_local(idle_conn(
            room.host,
            Rc::clone(&tmpl),
            None,
            k,
            go_rx.clone(),
            recv.clone(),
        ));
        for (v, ws) in room.viewers.into_iter().enumerate() {
            spawn_local(idle_conn(
                ws,
                Rc::clone(&tmpl),
                Some(v),
                k,
                go_rx.clone(),
                recv.clone(),
            ));
        }
    }
    tokio::time::sleep(secs(a.settle)).await;
    let rss1 = pid.and_then(procstat::rss_bytes);
    let _ = go_tx.send(true);
    let expected = (n_rooms * a.viewers * 2) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while recv.get() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = recv.get();
    tokio::time::sleep(secs(a.settle)).await;
    let rss2 = pid.and_then(procstat::rss_bytes);
    let mut m = Map::new();
    m.insert("conns".into(), json!(conns));
    m.insert("connect_s".into(), json!(connect_s));
    if let (Some(c0), Some(c1)) = (c0, c1) {
        m.insert(
            "server_cpu_us_per_conn".into(),
            json!((c1 - c0) * 1e6 / conns.max(1) as f64),
        );
    }
    if let (Some(r0), Some(r1), Some(r2)) = (rss0, rss1, rss2) {
        m.insert("rss_base_bytes".into(), json!(r0));
        m.insert(
            "rss_per_conn_idle_bytes".into(),
            json!((r1 as f64 - r0 as f64) / conns as f64),
        );
        m.insert(
            "rss_per_conn_after_4k_bytes".into(),
            json!((r2 as f64 - r0 as f64) / conns as f64),
        );
    }
    m.insert("msgs_4k_delivered".into(), json!(delivered));
    m.insert("msgs_4k_expected".into(), json!(expected));
    if delivered < expected {
        eprintln!("idle: only {delivered} of {expected} 4 KB messages arrived");
    }
    Ok(m)
}

/// An idle connection: reads (answering pings) until told to send its one
/// 4 KB message (a viewer to its host; the host to each of its viewers).
async fn idle_conn(
    mut ws: Ws,
    tmpl: Rc<Templates>,
    viewer: Option<usize>,
    k: usize,
    mut go: tokio::sync::watch::Receiver<bool>,
    recv: Rc<Cell<u64>>,
) {
    let mut sent = false;
    loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                if data(&m).is_some() {
                    recv.set(recv.get() + 1);
                }
            }
            r = go.changed(), if !sent => {
                sent = true;
                if r.is_err() {
                    continue;
                }
                let frames: Vec<Message> = match viewer {
                    Some(v) => vec![tmpl.to_host(v, 1, 0)],
                    None => (0..k).map(|v| tmpl.to_viewer(v, 1, 0)).collect(),
                };
                for f in frames {
                    if ws.feed(f).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
