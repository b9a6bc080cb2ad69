//! Loopback connections: WebSocket clients spread over 127.0.0.x source
//! addresses, and a minimal HTTP GET for /healthz and /metrics.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Ws, Message>;
pub type Stream = SplitStream<Ws>;

/// Time allowed for any one step (a connect, an expected reply).
pub const STEP: Duration = Duration::from_secs(10);

/// Where clients connect from and to.
pub struct Net {
    pub server: SocketAddr,
    sources: Vec<Ipv4Addr>,
    next: AtomicUsize,
}

/// Why a WebSocket could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with this HTTP status.
    Http(u16),
    /// Anything else (timeout, refused, reset).
    Other(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Http(s) => write!(f, "HTTP {s}"),
            ConnectError::Other(e) => f.write_str(e),
        }
    }
}

impl Net {
    pub fn new(server: SocketAddr, sources: usize) -> Net {
        let sources = (0..sources.max(1))
            .map(|i| Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8))
            .collect();
        Net {
            server,
            sources,
            next: AtomicUsize::new(0),
        }
    }

    /// A TCP connection from the next source address. With `reset_on_drop`,
    /// dropping it sends RST instead of FIN (SO_LINGER 0).
    pub async fn tcp(&self, reset_on_drop: bool) -> Result<TcpStream, ConnectError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len();
        let socket =
            TcpSocket::new_v4().map_err(|e| ConnectError::Other(format!("socket: {e}")))?;
        socket
            .bind(SocketAddr::from((self.sources[i], 0)))
            .map_err(|e| ConnectError::Other(format!("bind {}: {e}", self.sources[i])))?;
        let tcp = timeout(STEP, socket.connect(self.server))
            .await
            .map_err(|_| ConnectError::Other("TCP connect timed out".into()))?
            .map_err(|e| ConnectError::Other(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if reset_on_drop {
            socket2::SockRef::from(&tcp)
                .set_linger(Some(Duration::ZERO))
                .map_err(|e| ConnectError::Other(format!("SO_LINGER: {e}")))?;
        }
        Ok(tcp)
    }

    /// A WebSocket at `path` (with its query string).
    pub async fn ws(&self, path: &str, reset_on_drop: bool) -> Result<Ws, ConnectError> {
        let tcp = self.tcp(reset_on_drop).await?;
        let url = format!("ws://{}{path}", self.server);
        let request = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(format!("request: {e}")))?;
        match timeout(STEP, tokio_tungstenite::client_async(request, tcp)).await {
            Err(_) => Err(ConnectError::Other("handshake timed out".into())),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(WsError::Http(resp))) => Err(ConnectError::Http(resp.status().as_u16())),
            Ok(Err(e)) => Err(ConnectError::Other(format!("handshake: {e}"))),
        }
    }
}

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

/// The next meaningful frame (pings, pongs and binary frames skipped).
pub async fn read(stream: &mut Stream, within: Duration) -> Read {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
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
pub async fn read_until(
    stream: &mut Stream,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read(stream, left).await {
            Read::Json(v) if want(&v) => return Ok(v),
            Read::Json(_) => continue,
            other => return Err(format!("{other:?}")),
        }
    }
}

/// Reads until the connection ends: `Ok(Some(code))` for a close frame,
/// `Ok(None)` for an end without one; `Err` if it stays open.
pub async fn read_to_end(stream: &mut Stream, within: Duration) -> Result<Option<u16>, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read(stream, left).await {
            Read::Closed(code) => return Ok(code),
            Read::Ended(_) => return Ok(None),
            Read::TimedOut => return Err("still open".into()),
            Read::Json(_) | Read::NotJson(_) => continue,
        }
    }
}

pub async fn send_text(sink: &mut Sink, text: String) -> Result<(), String> {
    match timeout(STEP, sink.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send: {e}")),
        Err(_) => Err("send timed out".into()),
    }
}

pub async fn send(sink: &mut Sink, v: &Value) -> Result<(), String> {
    send_text(sink, v.to_string()).await
}

/// `GET path` over HTTP/1.1: (status, body).
pub async fn http_get(server: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let work = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "no HTTP status line".to_string())?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        Ok((status, body))
    };
    timeout(STEP, work)
        .await
        .map_err(|_| "HTTP timed out".to_string())?
}

/// A random 16-character base64url string (token-shaped, never issued).
pub fn random_token(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..16)
        .map(|_| ALPHABET[(rng.next() % 64) as usize] as char)
        .collect()
}

/// A small xorshift generator: reproducible from `--seed`, and enough for
/// choosing what a client does.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}
