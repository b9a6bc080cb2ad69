//! Reads and writes over any WebSocket stream or sink (a whole
//! `WebSocketStream` or either half of a split one) that say what came
//! instead of panicking: what a load generator counts rather than asserts.
//! [`crate::Client`] is the asserting client for tests.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::WAIT;

/// What a client read.
#[derive(Debug)]
pub enum Read {
    /// A text message that is JSON.
    Json(Value),
    /// A text message that is not JSON (the server never sends one).
    NotJson(String),
    /// A close frame, with its code.
    Closed(Option<u16>),
    /// The connection ended without a close frame (or failed).
    Ended(String),
    /// Nothing within the time allowed.
    TimedOut,
}

/// The next meaningful frame within `within` (pings, pongs and binary
/// frames skipped).
pub async fn read<S>(stream: &mut S, within: Duration) -> Read
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    read_by(stream, Instant::now() + within).await
}

/// [`read`] by `deadline`.
async fn read_by<S>(stream: &mut S, deadline: Instant) -> Read
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match timeout_at(deadline, stream.next()).await {
            Err(_) => return Read::TimedOut,
            Ok(None) => return Read::Ended("end of stream".into()),
            Ok(Some(Err(e))) => return Read::Ended(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => {
                return match serde_json::from_str(&t) {
                    Ok(v) => Read::Json(v),
                    Err(_) => Read::NotJson(t.to_string()),
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => return Read::Closed(f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Reads until a JSON message satisfies `want`, skipping others; `Err`
/// describes what came instead.
pub async fn read_until<S>(
    stream: &mut S,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Result<Value, String>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let deadline = Instant::now() + within;
    loop {
        match read_by(stream, deadline).await {
            Read::Json(v) if want(&v) => return Ok(v),
            Read::Json(_) => continue,
            other => return Err(format!("{other:?}")),
        }
    }
}

/// Reads until the connection ends: `Ok(Some(code))` for a close frame,
/// `Ok(None)` for an end without one; `Err` if it stays open.
pub async fn read_to_end<S>(stream: &mut S, within: Duration) -> Result<Option<u16>, String>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let deadline = Instant::now() + within;
    loop {
        match read_by(stream, deadline).await {
            Read::Closed(code) => return Ok(code),
            Read::Ended(_) => return Ok(None),
            Read::TimedOut => return Err("still open".into()),
            Read::Json(_) | Read::NotJson(_) => continue,
        }
    }
}

/// Sends one text message within [`WAIT`].
pub async fn send_text<K>(sink: &mut K, text: String) -> Result<(), String>
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    match timeout(WAIT, sink.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send: {e}")),
        Err(_) => Err("send timed out".into()),
    }
}

/// Sends `v` as a text message within [`WAIT`].
pub async fn send<K>(sink: &mut K, v: &Value) -> Result<(), String>
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    send_text(sink, v.to_string()).await
}
