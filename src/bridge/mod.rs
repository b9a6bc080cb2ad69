//! `signal-server bridge`: connects a robot's webrtc_ros to a room.
//!
//! webrtc_ros only *accepts* WebSocket connections, one WebRTC peer
//! connection per WebSocket connection, and robots sit behind NAT. The bridge
//! runs on the robot, connects *out* to the signalling server, becomes the
//! host of a room, and gives every viewer a WebSocket connection of its own to
//! webrtc_ros:
//!
//! ```text
//!  browser A ─┐                        ┌─ ws #A ─┐
//!  browser B ─┼─ signal-server ══ bridge ┼─ ws #B ─┼─ webrtc_ros (robot)
//!  browser C ─┘   (room host: bridge)    └─ ws #C ─┘
//! ```
//!
//! - A viewer's first `configure` opens its robot connection; from then on its
//!   messages go to that connection without the server's `from`, and the
//!   robot's replies go back with `to` set to that viewer. `peer_left` closes
//!   the connection, so webrtc_ros tears that peer connection down.
//! - The robot owner's policy ([`policy`]) is checked before anything reaches
//!   webrtc_ros; a refusal is an `error` for that viewer alone.
//! - The server connection is kept up with pings, re-established with
//!   exponential backoff and full jitter, and the room is resumed with its
//!   `resume` secret, kept in the state file ([`state`]) across restarts.
//!   Robot connections outlive a server reconnection (media flows directly
//!   between the robot and the browsers); a viewer that sends `configure`
//!   again after the reconnection gets a fresh robot connection.
//! - A robot connection that cannot be opened or drops earns its viewer a
//!   `robot_unavailable` error; the viewer's next `configure` retries.

pub mod policy;
pub mod robot;
pub mod state;
pub mod wire;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn};

use crate::protocol::{self, ClientMessage, Role};
use crate::token::redact;

use self::policy::{codes, Policy};
use self::robot::{RobotEvent, SendError, Session};

/// Messages queued for the server before the connection counts as stuck.
const SERVER_OUTBOX: usize = 1024;
/// Messages written to the server per flush.
const WRITE_BATCH: usize = 64;
/// Events from robot connections waiting for the bridge.
const ROBOT_EVENTS: usize = 1024;
/// A connection that stayed up this long resets the reconnection backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// After a resume, how long to wait for the server's `peer_joined` list
/// before closing robot connections of viewers that left meanwhile (the list
/// normally arrives at once, right behind the `init` reply).
const RECONCILE_WAIT: Duration = Duration::from_secs(2);
/// How long closing frames and robot connections may take at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

type ServerSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 20s, 500ms, 1m)"))
}

/// Options of `signal-server bridge`.
#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// The signalling server's WebSocket URL, e.g. wss://signal.example.com/webrtc
    /// (ws:// for a server without TLS).
    #[arg(long, env = "SIGNAL_BRIDGE_SERVER", value_name = "URL")]
    pub server: String,

    /// webrtc_ros's WebSocket URL on the robot.
    #[arg(
        long,
        env = "SIGNAL_BRIDGE_ROBOT",
        value_name = "URL",
        default_value = "ws://127.0.0.1:9090/webrtc"
    )]
    pub robot: String,

    /// Media a viewer may ask for: a glob on the `src` of add_video_track and
    /// add_audio_track and the `dest` of expect_video_track (repeatable). `*`
    /// and `?` stay within one `/` segment, `**` crosses segments:
    /// `ros_image:/camera/*`. Without any, every source is allowed.
    #[arg(long = "allow-src", value_name = "PATTERN")]
    pub allow_src: Vec<String>,

    /// Viewers served at once (each one is a WebRTC peer connection, and an
    /// encoder, on the robot).
    #[arg(long, env = "SIGNAL_BRIDGE_MAX_VIEWERS", default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_viewers: u32,

    /// Keep the room's resume secret and links in this file (written
    /// atomically, mode 0600), so that a restarted bridge gets the same room
    /// and links back within the server's grace period.
    #[arg(long, env = "SIGNAL_BRIDGE_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Print the links as JSON lines on stdout (one per room established,
    /// and one per lost server connection) instead of text.
    #[arg(long)]
    pub json: bool,

    /// The viewer page to link to. Default: the server's own page, from
    /// --server (wss://host/webrtc -> https://host/). When given, the links
    /// also carry `server=` so the page knows where to connect.
    #[arg(long, env = "SIGNAL_BRIDGE_PAGE_URL", value_name = "URL")]
    pub page_url: Option<String>,

    /// How long connecting to the server or to webrtc_ros may take.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "10s")]
    pub connect_timeout: Duration,

    /// First delay before reconnecting to the server; it doubles after each
    /// failure up to --backoff-max, each delay drawn at random below it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "500ms")]
    pub backoff_min: Duration,

    /// Longest delay between reconnection attempts.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "30s")]
    pub backoff_max: Duration,

    /// Interval of the bridge's pings to the server; a server silent for
    /// three intervals counts as gone and the bridge reconnects.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "15s")]
    pub keepalive: Duration,
}

