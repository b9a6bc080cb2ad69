//! Shared helpers for the integration tests: a real server on port 0 and real
//! WebSocket clients (tokio-tungstenite) that read with timeouts.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signal_server::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in this process on a loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(signal_server::server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// A client on `/webrtc`.
    pub async fn connect(&self) -> Client {
        self.connect_to("/webrtc").await
    }

    pub async fn connect_to(&self, path_and_query: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.url(path_and_query))
            .await
            .unwrap_or_else(|e| panic!("connect {path_and_query}: {e}"));
        Client { ws }
    }

    /// The HTTP status of a refused upgrade, or `None` if it was accepted.
    pub async fn upgrade_status(
        &self,
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Option<u16> {
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => None,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
            Err(e) => panic!("unexpected connect error: {e}"),
        }
    }

    /// A plain HTTP GET: (status, headers text, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
            .await
            .expect("response in time")
            .expect("read");
        let raw = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, head.to_string(), body.to_string())
    }

    /// The value of one unlabelled series in /metrics.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, _, body) = self.get("/metrics").await;
        series_value(&body, series).unwrap_or_else(|| panic!("no series {series} in:\n{body}"))
    }

    /// Waits until a metric reaches `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.metric(series).await;
            if v == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} stayed at {v}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.handle)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server result");
    }
}

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as a client saw it.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame with this code.
    Close(u16, String),
    /// The connection dropped without a close frame.
    Dropped,
}

impl Client {
    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(&value.to_string()).await;
    }

    /// The next text message, as raw text.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time");
            match next {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text message, parsed.
    pub async fn recv(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("server sent bad JSON {text}: {e}"))
    }

    /// The next message, which must be of `type`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    /// The next message, which must be an error with `code`.
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
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until the connection ends, skipping any text, and says how.
    pub async fn ended(&mut self) -> Ended {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the connection ends in time");
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return Ended::Close(u16::from(code), reason.to_string())
                }
                Some(Ok(Message::Close(None))) => return Ended::Close(1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }

    /// Asserts the server closes the connection with `code`.
    pub async fn expect_close(&mut self, code: u16) {
        match self.ended().await {
            Ended::Close(c, reason) => assert_eq!(c, code, "closed with {c} {reason:?}"),
            Ended::Dropped => panic!("expected close {code}, connection dropped"),
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        // Drain until the server's close reply.
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// A room's host and its tokens.
pub struct Room {
    pub host: Client,
    pub join: String,
    pub watch: String,
    pub resume: String,
    pub host_id: String,
}

/// Creates a room.
pub async fn room(server: &TestServer) -> Room {
    let mut host = server.connect().await;
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    let s = |k: &str| {
        init[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} in {init}"))
            .to_string()
    };
    Room {
        join: s("join"),
        watch: s("watch"),
        resume: s("resume"),
        host_id: s("peer"),
        host,
    }
}

/// Attaches a guest (`"join"`) or watcher (`"watch"`) with `token` and
/// consumes the host's `peer_joined`. Returns the client and its peer id.
pub async fn attach(server: &TestServer, room: &mut Room, role: &str) -> (Client, String) {
    let token = if role == "join" {
        &room.join
    } else {
        &room.watch
    };
    let mut c = server.connect().await;
    c.send_json(json!({"type": "init", role: token})).await;
    let init = c.recv_type("init").await;
    assert_eq!(init["role"], role);
    let id = init["peer"].as_str().expect("peer id").to_string();
    let joined = room.host.recv_type("peer_joined").await;
    assert_eq!(joined["peer"], id.as_str());
    assert_eq!(joined["role"], role);
    (c, id)
}

/// A short config for tests of timeouts.
pub fn quick_config() -> Config {
    Config {
        ping_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        host_grace: Duration::from_millis(500),
        ..Config::default()
    }
}

/// The value of `series` (with its labels, if any) in a Prometheus text
/// exposition, if present.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
