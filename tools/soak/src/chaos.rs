//! Hostile and broken clients, started continuously during the load phase.
//! Each checks that the server answered it as the protocol says; a wrong or
//! missing answer is a failure. Their effect on the honest rooms (which some
//! of them join) is checked by the honest rooms' own accounting.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::net::{self, random_token, ConnectError, Read, Rng, Sink, Stream, Ws, STEP};
use crate::{Ctx, PublicRoom};

/// Every kind of chaos client, started in turn.
pub const KINDS: [&str; 18] = [
    "vanish_fin",
    "vanish_rst",
    "stop_reading",
    "garbage",
    "bad_query",
    "oversize",
    "cross_room",
    "flood",
    "idle",
    "dead_tokens",
    "slow_consumer",
    "slowloris",
    "room_spam",
    "conn_hoard",
    // Who pays for pressure (pressure.rs).
    "byte_flood",
    "pong_pump",
    "watch_flood",
    "join_churn",
];

/// Runs one chaos client of `kind`, counting its outcome.
pub async fn run(ctx: Arc<Ctx>, kind: &'static str, seed: u64) {
    let mut rng = Rng::new(seed);
    ctx.stats.inc(&format!("chaos.{kind}.tried"));
    let result = match kind {
        "vanish_fin" => vanish(&ctx, &mut rng, false).await,
        "vanish_rst" => vanish(&ctx, &mut rng, true).await,
        "stop_reading" => stop_reading(&ctx, &mut rng).await,
        "garbage" => garbage(&ctx, &mut rng).await,
        "bad_query" => bad_query(&ctx, &mut rng).await,
        "oversize" => oversize(&ctx, &mut rng).await,
        "cross_room" => cross_room(&ctx, &mut rng).await,
        "flood" => flood(&ctx).await,
        "idle" => idle(&ctx).await,
        "dead_tokens" => dead_tokens(&ctx, &mut rng).await,
        "slow_consumer" => slow_consumer(&ctx).await,
        "slowloris" => crate::edge::slowloris(&ctx).await,
        "room_spam" => crate::edge::room_spam(&ctx).await,
        "conn_hoard" => crate::edge::conn_hoard(&ctx).await,
        kind if crate::pressure::KINDS.contains(&kind) => crate::pressure::run(&ctx, kind).await,
        _ => Err(format!("unknown chaos kind {kind}")),
    };
    match result {
        Ok(Outcome::Done) => ctx.stats.inc(&format!("chaos.{kind}.ok")),
        Ok(Outcome::TargetGone) => ctx.stats.inc(&format!("chaos.{kind}.target_gone")),
        Ok(Outcome::Skipped) => ctx.stats.inc(&format!("chaos.{kind}.skipped")),
        Err(e) => ctx.stats.fail(&format!("chaos.{kind}"), e),
    }
}

pub enum Outcome {
    /// The server behaved as it must.
    Done,
    /// The honest room picked as a target closed meanwhile (a legitimate
    /// `room_not_found` or 404); nothing was tested.
    TargetGone,
    /// Not run (one of its kind at a time).
    Skipped,
}

pub type Res = Result<Outcome, String>;

async fn ws(ctx: &Ctx, path: &str, rst: bool) -> Result<(Sink, Stream), String> {
    let ws: Ws = ctx
        .net
        .ws(path, rst)
        .await
        .map_err(|e| format!("connect {path}: {e}"))?;
    Ok(ws.split())
}

async fn expect_error(stream: &mut Stream, code: &str, after: &str) -> Result<(), String> {
    match net::read(stream, STEP).await {
        Read::Json(v) if v["type"] == "error" && v["code"] == code => Ok(()),
        other => Err(format!(
            "after {after}: expected error {code}, got {other:?}"
        )),
    }
}