impl BridgeArgs {
    /// Parses bridge options as the command line would (`args[0]` is the
    /// program name), for tests and tools.
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BridgeArgs,
        }
        Wrapper::try_parse_from(args).map(|w| w.args)
    }
}

/// Why the bridge could not run.
#[derive(Debug)]
pub enum BridgeError {
    /// The options make no sense (a bad URL or pattern).
    Config(String),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Config(e) => write!(f, "bridge: {e}"),
        }
    }
}

impl std::error::Error for BridgeError {}

/// The links of the bridge's room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomLinks {
    /// The page link for viewers (receive only).
    pub watch_url: String,
    /// The page link for full peers.
    pub join_url: String,
    /// The watch token.
    pub watch: String,
    /// The join token.
    pub join: String,
    /// Whether this is the room the bridge had before (same links).
    pub resumed: bool,
}

/// What the bridge reports as it runs (see [`run_with_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// The bridge is the host of a room: at first, and again after every
    /// reconnection (`resumed` tells whether the links stayed the same).
    Room(RoomLinks),
    /// The connection to the server ended; the bridge reconnects.
    Disconnected {
        /// Why, for humans.
        reason: String,
    },
}

/// Runs the bridge until `shutdown` completes, printing the room's links on
/// stdout (text, or JSON lines with `--json`).
pub async fn run(
    args: BridgeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BridgeError> {
    let json = args.json;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        let mut printed: Option<RoomLinks> = None;
        while let Some(event) = rx.recv().await {
            print_event(&event, json, &mut printed);
        }
    });
    let result = run_with_events(args, shutdown, tx).await;
    let _ = printer.await;
    result
}

fn print_event(event: &BridgeEvent, json: bool, printed: &mut Option<RoomLinks>) {
    use std::io::Write;
    if let Some(text) = render_event(event, json, printed) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// What `run` prints for an event: JSON lines, or the links in text when they
/// differ from the last ones printed.
fn render_event(
    event: &BridgeEvent,
    json: bool,
    printed: &mut Option<RoomLinks>,
) -> Option<String> {
    let text = match (event, json) {
        (BridgeEvent::Room(links), true) => {
            let mut v = serde_json::json!({"event": "room"});
            if let (Some(obj), Ok(serde_json::Value::Object(l))) =
                (v.as_object_mut(), serde_json::to_value(links))
            {
                obj.extend(l);
            }
            format!("{v}\n")
        }
        (BridgeEvent::Disconnected { reason }, true) => {
            format!(
                "{}\n",
                serde_json::json!({"event": "disconnected", "reason": reason})
            )
        }
        (BridgeEvent::Room(links), false) => {
            let same = printed
                .as_ref()
                .is_some_and(|p| p.watch == links.watch && p.join == links.join);
            if same {
                return None;
            }
            *printed = Some(links.clone());
            format!(
                "Robot room ready. Share these links:\n  watch (view only): {}\n  join (full peer):  {}\n",
                links.watch_url, links.join_url
            )
        }
        (BridgeEvent::Disconnected { .. }, false) => return None,
    };
    Some(text)
}

/// Runs the bridge until `shutdown` completes, reporting what happens on
/// `events` (nothing is printed). Returns an error only for bad options: a
/// server or robot that cannot be reached is retried for as long as it takes.
pub async fn run_with_events(
    args: BridgeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    events: mpsc::UnboundedSender<BridgeEvent>,
) -> Result<(), BridgeError> {
    let bridge = Bridge::new(args, events)?;
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    bridge.run(stop).await;
    watcher.abort();
    Ok(())
}

/// Builds the page links of a room.
#[derive(Debug, Clone)]
struct Links {
    base: String,
    server_param: Option<String>,
}

impl Links {
    fn new(server: &str, page_url: Option<&str>) -> Result<Self, String> {
        match page_url {
            Some(page) => {
                let uri: Uri = page
                    .parse()
                    .map_err(|e| format!("--page-url {page:?} is not a URL: {e}"))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) {
                    return Err(format!(
                        "--page-url must start with http:// or https://, not {page:?}"
                    ));
                }
                Ok(Links {
                    base: page.to_string(),
                    server_param: Some(percent_encode(server)),
                })
            }
            None => Ok(Links {
                base: page_base(server)?,
                server_param: None,
            }),
        }
    }

    fn link(&self, kind: &str, token: &str) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        let mut out = format!("{}{sep}{kind}={token}", self.base);
        if let Some(server) = &self.server_param {
            out.push_str("&server=");
            out.push_str(server);
        }
        out
    }

    fn room(&self, join: &str, watch: &str, resumed: bool) -> RoomLinks {
        RoomLinks {
            watch_url: self.link("watch", watch),
            join_url: self.link("join", join),
            watch: watch.to_string(),
            join: join.to_string(),
            resumed,
        }
    }
}

