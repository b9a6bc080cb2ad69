//! One viewer's own WebSocket connection to webrtc_ros.
//!
//! webrtc_ros makes one WebRTC peer connection per WebSocket connection, so
//! every viewer gets a connection of its own, opened when its first
//! `configure` arrives and closed when it leaves (webrtc_ros then tears the
//! peer connection down). Each runs as its own task: the task connects, a
//! writer task drains the viewer's bounded outbox into the socket, the task
//! reads webrtc_ros's messages and hands them to the bridge, and teardown is
//! one `select!` over the reasons the connection ends.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

/// Messages queued for one robot connection before it counts as stuck.
pub const OUTBOX_CAPACITY: usize = 256;
/// Messages written per flush.
const WRITE_BATCH: usize = 32;
/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type RobotSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a robot connection tells the bridge.
#[derive(Debug)]
pub enum RobotEvent {
    /// webrtc_ros sent a text message for the viewer.
    Message {
        /// The viewer.
        peer: Arc<str>,
        /// The session it came from.
        session: u64,
        /// The message as webrtc_ros wrote it.
        text: String,
    },
    /// The connection is over.
    Closed {
        /// The viewer.
        peer: Arc<str>,
        /// The session that ended.
        session: u64,
        /// Why.
        why: Ended,
    },
}

/// Why a robot connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The bridge closed it (the viewer left, was replaced, or shutdown).
    Closed,
    /// It could not be opened.
    ConnectFailed(String),
    /// webrtc_ros closed it or the connection dropped.
    RobotClosed(String),
    /// The bridge's event queue is gone (the bridge is stopping).
    BridgeGone,
}

impl Ended {
    /// Whether the viewer should be told the robot is unavailable.
    pub fn is_failure(&self) -> bool {
        matches!(self, Ended::ConnectFailed(_) | Ended::RobotClosed(_))
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Closed => f.write_str("closed by the bridge"),
            Ended::ConnectFailed(e) => write!(f, "could not connect to webrtc_ros: {e}"),
            Ended::RobotClosed(e) => write!(f, "webrtc_ros connection ended: {e}"),
            Ended::BridgeGone => f.write_str("the bridge is stopping"),
        }
    }
}

/// Why a message could not be queued for the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The outbox is full: webrtc_ros is not reading.
    Full,
    /// The connection has already ended (its `Closed` event is on its way).
    Gone,
}

/// The bridge's handle on one robot connection.
#[derive(Debug)]
pub struct Session {
    /// Unique among this bridge's sessions.
    pub id: u64,
    /// The bridge's room generation the session was opened in (see
    /// `Bridge::generation`).
    pub generation: u64,
    tx: mpsc::Sender<String>,
    cancel: CancellationToken,
}

