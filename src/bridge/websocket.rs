//! The bridge's WebSocket client, for both of its sides (the signalling
//! server, and webrtc_ros for each viewer): URL checks, TLS, connecting with a
//! deadline, a bounded outbox that never waits, and one writer task per
//! connection that drains it.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::error::{BridgeError, UrlError};

/// A client WebSocket connection, over TLS for `wss://`.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Parses the URL given as `option`.
pub fn parse_url(option: &'static str, url: &str) -> Result<Uri, BridgeError> {
    url.parse()
        .map_err(|e: tungstenite::http::uri::InvalidUri| {
            BridgeError::bad_url(option, url, UrlError::Unparsable(e.to_string()))
        })
}

/// Checks a WebSocket URL given as `option`: `ws://` or `wss://` with a host.
pub fn check_url(option: &'static str, url: &str) -> Result<Uri, BridgeError> {
    let uri = parse_url(option, url)?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(BridgeError::bad_url(
            option,
            url,
            UrlError::Scheme("ws:// or wss://"),
        ));
    }
    if uri.host().map_or(true, str::is_empty) {
        return Err(BridgeError::bad_url(option, url, UrlError::NoHost));
    }
    Ok(uri)
}

/// TLS for `wss://` URLs: rustls with the bundled web PKI roots (no system
/// certificate store needed on the robot), and the CAs of `ca_file`
/// (`--ca-file`) if given.
pub fn tls_connector(ca_file: Option<&Path>) -> Result<Connector, BridgeError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |why: String| BridgeError::CaFile {
            path: path.to_path_buf(),
            why,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|c| c.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(e.to_string()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(bad("no CA certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(BridgeError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// No WebSocket within the deadline.
    Timeout(Duration),
    /// The TCP connection, TLS or the handshake failed.
    Failed(tungstenite::Error),
    /// A robot URL led to a signal-server (its upgrade's `Server` header).
    SignalServer,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Timeout(t) => write!(f, "no answer within {t:?}"),
            ConnectError::Failed(e) => e.fmt(f),
            ConnectError::SignalServer => f.write_str(
                "this is a signal-server, not webrtc_ros: check --robot (the server's default \
                 port 9090 is also webrtc_ros's)",
            ),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Opens a WebSocket connection to `url` (already checked), within `timeout`.
pub async fn connect(
    url: &str,
    connector: &Connector,
    timeout: Duration,
) -> Result<Socket, ConnectError> {
    open(url, connector, timeout)
        .await
        .map(|(socket, _)| socket)
}

/// [`connect`] for a robot URL: a signal-server answering (its `Server`
/// header says so) is [`ConnectError::SignalServer`].
pub async fn connect_robot(
    url: &str,
    connector: &Connector,
    timeout: Duration,
) -> Result<Socket, ConnectError> {
    let (socket, response) = open(url, connector, timeout).await?;
    let server = response.headers().get(header::SERVER);
    if server.is_some_and(|s| s.as_bytes().starts_with(b"signal-server/")) {
        return Err(ConnectError::SignalServer);
    }
    Ok(socket)
}

async fn open(
    url: &str,
    connector: &Connector,
    timeout: Duration,
) -> Result<(Socket, tungstenite::handshake::client::Response), ConnectError> {
    let mut request = url.into_client_request().map_err(ConnectError::Failed)?;
    request.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("signal-server-bridge/", env!("CARGO_PKG_VERSION"))),
    );
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        Some(connector.clone()),
    );
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(ConnectError::Timeout(timeout)),
        Ok(Err(e)) => Err(ConnectError::Failed(e)),
        Ok(Ok(done)) => Ok(done),
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The outbox is full: the other side is not reading.
    Full,
    /// The writer has stopped (the connection is over).
    Gone,
}

/// The sending end of a connection's bounded queue: queuing never waits.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Message>,
}

/// The writer's end of an [`Outbox`].
pub type Queue = mpsc::Receiver<Message>;

impl Outbox {
    /// A new outbox holding up to `capacity` messages, and its queue.
    pub fn new(capacity: usize) -> (Outbox, Queue) {
        let (tx, rx) = mpsc::channel(capacity);
        (Outbox { tx }, rx)
    }

    /// Queues `message` without waiting.
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        self.tx.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Gone,
        })
    }
}

/// How a writer task writes and ends.
pub struct WriterOptions {
    /// Messages written per flush, at most.
    pub batch: usize,
    /// The close frame sent when the writer ends (its queue has ended, or
    /// `until` completed).
    pub farewell: CloseFrame,
}

/// Spawns the one task that writes to a connection: it drains `queue` into
/// `sink`, up to `batch` messages per flush, until every [`Outbox`] is gone
/// (what was queued is written first) or `until` completes (what was queued is
/// dropped), then sends the farewell close frame. It ends early with the
/// error when a write fails.
pub fn spawn_writer(
    sink: SplitSink<Socket, Message>,
    queue: Queue,
    options: WriterOptions,
    until: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), tungstenite::Error>> {
    tokio::spawn(write(sink, queue, options, until))
}

async fn write(
    mut sink: SplitSink<Socket, Message>,
    mut queue: Queue,
    options: WriterOptions,
    until: impl Future<Output = ()>,
) -> Result<(), tungstenite::Error> {
    tokio::pin!(until);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut until => break,
            next = queue.recv() => match next {
                Some(message) => message,
                None => break,
            },
        };
        sink.feed(first).await?;
        for _ in 1..options.batch {
            match queue.try_recv() {
                Ok(message) => sink.feed(message).await?,
                Err(_) => break,
            }
        }
        sink.flush().await?;
    }
    let close = sink.send(Message::Close(Some(options.farewell)));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_and_server_urls_are_checked() {
        assert!(check_url("--robot", "ws://127.0.0.1:9090/webrtc").is_ok());
        assert!(check_url("--robot", "wss://robot.local/webrtc").is_ok());
        let err = check_url("--robot", "http://127.0.0.1:9090/webrtc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bridge: --robot must start with ws:// or wss://, not \"http://127.0.0.1:9090/webrtc\""
        );
        assert!(check_url("--robot", "127.0.0.1:9090").is_err());
        assert!(check_url("--server", "ws:///webrtc").is_err());
    }

    #[test]
    fn tls_is_set_up_with_bundled_roots() {
        assert!(matches!(tls_connector(None), Ok(Connector::Rustls(_))));
        let missing = tls_connector(Some(Path::new("/nonexistent/ca.pem")));
        assert!(matches!(missing, Err(BridgeError::CaFile { .. })));
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
    }

    #[test]
    fn an_outbox_never_waits() {
        let (outbox, queue) = Outbox::new(1);
        assert_eq!(outbox.try_send(Message::text("a")), Ok(()));
        assert_eq!(outbox.try_send(Message::text("b")), Err(SendError::Full));
        drop(queue);
        assert_eq!(outbox.try_send(Message::text("c")), Err(SendError::Gone));
    }
}