/// Checks a WebSocket URL: `ws://` or `wss://` with a host.
fn websocket_url(what: &str, url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(format!(
            "{what} must start with ws:// or wss://, not {url:?}"
        ));
    }
    if uri.host().map_or(true, str::is_empty) {
        return Err(format!("{what} {url:?} has no host"));
    }
    Ok(uri)
}

/// The page the server serves, from its WebSocket URL: `wss://host/webrtc`
/// gives `https://host/`, `ws://host:8080/signal/webrtc` gives
/// `http://host:8080/signal/`.
fn page_base(server: &str) -> Result<String, String> {
    let uri = websocket_url("--server", server)?;
    let scheme = if uri.scheme_str() == Some("wss") {
        "https"
    } else {
        "http"
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    // No credentials in a link meant for sharing.
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let path = uri.path();
    let path = path.strip_suffix("webrtc").unwrap_or(path);
    let path = if path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    };
    Ok(format!("{scheme}://{authority}{path}"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reconnection delays: exponential with full jitter.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay: `min * 2^attempt`, at most `max`.
    fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(24);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay, `unit` (in [0, 1)) of the way up to the ceiling.
    fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn tls_connector() -> Result<Connector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// The room the bridge hosts.
#[derive(Debug, Clone)]
struct Room {
    join: String,
    watch: String,
    resume: String,
}

/// How one server connection ended.
enum Outcome {
    /// Shutdown was requested.
    Stopped,
    /// The connection ended; reconnect.
    Dropped {
        reason: String,
        /// It had been up long enough to reset the backoff.
        stable: bool,
    },
}

/// One connection to the server.
struct Conn {
    out: mpsc::Sender<Message>,
    /// The outbox overflowed: the connection is stuck.
    stuck: bool,
    /// When the `init` reply arrived.
    established: Option<Instant>,
    /// The `init` sent on this connection was a resume.
    sent_resume: bool,
    /// After a resume: when to stop waiting for `peer_joined`s.
    reconcile: Option<Instant>,
    /// When anything was last heard from the server.
    last_heard: Instant,
}

impl Conn {
    fn send(&mut self, text: String) {
        self.send_message(Message::text(text));
    }

    fn send_message(&mut self, message: Message) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.out.try_send(message) {
            self.stuck = true;
        }
    }
}

/// A message from the server, as far as the bridge needs to look into it.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Deserialize)]
struct HostInit {
    join: String,
    watch: String,
    resume: String,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Deserialize)]
struct PeerEvent {
    peer: String,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Deserialize)]
struct ServerError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

struct Bridge {
    server_url: String,
    robot_url: String,
    links: Links,
    policy: Policy,
    state_path: Option<PathBuf>,
    connect_timeout: Duration,
    keepalive: Duration,
    backoff: Backoff,
    connector: Connector,
    /// The room hosted (or to resume).
    room: Option<Room>,
    /// Peers of the room and their roles, from `peer_joined`.
    peers: HashMap<Arc<str>, Role>,
    /// Robot connections, by viewer.
    sessions: HashMap<Arc<str>, Session>,
    next_session: u64,
    /// Bumped every time the bridge becomes host (at first and after every
    /// reconnection). A viewer's `configure` reaching a session of an earlier
    /// generation opens a new robot connection: the server told the viewer
    /// `host_joined`, and the viewer is starting over.
    generation: u64,
    robot_tx: mpsc::Sender<RobotEvent>,
    robot_rx: mpsc::Receiver<RobotEvent>,
    tracker: TaskTracker,
    observer: mpsc::UnboundedSender<BridgeEvent>,
}

