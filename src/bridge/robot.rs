//! One viewer's own WebSocket connection to webrtc_ros.
//!
//! webrtc_ros makes one WebRTC peer connection per WebSocket connection, so
//! every viewer gets a connection of its own, opened when its first
//! `configure` arrives and closed when it leaves (webrtc_ros then tears the
//! peer connection down). Each runs as its own task: the task connects, the
//! connection's writer task drains the viewer's bounded outbox into the
//! socket, the task reads webrtc_ros's messages and hands them to the bridge,
//! and teardown is one `select!` over the reasons the connection ends.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::websocket::{self, Outbox, Queue, SendError, Socket, WriterOptions};

/// Messages queued for one robot connection before it counts as stuck.
pub const OUTBOX_CAPACITY: usize = 256;
/// Messages written per flush.
const WRITE_BATCH: usize = 32;
/// How long the writer may take to send its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a robot connection tells the bridge.
#[derive(Debug)]
pub enum RobotEvent {
    /// webrtc_ros sent a text message for the viewer.
    Message {
        /// The viewer.
        peer: Arc<str>,
        /// The robot link it came from ([`RobotLink::id`]).
        link: u64,
        /// The message as webrtc_ros wrote it.
        text: String,
    },
    /// The connection is over.
    Closed {
        /// The viewer.
        peer: Arc<str>,
        /// The robot link that ended.
        link: u64,
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

/// The bridge's handle on one robot connection: queuing never waits, and
/// dropping it closes the connection.
#[derive(Debug)]
pub struct RobotLink {
    /// Unique among this bridge's robot links.
    pub id: u64,
    /// The bridge's room generation the link was opened in (see
    /// `Viewers::generation`).
    pub generation: u64,
    outbox: Outbox,
    cancel: CancellationToken,
}

impl RobotLink {
    /// Queues a message for webrtc_ros without waiting.
    pub fn send(&self, text: String) -> Result<(), SendError> {
        self.outbox.try_send(Message::text(text))
    }

    /// Closes the robot connection (a close frame, then the socket).
    pub fn close(&self) {
        self.cancel.cancel();
    }
}

impl Drop for RobotLink {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The robot's webrtc_ros: where robot links are opened, and where they
/// report.
pub struct Robot {
    url: String,
    connector: Connector,
    connect_timeout: Duration,
    events: mpsc::Sender<RobotEvent>,
    tracker: TaskTracker,
}

impl Robot {
    /// webrtc_ros at `url` (already checked); links report on `events`.
    pub fn new(
        url: String,
        connector: Connector,
        connect_timeout: Duration,
        events: mpsc::Sender<RobotEvent>,
    ) -> Self {
        Robot {
            url,
            connector,
            connect_timeout,
            events,
            tracker: TaskTracker::new(),
        }
    }

    /// The URL of webrtc_ros.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a robot connection for viewer `peer`, in its own task, with
    /// `first` (the viewer's `configure`) as its first message.
    pub fn open(&self, peer: Arc<str>, id: u64, generation: u64, first: String) -> RobotLink {
        let (outbox, queue) = Outbox::new(OUTBOX_CAPACITY);
        // The first message cannot fail: the outbox is new and empty.
        let _ = outbox.try_send(Message::text(first));
        let cancel = CancellationToken::new();
        // A root span: the task outlives whatever span spawned it.
        let span = info_span!(parent: None, "viewer", peer = %peer, link = id);
        let task = Task {
            peer,
            id,
            url: self.url.clone(),
            connector: self.connector.clone(),
            connect_timeout: self.connect_timeout,
            events: self.events.clone(),
            cancel: cancel.clone(),
        };
        self.tracker.spawn(task.run(queue).instrument(span));
        RobotLink {
            id,
            generation,
            outbox,
            cancel,
        }
    }

    /// Waits up to `timeout` for every robot connection to end (the links
    /// must have been dropped); whether they all did.
    pub async fn closed(&self, timeout: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// One robot connection's task.
struct Task {
    peer: Arc<str>,
    id: u64,
    url: String,
    connector: Connector,
    connect_timeout: Duration,
    events: mpsc::Sender<RobotEvent>,
    cancel: CancellationToken,
}

impl Task {
    async fn run(self, queue: Queue) {
        let why = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Ended::Closed,
            connected = websocket::connect_robot(&self.url, &self.connector, self.connect_timeout) => {
                match connected {
                    Err(e) => Ended::ConnectFailed(e.to_string()),
                    Ok(socket) => {
                        info!("robot connection open");
                        self.relay(socket, queue).await
                    }
                }
            }
        };
        match &why {
            Ended::Closed | Ended::BridgeGone => info!("robot connection closed: {why}"),
            _ => warn!("{why}"),
        }
        let event = RobotEvent::Closed {
            peer: self.peer,
            link: self.id,
            why,
        };
        // The bridge may be stopping and no longer reading: never wait for it here.
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            // Rare (the queue is full): hand the event over from a task of its own
            // so that the bridge still learns of the failure.
            let events = self.events;
            tokio::spawn(async move {
                let _ = events.send(event).await;
            });
        }
    }

    async fn relay(&self, socket: Socket, queue: Queue) -> Ended {
        let (sink, mut stream) = socket.split();
        let farewell = CloseFrame {
            code: CloseCode::Normal,
            reason: "viewer left".into(),
        };
        let options = WriterOptions {
            batch: WRITE_BATCH,
            farewell,
        };
        let until = self.cancel.clone().cancelled_owned();
        let mut writer = websocket::spawn_writer(sink, queue, options, until);
        let why = loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break Ended::Closed,
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
                        if let Some(end) = self.hand_over(text.as_str().to_string()).await {
                            break end;
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

    /// Hands a message from webrtc_ros to the bridge, waiting for room in its
    /// queue (webrtc_ros waits meanwhile); why the connection ends, if it
    /// does meanwhile.
    async fn hand_over(&self, text: String) -> Option<Ended> {
        let event = RobotEvent::Message {
            peer: Arc::clone(&self.peer),
            link: self.id,
            text,
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Some(Ended::Closed),
            sent = self.events.send(event) => sent.is_err().then_some(Ended::BridgeGone),
        }
    }
}
