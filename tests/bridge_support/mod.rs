//! Test helpers for the bridge: the real server in-process, a scripted
//! stand-in for webrtc_ros, a TCP proxy that can cut the bridge off, viewer
//! clients, and the bridge itself in-process. Every wait is for an event,
//! bounded by a timeout.

#![allow(dead_code, unused_imports)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signal_server::bridge::{self, BridgeArgs, BridgeError, BridgeEvent, Disconnect, RoomLinks};
use testkit::frames::{self, Read};
use testkit::Client;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

// The signalling server, in-process, from the test kit.
pub use testkit::in_process::{init_logs, memory_registry, TestServer};

/// How long any single expected event may take: longer than the kit's
/// `WAIT`, as a bridge event may wait out a reconnection back-off on a
/// loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------
// A stand-in for webrtc_ros
// ---------------------------------------------------------------------------

/// What the stand-in saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RobotLog {
    /// A WebSocket connection (one WebRTC peer connection on a real robot).
    Opened(u32),
    /// A text message on a connection, as JSON.
    Received(u32, Value),
    /// A connection ended.
    Closed(u32),
}

struct RobotCtl {
    down: AtomicBool,
    next_id: AtomicU32,
    kill: watch::Sender<u64>,
    log: Mutex<Vec<RobotLog>>,
    tx: mpsc::UnboundedSender<RobotLog>,
}

/// A WebSocket server that behaves like webrtc_ros's `/webrtc`: nothing until
/// `configure`, then an `offer` and two `ice_candidate`s, each naming the
/// connection so tests can tell whose they are. It records everything.
pub struct RobotStub {
    pub addr: SocketAddr,
    ctl: Arc<RobotCtl>,
    rx: mpsc::UnboundedReceiver<RobotLog>,
    pending: VecDeque<RobotLog>,
    task: JoinHandle<()>,
}

impl RobotStub {
    pub async fn start() -> RobotStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (kill, _) = watch::channel(0u64);
        let ctl = Arc::new(RobotCtl {
            down: AtomicBool::new(false),
            next_id: AtomicU32::new(1),
            kill,
            log: Mutex::new(Vec::new()),
            tx,
        });
        let accept_ctl = Arc::clone(&ctl);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if accept_ctl.down.load(Ordering::SeqCst) {
                    // webrtc_ros is not running: the connection goes nowhere.
                    drop(tcp);
                    continue;
                }
                tokio::spawn(robot_conn(tcp, Arc::clone(&accept_ctl)));
            }
        });
        RobotStub {
            addr,
            ctl,
            rx,
            pending: VecDeque::new(),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/webrtc", self.addr)
    }

    /// While down, connections are dropped before the WebSocket handshake.
    pub fn set_down(&self, down: bool) {
        self.ctl.down.store(down, Ordering::SeqCst);
    }

    /// Drops every open connection at once (webrtc_ros crashing).
    pub fn kill_all(&self) {
        self.ctl.kill.send_modify(|n| *n += 1);
    }

    /// Everything seen so far.
    pub fn log(&self) -> Vec<RobotLog> {
        self.ctl.log.lock().unwrap().clone()
    }

    pub fn opened_count(&self) -> usize {
        self.log()
            .iter()
            .filter(|e| matches!(e, RobotLog::Opened(_)))
            .count()
    }

    /// Messages received on connection `id`.
    pub fn received_on(&self, id: u32) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter_map(|e| match e {
                RobotLog::Received(i, v) if i == id => Some(v),
                _ => None,
            })
            .collect()
    }

    pub fn is_closed(&self, id: u32) -> bool {
        self.log().contains(&RobotLog::Closed(id))
    }

    /// Waits for an event matching `pred`; events that do not match are kept
    /// for later waits.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&RobotLog) -> Option<T>,
    ) -> T {
        if let Some(i) = self.pending.iter().position(|e| pred(e).is_some()) {
            let e = self.pending.remove(i).unwrap();
            return pred(&e).unwrap();
        }
        let rx = &mut self.rx;
        let pending = &mut self.pending;
        within(what, async {
            loop {
                let e = rx.recv().await.expect("robot stub stopped");
                if let Some(v) = pred(&e) {
                    return v;
                }
                pending.push_back(e);
            }
        })
        .await
    }

    pub async fn opened(&mut self) -> u32 {
        self.wait_for("a robot connection", |e| match e {
            RobotLog::Opened(id) => Some(*id),
            _ => None,
        })
        .await
    }

    pub async fn received(&mut self, id: u32, kind: &str) -> Value {
        let what = format!("`{kind}` on robot connection {id}");
        self.wait_for(&what, |e| match e {
            RobotLog::Received(i, v) if *i == id && v["type"] == kind => Some(v.clone()),
            _ => None,
        })
        .await
    }

    pub async fn closed(&mut self, id: u32) {
        let what = format!("robot connection {id} to close");
        self.wait_for(&what, |e| (*e == RobotLog::Closed(id)).then_some(()))
            .await
    }
}