impl Bridge {
    fn new(
        args: BridgeArgs,
        observer: mpsc::UnboundedSender<BridgeEvent>,
    ) -> Result<Self, BridgeError> {
        let config = BridgeError::Config;
        websocket_url("--server", &args.server).map_err(config)?;
        websocket_url("--robot", &args.robot).map_err(config)?;
        let links = Links::new(&args.server, args.page_url.as_deref()).map_err(config)?;
        let policy = Policy::new(&args.allow_src, args.max_viewers as usize)
            .map_err(|e| BridgeError::Config(format!("--allow-src: {e}")))?;
        let connector = tls_connector().map_err(config)?;
        if let Some(path) = &args.state_file {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(BridgeError::Config(format!(
                    "--state-file {}: its directory does not exist",
                    path.display()
                )));
            }
        }
        if policy.patterns().is_empty() {
            warn!("no --allow-src given: viewers may ask for any topic of the robot");
        }
        let room = args
            .state_file
            .as_deref()
            .and_then(|path| match state::load(path) {
                Ok(Some(saved)) if saved.server == args.server => {
                    info!(
                        watch = %redact(&saved.watch),
                        "state file: will resume the room it names"
                    );
                    Some(Room {
                        join: saved.join,
                        watch: saved.watch,
                        resume: saved.resume,
                    })
                }
                Ok(Some(_)) => {
                    warn!(
                        "state file {} is for another server: opening a new room",
                        path.display()
                    );
                    None
                }
                Ok(None) => None,
                Err(e) => {
                    warn!(
                        "cannot read state file {}: {e}; opening a new room",
                        path.display()
                    );
                    None
                }
            });
        let (robot_tx, robot_rx) = mpsc::channel(ROBOT_EVENTS);
        Ok(Bridge {
            server_url: args.server,
            robot_url: args.robot,
            links,
            policy,
            state_path: args.state_file,
            connect_timeout: args.connect_timeout,
            keepalive: args.keepalive.max(Duration::from_millis(10)),
            backoff: Backoff::new(args.backoff_min, args.backoff_max),
            connector,
            room,
            peers: HashMap::new(),
            sessions: HashMap::new(),
            next_session: 0,
            generation: 0,
            robot_tx,
            robot_rx,
            tracker: TaskTracker::new(),
            observer,
        })
    }

    async fn run(mut self, stop: CancellationToken) {
        info!(
            server = %self.server_url,
            robot = %self.robot_url,
            max_viewers = self.policy.max_viewers(),
            allow_src = ?self.policy.patterns(),
            "bridge starting"
        );
        'connect: loop {
            let connect = connect_server(
                self.server_url.clone(),
                self.connector.clone(),
                self.connect_timeout,
            );
            tokio::pin!(connect);
            let connected = loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break 'connect,
                    c = &mut connect => break c,
                    Some(event) = self.robot_rx.recv() => self.on_robot_event(event, None),
                }
            };
            match connected {
                Ok(socket) => match self.serve(socket, &stop).await {
                    Outcome::Stopped => break 'connect,
                    Outcome::Dropped { reason, stable } => {
                        warn!("server connection lost: {reason}");
                        if stable {
                            self.backoff.reset();
                        }
                        let _ = self.observer.send(BridgeEvent::Disconnected { reason });
                    }
                },
                Err(e) => warn!("cannot connect to the server: {e}"),
            }
            let delay = self.backoff.next_delay(rand::random::<f64>());
            info!("reconnecting in {} ms", delay.as_millis());
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break 'connect,
                    _ = &mut sleep => break,
                    Some(event) = self.robot_rx.recv() => self.on_robot_event(event, None),
                }
            }
        }
        info!("shutting down: closing robot connections");
        self.sessions.clear();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("robot connections did not close in time");
        }
        info!("bridge stopped");
    }

    /// Hosts the room over one server connection until it ends.
    async fn serve(&mut self, socket: ServerSocket, stop: &CancellationToken) -> Outcome {
        let (sink, mut stream) = socket.split();
        let (out, rx) = mpsc::channel(SERVER_OUTBOX);
        let mut writer = tokio::spawn(write_loop(sink, rx));
        let resume = self.room.as_ref().map(|r| r.resume.clone());
        let mut conn = Conn {
            out,
            stuck: false,
            established: None,
            sent_resume: resume.is_some(),
            reconcile: None,
            last_heard: Instant::now(),
        };
        match &resume {
            Some(secret) => {
                info!("connected to the server; resuming the room");
                conn.send(serde_json::json!({"type": "init", "resume": secret}).to_string());
            }
            None => {
                info!("connected to the server; opening a room");
                conn.send(r#"{"type":"init"}"#.to_string());
            }
        }
        let init_deadline = tokio::time::sleep(self.connect_timeout);
        tokio::pin!(init_deadline);
        let mut ping = tokio::time::interval_at(Instant::now() + self.keepalive, self.keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silent_limit = self.keepalive * 3;

        let outcome = loop {
            let reconcile_at = conn.reconcile.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break Ok(()),
                _ = &mut writer => break Err("writing to the server failed".to_string()),
                frame = stream.next() => {
                    conn.last_heard = Instant::now();
                    match frame {
                        None => break Err("connection closed".into()),
                        Some(Err(e)) => break Err(e.to_string()),
                        Some(Ok(Message::Text(text))) => {
                            if let Err(reason) = self.on_server_text(&mut conn, text.as_str()).await {
                                break Err(reason);
                            }
                        }
                        Some(Ok(Message::Close(frame))) => break Err(match frame {
                            Some(f) => format!("closed by the server ({} {})", u16::from(f.code), f.reason),
                            None => "closed by the server".into(),
                        }),
                        Some(Ok(_)) => {}
                    }
                }
                Some(event) = self.robot_rx.recv() => {
                    let established = conn.established.is_some();
                    self.on_robot_event(event, established.then_some(&mut conn));
                }
                _ = tokio::time::sleep_until(reconcile_at), if conn.reconcile.is_some() => {
                    conn.reconcile = None;
                    self.reconcile();
                }
                _ = &mut init_deadline, if conn.established.is_none() => {
                    break Err(format!("no init reply within {:?}", self.connect_timeout));
                }
                _ = ping.tick() => {
                    if conn.last_heard.elapsed() >= silent_limit {
                        break Err(format!("nothing heard from the server for {silent_limit:?}"));
                    }
                    conn.send_message(Message::Ping(Default::default()));
                }
            }
            if conn.stuck {
                break Err("the server is not reading (outbox full)".into());
            }
        };
        let stable = conn
            .established
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER);
        match outcome {
            Ok(()) => {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "bridge shutting down".into(),
                };
                conn.send_message(Message::Close(Some(frame)));
                drop(conn);
                // Wait for the close frame to go out and the server to answer.
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

    async fn on_server_text(&mut self, conn: &mut Conn, text: &str) -> Result<(), String> {
        let envelope: Envelope = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(e) => {
                warn!("ignoring an unreadable message from the server: {e}");
                return Ok(());
            }
        };
        if envelope.kind != "peer_joined" && envelope.kind != "init" {
            self.reconcile_now(conn);
        }
        if let Some(from) = envelope.from {
            if conn.established.is_some() {
                self.on_peer_message(conn, &from, text);
            }
            return Ok(());
        }
        match envelope.kind.as_str() {
            "init" => self.on_init(conn, text).await,
            "peer_joined" => {
                if let Ok(ev) = serde_json::from_str::<PeerEvent>(text) {
                    let role = match ev.role.as_deref() {
                        Some("join") => Role::Join,
                        // Anything unexpected gets the narrowest rights.
                        _ => Role::Watch,
                    };
                    info!(peer = %ev.peer, role = role.as_str(), "peer joined");
                    self.peers.insert(Arc::from(ev.peer.as_str()), role);
                }
                Ok(())
            }
            "peer_left" => {
                if let Ok(ev) = serde_json::from_str::<PeerEvent>(text) {
                    self.peers.remove(ev.peer.as_str());
                    match self.sessions.remove(ev.peer.as_str()) {
                        Some(session) => {
                            session.close();
                            info!(peer = %ev.peer, "peer left: closing its robot connection");
                        }
                        None => info!(peer = %ev.peer, "peer left"),
                    }
                }
                Ok(())
            }
            "error" => {
                let err: ServerError = serde_json::from_str(text).unwrap_or(ServerError {
                    code: String::new(),
                    message: String::new(),
                });
                self.on_server_error(conn, err)
            }
            other => {
                debug!("ignoring a `{other}` message from the server");
                Ok(())
            }
        }
    }

    async fn on_init(&mut self, conn: &mut Conn, text: &str) -> Result<(), String> {
        let init: HostInit =
            serde_json::from_str(text).map_err(|e| format!("unexpected init reply: {e}"))?;
        if init.role.as_deref().is_some_and(|r| r != "host") {
            return Err("the server did not make the bridge a host".into());
        }
        if conn.established.is_some() {
            warn!("ignoring a second init reply");
            return Ok(());
        }
        let resumed = self
            .room
            .as_ref()
            .is_some_and(|r| r.join == init.join && r.watch == init.watch);
        self.generation += 1;
        self.peers.clear();
        if resumed {
            // The server lists the peers still present right behind this
            // reply; robot connections of the others are closed then.
            conn.reconcile = Some(Instant::now() + RECONCILE_WAIT);
        } else {
            self.close_all_sessions();
        }
        self.room = Some(Room {
            join: init.join.clone(),
            watch: init.watch.clone(),
            resume: init.resume.clone(),
        });
        conn.established = Some(Instant::now());
        let links = self.links.room(&init.join, &init.watch, resumed);
        self.save_state(&init, &links).await;
        info!(
            watch = %redact(&init.watch),
            join = %redact(&init.join),
            resumed,
            "hosting the room"
        );
        let _ = self.observer.send(BridgeEvent::Room(links));
        Ok(())
    }

    fn on_server_error(&mut self, conn: &mut Conn, err: ServerError) -> Result<(), String> {
        if conn.established.is_none() {
            if err.code == "room_not_found" && conn.sent_resume {
                info!(
                    "the room has closed (the bridge was away longer than the server's grace \
                     period, or the server lost it): opening a new room with new links"
                );
                self.room = None;
                self.peers.clear();
                self.close_all_sessions();
                if let Some(path) = &self.state_path {
                    if let Err(e) = state::remove(path) {
                        warn!("cannot remove the state file {}: {e}", path.display());
                    }
                }
                conn.sent_resume = false;
                conn.send(r#"{"type":"init"}"#.to_string());
                return Ok(());
            }
            return Err(format!(
                "the server refused the bridge's init: {} ({})",
                err.code, err.message
            ));
        }
        match err.code.as_str() {
            // A viewer left while a message for it was on its way.
            "peer_not_found" => debug!("server: {} ({})", err.code, err.message),
            _ => warn!("server error: {} ({})", err.code, err.message),
        }
        Ok(())
    }

    fn on_peer_message(&mut self, conn: &mut Conn, from: &str, text: &str) {
        let span = info_span!("viewer", peer = %from);
        let _entered = span.enter();
        let message = match protocol::parse(text) {
            Ok(m) => m,
            Err(e) => {
                warn!("ignoring an unreadable message from the viewer: {e}");
                return;
            }
        };
        let role = match self.peers.get(from) {
            Some(role) => *role,
            None => {
                warn!("message from a peer the server has not announced: treating it as a watcher");
                Role::Watch
            }
        };
        match &message {
            ClientMessage::Configure(configure) => {
                self.on_configure(conn, from, role, &configure.actions, text)
            }
            ClientMessage::Offer(_) | ClientMessage::Answer(_) | ClientMessage::IceCandidate(_) => {
                self.forward(conn, from, text)
            }
            ClientMessage::Error(e) => info!(
                code = %e.code,
                "the viewer reported an error: {}",
                e.message.as_deref().unwrap_or("")
            ),
            ClientMessage::Init(_) => {}
        }
    }

    fn on_configure(
        &mut self,
        conn: &mut Conn,
        from: &str,
        role: Role,
        actions: &[protocol::Action<'_>],
        text: &str,
    ) {
        if let Err(refusal) = self.policy.check_actions(role, actions) {
            info!(code = refusal.code, "refused: {}", refusal.message);
            conn.send(wire::error_to(from, refusal.code, &refusal.message));
            return;
        }
        let current = self
            .sessions
            .get(from)
            .is_some_and(|s| s.generation == self.generation);
        if current {
            // A renegotiation on the viewer's robot connection.
            self.forward(conn, from, text);
            return;
        }
        if let Some(old) = self.sessions.remove(from) {
            info!("the viewer starts over after the bridge reconnected: new robot connection");
            old.close();
        }
        if let Err(refusal) = self.policy.check_capacity(self.sessions.len()) {
            info!(code = refusal.code, "refused: {}", refusal.message);
            conn.send(wire::error_to(from, refusal.code, &refusal.message));
            return;
        }
        self.next_session += 1;
        let peer: Arc<str> = Arc::from(from);
        let session = robot::spawn(
            &self.tracker,
            robot::Open {
                peer: Arc::clone(&peer),
                id: self.next_session,
                generation: self.generation,
                url: self.robot_url.clone(),
                connector: self.connector.clone(),
                connect_timeout: self.connect_timeout,
                first: wire::first_configure(text),
                events: self.robot_tx.clone(),
            },
        );
        info!(
            session = session.id,
            viewers = self.sessions.len() + 1,
            "opening a robot connection"
        );
        self.sessions.insert(peer, session);
    }

    /// Passes a viewer's message to its robot connection.
    fn forward(&mut self, conn: &mut Conn, from: &str, text: &str) {
        let Some(session) = self.sessions.get(from) else {
            debug!(
                "no robot connection for this viewer (it opens on `configure`): message dropped"
            );
            return;
        };
        match session.send(wire::strip_from(text, from).into_owned()) {
            Ok(()) => {}
            Err(SendError::Full) => {
                warn!("webrtc_ros is not reading this viewer's messages: closing its connection");
                self.sessions.remove(from);
                conn.send(wire::error_to(
                    from,
                    codes::ROBOT_UNAVAILABLE,
                    "the robot's video service is not responding; send configure again to retry",
                ));
            }
            // Its `Closed` event is on the way and tells the viewer.
            Err(SendError::Gone) => debug!("the robot connection has just ended"),
        }
    }

    fn on_robot_event(&mut self, event: RobotEvent, conn: Option<&mut Conn>) {
        match event {
            RobotEvent::Message {
                peer,
                session,
                text,
            } => {
                if !self.sessions.get(&peer).is_some_and(|s| s.id == session) {
                    return;
                }
                let Some(conn) = conn else {
                    debug!(%peer, "not connected to the server: a message from webrtc_ros is dropped");
                    return;
                };
                match wire::to_peer(&text, &peer) {
                    Ok(out) => conn.send(out),
                    Err(e) => warn!(%peer, "dropping a message from webrtc_ros: {}", e.0),
                }
            }
            RobotEvent::Closed { peer, session, why } => {
                if !self.sessions.get(&peer).is_some_and(|s| s.id == session) {
                    return;
                }
                self.sessions.remove(&peer);
                if !why.is_failure() || !self.peers.contains_key(&peer) {
                    return;
                }
                let message = match why {
                    robot::Ended::ConnectFailed(_) => {
                        "the robot's video service (webrtc_ros) cannot be reached right now; send configure again to retry"
                    }
                    _ => "the connection to the robot's video service (webrtc_ros) was lost; send configure again to retry",
                };
                if let Some(conn) = conn {
                    conn.send(wire::error_to(&peer, codes::ROBOT_UNAVAILABLE, message));
                }
            }
        }
    }

    /// Closes the robot connections of viewers no longer in the room.
    fn reconcile(&mut self) {
        let gone: Vec<Arc<str>> = self
            .sessions
            .keys()
            .filter(|p| !self.peers.contains_key(*p))
            .cloned()
            .collect();
        for peer in gone {
            if let Some(session) = self.sessions.remove(&peer) {
                info!(%peer, "the viewer left while the bridge was away: closing its robot connection");
                session.close();
            }
        }
    }

    fn reconcile_now(&mut self, conn: &mut Conn) {
        if conn.reconcile.take().is_some() {
            self.reconcile();
        }
    }

    fn close_all_sessions(&mut self) {
        for (peer, session) in self.sessions.drain() {
            debug!(%peer, "closing robot connection");
            session.close();
        }
    }

    async fn save_state(&self, init: &HostInit, links: &RoomLinks) {
        let Some(path) = self.state_path.clone() else {
            return;
        };
        let saved = state::SavedRoom::new(
            &self.server_url,
            &init.resume,
            &init.join,
            &init.watch,
            &links.join_url,
            &links.watch_url,
        );
        let shown = path.display().to_string();
        match tokio::task::spawn_blocking(move || state::save(&path, &saved)).await {
            Ok(Ok(())) => debug!("state file {shown} written"),
            Ok(Err(e)) => error!(
                "cannot write the state file {shown}: {e}; a restarted bridge will open a new room"
            ),
            Err(e) => error!("cannot write the state file {shown}: {e}"),
        }
    }
}

async fn connect_server(
    url: String,
    connector: Connector,
    timeout: Duration,
) -> Result<ServerSocket, String> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("signal-server-bridge/", env!("CARGO_PKG_VERSION"))),
    );
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}

