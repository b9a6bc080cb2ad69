//! Helpers of the admin API tests: a server with an admin key, and plain
//! HTTP/1.1 requests of any method with headers and a body, read off the
//! wire (no client library between the test and the server's bytes).

#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{TestServer, WAIT};
use signal_server::admin::AdminKey;
use signal_server::config::Config;

/// The admin key of the tests' servers.
pub const KEY: &str = "test-admin-key-0123456789";

/// A config with the admin API on.
pub fn admin_config() -> Config {
    Config {
        admin_key: Some(AdminKey::new(KEY).expect("key")),
        ..Config::default()
    }
}

/// A server with the admin API on.
pub async fn admin_server() -> TestServer {
    TestServer::with_config(admin_config()).await
}

/// One response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Status line and headers, lower-cased.
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The `{"error":{"code":..}}` of an error reply, checked to have a
    /// message too.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find(|l| l.starts_with(&name))
            .map(|l| l[name.len()..].trim())
    }
}

/// `METHOD path` with `headers` and `body`, `Connection: close`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        let raw = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {raw:?}"));
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    };
    timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {path} within {WAIT:?}"))
}

/// `method path` with the admin key.
pub async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let bearer = format!("Bearer {KEY}");
    request(addr, method, path, &[("Authorization", &bearer)], body).await
}

/// An open Server-Sent Events stream.
pub struct Events {
    reader: BufReader<TcpStream>,
    pub head: String,
}

impl Events {
    /// `GET path` with `headers`; panics unless it answers 200
    /// `text/event-stream`.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Events {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            timeout(WAIT, reader.read_line(&mut line))
                .await
                .expect("head in time")
                .expect("read head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        Events { reader, head }
    }

    /// The next event's (name, data), skipping comments (keep-alives) and
    /// chunk-size lines of the chunked body.
    pub async fn next(&mut self) -> (String, String) {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("an event in time")
                .expect("read event");
            assert!(n > 0, "the stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !name.is_empty() {
                return (name, data);
            }
        }
    }

    /// The next `fleet` event's view.
    pub async fn fleet(&mut self) -> Value {
        let (name, data) = self.next().await;
        assert_eq!(name, "fleet");
        serde_json::from_str(&data).expect("fleet JSON")
    }

    /// Fleet events until one satisfies `pred` (within [`WAIT`] each).
    pub async fn fleet_until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = timeout(deadline - tokio::time::Instant::now(), self.fleet())
                .await
                .expect("the fleet event awaited, in time");
            if pred(&v) {
                return v;
            }
        }
    }
}
