//! Just enough WebSocket for a client that reads slowly or not at all: a
//! TCP socket with a small receive buffer and a small segment size, masked
//! frames written by hand, frames parsed from what it chose to read.
//!
//! Loopback's segments are 64 KB, for which the kernel sizes the server's
//! send buffer in megabytes: with a 536-byte MSS and a receive buffer of a
//! few KiB, what the client leaves unread stays in the server's queues (where
//! its limits can see it), not in the kernel's. [`crate::Client`] is the
//! client for everyone else.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::WAIT;

/// The opcodes these clients send and read.
pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The segment size of a raw client's socket.
pub const MSS: u32 = 536;

/// A frame from the server: opcode and payload.
pub type Frame = (u8, Vec<u8>);

/// An upgrade request for `path` (with its query string), as a browser
/// sends it, to write on a socket of the caller's.
pub fn upgrade_request(host: impl Display, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// A raw WebSocket client (see the module's documentation).
pub struct RawClient {
    tcp: TcpStream,
    /// What has been read and not yet parsed into frames.
    buf: Vec<u8>,
}

/// A room created by a [`RawClient`] host: its tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub join: String,
    pub watch: String,
    pub resume: String,
}

/// What [`RawClient::read_slowly`] has read so far, for others to wait on.
#[derive(Debug, Default)]
pub struct SlowReads {
    /// Honest messages (`"honest":true`) read, each once and in order.
    pub honest: AtomicU64,
    /// `peer_joined` and `peer_left` events read.
    pub presence: AtomicU64,
}

/// What a slow reader read in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowRead {
    pub bytes: u64,
    pub honest: u64,
    pub presence: u64,
}

/// Takes a whole frame off the front of `buf`, if there is one.
fn parse(buf: &mut Vec<u8>) -> Option<Frame> {
    let b = &buf[..];
    if b.len() < 2 {
        return None;
    }
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return None;
    }
    let frame = (b[0] & 0x0f, b[at..at + len].to_vec());
    buf.drain(..at + len);
    Some(frame)
}

impl RawClient {
    /// Upgrades `path` on `server` over a socket with a receive buffer of
    /// `rcvbuf` bytes and an MSS of [`MSS`], within [`WAIT`]; `Err` when the
    /// server does not answer 101.
    pub async fn connect(server: SocketAddr, path: &str, rcvbuf: u32) -> Result<RawClient, String> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_recv_buffer_size(rcvbuf as usize)
            .and_then(|()| socket.set_tcp_mss(MSS))
            .and_then(|()| socket.set_nonblocking(true))
            .map_err(|e| format!("socket options: {e}"))?;
        let socket = TcpSocket::from_std_stream(socket.into());
        let mut tcp = timeout(WAIT, socket.connect(server))
            .await
            .map_err(|_| "TCP connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(upgrade_request(server, path).as_bytes())
            .await
            .map_err(|e| format!("upgrade request: {e}"))?;
        let mut buf = Vec::new();
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = timeout(WAIT, tcp.read(&mut chunk))
                .await
                .map_err(|_| "no upgrade response in time".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed during the handshake".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            return Err(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        buf.drain(..end);
        Ok(RawClient { tcp, buf })
    }

    /// Creates a room on `server` (`init` on `/webrtc`): the host, whose
    /// frames after the reply are the caller's, and the room's tokens.
    pub async fn host(server: SocketAddr, rcvbuf: u32) -> Result<(RawClient, Tokens), String> {
        let mut raw = RawClient::connect(server, "/webrtc", rcvbuf).await?;
        raw.send_frame(TEXT, br#"{"type":"init"}"#)
            .await
            .map_err(|e| format!("init: {e}"))?;
        let reply = raw.recv_json(WAIT).await?;
        if reply["role"] != "host" {
            return Err(format!("init answered {reply}"));
        }
        let token = |k: &str| {
            reply[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("no {k} in {reply}"))
        };
        let tokens = Tokens {
            join: token("join")?,
            watch: token("watch")?,
            resume: token("resume")?,
        };
        Ok((raw, tokens))
    }

    /// Writes one masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&out).await
    }

    /// Writes `v` as a text frame.
    pub async fn send_json(&mut self, v: &Value) -> std::io::Result<()> {
        self.send_frame(TEXT, v.to_string().as_bytes()).await
    }

    /// Reads at most `max` bytes (waiting up to `within`); the bytes read
    /// and the frames they complete. `Err` when the connection has ended.
    pub async fn read_some(
        &mut self,
        max: usize,
        within: Duration,
    ) -> Result<(usize, Vec<Frame>), String> {
        let mut chunk = vec![0u8; max.max(1)];
        let n = match timeout(within, self.tcp.read(&mut chunk)).await {
            Err(_) => 0,
            Ok(Ok(0)) => return Err("connection closed".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
        };
        self.buf.extend_from_slice(&chunk[..n]);
        let mut frames = Vec::new();
        while let Some(f) = parse(&mut self.buf) {
            frames.push(f);
        }
        Ok((n, frames))
    }

    /// The next text message within `within`, as JSON (other frames
    /// skipped).
    pub async fn recv_json(&mut self, within: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no text message within {within:?}"));
            }
            for (op, payload) in self.read_some(16 * 1024, left).await?.1 {
                if op == TEXT {
                    return serde_json::from_slice(&payload).map_err(|e| format!("JSON: {e}"));
                }
            }
        }
    }

