//! Attackers of the HTTP edge and the per-client limits (issue 11, classes
//! 3, 6 and 7), started among the chaos clients (`chaos::KINDS`). Each comes
//! from a loopback address of its own, never used by another client of the
//! run (127.1.0.0/16), so that what it meets are the server's default
//! per-client limits, and the honest rooms' addresses are not charged for
//! it. One of each kind runs at a time.
//!
//! - `slowloris`: connections that send a request head one byte at a time,
//!   or nothing; each must be cut off within the header timeout, while
//!   `/healthz` answers.
//! - `room_spam`: a connect / `init` / disconnect loop; the address must get
//!   exactly its creations per minute, then `create_rate_limited`.
//! - `conn_hoard`: WebSockets up to the per-client limit, all accepted; the
//!   next connection must get HTTP 429, and one beyond the slack be closed at
//!   once.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use testkit::raw::upgrade_request;
use testkit::slowloris::{self, Slow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::chaos::{Outcome, Res};
use crate::net::{self, ConnectError, Ws, STEP};
use crate::Ctx;

/// The server's defaults these attackers meet (signal-server's config.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CREATIONS_PER_MINUTE: usize = 60;
const CONNECTIONS_PER_CLIENT: usize = 256;
/// Connections over the limit that are still answered with 429.
const REFUSED_SLACK: usize = 8;
/// Slow connections per slowloris client.
const SLOW_CONNECTIONS: usize = 50;

static NEXT_ADDRESS: AtomicU32 = AtomicU32::new(0);
static SLOWLORIS: AtomicBool = AtomicBool::new(false);
static ROOM_SPAM: AtomicBool = AtomicBool::new(false);
static HOARD: AtomicBool = AtomicBool::new(false);

/// An address of 127.1.0.0/16 no other client of the run uses.
fn fresh_address() -> Ipv4Addr {
    let n = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed) % (256 * 250);
    Ipv4Addr::new(127, 1, (n / 250) as u8, 1 + (n % 250) as u8)
}

/// A TCP connection from `from` (the kit's [`testkit::net::tcp_from`]).
async fn tcp_from(ctx: &Ctx, from: Ipv4Addr) -> Result<TcpStream, String> {
    testkit::net::tcp_from(from, ctx.net.server, false)
        .await
        .map_err(|e| e.to_string())
}

/// A WebSocket on `/webrtc` from `from` (the kit's
/// [`testkit::net::ws_from`]).
async fn ws_from(ctx: &Ctx, from: Ipv4Addr) -> Result<Ws, ConnectError> {
    testkit::net::ws_from(from, ctx.net.server, "/webrtc", false).await
}

/// Runs `attack` unless one of its kind is running.
async fn one_at_a_time<F: std::future::Future<Output = Res>>(flag: &AtomicBool, attack: F) -> Res {
    if flag.swap(true, Ordering::AcqRel) {
        return Ok(Outcome::Skipped);
    }
    let result = attack.await;
    flag.store(false, Ordering::Release);
    result
}

pub async fn slowloris(ctx: &Ctx) -> Res {
    one_at_a_time(&SLOWLORIS, slowloris_inner(ctx)).await
}