impl Session {
    /// Queues a message for webrtc_ros without waiting.
    pub fn send(&self, text: String) -> Result<(), SendError> {
        self.tx.try_send(text).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Gone,
        })
    }

    /// Closes the robot connection (a close frame, then the socket).
    pub fn close(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What a new session needs.
pub struct Open {
    /// The viewer's peer id.
    pub peer: Arc<str>,
    /// The session id.
    pub id: u64,
    /// The bridge's room generation.
    pub generation: u64,
    /// webrtc_ros's URL.
    pub url: String,
    /// TLS settings for a `wss://` robot URL.
    pub connector: tokio_tungstenite::Connector,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// The first message (the viewer's `configure`).
    pub first: String,
    /// Where the session reports.
    pub events: mpsc::Sender<RobotEvent>,
}

/// Opens a robot connection for a viewer, in its own task.
pub fn spawn(tracker: &TaskTracker, open: Open) -> Session {
    let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
    let cancel = CancellationToken::new();
    // The first message cannot fail: the outbox is new and empty.
    let _ = tx.try_send(open.first.clone());
    let session = Session {
        id: open.id,
        generation: open.generation,
        tx,
        cancel: cancel.clone(),
    };
    // A root span: the task outlives whatever span spawned it.
    let span = info_span!(parent: None, "viewer", peer = %open.peer, session = open.id);
    tracker.spawn(run(open, rx, cancel).instrument(span));
    session
}

async fn run(open: Open, rx: mpsc::Receiver<String>, cancel: CancellationToken) {
    let Open {
        peer,
        id,
        url,
        connector,
        connect_timeout,
        events,
        ..
    } = open;
    let why = tokio::select! {
        biased;
        _ = cancel.cancelled() => Ended::Closed,
        connected = tokio::time::timeout(connect_timeout, connect(&url, connector)) => match connected {
            Err(_) => Ended::ConnectFailed(format!("no answer within {connect_timeout:?}")),
            Ok(Err(e)) => Ended::ConnectFailed(e),
            Ok(Ok(socket)) => {
                info!("robot connection open");
                relay(socket, rx, &peer, id, &events, &cancel).await
            }
        },
    };
    match &why {
        Ended::Closed | Ended::BridgeGone => info!("robot connection closed: {why}"),
        _ => warn!("{why}"),
    }
    let event = RobotEvent::Closed {
        peer,
        session: id,
        why,
    };
    // The bridge may be stopping and no longer reading: never wait for it here.
    if let Err(mpsc::error::TrySendError::Full(event)) = events.try_send(event) {
        // Rare (the queue is full): hand the event over from a task of its own
        // so that the bridge still learns of the failure.
        tokio::spawn(async move {
            let _ = events.send(event).await;
        });
    }
}

async fn connect(
    url: &str,
    connector: tokio_tungstenite::Connector,
) -> Result<RobotSocket, String> {
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector))
            .await
            .map_err(|e| e.to_string())?;
    Ok(socket)
}

async fn relay(
    socket: RobotSocket,
    rx: mpsc::Receiver<String>,
    peer: &Arc<str>,
    id: u64,
    events: &mpsc::Sender<RobotEvent>,
    cancel: &CancellationToken,
) -> Ended {
    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(sink, rx, cancel.clone()));
    let why = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ended::Closed,
            done = &mut writer => {
                break match done {
                    Ok(Err(e)) => Ended::RobotClosed(format!("write failed: {e}")),
                    _ => Ended::RobotClosed("writer stopped".into()),
                };
            }
            frame = stream.next() => match frame {
                None => break Ended::RobotClosed("connection closed".into()),
                Some(Err(e)) => break Ended::RobotClosed(e.to_string()),
                Some(Ok(Message::Text(text))) => {
                    let event = RobotEvent::Message {
                        peer: Arc::clone(peer),
                        session: id,
                        text: text.as_str().to_string(),
                    };
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break Ended::Closed,
                        sent = events.send(event) => if sent.is_err() {
                            break Ended::BridgeGone;
                        },
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break Ended::RobotClosed(match frame {
                        Some(f) => format!("closed by webrtc_ros ({} {})", u16::from(f.code), f.reason),
                        None => "closed by webrtc_ros".into(),
                    });
                }
                Some(Ok(Message::Binary(_))) => debug!("ignoring a binary frame from webrtc_ros"),
                // Pings are answered by the library while reading.
                Some(Ok(_)) => {}
            },
        }
    };
    if why == Ended::Closed {
        // The writer sees the cancellation too and sends the close frame.
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    } else {
        writer.abort();
    }
    why
}

async fn write_loop(
    mut sink: SplitSink<RobotSocket, Message>,
    mut rx: mpsc::Receiver<String>,
    cancel: CancellationToken,
) -> Result<(), String> {
    loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            next = rx.recv() => match next {
                Some(text) => text,
                None => break,
            },
        };
        sink.feed(Message::text(first))
            .await
            .map_err(|e| e.to_string())?;
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Ok(text) => sink
                    .feed(Message::text(text))
                    .await
                    .map_err(|e| e.to_string())?,
                Err(_) => break,
            }
        }
        sink.flush().await.map_err(|e| e.to_string())?;
    }
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "viewer left".into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    Ok(())
}
