//! Chaos clients that make the server queue bytes (issue 11, "who pays for
//! pressure"): byte flooders, pong pumps, watchers flooding a slow host, and
//! join churners. Each checks that whoever causes the pressure pays for it,
//! with the code `docs/PROTOCOL.md` gives, and that the host it is aimed at
//! stays; the memory they make the server hold is in the run's RSS ceiling
//! (`--rss-ceiling-mib`), and the honest rooms' accounting shows they
//! disturb no one else.
//!
//! Clients that must not read, or read slowly, are the test kit's raw
//! clients (`testkit::raw`: a small receive buffer and segment size, so that
//! what they leave unread stays in the server's queues, not in loopback's
//! kernel buffers); the floods are the kit's (`testkit::flood`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use testkit::flood::{flood, Flooded};
use testkit::raw::{RawClient, SlowRead, SlowReads, Tokens, PING};

use crate::chaos::{Outcome, Res};
use crate::net::{self, Read, Ws, STEP};
use crate::Ctx;

/// The receive buffer of the raw clients.
const RCVBUF: u32 = 8192;

/// The kinds, registered in `chaos::KINDS`.
pub const KINDS: [&str; 4] = ["byte_flood", "pong_pump", "watch_flood", "join_churn"];

/// Each of these moves megabytes or thousands of connections: one at a time.
static BYTE_FLOOD: AtomicBool = AtomicBool::new(false);
static WATCH_FLOOD: AtomicBool = AtomicBool::new(false);
static JOIN_CHURN: AtomicBool = AtomicBool::new(false);
/// Pong pumps at once.
static PUMPS: AtomicUsize = AtomicUsize::new(0);
const MAX_PUMPS: usize = 4;

/// A 63 KB message, as the attacker sent.
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
    let (host, tokens) = raw_host(ctx).await?;
    let mut guest = attach(ctx, "join", &tokens.join).await?;
    // The host never reads; four pings a second (in a task of their own,
    // whatever the flood's sends wait for) keep it alive.
    let keepalive = tokio::spawn(host.keep_alive_without_reading(Duration::from_millis(250)));
    // Each client ends well within the wave's time to finish (~56 s).
    let seen = flood(
        &mut guest,
        &big("offer"),
        Duration::from_millis(50),
        Duration::from_secs(25),
    )
    .await;
    let host_alive = !keepalive.is_finished();
    keepalive.abort();
    if seen.host_busy == 0 || seen.close_code() != Some(1008) || !host_alive {
        return Err(format!(
            "byte flood: {seen:?} (expected host_busy, then close 1008); host alive: {host_alive}"
        ));
    }
    ctx.stats.inc("pressure.byte_flood.closed_1008");
    Ok(Outcome::Done)
}

/// A client that pings inside the message rate and never reads: its pongs
/// count in its queue, and if its writes stall long enough
/// (`--write-stall-timeout`) it is dropped. It pumps for 12 s.
async fn pong_pump(ctx: &Ctx) -> Res {
    let (mut raw, _) = raw_host(ctx).await?;
    // It may be dropped as a slow consumer (the run's accounting allows it).
    ctx.stats.inc("pressure.may_be_dropped");
    let payload = [b'p'; 125];
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < Duration::from_secs(12) {
        pace.tick().await;
        if raw.send_frame(PING, &payload).await.is_err() {
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
    let (host, tokens) = raw_host(ctx).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen_by_host = Arc::new(SlowReads::default());
    let reader =
        tokio::spawn(host.read_slowly(850_000, Arc::clone(&stop), Arc::clone(&seen_by_host)));
    let mut guest = attach(ctx, "join", &tokens.join).await?;
    let mut floods = Vec::new();
    for _ in 0..WATCHERS {
        let watcher = attach(ctx, "watch", &tokens.watch).await?;
        floods.push(tokio::spawn(flood_for_8s(watcher, big("offer"))));
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
    let SlowRead { honest, .. } = reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the slow host: {e}"))?;
    if honest != sent {
        return Err(format!(
            "the slow host got {honest} of {sent} honest messages"
        ));
    }
    for s in &seen {
        if s.rate_limited == 0 && s.host_busy == 0 {
            return Err(format!("a flooding watcher was never refused: {seen:?}"));
        }
        if s.ended && s.close_code() != Some(1008) {
            return Err(format!(
                "a flooding watcher ended otherwise than 1008: {s:?}"
            ));
        }
    }
    ctx.stats.add(
        "pressure.watch_flood.watchers_closed_1008",
        seen.iter().filter(|s| s.ended).count() as u64,
    );
    ctx.stats
        .add("pressure.watch_flood.honest_delivered", honest);
    Ok(Outcome::Done)
}

/// Floods for 8 s or until closed (the kit's [`flood`], 20 messages a
/// second); closes the connection if the server has not.
async fn flood_for_8s(mut ws: Ws, text: String) -> Flooded {
    let seen = flood(
        &mut ws,
        &text,
        Duration::from_millis(50),
        Duration::from_secs(8),
    )
    .await;
    if !seen.ended {
        let _ = ws.close(None).await;
    }
    seen
}

/// A watcher connecting and disconnecting with `?watch=TOKEN` 50 times a
/// second (until it has been refused 20 times, for 10 s at most), against a
/// host reading 20 KB/s: it must get `too_many_joins` after the room's
/// burst, the host is sent a `peer_joined` and a `peer_left` for each entry
/// and nothing more, and it stays.
async fn join_churn(ctx: &Ctx) -> Res {
    let (host, tokens) = raw_host(ctx).await?;
    let watch = tokens.watch;
    let stop = Arc::new(AtomicBool::new(false));
    let seen_by_host = Arc::new(SlowReads::default());
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
    let SlowRead {
        presence: presence_done,
        ..
    } = reader
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

/// A guest or watcher (by query string), past its `init` reply.
async fn attach(ctx: &Ctx, role: &str, token: &str) -> Result<Ws, String> {
    let mut ws = ctx
        .net
        .ws(&format!("/webrtc?{role}={token}"), false)
        .await
        .map_err(|e| format!("attach as {role}: {e}"))?;
    net::read_until(&mut ws, STEP, |v| v["type"] == "init").await?;
    Ok(ws)
}

/// A room of its own, its host a raw client (the kit's
/// [`RawClient::host`]); its tokens are recorded for the run's check of the
/// server's log.
async fn raw_host(ctx: &Ctx) -> Result<(RawClient, Tokens), String> {
    let (raw, tokens) = RawClient::host(ctx.net.server, RCVBUF).await?;
    let mut recorded = ctx.tokens.lock().unwrap_or_else(|e| e.into_inner());
    for t in [&tokens.join, &tokens.watch, &tokens.resume] {
        recorded.insert(t.clone());
    }
    drop(recorded);
    Ok((raw, tokens))
}