async fn write_loop(
    mut sink: SplitSink<ServerSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
) -> Result<(), String> {
    while let Some(first) = rx.recv().await {
        let closing = matches!(first, Message::Close(_));
        sink.feed(first).await.map_err(|e| e.to_string())?;
        if !closing {
            for _ in 1..WRITE_BATCH {
                match rx.try_recv() {
                    Ok(m) => sink.feed(m).await.map_err(|e| e.to_string())?,
                    Err(_) => break,
                }
            }
        }
        sink.flush().await.map_err(|e| e.to_string())?;
        if closing {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_come_from_the_server_url() {
        assert_eq!(
            page_base("wss://signal.example.com/webrtc").unwrap(),
            "https://signal.example.com/"
        );
        assert_eq!(
            page_base("wss://signal.example.com").unwrap(),
            "https://signal.example.com/"
        );
        assert_eq!(
            page_base("wss://signal.example.com/").unwrap(),
            "https://signal.example.com/"
        );
        assert_eq!(
            page_base("ws://127.0.0.1:9099/webrtc").unwrap(),
            "http://127.0.0.1:9099/"
        );
        assert_eq!(
            page_base("ws://robots.example:8080/signal/webrtc").unwrap(),
            "http://robots.example:8080/signal/"
        );
        assert_eq!(
            page_base("wss://user:pw@signal.example.com/webrtc").unwrap(),
            "https://signal.example.com/"
        );
        assert!(page_base("https://signal.example.com/").is_err());
        assert!(page_base("signal.example.com").is_err());
        let links = Links::new("wss://signal.example.com/webrtc", None).unwrap();
        let room = links.room("54ICxFae_Ip7TJE2", "634w44TblL5Dbd9a", false);
        assert_eq!(
            room.watch_url,
            "https://signal.example.com/?watch=634w44TblL5Dbd9a"
        );
        assert_eq!(
            room.join_url,
            "https://signal.example.com/?join=54ICxFae_Ip7TJE2"
        );
    }

    #[test]
    fn a_page_url_carries_the_server() {
        let links = Links::new(
            "wss://signal.example.com/webrtc",
            Some("https://robots.example.org/view.html"),
        )
        .unwrap();
        assert_eq!(
            links.link("watch", "634w44TblL5Dbd9a"),
            "https://robots.example.org/view.html?watch=634w44TblL5Dbd9a&server=wss%3A%2F%2Fsignal.example.com%2Fwebrtc"
        );
        assert!(Links::new("wss://s.example/webrtc", Some("ftp://x")).is_err());
    }

    #[test]
    fn robot_and_server_urls_are_checked() {
        assert!(websocket_url("--robot", "ws://127.0.0.1:9090/webrtc").is_ok());
        assert!(websocket_url("--robot", "wss://robot.local/webrtc").is_ok());
        assert!(websocket_url("--robot", "http://127.0.0.1:9090/webrtc").is_err());
        assert!(websocket_url("--robot", "127.0.0.1:9090").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_full_jitter() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings: Vec<u128> = (0..10)
            .map(|_| {
                let c = b.ceiling();
                b.next_delay(0.5);
                c.as_millis()
            })
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(b.next_delay(1.0), Duration::from_secs(30));
        assert_eq!(b.next_delay(0.5), Duration::from_secs(15));
        for _ in 0..100 {
            b.next_delay(0.9);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn options_parse_with_robot_defaults() {
        let args =
            BridgeArgs::parse_from(["bridge", "--server", "wss://s.example/webrtc"]).unwrap();
        assert_eq!(args.robot, "ws://127.0.0.1:9090/webrtc");
        assert_eq!(args.max_viewers, 4);
        assert!(args.allow_src.is_empty());
        assert_eq!(args.backoff_min, Duration::from_millis(500));
        assert_eq!(args.backoff_max, Duration::from_secs(30));
        let args = BridgeArgs::parse_from([
            "bridge",
            "--server",
            "ws://127.0.0.1:1/webrtc",
            "--allow-src",
            "ros_image:/camera/*",
            "--allow-src",
            "ros_image:/arm/{left,right}",
            "--max-viewers",
            "2",
            "--state-file",
            "/var/lib/bridge/state.json",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            args.allow_src,
            ["ros_image:/camera/*", "ros_image:/arm/{left,right}"]
        );
        assert_eq!(args.max_viewers, 2);
        assert!(args.json);
        assert!(
            BridgeArgs::parse_from(["bridge", "--server", "ws://x/", "--max-viewers", "0"])
                .is_err()
        );
        assert!(
            BridgeArgs::parse_from(["bridge"]).is_err()
                || std::env::var_os("SIGNAL_BRIDGE_SERVER").is_some()
        );
    }

    #[test]
    fn tls_is_set_up_with_bundled_roots() {
        assert!(matches!(tls_connector(), Ok(Connector::Rustls(_))));
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
    }

    #[test]
    fn prints_text_once_per_room_and_json_always() {
        let links = Links::new("ws://127.0.0.1:9/webrtc", None).unwrap().room(
            "54ICxFae_Ip7TJE2",
            "634w44TblL5Dbd9a",
            false,
        );
        let event = BridgeEvent::Room(links.clone());
        let mut printed = None;
        let text = render_event(&event, false, &mut printed).unwrap();
        assert!(
            text.contains("http://127.0.0.1:9/?watch=634w44TblL5Dbd9a"),
            "{text}"
        );
        assert!(
            text.contains("http://127.0.0.1:9/?join=54ICxFae_Ip7TJE2"),
            "{text}"
        );
        let resumed = BridgeEvent::Room(RoomLinks {
            resumed: true,
            ..links.clone()
        });
        assert_eq!(render_event(&resumed, false, &mut printed), None);
        let lost = BridgeEvent::Disconnected { reason: "x".into() };
        assert_eq!(render_event(&lost, false, &mut printed), None);
        let line = render_event(&resumed, true, &mut printed).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "room");
        assert_eq!(v["watch_url"], "http://127.0.0.1:9/?watch=634w44TblL5Dbd9a");
        assert_eq!(v["resumed"], true);
        let line = render_event(&lost, true, &mut printed).unwrap();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "disconnected");
    }
}
