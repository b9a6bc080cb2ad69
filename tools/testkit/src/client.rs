//! The WebSocket client of the tests (tokio-tungstenite): every read is
//! bounded by [`WAIT`], and every method asserts what it expects, saying what
//! came instead.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::net::{handshake, tcp_from, ConnectError};
use crate::WAIT;

/// The stream of a [`Client`].
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The request for `url` with extra headers.
fn request_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("request: {e}")))?;
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| ConnectError::Other(format!("header {k}: {e}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|e| ConnectError::Other(format!("header {k}: {e}")))?;
        request.headers_mut().insert(name, value);
    }
    Ok(request)
}

/// A WebSocket client.
pub struct Client {
    pub ws: WsStream,
}

/// How a connection ended, as a client saw it.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// The connection dropped without a close frame.
    Dropped,
}

impl Client {
    /// Connects to `url`; panics, naming it, when that fails.
    pub async fn connect(url: &str) -> Client {
        Client::open(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Opens a WebSocket for `request` (a URL, or a request with headers of
    /// its own), within [`WAIT`]; an HTTP refusal is
    /// [`ConnectError::Http`].
    pub async fn open<R: IntoClientRequest + Unpin>(request: R) -> Result<Client, ConnectError> {
        let request = request
            .into_client_request()
            .map_err(|e| ConnectError::Other(format!("request: {e}")))?;
        let host = request
            .uri()
            .authority()
            .ok_or_else(|| ConnectError::Other("a URL without a host".into()))?
            .to_string();
        let tcp = timeout(WAIT, TcpStream::connect(host))
            .await
            .map_err(|_| ConnectError::Other("TCP connect timed out".into()))?
            .map_err(|e| ConnectError::Other(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        Client::over(request, tcp).await
    }

    /// [`Client::open`] with extra request headers (`Origin`, ...).
    pub async fn open_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, ConnectError> {
        Client::open(request_with(url, headers)?).await
    }

    /// [`Client::open_with`] over a connection from the loopback address
    /// `from` (any 127/8 address), so that the server's per-client limits
    /// count it as that client's.
    pub async fn open_from(
        from: Ipv4Addr,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, ConnectError> {
        let request = request_with(url, headers)?;
        let to: SocketAddr = request
            .uri()
            .authority()
            .and_then(|a| a.as_str().parse().ok())
            .ok_or_else(|| ConnectError::Other(format!("{url} is not at an IP address")))?;
        let tcp = tcp_from(from, to, false).await?;
        Client::over(request, tcp).await
    }

    /// [`Client::open_from`], panicking (naming the URL) when that fails.
    pub async fn connect_from(from: Ipv4Addr, url: &str) -> Client {
        Client::open_from(from, url, &[])
            .await
            .unwrap_or_else(|e| panic!("connect {url} from {from}: {e}"))
    }

    /// The handshake for `request` over a TCP connection of the caller's.
    pub async fn over<R: IntoClientRequest + Unpin>(
        request: R,
        tcp: TcpStream,
    ) -> Result<Client, ConnectError> {
        let ws = handshake(request, MaybeTlsStream::Plain(tcp)).await?;
        Ok(Client { ws })
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(&value.to_string()).await;
    }

    /// The next text message within `within`, as raw text (pings and
    /// pongs skipped).
    pub async fn recv_text_within(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let next = timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {within:?}"));
            match next {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text message, as raw text.
    pub async fn recv_text(&mut self) -> String {
        self.recv_text_within(WAIT).await
    }

    /// The next text message within `within`, parsed.
    pub async fn recv_within(&mut self, within: Duration) -> Value {
        let text = self.recv_text_within(within).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("server sent bad JSON {text}: {e}"))
    }

    /// The next text message, parsed.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(WAIT).await
    }

    /// The next message, which must be of `type`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    /// The next message of `type`, skipping any other.
    pub async fn skip_to(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self
                .recv_within(deadline.saturating_duration_since(Instant::now()))
                .await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// The next message, which must be an error with `code` and a message.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], "error", "expected error {code}, got {v}");
        assert_eq!(v["code"], code, "expected error {code}, got {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without message: {v}"
        );
        v
    }

    /// Asserts that no text message arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            match timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until the connection ends, skipping any text, and says how;
    /// `None` if it is still open after `within`.
    pub async fn ended_within(&mut self, within: Duration) -> Option<Ended> {
        let deadline = Instant::now() + within;
        loop {
            let next = timeout_at(deadline, self.ws.next()).await.ok()?;
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return Some(Ended::Close(u16::from(code), reason.to_string()))
                }
                Some(Ok(Message::Close(None))) => return Some(Ended::Close(1005, String::new())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Ended::Dropped),
            }
        }
    }

    /// Reads until the connection ends, skipping any text, and says how.
    pub async fn ended(&mut self) -> Ended {
        self.ended_within(WAIT)
            .await
            .expect("the connection ends in time")
    }

    /// Asserts the server closes the connection with `code`.
    pub async fn expect_close(&mut self, code: u16) {
        match self.ended().await {
            Ended::Close(c, reason) => assert_eq!(c, code, "closed with {c} {reason:?}"),
            Ended::Dropped => panic!("expected close {code}, connection dropped"),
        }
    }

    /// Closes with 1000 and waits for the server's close reply.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        // Drain until the server's close reply.
        let _ = timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}
