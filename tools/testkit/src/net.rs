//! Loopback networking: free ports, TCP connections from chosen 127/8
//! source addresses (so that per-client limits tell clients apart), and
//! WebSocket connections over them.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use crate::WAIT;

/// A free loopback TCP port: bound and released, for a server to bind next
/// (another process may take it in between; [`crate::Launch`] retries).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A free loopback UDP port, likewise.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0/udp");
    s.local_addr().expect("local addr").port()
}

/// Why a WebSocket could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl std::error::Error for ConnectError {}

/// A TCP connection to `to` from the loopback address `from` (any 127/8
/// address can be bound as a source), with `TCP_NODELAY`. With
/// `reset_on_drop`, dropping it sends RST instead of FIN (`SO_LINGER` 0).
pub async fn tcp_from(
    from: Ipv4Addr,
    to: SocketAddr,
    reset_on_drop: bool,
) -> Result<TcpStream, ConnectError> {
    let socket = TcpSocket::new_v4().map_err(|e| ConnectError::Other(format!("socket: {e}")))?;
    socket
        .bind(SocketAddr::from((from, 0)))
        .map_err(|e| ConnectError::Other(format!("bind {from}: {e}")))?;
    let tcp = timeout(WAIT, socket.connect(to))
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

/// The WebSocket handshake for `request` over `tcp`, within [`WAIT`].
pub async fn handshake<R, S>(request: R, tcp: S) -> Result<WebSocketStream<S>, ConnectError>
where
    R: IntoClientRequest + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout(WAIT, tokio_tungstenite::client_async(request, tcp)).await {
        Err(_) => Err(ConnectError::Other("handshake timed out".into())),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => Err(ConnectError::Http(resp.status().as_u16())),
        Ok(Err(e)) => Err(ConnectError::Other(format!("handshake: {e}"))),
    }
}

/// Where clients connect from and to: each new connection comes from the
/// next of `sources` loopback addresses (127.0.0.2, 127.0.0.3, ...).
pub struct Net {
    pub server: SocketAddr,
    sources: Vec<Ipv4Addr>,
    next: AtomicUsize,
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

    /// A TCP connection from the next source address (see [`tcp_from`]).
    pub async fn tcp(&self, reset_on_drop: bool) -> Result<TcpStream, ConnectError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len();
        tcp_from(self.sources[i], self.server, reset_on_drop).await
    }

    /// A WebSocket at `path` (with its query string), from the next
    /// source address.
    pub async fn ws(
        &self,
        path: &str,
        reset_on_drop: bool,
    ) -> Result<WebSocketStream<TcpStream>, ConnectError> {
        let tcp = self.tcp(reset_on_drop).await?;
        ws_over(tcp, self.server, path).await
    }
}

/// A WebSocket at `path` (with its query string) on `to`, from the
/// loopback address `from` (see [`tcp_from`]). [`crate::Client::open_from`]
/// is the same for a test's asserting client.
pub async fn ws_from(
    from: Ipv4Addr,
    to: SocketAddr,
    path: &str,
    reset_on_drop: bool,
) -> Result<WebSocketStream<TcpStream>, ConnectError> {
    let tcp = tcp_from(from, to, reset_on_drop).await?;
    ws_over(tcp, to, path).await
}

async fn ws_over(
    tcp: TcpStream,
    to: SocketAddr,
    path: &str,
) -> Result<WebSocketStream<TcpStream>, ConnectError> {
    let request = format!("ws://{to}{path}")
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("request: {e}")))?;
    handshake(request, tcp).await
}
