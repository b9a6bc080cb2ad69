//! A plain HTTP/1.1 GET (`Connection: close`), for `/healthz`, `/metrics`
//! and the static files: no client library between the test and the
//! server's own bytes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::net::tcp_from;
use crate::WAIT;

/// One response, as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    pub body: String,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` from `addr`, within [`WAIT`].
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let exchange = async {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        exchange(s, addr, path).await
    };
    timeout(WAIT, exchange)
        .await
        .map_err(|_| format!("no answer to GET {path} within {WAIT:?}"))?
}

/// `GET path` from `addr` over a connection from the loopback address
/// `from` (so that per-client limits count it as that client's), within
/// `within`.
pub async fn get_from(
    from: Ipv4Addr,
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Result<Response, String> {
    let exchange = async {
        let s = tcp_from(from, addr, false)
            .await
            .map_err(|e| e.to_string())?;
        exchange(s, addr, path).await
    };
    timeout(within, exchange)
        .await
        .map_err(|_| format!("no answer to GET {path} within {within:?}"))?
}

async fn exchange(mut s: TcpStream, addr: SocketAddr, path: &str) -> Result<Response, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    parse(&String::from_utf8_lossy(&raw))
}

/// `GET path`: (status, body), as the tools report them.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    get(addr, path).await.map(|r| (r.status, r.body))
}

/// A response as read off the wire (status line, headers, body).
pub fn parse(raw: &str) -> Result<Response, String> {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status line in {raw:?}"))?;
    Ok(Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}