impl Drop for RobotStub {
    fn drop(&mut self) {
        self.task.abort();
        self.kill_all();
    }
}

fn record(ctl: &RobotCtl, e: RobotLog) {
    ctl.log.lock().unwrap().push(e.clone());
    let _ = ctl.tx.send(e);
}

async fn robot_conn(tcp: TcpStream, ctl: Arc<RobotCtl>) {
    let mut kill = ctl.kill.subscribe();
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let id = ctl.next_id.fetch_add(1, Ordering::SeqCst);
    record(&ctl, RobotLog::Opened(id));
    let mut offers = 0;
    loop {
        tokio::select! {
            _ = kill.changed() => break,
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        // As webrtc_ros does: invalid JSON drops the client.
                        break;
                    };
                    let configure = v["type"] == "configure";
                    record(&ctl, RobotLog::Received(id, v));
                    if configure {
                        offers += 1;
                        let replies = [
                            json!({"type": "offer", "sdp": format!("v=0\r\no=robot {id} {offers} IN IP4 127.0.0.1\r\ns=robot-conn-{id}\r\n")}),
                            json!({"type": "ice_candidate", "sdp_mid": "video", "sdp_mline_index": 0,
                                   "candidate": format!("candidate:{id}1 1 udp 2122260223 198.51.100.1 {} typ host", 5000 + id)}),
                            json!({"type": "ice_candidate", "sdp_mid": "video", "sdp_mline_index": 0,
                                   "candidate": format!("candidate:{id}2 1 udp 2122260223 198.51.100.1 {} typ host", 6000 + id)}),
                        ];
                        for r in replies {
                            if ws.send(Message::text(r.to_string())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    record(&ctl, RobotLog::Closed(id));
}

/// The robot connection a message from the stand-in came from (`robot-conn-N`
/// in an offer, `candidate:N1`/`candidate:N2` in a candidate).
pub fn robot_conn_of(msg: &Value) -> Option<u32> {
    if let Some(sdp) = msg["sdp"].as_str() {
        let i = sdp.find("robot-conn-")? + "robot-conn-".len();
        return sdp[i..].trim_end().parse().ok();
    }
    let c = msg["candidate"].as_str()?;
    let digits = c.strip_prefix("candidate:")?.split(' ').next()?;
    digits[..digits.len() - 1].parse().ok()
}

// ---------------------------------------------------------------------------
// A TCP proxy between the bridge and the server
// ---------------------------------------------------------------------------

struct ProxyCtl {
    target: Mutex<SocketAddr>,
    blocked: AtomicBool,
    cut: watch::Sender<u64>,
}

/// Forwards TCP to a target that can change; can cut every connection (a
/// network drop) and refuse new ones (the server unreachable).
pub struct Proxy {
    pub addr: SocketAddr,
    ctl: Arc<ProxyCtl>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0u64);
        let ctl = Arc::new(ProxyCtl {
            target: Mutex::new(target),
            blocked: AtomicBool::new(false),
            cut,
        });
        let accept_ctl = Arc::clone(&ctl);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if accept_ctl.blocked.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = *accept_ctl.target.lock().unwrap();
                let mut cut = accept_ctl.cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.changed() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy { addr, ctl, task }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/webrtc", self.addr)
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.ctl.target.lock().unwrap() = target;
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.ctl.blocked.store(blocked, Ordering::SeqCst);
    }

    /// Drops every proxied connection without a close frame.
    pub fn sever(&self) {
        self.ctl.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.sever();
    }
}

// ---------------------------------------------------------------------------
// Viewers
// ---------------------------------------------------------------------------

/// A browser stand-in on the watch (or join) link.
pub struct Viewer {
    client: Client,
    pub peer: String,
    /// Everything received, in order (the init reply excluded).
    pub log: Vec<Value>,
    pending: VecDeque<Value>,
}

impl Viewer {
    /// Connects with `?watch=TOKEN` (or `?join=`), as the demo page's
    /// webrtc_ros.js-style clients do, and reads the init reply.
    pub async fn connect(server: SocketAddr, kind: &str, token: &str) -> Viewer {
        let (client, peer) = testkit::join_by_query(&server, kind, token).await;
        Viewer {
            client,
            peer,
            log: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Connects with `?token=JWT` (a server in token mode) and reads the
    /// init reply.
    pub async fn with_token(server: SocketAddr, token: &str) -> Viewer {
        let mut client = Client::connect(&format!("ws://{server}/webrtc?token={token}")).await;
        let init = client.recv_type("init").await;
        let peer = init["peer"].as_str().expect("peer id").to_string();
        Viewer {
            client,
            peer,
            log: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    pub async fn watch(server: SocketAddr, links: &RoomLinks) -> Viewer {
        Viewer::connect(server, "watch", &links.watch).await
    }

    pub async fn send(&mut self, v: Value) {
        self.client.send_json(v).await;
    }

    async fn next_raw(&mut self) -> Value {
        self.client.recv_within(WAIT).await
    }

    /// The next message of type `kind`; others are kept for later waits.
    pub async fn recv(&mut self, kind: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|m| m["type"] == kind) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let m = self.next_raw().await;
            self.log.push(m.clone());
            if m["type"] == kind {
                return m;
            }
            self.pending.push_back(m);
        }
    }

    /// The next error with this code.
    pub async fn error(&mut self, code: &str) -> Value {
        let e = self.recv("error").await;
        assert_eq!(e["code"], code, "{e}");
        e
    }

    /// An offer and its two candidates from the robot; returns the robot
    /// connection they came from.
    pub async fn expect_offer(&mut self) -> u32 {
        let offer = self.recv("offer").await;
        assert_eq!(offer["to"], self.peer.as_str(), "{offer}");
        assert!(offer.get("from").is_none(), "{offer}");
        let conn = robot_conn_of(&offer).expect("offer names its robot connection");
        for _ in 0..2 {
            let ice = self.recv("ice_candidate").await;
            assert_eq!(ice["to"], self.peer.as_str(), "{ice}");
            assert_eq!(robot_conn_of(&ice), Some(conn), "{ice}");
        }
        conn
    }

    pub async fn close(self) {
        self.client.close().await;
    }
}

pub fn configure(stream: &str, src: &str) -> Value {
    json!({"type": "configure", "actions": [
        {"type": "add_stream", "id": stream},
        {"type": "add_video_track", "stream_id": stream, "id": format!("{stream}/subscribed_video"), "src": src},
    ]})
}

/// `viewer` asks for `src` on stream `stream`: the robot opens a connection
/// for it, whose offer and candidates reach the viewer; returns that robot
/// connection.
pub async fn media(viewer: &mut Viewer, robot: &mut RobotStub, stream: &str, src: &str) -> u32 {
    viewer.send(configure(stream, src)).await;
    let conn = robot.opened().await;
    assert_eq!(viewer.expect_offer().await, conn);
    conn
}

pub fn answer(sdp: &str) -> Value {
    json!({"type": "answer", "sdp": sdp})
}

pub fn ice(candidate: &str) -> Value {
    json!({"type": "ice_candidate", "sdp_mid": "0", "sdp_mline_index": 0, "candidate": candidate})
}

// ---------------------------------------------------------------------------
// The bridge, in-process
// ---------------------------------------------------------------------------

pub struct BridgeRun {
    events: mpsc::UnboundedReceiver<BridgeEvent>,
    pub seen: Vec<BridgeEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BridgeError>>,
}

/// Bridge options for tests: quick reconnection, plus `extra`.
pub fn bridge_args(server: &str, robot: &str, extra: &[&str]) -> BridgeArgs {
    let mut argv = vec![
        "bridge",
        "--server",
        server,
        "--robot",
        robot,
        "--backoff-min",
        "20ms",
        "--backoff-max",
        "200ms",
        "--connect-timeout",
        "5s",
    ];
    argv.extend_from_slice(extra);
    BridgeArgs::parse_from(argv).unwrap()
}

impl BridgeRun {
    pub fn start(args: BridgeArgs) -> BridgeRun {
        let (tx, events) = mpsc::unbounded_channel();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bridge::run_with_events(
            args,
            async move {
                let _ = rx.await;
            },
            tx,
        ));
        BridgeRun {
            events,
            seen: Vec::new(),
            stop: Some(stop),
            task,
        }
    }

    async fn next_event(&mut self) -> BridgeEvent {
        let events = &mut self.events;
        let e = within("a bridge event", events.recv())
            .await
            .expect("bridge ended");
        self.seen.push(e.clone());
        e
    }

    /// The next room the bridge hosts.
    pub async fn room(&mut self) -> RoomLinks {
        loop {
            if let BridgeEvent::Room(links) = self.next_event().await {
                return links;
            }
        }
    }

    /// The next lost server connection.
    pub async fn disconnected(&mut self) -> Disconnect {
        loop {
            if let BridgeEvent::Disconnected { reason } = self.next_event().await {
                return reason;
            }
        }
    }

    /// Waits for the bridge to end by itself, and what it returned.
    pub async fn finished(mut self) -> Result<(), BridgeError> {
        within("the bridge to end by itself", &mut self.task)
            .await
            .expect("bridge task")
    }

    /// Stops the bridge as SIGTERM would, and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        within("the bridge to stop", &mut self.task)
            .await
            .expect("bridge task")
            .expect("bridge result");
    }
}

impl Drop for BridgeRun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The usual set-up: the server (default config), the stand-in robot, the
/// bridge between them (quick reconnection, plus `extra` options), and the
/// room it hosts.
pub struct Rig {
    pub server: TestServer,
    pub robot: RobotStub,
    pub bridge: BridgeRun,
    pub room: RoomLinks,
}

impl Rig {
    pub async fn start(extra: &[&str]) -> Rig {
        init_logs();
        let server = TestServer::with_config(signal_server::config::Config::default()).await;
        let robot = RobotStub::start().await;
        let mut bridge = BridgeRun::start(bridge_args(&server.ws_url(), &robot.url(), extra));
        let room = bridge.room().await;
        Rig {
            server,
            robot,
            bridge,
            room,
        }
    }
}

/// A scripted signalling server, for what the real one would never send.
pub struct FakeServer {
    listener: TcpListener,
    pub addr: SocketAddr,
}

pub struct FakeConn {
    ws: WebSocketStream<TcpStream>,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        FakeServer { listener, addr }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/webrtc", self.addr)
    }

    pub async fn accept(&self) -> FakeConn {
        let (tcp, _) = within("the bridge to connect", self.listener.accept())
            .await
            .unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        FakeConn { ws }
    }
}

impl FakeConn {
    /// The next frame that is not a ping or pong (`None` at the end).
    pub async fn ws_next(&mut self) -> Option<Message> {
        let ws = &mut self.ws;
        within("a frame from the bridge", async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(m)) => return Some(m),
                    _ => return None,
                }
            }
        })
        .await
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// Closes the connection with `code` and `reason`.
    pub async fn close_with(&mut self, code: u16, reason: &str) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.to_string().into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
    }

    pub async fn recv(&mut self) -> Value {
        match frames::read(&mut self.ws, WAIT).await {
            Read::Json(v) => v,
            other => panic!("expected a message from the bridge, got {other:?}"),
        }
    }
}

/// A fresh directory of its own under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "bridge-test-{name}-{}-{}",
        std::process::id(),
        signal_server::token::new_peer_id().as_str()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Counts messages by robot connection in a viewer's log.
pub fn conns_in(log: &[Value]) -> HashMap<Option<u32>, usize> {
    let mut m = HashMap::new();
    for v in log {
        if v["type"] == "offer" || v["type"] == "ice_candidate" {
            *m.entry(robot_conn_of(v)).or_default() += 1;
        }
    }
    m
}