async fn slowloris_inner(ctx: &Ctx) -> Res {
    let from = fresh_address();
    let started = Instant::now();
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..SLOW_CONNECTIONS {
        let tcp = tcp_from(ctx, from).await?;
        let how = if i % 2 == 1 {
            Slow::trickling(
                b"GET /webrtc HTTP/1.1\r\nHost: soak\r\n",
                Duration::from_millis(500),
                b'X',
            )
        } else {
            Slow::SILENT
        };
        slow.spawn(async move {
            slowloris::hold(tcp, how).await;
            started.elapsed()
        });
    }
    // Meanwhile the server answers /healthz.
    match net::http_get(ctx.net.server, "/healthz").await {
        Ok((200, _)) => {}
        other => return Err(format!("/healthz during a slowloris attack: {other:?}")),
    }
    let limit = HEADER_TIMEOUT + Duration::from_secs(5);
    let mut latest = Duration::ZERO;
    let all = timeout(limit + Duration::from_secs(1), async {
        while let Some(cut) = slow.join_next().await {
            latest = latest.max(cut.map_err(|e| e.to_string())?);
        }
        Ok::<(), String>(())
    })
    .await;
    match all {
        Ok(Ok(())) if latest <= limit => {
            ctx.stats.add(
                "chaos.slowloris.connections_cut_off",
                SLOW_CONNECTIONS as u64,
            );
            Ok(Outcome::Done)
        }
        Ok(Ok(())) => Err(format!(
            "a slow connection was cut off only after {latest:?}"
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("slow connections still open after {limit:?}")),
    }
}

pub async fn room_spam(ctx: &Ctx) -> Res {
    one_at_a_time(&ROOM_SPAM, room_spam_inner(ctx)).await
}

async fn room_spam_inner(ctx: &Ctx) -> Res {
    let from = fresh_address();
    let started = Instant::now();
    let mut created = 0;
    // Rooms until the first refusal: at least the bucket's 60, and no more
    // than what it refilled meanwhile (one a second).
    loop {
        let ws = ws_from(ctx, from)
            .await
            .map_err(|e| format!("room spam connection {created}: {e:?}"))?;
        let (mut sink, mut stream) = ws.split();
        net::send(&mut sink, &json!({"type":"init"})).await?;
        let reply = net::read_until(&mut stream, STEP, |v| {
            v["type"] == "init" || v["type"] == "error"
        })
        .await?;
        // The host leaves at once: the room waits out its grace period.
        drop((sink, stream));
        let allowed = CREATIONS_PER_MINUTE + started.elapsed().as_secs() as usize + 1;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("init"), _) if created < allowed => {
                created += 1;
                let mut tokens = ctx.tokens.lock().unwrap_or_else(|e| e.into_inner());
                for k in ["join", "watch", "resume"] {
                    if let Some(t) = reply[k].as_str() {
                        tokens.insert(t.to_string());
                    }
                }
            }
            (Some("error"), Some("create_rate_limited")) if created >= CREATIONS_PER_MINUTE => {
                ctx.stats.inc("chaos.room_spam.refused");
                break;
            }
            _ => {
                return Err(format!(
                    "room {created} of one address (limit {CREATIONS_PER_MINUTE} a minute, \
                     {:?} in): {reply}",
                    started.elapsed()
                ))
            }
        }
    }
    ctx.stats.add("chaos.room_spam.created", created as u64);
    // A pause before the next spammer, so that spam is a part of the load,
    // not most of it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Outcome::Done)
}

pub async fn conn_hoard(ctx: &Ctx) -> Res {
    one_at_a_time(&HOARD, conn_hoard_inner(ctx)).await
}

async fn conn_hoard_inner(ctx: &Ctx) -> Res {
    let from = fresh_address();
    let started = Instant::now();
    // Each connection in a task of its own that reads, so that the server's
    // pings are answered (the soak pings every 2 s).
    let mut held = tokio::task::JoinSet::new();
    for i in 0..CONNECTIONS_PER_CLIENT {
        match ws_from(ctx, from).await {
            Ok(mut ws) => {
                held.spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
            }
            Err(e) => return Err(format!("connection {i} within the per-client limit: {e:?}")),
        }
    }
    // Over the limit: answered (429) for a few connections...
    let mut answered = Vec::with_capacity(REFUSED_SLACK);
    for _ in 0..REFUSED_SLACK {
        answered.push(tcp_from(ctx, from).await?);
    }
    // ... and closed at once beyond them.
    let mut beyond = tcp_from(ctx, from).await?;
    let beyond_at = started.elapsed();
    let mut byte = [0u8; 1];
    let closed = timeout(Duration::from_secs(3), beyond.read(&mut byte)).await;
    // The hoarded connections never enter a room: after the idle timeout
    // the server closes them, and the count is no longer full. Too slow a
    // run cannot be judged.
    if beyond_at + Duration::from_secs(1) >= ctx.opts.idle_timeout {
        ctx.stats.inc("chaos.conn_hoard.too_slow_to_judge");
        return Ok(Outcome::Skipped);
    }
    match closed {
        Ok(Ok(0) | Err(_)) => {}
        other => return Err(format!("a connection far over the limit: {other:?}")),
    }
    let request = upgrade_request(ctx.net.server, "/webrtc");
    let first = &mut answered[0];
    first
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    let _ = timeout(STEP, first.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    if !response.starts_with("HTTP/1.1 429") {
        return Err(format!("over the per-client limit: {response:?}"));
    }
    // It holds its connections a while, then leaves.
    drop(answered);
    tokio::time::sleep(Duration::from_secs(1)).await;
    held.shutdown().await;
    ctx.stats
        .add("chaos.conn_hoard.refused", 1 + REFUSED_SLACK as u64);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Outcome::Done)
}