/// Creates a room of its own; returns the host's halves and the tokens.
async fn own_room(ctx: &Ctx) -> Result<(Sink, Stream, Value), String> {
    let (mut sink, mut stream) = ws(ctx, "/webrtc", false).await?;
    net::send(&mut sink, &json!({"type":"init"})).await?;
    let r = net::read_until(&mut stream, STEP, |v| {
        v["type"] == "init" || v["type"] == "error"
    })
    .await?;
    if r["role"] != "host" {
        return Err(format!("init answered {r}"));
    }
    let mut tokens = ctx.tokens.lock().unwrap_or_else(|e| e.into_inner());
    for k in ["join", "watch", "resume"] {
        if let Some(t) = r[k].as_str() {
            tokens.insert(t.to_string());
        }
    }
    Ok((sink, stream, r))
}

/// Attaches to `room` as a guest (by `init` or by query string). `None` when
/// the room has closed meanwhile.
async fn attach(
    ctx: &Ctx,
    rng: &mut Rng,
    room: &PublicRoom,
    rst: bool,
) -> Result<Option<(Sink, Stream)>, String> {
    let (role, token) = if rng.chance(0.5) {
        ("join", &room.join)
    } else {
        ("watch", &room.watch)
    };
    let (mut sink, mut stream) = if rng.chance(0.5) {
        match ctx.net.ws(&format!("/webrtc?{role}={token}"), rst).await {
            Ok(ws) => ws.split(),
            Err(ConnectError::Http(404)) => return Ok(None),
            Err(e) => return Err(format!("attach by query: {e}")),
        }
    } else {
        let (mut sink, stream) = ws(ctx, "/webrtc", rst).await?;
        net::send(&mut sink, &json!({"type":"init", role: token})).await?;
        (sink, stream)
    };
    let r = net::read_until(&mut stream, STEP, |v| {
        v["type"] == "init" || v["type"] == "error"
    })
    .await?;
    match r["type"].as_str() {
        Some("init") if r["role"] == role => Ok(Some((sink, stream))),
        Some("error") if r["code"] == "room_not_found" || r["code"] == "room_full" => {
            let _ = sink.close().await;
            Ok(None)
        }
        _ => Err(format!("attach answered {r}")),
    }
}

