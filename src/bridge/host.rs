//! The bridge's connection to the signalling server, as the host of its
//! room: connect (with backoff), serve the connection until it ends, close
//! it, and again, until shutdown.
//!
//! Serving one connection is [`ServerConnection::open`] (the writer task and
//! the `init`), [`Bridge::host`] (one `select!` over everything that can
//! happen, ending with the typed [`Disconnect`] reason or shutdown), and
//! [`ServerConnection::close`].

use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::protocol::{ClientMessage, ErrorCode, Role, ServerMessage, ToHost};

use super::args::BridgeArgs;
use super::backoff::Backoff;
use super::error::BridgeError;
use super::ice::{IceGrant, IceShare, REFRESH_RETRY};
use super::ice_endpoint;
use super::links::Links;
use super::policy::Policy;
use super::report::BridgeEvent;
use super::room::Hosting;
use super::state;
use super::viewers::Viewers;
use super::websocket::{self, ConnectError, Outbox, SendError, Socket, WriterOptions};

mod disconnect;

pub use self::disconnect::Disconnect;

/// Messages queued for the server before the connection counts as stuck.
const SERVER_OUTBOX: usize = 1024;
/// Messages written to the server per flush.
const WRITE_BATCH: usize = 64;
/// A connection that stayed up this long resets the reconnection backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The close code of a host another connection took the room from
/// (`docs/PROTOCOL.md`).
pub const REPLACED_HOST: u16 = 4000;
/// How long closing the server connection and the robot connections may take
/// at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// How serving one server connection ended.
enum Outcome {
    /// Shutdown was requested.
    Stopped,
    /// The connection ended; reconnect.
    Dropped {
        reason: Disconnect,
        /// It had been up long enough to reset the backoff.
        stable: bool,
    },
}

/// The way to the server: queuing never waits, and a full outbox marks the
/// connection stuck (it is then dropped).
pub struct ServerOutbox {
    outbox: Outbox,
    stuck: bool,
}

impl ServerOutbox {
    /// Queues a text message.
    pub fn send(&mut self, text: String) {
        self.queue(Message::text(text));
    }

    fn queue(&mut self, message: Message) {
        if self.outbox.try_send(message) == Err(SendError::Full) {
            self.stuck = true;
        }
    }
}

/// One connection to the server.
struct ServerConnection {
    outbox: ServerOutbox,
    stream: SplitStream<Socket>,
    writer: JoinHandle<Result<(), tungstenite::Error>>,
    /// When the `init` reply arrived.
    established: Option<Instant>,
    /// The `init` sent on this connection was a resume.
    sent_resume: bool,
    /// After a resume by a server that sends no `peers` list: the robot
    /// connections of viewers gone meanwhile are closed once the
    /// `peer_joined`s right behind the reply are in.
    reconcile: bool,
    /// When anything was last heard from the server.
    last_heard: Instant,
    /// When to ask for fresh TURN credentials (with `--ice-endpoint`).
    ice_refresh: Option<Instant>,
}

impl ServerConnection {
    /// Starts the writer task and sends `init`.
    fn open(socket: Socket, init: String, sent_resume: bool) -> Self {
        let (sink, stream) = socket.split();
        let (outbox, queue) = Outbox::new(SERVER_OUTBOX);
        let options = WriterOptions {
            batch: WRITE_BATCH,
            farewell: CloseFrame {
                code: CloseCode::Away,
                reason: "bridge shutting down".into(),
            },
        };
        let writer = websocket::spawn_writer(sink, queue, options, std::future::pending());
        let mut outbox = ServerOutbox {
            outbox,
            stuck: false,
        };
        outbox.send(init);
        ServerConnection {
            outbox,
            stream,
            writer,
            established: None,
            sent_resume,
            reconcile: false,
            last_heard: Instant::now(),
            ice_refresh: None,
        }
    }

    /// Ends the connection: at shutdown with a close frame (after what was
    /// queued), waiting for the server's answer; otherwise at once.
    async fn close(self, result: Result<(), Disconnect>) -> Outcome {
        let ServerConnection {
            outbox,
            mut stream,
            mut writer,
            established,
            ..
        } = self;
        let stable = established.is_some_and(|t| t.elapsed() >= STABLE_AFTER);
        match result {
            Ok(()) => {
                // The writer writes what is queued, then its close frame.
                drop(outbox);
                let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
                    let _ = (&mut writer).await;
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                writer.abort();
                Outcome::Stopped
            }
            Err(reason) => {
                writer.abort();
                Outcome::Dropped { reason, stable }
            }
        }
    }
}

