//! A client that floods: sends one message over and over at a steady pace
//! until the server ends its connection, counting the refusals it gets
//! (`host_busy`, `rate_limited`) and how it was closed. What a test
//! asserts on, and what a load generator checks.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What a flooding client saw.
#[derive(Debug, Clone, Default)]
pub struct Flooded {
    /// Messages sent.
    pub sent: u64,
    /// `{"type":"error","code":"host_busy"}` replies.
    pub host_busy: u32,
    /// `{"type":"error","code":"rate_limited"}` replies.
    pub rate_limited: u32,
    /// Whether the connection ended (a close frame, a failed send or read,
    /// the end of the stream) before the time was up.
    pub ended: bool,
    /// The close frame's code and reason, if it ended with one.
    pub close: Option<(u16, String)>,
}

impl Flooded {
    /// The close frame's code, if it ended with one.
    pub fn close_code(&self) -> Option<u16> {
        self.close.as_ref().map(|c| c.0)
    }
}

/// Sends `text` every `every` until the connection ends or `limit` passes;
/// between sends, reads what has come without waiting for more.
pub async fn flood<W>(ws: &mut W, text: &str, every: Duration, limit: Duration) -> Flooded
where
    W: Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut seen = Flooded::default();
    let deadline = Instant::now() + limit;
    let mut pace = tokio::time::interval(every);
    while Instant::now() < deadline {
        pace.tick().await;
        if ws.send(Message::text(text.to_string())).await.is_err() {
            seen.ended = true;
            return seen;
        }
        seen.sent += 1;
        while let Ok(frame) = timeout(Duration::ZERO, ws.next()).await {
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v["code"].as_str() {
                        Some("host_busy") => seen.host_busy += 1,
                        Some("rate_limited") => seen.rate_limited += 1,
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    seen.ended = true;
                    seen.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return seen;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    seen.ended = true;
                    return seen;
                }
            }
        }
    }
    seen
}