/// Joins an honest room, says something to its host, and vanishes without a
/// close frame: TCP FIN, or RST (SO_LINGER 0).
async fn vanish(ctx: &Ctx, rng: &mut Rng, rst: bool) -> Res {
    let Some(room) = ctx.random_room(rng) else {
        return Ok(Outcome::TargetGone);
    };
    let Some((mut sink, stream)) = attach(ctx, rng, &room, rst).await? else {
        return Ok(Outcome::TargetGone);
    };
    net::send(
        &mut sink,
        &json!({"type":"offer","sdp":"v=0\r\n","chaos":"vanish"}),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
    drop(sink);
    drop(stream);
    Ok(Outcome::Done)
}

/// Joins an honest room as a watcher (so it is sent every broadcast) and
/// stops reading, like a frozen or half-open client. The server must cut it
/// off (ping timeout or full outbox); reading afterwards finds the end.
async fn stop_reading(ctx: &Ctx, rng: &mut Rng) -> Res {
    let Some(room) = ctx.random_room(rng) else {
        return Ok(Outcome::TargetGone);
    };
    let Some((sink, mut stream)) = attach(ctx, rng, &room, false).await? else {
        return Ok(Outcome::TargetGone);
    };
    // Two ping intervals without a pong end it; wait a third.
    tokio::time::sleep(ctx.opts.ping_interval * 3 + Duration::from_secs(1)).await;
    let ended = net::read_to_end(&mut stream, STEP).await;
    drop(sink);
    match ended {
        Ok(_) => Ok(Outcome::Done),
        Err(e) => Err(format!(
            "a client that stopped reading was never cut off: {e}"
        )),
    }
}

/// Malformed and unexpected frames, each answered by its error code, the
/// socket staying open.
async fn garbage(ctx: &Ctx, rng: &mut Rng) -> Res {
    let (mut sink, mut stream) = ws(ctx, "/webrtc", false).await?;
    let random_text: String = (0..rng.below(200))
        .map(|_| char::from_u32(32 + rng.below(0x2000) as u32).unwrap_or('?'))
        .collect();
    let mut cases: Vec<(Message, &[&str])> = vec![
        (Message::text("{not json"), &["bad_json"]),
        (Message::text(""), &["bad_json"]),
        (Message::text(r#"["init"]"#), &["bad_message"]),
        (Message::text(r#"{"type":"hello"}"#), &["unknown_type"]),
        (Message::text(r#"{"type":"offer"}"#), &["bad_message"]),
        (
            Message::text(r#"{"type":"offer","sdp":5}"#),
            &["bad_message"],
        ),
        (
            Message::text(r#"{"type":"ice_candidate","sdp_mid":"0"}"#),
            &["bad_message"],
        ),
        (
            Message::text(r#"{"type":"configure","actions":[{"type":"launch"}]}"#),
            &["bad_message"],
        ),
        (
            Message::binary(vec![1u8, 2, 3, 255]),
            &["unsupported_frame"],
        ),
        (
            Message::text(r#"{"type":"offer","sdp":"s"}"#),
            &["not_in_room"],
        ),
        (
            Message::text(json!({"type":"init","join": random_token(rng)}).to_string()),
            &["room_not_found"],
        ),
        (
            Message::text(r#"{"type":"init","join":"short"}"#),
            &["room_not_found"],
        ),
        (
            Message::text(
                json!({"type":"init","join": random_token(rng), "watch": random_token(rng)})
                    .to_string(),
            ),
            &["bad_message"],
        ),
        (
            Message::text(random_text),
            &["bad_json", "bad_message", "unknown_type"],
        ),
    ];
    // A different order each time.
    for i in (1..cases.len()).rev() {
        cases.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (frame, codes) in cases {
        let shown = format!("{frame:?}").chars().take(120).collect::<String>();
        sink.send(frame).await.map_err(|e| format!("send: {e}"))?;
        match net::read(&mut stream, STEP).await {
            Read::Json(v) if v["type"] == "error" && codes.iter().any(|c| v["code"] == *c) => {
                ctx.stats.inc("chaos.garbage.errors_as_expected");
            }
            other => return Err(format!("{shown}: expected {codes:?}, got {other:?}")),
        }
    }
    // As a host: `to` naming nobody, and a second init.
    net::send(&mut sink, &json!({"type":"init"})).await?;
    net::read_until(&mut stream, STEP, |v| v["type"] == "init").await?;
    net::send(
        &mut sink,
        &json!({"type":"answer","sdp":"s","to":"nobody00"}),
    )
    .await?;
    expect_error(&mut stream, "peer_not_found", "to nobody").await?;
    net::send(&mut sink, &json!({"type":"init"})).await?;
    expect_error(&mut stream, "already_in_room", "second init").await?;
    ctx.stats.add("chaos.garbage.errors_as_expected", 2);
    let _ = sink.close().await;
    Ok(Outcome::Done)
}

/// Query strings with wrong tokens: refused before the upgrade.
async fn bad_query(ctx: &Ctx, rng: &mut Rng) -> Res {
    let mut cases = vec![
        (format!("/webrtc?join={}", random_token(rng)), 404),
        (format!("/webrtc?watch={}", random_token(rng)), 404),
        ("/webrtc?join=short".to_string(), 404),
        (format!("/?join={}", random_token(rng)), 404),
        ("/webrtc?join=a&watch=b".to_string(), 400),
    ];
    if let Some(room) = ctx.random_room(rng) {
        // A real token under the other role's name.
        cases.push((format!("/webrtc?watch={}", room.join), 404));
        cases.push((
            format!("/webrtc?join={}&watch={}", room.join, room.watch),
            400,
        ));
    }
    for (path, want) in cases {
        match ctx.net.ws(&path, false).await {
            Err(ConnectError::Http(s)) if s == want => {}
            Err(e) => return Err(format!("{path}: expected HTTP {want}, got {e}")),
            Ok(_) => return Err(format!("{path}: expected HTTP {want}, got an upgrade")),
        }
    }
    Ok(Outcome::Done)
}

/// A frame over the size limit: `too_large`, then close 1009.
async fn oversize(ctx: &Ctx, rng: &mut Rng) -> Res {
    let (mut sink, mut stream, _) = own_room(ctx).await?;
    let size = ctx.opts.max_message_size + 1 + rng.below(4096) as usize;
    let frame = if rng.chance(0.5) {
        Message::text(format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "x".repeat(size)
        ))
    } else {
        Message::binary(vec![0u8; size])
    };
    sink.send(frame).await.map_err(|e| format!("send: {e}"))?;
    expect_error(&mut stream, "too_large", "an oversize frame").await?;
    match net::read_to_end(&mut stream, STEP).await {
        Ok(Some(1009)) => Ok(Outcome::Done),
        other => Err(format!(
            "after too_large: expected close 1009, got {other:?}"
        )),
    }
}

/// A room of its own whose host addresses other rooms' peers (`to`) and
/// whose guest forges `from`: the server must refuse the first and rewrite
/// the second, and nothing may reach another room (the honest readers flag
/// any `xroom` message).
async fn cross_room(ctx: &Ctx, rng: &mut Rng) -> Res {
    let (mut host, mut host_rx, r) = own_room(ctx).await?;
    let join = r["join"].as_str().unwrap_or_default().to_string();
    let (mut guest, mut guest_rx) = ws(ctx, "/webrtc", false).await?;
    net::send(&mut guest, &json!({"type":"init","join": join})).await?;
    let g = net::read_until(&mut guest_rx, STEP, |v| v["type"] == "init").await?;
    let guest_id = g["peer"].as_str().unwrap_or_default().to_string();
    net::read_until(&mut host_rx, STEP, |v| v["type"] == "peer_joined").await?;
    let mut probes = 0;
    for _ in 0..3 {
        let Some(room) = ctx.random_room(rng) else {
            break;
        };
        let target = room.peers[rng.below(room.peers.len() as u64) as usize].clone();
        if target.is_empty() {
            continue;
        }
        net::send(
            &mut host,
            &json!({"type":"offer","sdp":"x","to": target,"chaos":"cross_room","xroom":1}),
        )
        .await?;
        expect_error(
            &mut host_rx,
            "peer_not_found",
            "a `to` naming another room's peer",
        )
        .await?;
        probes += 1;
        // The guest forges `from` and names a foreign `to`: it reaches its
        // own host only, from its real id.
        let forged = room.peers[0].clone();
        net::send(
            &mut guest,
            &json!({"type":"answer","sdp":"x","from": forged,"to": target,"chaos":"cross_room","xroom":1}),
        )
        .await?;
        let got = net::read_until(&mut host_rx, STEP, |v| v["type"] == "answer").await?;
        if got["from"] != guest_id.as_str() {
            return Err(format!("forged from relayed as {got}"));
        }
    }
    ctx.stats.add("chaos.cross_room.probes_refused", probes);
    let _ = guest.close().await;
    let _ = host.close().await;
    Ok(Outcome::Done)
}

/// A guest sending as fast as it can: the server relays its burst, answers
/// `rate_limited` once (or `host_busy`, when its host's queue fills first),
/// then closes it 1008; its host gets no more than the burst.
async fn flood(ctx: &Ctx) -> Res {
    let (mut host, mut host_rx, r) = own_room(ctx).await?;
    let join = r["join"].as_str().unwrap_or_default().to_string();
    let (mut guest, mut guest_rx) = ws(ctx, "/webrtc", false).await?;
    net::send(&mut guest, &json!({"type":"init","join": join})).await?;
    net::read_until(&mut guest_rx, STEP, |v| v["type"] == "init").await?;
    net::read_until(&mut host_rx, STEP, |v| v["type"] == "peer_joined").await?;
    let burst = ctx.opts.rate_burst;
    let total = burst * 3 + 300;
    let text = r#"{"type":"offer","sdp":"flood","chaos":"flood"}"#;
    for _ in 0..total {
        if guest.feed(Message::text(text)).await.is_err() {
            break;
        }
    }
    let _ = guest.flush().await;
    let (mut rate_limited, mut host_busy) = (0, 0);
    let end = loop {
        match net::read(&mut guest_rx, STEP).await {
            Read::Json(v) if v["code"] == "rate_limited" => rate_limited += 1,
            // Its host (which reads only afterwards) fell behind: the rest of
            // its share of the host's queue was refused.
            Read::Json(v) if v["code"] == "host_busy" => host_busy += 1,
            Read::Json(v) => return Err(format!("flooder got {v}")),
            Read::NotJson(t) => return Err(format!("flooder got {t}")),
            Read::Closed(code) => break code,
            Read::Ended(e) => {
                return Err(format!(
                    "flooder's connection ended without a close frame: {e}"
                ))
            }
            Read::TimedOut => return Err("flooder never closed".into()),
        }
    };
    // One `rate_limited` per run of drops; a token refilled mid-flood (the
    // machine is busy) starts another run. On a busy machine the host's
    // task may not drain its queue while the flooder's burst is handled:
    // then the flooder's share of that queue fills first, and it is closed
    // 1008 for `host_busy` before its rate runs out (the server's rule too).
    if end != Some(1008) || rate_limited + host_busy == 0 {
        return Err(format!(
            "flood: {rate_limited} rate_limited, {host_busy} host_busy, close {end:?}"
        ));
    }
    let mut relayed = 0u64;
    loop {
        match net::read(&mut host_rx, STEP).await {
            Read::Json(v) if v["type"] == "peer_left" => break,
            Read::Json(v) if v["chaos"] == "flood" => relayed += 1,
            Read::Json(_) => {}
            other => return Err(format!("flood host: {other:?}")),
        }
    }
    // The burst, one token used by init, plus what refilled meanwhile (less
    // what the host's queue refused).
    if (relayed + 1 < burst && host_busy == 0) || relayed > burst + 50 {
        return Err(format!("host got {relayed} of the flood (burst {burst})"));
    }
    ctx.stats.add("chaos.flood.relayed_before_limit", relayed);
    let _ = host.close().await;
    Ok(Outcome::Done)
}

/// Connects and never joins a room: closed 1008 after the idle timeout.
async fn idle(ctx: &Ctx) -> Res {
    let (sink, mut stream) = ws(ctx, "/webrtc", false).await?;
    let ended = net::read_to_end(&mut stream, ctx.opts.idle_timeout + STEP).await;
    drop(sink);
    match ended {
        Ok(Some(1008)) => Ok(Outcome::Done),
        other => Err(format!("idle client: expected close 1008, got {other:?}")),
    }
}

/// Secrets and tokens that open nothing: random ones, and those of rooms
/// that have closed.
async fn dead_tokens(ctx: &Ctx, rng: &mut Rng) -> Res {
    let (mut sink, mut stream) = ws(ctx, "/webrtc", false).await?;
    net::send(
        &mut sink,
        &json!({"type":"init","resume": random_token(rng)}),
    )
    .await?;
    expect_error(&mut stream, "room_not_found", "a random resume secret").await?;
    let closed = {
        let c = ctx.closed.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_empty() {
            None
        } else {
            Some(c[rng.below(c.len() as u64) as usize].clone())
        }
    };
    if let Some((join, watch)) = closed {
        net::send(&mut sink, &json!({"type":"init","join": join})).await?;
        expect_error(&mut stream, "room_not_found", "a closed room's join token").await?;
        match ctx.net.ws(&format!("/webrtc?watch={watch}"), false).await {
            Err(ConnectError::Http(404)) => {}
            other => return Err(format!("closed room's ?watch=: {:?}", other.err())),
        }
        ctx.stats
            .inc("chaos.dead_tokens.closed_room_tokens_refused");
    }
    let _ = sink.close().await;
    Ok(Outcome::Done)
}

/// A peer that keeps talking but never reads, in a room whose host
/// broadcasts large messages as fast as the rate limit allows: its outbox
/// fills and the server drops it, while the room's other guest receives
/// every message, in order. One at a time (each moves ~80 MB).
async fn slow_consumer(ctx: &Ctx) -> Res {
    use std::sync::atomic::Ordering;
    if ctx.slow_active.swap(true, Ordering::AcqRel) {
        return Ok(Outcome::Skipped);
    }
    let result = slow_consumer_inner(ctx).await;
    ctx.slow_active.store(false, Ordering::Release);
    result
}

async fn slow_consumer_inner(ctx: &Ctx) -> Res {
    let (mut host, mut host_rx, r) = own_room(ctx).await?;
    let join = r["join"].as_str().unwrap_or_default().to_string();
    let watch = r["watch"].as_str().unwrap_or_default().to_string();
    let (mut reader, mut reader_rx) = ws(ctx, "/webrtc", false).await?;
    net::send(&mut reader, &json!({"type":"init","join": join})).await?;
    net::read_until(&mut reader_rx, STEP, |v| v["type"] == "init").await?;
    let (mut slow, mut slow_rx) = ws(ctx, &format!("/webrtc?watch={watch}"), false).await?;
    let hello = net::read_until(&mut slow_rx, STEP, |v| v["type"] == "init").await?;
    let slow_id = hello["peer"].as_str().unwrap_or_default().to_string();
    for _ in 0..2 {
        net::read_until(&mut host_rx, STEP, |v| v["type"] == "peer_joined").await?;
    }
    // The reader counts, in order, in its own task.
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let reading = tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            match net::read(&mut reader_rx, STEP).await {
                Read::Json(v) if v["chaos"] == "slow" => {
                    if v["seq"] != next {
                        return Err(format!("reader got seq {} expecting {next}", v["seq"]));
                    }
                    next += 1;
                    counter.store(next, std::sync::atomic::Ordering::Release);
                }
                Read::Json(_) => {}
                Read::TimedOut => return Ok((reader, reader_rx)),
                other => return Err(format!("reader: {other:?}")),
            }
        }
    });
    // The slow peer writes every 500 ms (so no ping timeout) and never reads.
    let talking = tokio::spawn(async move {
        for _ in 0..120 {
            if net::send(
                &mut slow,
                &json!({"type":"offer","sdp":"alive","chaos":"slow-alive"}),
            )
            .await
            .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (slow, slow_rx)
    });
    let pad = "s".repeat(32 * 1024);
    let burst = ctx.opts.rate_burst.saturating_sub(50);
    let mut pace = tokio::time::interval(Duration::from_millis(12));
    let mut sent = 0u64;
    let mut dropped = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !dropped && tokio::time::Instant::now() < deadline {
        if sent >= burst {
            pace.tick().await;
        }
        net::send(
            &mut host,
            &json!({"type":"configure","actions":[],"chaos":"slow","seq": sent,"pad": pad}),
        )
        .await?;
        sent += 1;
        // Drain the host's own inbox without waiting.
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::ZERO, host_rx.next()).await {
            if let Ok(Message::Text(t)) = frame {
                if let Ok(v) = serde_json::from_str::<Value>(&t) {
                    if v["type"] == "peer_left" && v["peer"] == slow_id.as_str() {
                        dropped = true;
                    }
                    if v["type"] == "error" {
                        return Err(format!("slow_consumer host got {v}"));
                    }
                }
            }
        }
    }
    if !dropped {
        return Err(format!(
            "the peer that never reads was not dropped after {sent} large messages"
        ));
    }
    // The reader gets everything the host sent.
    let until = tokio::time::Instant::now() + STEP;
    while received.load(std::sync::atomic::Ordering::Acquire) < sent {
        if tokio::time::Instant::now() > until {
            return Err(format!(
                "reader got {} of {sent} while its room-mate was dropped",
                received.load(std::sync::atomic::Ordering::Acquire)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ctx.stats
        .add("chaos.slow_consumer.broadcast_to_reader", sent);
    talking.abort();
    reading.abort();
    let _ = host.close().await;
    Ok(Outcome::Done)
}