/// The bridge: the room it hosts, its viewers, and how it reaches the server.
pub struct Bridge {
    connector: Connector,
    connect_timeout: Duration,
    keepalive: Duration,
    backoff: Backoff,
    hosting: Hosting,
    viewers: Viewers,
    /// With `--ice-endpoint`: its socket (until `run` serves it), and the
    /// ICE servers it hands out.
    ice_endpoint: Option<std::net::TcpListener>,
    ice: Option<IceShare>,
    /// `--end-room-on-exit`.
    end_room_on_exit: bool,
}

impl Bridge {
    /// Checks the options; the room of the state file, if any, is to be
    /// resumed. Nothing is connected yet.
    pub fn new(
        args: BridgeArgs,
        observer: mpsc::UnboundedSender<BridgeEvent>,
    ) -> Result<Self, BridgeError> {
        websocket::check_url("--server", &args.server)?;
        websocket::check_url("--robot", &args.robot)?;
        let links = Links::new(&args.server, args.page_url.as_deref())?;
        let policy = Policy::new(&args.allow_src, args.max_viewers as usize)
            .map_err(BridgeError::BadPattern)?;
        let connector = websocket::tls_connector(args.ca_file.as_deref())?;
        if let Some(path) = &args.state_file {
            state::check_dir(path)?;
        }
        let ice_endpoint = match args.ice_endpoint {
            Some(addr) => {
                let listener = ice_endpoint::bind(addr, args.ice_endpoint_public)?;
                if let Ok(addr) = listener.local_addr() {
                    let _ = observer.send(BridgeEvent::IceEndpoint { addr });
                }
                Some(listener)
            }
            None => None,
        };
        if policy.patterns().is_empty() {
            warn!("no --allow-src given: viewers may ask for any topic of the robot");
        }
        let viewers = Viewers::new(policy, args.robot, connector.clone(), args.connect_timeout);
        Ok(Bridge {
            connector,
            connect_timeout: args.connect_timeout,
            keepalive: args.keepalive.max(Duration::from_millis(10)),
            backoff: Backoff::new(args.backoff_min, args.backoff_max),
            hosting: Hosting::new(args.server, links, args.state_file, observer)
                .with_token(args.token),
            viewers,
            ice: ice_endpoint.is_some().then(|| IceShare::new(None)),
            ice_endpoint,
            end_room_on_exit: args.end_room_on_exit,
        })
    }