    /// Reads at about `bytes_per_sec`, as a host on a slow uplink does,
    /// until `stop`: answers the server's pings, pings it once a second, and
    /// checks that the honest guest's numbered messages (`"honest":true`,
    /// `"seq"`) arrive once and in order, publishing its counts in `seen`.
    /// `Err` says why the host failed: it was sent a close frame, its
    /// connection ended, or an honest message was lost, repeated or
    /// reordered.
    pub async fn read_slowly(
        mut self,
        bytes_per_sec: usize,
        stop: Arc<AtomicBool>,
        seen: Arc<SlowReads>,
    ) -> Result<SlowRead, String> {
        let per_tick = bytes_per_sec / 100;
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        let mut read = SlowRead {
            bytes: 0,
            honest: 0,
            presence: 0,
        };
        let mut last_ping = Instant::now();
        while !stop.load(Ordering::Acquire) {
            pace.tick().await;
            let (n, frames) = self.read_some(per_tick, Duration::from_millis(1)).await?;
            read.bytes += n as u64;
            for (op, payload) in frames {
                match op {
                    TEXT => {
                        let v: Value =
                            serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                        if v["type"] == "peer_joined" || v["type"] == "peer_left" {
                            read.presence += 1;
                            seen.presence.store(read.presence, Ordering::Release);
                        }
                        if v["honest"] == true {
                            if v["seq"] != read.honest {
                                return Err(format!(
                                    "honest seq {} expected {}",
                                    v["seq"], read.honest
                                ));
                            }
                            read.honest += 1;
                            seen.honest.store(read.honest, Ordering::Release);
                        }
                    }
                    PING => self
                        .send_frame(PONG, &payload)
                        .await
                        .map_err(|e| e.to_string())?,
                    CLOSE => return Err("the host was sent a close frame".into()),
                    _ => {}
                }
            }
            if last_ping.elapsed() > Duration::from_secs(1) {
                last_ping = Instant::now();
                self.send_frame(PING, b"alive")
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(read)
    }

    /// Never reads again: pings every `every` (so that the server keeps the
    /// connection) until a write fails. Spawn it; it ends when the server
    /// has dropped the connection.
    pub async fn keep_alive_without_reading(mut self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if self.send_frame(PING, b"still here").await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_every_length_form_are_parsed_once_complete() {
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend_from_slice(&[b'a'; 256]);
        let mut buf = vec![0x89, 2, b'h', b'i'];
        buf.extend_from_slice(&long[..100]);
        assert_eq!(parse(&mut buf), Some((PING, b"hi".to_vec())));
        // The 256-byte frame is not whole yet.
        assert_eq!(parse(&mut buf), None);
        buf.extend_from_slice(&long[100..]);
        assert_eq!(parse(&mut buf), Some((TEXT, vec![b'a'; 256])));
        assert!(buf.is_empty());
        let mut huge = vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(parse(&mut huge), None, "a 64 KiB frame with no payload yet");
    }
}