    /// The TLS setup of both sides' connections.
    pub(super) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Hosts the room until `stop` is cancelled, reconnecting as needed;
    /// fails when another host takes the room over.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), BridgeError> {
        info!(
            server = %self.hosting.server_url(),
            robot = %self.viewers.robot_url(),
            max_viewers = self.viewers.policy().max_viewers(),
            allow_src = ?self.viewers.policy().patterns(),
            "bridge starting"
        );
        let endpoint = match (self.ice_endpoint.take(), &self.ice) {
            (Some(listener), Some(ice)) => Some(tokio::spawn(ice_endpoint::serve(
                listener,
                ice.subscribe(),
                stop.child_token(),
            ))),
            _ => None,
        };
        let mut result = Ok(());
        while let Some(connected) = self.connect(&stop).await {
            match connected {
                Ok(socket) => match self.serve(socket, &stop).await {
                    Outcome::Stopped => break,
                    Outcome::Dropped {
                        reason:
                            Disconnect::ClosedByServer {
                                code: Some(REPLACED_HOST),
                                reason,
                            },
                        ..
                    } => {
                        let e = BridgeError::Replaced { reason };
                        error!("{e}");
                        result = Err(e);
                        break;
                    }
                    Outcome::Dropped { reason, stable } => {
                        warn!("server connection lost: {reason}");
                        if stable {
                            self.backoff.reset();
                        }
                        self.hosting.disconnected(reason);
                    }
                },
                Err(e) => warn!("cannot connect to the server: {e}"),
            }
            if !self.wait_to_reconnect(&stop).await {
                break;
            }
        }
        info!("shutting down: closing robot connections");
        if !self.viewers.shut_down(SHUTDOWN_TIMEOUT).await {
            warn!("robot connections did not close in time");
        }
        if let Some(endpoint) = endpoint {
            if tokio::time::timeout(SHUTDOWN_TIMEOUT, endpoint)
                .await
                .is_err()
            {
                warn!("the ICE endpoint did not stop in time");
            }
        }
        info!("bridge stopped");
        result
    }

    /// Connects to the server, serving robot events meanwhile; `None` on
    /// shutdown.
    async fn connect(&mut self, stop: &CancellationToken) -> Option<Result<Socket, ConnectError>> {
        let url = self.hosting.server_url().to_string();
        let connect = websocket::connect(&url, &self.connector, self.connect_timeout);
        tokio::pin!(connect);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                c = &mut connect => return Some(c),
                Some(event) = self.viewers.next_event() => self.viewers.on_robot_event(event, None),
            }
        }
    }

    /// Waits for the next reconnection, serving robot events meanwhile;
    /// `false` on shutdown.
    async fn wait_to_reconnect(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.backoff.next_delay(rand::random::<f64>());
        info!("reconnecting in {} ms", delay.as_millis());
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                _ = &mut sleep => return true,
                Some(event) = self.viewers.next_event() => self.viewers.on_robot_event(event, None),
            }
        }
    }

    /// Hosts the room over one server connection until it ends.
    async fn serve(&mut self, socket: Socket, stop: &CancellationToken) -> Outcome {
        let resuming = self.hosting.resuming();
        if resuming {
            info!("connected to the server; resuming the room");
        } else {
            info!("connected to the server; opening a room");
        }
        let init = self.hosting.init().to_json();
        let mut conn = ServerConnection::open(socket, init, resuming);
        let result = self.host(&mut conn, stop).await;
        if result.is_ok() && self.end_room_on_exit && conn.established.is_some() {
            info!("ending the room (--end-room-on-exit)");
            conn.outbox.send(ClientMessage::CloseRoom.to_json());
            self.hosting.ended();
        }
        conn.close(result).await
    }

    /// Everything that can happen on a connection, until it ends (`Ok` on
    /// shutdown).
    async fn host(
        &mut self,
        conn: &mut ServerConnection,
        stop: &CancellationToken,
    ) -> Result<(), Disconnect> {
        let init_deadline = tokio::time::sleep(self.connect_timeout);
        tokio::pin!(init_deadline);
        let mut ping = tokio::time::interval_at(Instant::now() + self.keepalive, self.keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silent_limit = self.keepalive * 3;
        loop {
            let ice_at = conn.ice_refresh.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = &mut conn.writer => return Err(Disconnect::WriteFailed),
                frame = conn.stream.next() => {
                    conn.last_heard = Instant::now();
                    self.on_frame(conn, frame).await?;
                }
                Some(event) = self.viewers.next_event() => {
                    let out = conn.established.is_some().then_some(&mut conn.outbox);
                    self.viewers.on_robot_event(event, out);
                }
                _ = tokio::time::sleep_until(ice_at), if conn.ice_refresh.is_some() => {
                    // The reply schedules the next one; without a reply
                    // (dropped by a rate limit, say), ask again.
                    conn.ice_refresh = Some(Instant::now() + REFRESH_RETRY);
                    debug!("asking the server for fresh TURN credentials");
                    conn.outbox.send(ClientMessage::IceServers.to_json());
                }
                _ = &mut init_deadline, if conn.established.is_none() => {
                    return Err(Disconnect::NoInitReply(self.connect_timeout));
                }
                _ = ping.tick() => {
                    if conn.last_heard.elapsed() >= silent_limit {
                        return Err(Disconnect::Silent(silent_limit));
                    }
                    conn.outbox.queue(Message::Ping(Default::default()));
                }
            }
            if conn.outbox.stuck {
                return Err(Disconnect::Stuck);
            }
        }
    }

    async fn on_frame(
        &mut self,
        conn: &mut ServerConnection,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), Disconnect> {
        match frame {
            None => Err(Disconnect::Closed),
            Some(Err(e)) => Err(Disconnect::Transport(e.to_string())),
            Some(Ok(Message::Text(text))) => self.on_text(conn, text.as_str()).await,
            Some(Ok(Message::Close(frame))) => Err(Disconnect::ClosedByServer {
                code: frame.as_ref().map(|f| u16::from(f.code)),
                reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            }),
            Some(Ok(_)) => Ok(()),
        }
    }

    async fn on_text(&mut self, conn: &mut ServerConnection, text: &str) -> Result<(), Disconnect> {
        let message = match ToHost::parse(text) {
            Ok(message) => message,
            // Before the room is hosted, only an `init` reply or an error
            // will do.
            Err(e) if conn.established.is_none() => return Err(Disconnect::BadInitReply(e.0)),
            Err(e) => {
                warn!("ignoring an unreadable message from the server: {e}");
                return Ok(());
            }
        };
        let roster = matches!(
            message,
            ToHost::Server(ServerMessage::Init(_) | ServerMessage::PeerJoined { .. })
        );
        if !roster && std::mem::take(&mut conn.reconcile) {
            // The `peer_joined` list behind the reply is complete.
            self.viewers.reconcile();
        }
        match message {
            ToHost::Peer { from, message } => {
                if conn.established.is_some() {
                    self.viewers
                        .on_message(&mut conn.outbox, &from, &message, text);
                }
                Ok(())
            }
            ToHost::Server(message) => self.on_server_message(conn, message).await,
        }
    }

    async fn on_server_message(
        &mut self,
        conn: &mut ServerConnection,
        message: ServerMessage<'_>,
    ) -> Result<(), Disconnect> {
        match message {
            ServerMessage::Init(reply) => {
                if conn.established.is_some() && reply.role == Role::Host {
                    warn!("ignoring a second init reply");
                    return Ok(());
                }
                // Kept before the room is reported: whoever hears of the
                // room can have its credentials.
                let refresh =
                    self.take_ice(IceGrant::new(&reply.ice_servers, reply.ice_servers_ttl));
                let present: Option<Vec<(String, Role)>> = reply
                    .peers
                    .as_ref()
                    .map(|peers| peers.iter().map(|p| (p.id.to_string(), p.role)).collect());
                if self.hosting.on_init(reply, &mut self.viewers).await? {
                    match present {
                        // The peers still present: the robot connections of
                        // the others close now.
                        Some(present) => {
                            for (peer, role) in &present {
                                self.viewers.joined(peer, *role);
                            }
                            self.viewers.reconcile();
                        }
                        // A server without `peers`: once its `peer_joined`
                        // list is in.
                        None => conn.reconcile = true,
                    }
                }
                conn.established = Some(Instant::now());
                conn.ice_refresh = refresh;
            }
            ServerMessage::IceServers(reply) => {
                let grant = IceGrant::new(&reply.ice_servers, reply.ice_servers_ttl);
                conn.ice_refresh = self.take_ice(grant);
            }
            ServerMessage::PeerJoined { peer, role } => self.viewers.joined(&peer, role),
            ServerMessage::PeerLeft { peer } => self.viewers.left(&peer),
            ServerMessage::Error { code, message } => {
                self.on_server_error(conn, code, &message)?;
            }
            ServerMessage::RoomClosed => {
                // Ended (by an operator): the server closes the connection
                // next; the next `init` opens a new room.
                self.hosting.room_closed(&mut self.viewers);
                conn.sent_resume = false;
            }
            ServerMessage::HostLeft | ServerMessage::HostJoined | ServerMessage::Unknown => {
                debug!("ignoring a server message the host has no use for");
            }
        }
        Ok(())
    }

    /// Keeps the ICE servers of a reply for the endpoint (if there is one);
    /// when to refresh them.
    fn take_ice(&mut self, grant: IceGrant) -> Option<Instant> {
        let ice = self.ice.as_ref()?;
        let turn = grant.turn();
        let changed_urls = ice
            .borrow()
            .as_ref()
            .and_then(IceGrant::turn)
            .map(|t| t.uris)
            != turn.as_ref().map(|t| t.uris.clone());
        match &turn {
            Some(t) if changed_urls => info!(
                ttl = ?grant.ttl,
                "TURN credentials for webrtc_ros; its turn_server_uris: {:?}", t.uris
            ),
            Some(_) => debug!(ttl = ?grant.ttl, "fresh TURN credentials"),
            None => warn!(
                "the server hands out no TURN credentials: --ice-endpoint answers 503 \
                 (start the server with --turn-secret or --turn-listen)"
            ),
        }
        let refresh = turn.as_ref().and(grant.refresh_at());
        ice.send_replace(Some(grant));
        refresh
    }

    fn on_server_error(
        &mut self,
        conn: &mut ServerConnection,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), Disconnect> {
        if conn.established.is_some() {
            match code {
                // A viewer left while a message for it was on its way.
                ErrorCode::PeerNotFound => debug!("server: {code} ({message})"),
                _ => warn!("server error: {code} ({message})"),
            }
            return Ok(());
        }
        if code == ErrorCode::RoomNotFound && conn.sent_resume {
            self.hosting.room_closed(&mut self.viewers);
            conn.sent_resume = false;
            conn.outbox.send(self.hosting.init().to_json());
            return Ok(());
        }
        Err(Disconnect::Refused {
            code,
            message: message.to_string(),
        })
    }
}
