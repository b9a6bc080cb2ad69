//! `signal-server bridge --ice-endpoint`: the real server and the bridge
//! in-process, and real HTTP requests to the endpoint, as webrtc_ros's stock
//! ICE server provider (`ice_server_service.py`) makes them: a form-encoded
//! POST, JSON `{"username":…, "password":…}` back, checked against the
//! TURN REST scheme (an independent HMAC-SHA1 of the username under the
//! server's secret).

mod bridge_support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bridge_support::{RobotStub, TestServer, WAIT};
use serde_json::{json, Value};
use signal_server::bridge::{self, BridgeArgs, BridgeError, BridgeEvent, RoomLinks};
use signal_server::config::Config;
use testkit::unix_now;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const SECRET: &str = "robot-fleet-secret";
const URLS: [&str; 2] = [
    "turn:198.51.100.1:3478?transport=udp",
    "turn:198.51.100.1:3478?transport=tcp",
];

fn turn_config(ttl: u64) -> Config {
    let stun = json!([{"urls": "stun:stun.example.org:3478"}]);
    testkit::in_process::turn_config(SECRET, &URLS, Duration::from_secs(ttl), stun)
}

/// The bridge in-process, with every event it reports.
struct Bridge {
    events: mpsc::UnboundedReceiver<BridgeEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BridgeError>>,
}

impl Bridge {
    fn start(server: &TestServer, robot: &RobotStub, extra: &[&str]) -> Bridge {
        let url = server.ws_url();
        let robot = robot.url();
        let mut argv = vec!["bridge", "--server", &url, "--robot", &robot];
        argv.extend_from_slice(&["--backoff-min", "20ms", "--backoff-max", "200ms"]);
        argv.extend_from_slice(extra);
        let (tx, events) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bridge::run_with_events(
            BridgeArgs::parse_from(argv).unwrap(),
            async move {
                let _ = stopped.await;
            },
            tx,
        ));
        Bridge {
            events,
            stop: Some(stop),
            task,
        }
    }

    async fn next(&mut self) -> BridgeEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("a bridge event in time")
            .expect("the bridge runs")
    }

    /// The endpoint's address (reported first), then the room.
    async fn endpoint_and_room(&mut self) -> (SocketAddr, RoomLinks) {
        let BridgeEvent::IceEndpoint { addr } = self.next().await else {
            panic!("the endpoint is reported first");
        };
        loop {
            if let BridgeEvent::Room(links) = self.next().await {
                return (addr, links);
            }
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the bridge stops")
            .unwrap()
            .unwrap();
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, body).
async fn http(addr: SocketAddr, method: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: python-requests/2.31\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// What webrtc_ros's stock provider sends: `requests.post(uri,
/// {'username': ..., 'password': ...})`, with its parameters' defaults.
async fn provider_post(addr: SocketAddr) -> (u16, Value) {
    let (status, body) = http(addr, "POST", "username=&password=").await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("JSON, not {body:?}: {e}"));
    (status, v)
}

/// Checks a credential against the scheme: `<expiry>:<room>/<peer>`, the
/// expiry `ttl` seconds after a moment in `[since, now]`, and the password
/// base64(HMAC-SHA1(secret, username)) computed with ring.
fn check_scheme(answer: &Value, ttl: u64, since: u64) -> u64 {
    let username = answer["username"].as_str().expect("username");
    let (expiry, label) = username.split_once(':').expect("<expiry>:<label>");
    let expiry: u64 = expiry.parse().expect("a unix time");
    assert!(
        expiry >= since + ttl && expiry <= unix_now() + ttl,
        "{username}: minted within the test, {ttl} s ahead"
    );
    assert!(label.contains('/'), "{label} names a room and a peer");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    assert_eq!(
        answer["password"].as_str().unwrap(),
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    assert_eq!(answer["uris"], json!(URLS));
    expiry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_the_bridges_turn_credentials_as_webrtc_ros_reads_them() {
    let server = TestServer::with_config(turn_config(3600)).await;
    let robot = RobotStub::start().await;
    let since = unix_now();
    let mut bridge = Bridge::start(&server, &robot, &["--ice-endpoint", "127.0.0.1:0"]);
    let (addr, room) = bridge.endpoint_and_room().await;
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let (status, answer) = provider_post(addr).await;
    assert_eq!(status, 200, "{answer}");
    check_scheme(&answer, 3600, since);
    for token in [&room.watch, &room.join] {
        assert!(!answer["username"]
            .as_str()
            .unwrap()
            .contains(token.as_str()));
    }
    let ttl = answer["ttl"].as_u64().expect("ttl");
    assert!(ttl <= 3600 && ttl >= 3600 - WAIT.as_secs(), "ttl {ttl}");
    // The whole list too, for providers other than the stock one.
    assert_eq!(
        answer["ice_servers"][0]["urls"],
        "stun:stun.example.org:3478"
    );
    assert_eq!(answer["ice_servers"][1]["username"], answer["username"]);
    // GET does the same (curl); other methods are refused.
    let (status, body) = http(addr, "GET", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(http(addr, "DELETE", "").await.0, 405);
    bridge.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the endpoint closes with the bridge"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_refreshes_its_credentials_before_they_expire() {
    // A 4 s TTL: the bridge asks for fresh credentials after 2 s.
    let server = TestServer::with_config(turn_config(4)).await;
    let robot = RobotStub::start().await;
    let since = unix_now();
    let mut bridge = Bridge::start(&server, &robot, &["--ice-endpoint", "127.0.0.1:0"]);
    let (addr, _) = bridge.endpoint_and_room().await;
    let (_, first) = provider_post(addr).await;
    let first_expiry = check_scheme(&first, 4, since);
    // Poll until the answer changes (each poll is a real request).
    let deadline = tokio::time::Instant::now() + WAIT;
    let fresh = loop {
        let (status, answer) = provider_post(addr).await;
        assert_eq!(status, 200, "never expired meanwhile: {answer}");
        if answer["username"] != first["username"] {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fresh credential within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fresh_expiry = check_scheme(&fresh, 4, since);
    assert!(
        fresh_expiry > first_expiry,
        "{fresh_expiry} > {first_expiry}"
    );
    bridge.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_turn_on_the_server_the_endpoint_says_why_with_503() {
    let server = TestServer::with_config(Config::default()).await;
    let robot = RobotStub::start().await;
    let mut bridge = Bridge::start(&server, &robot, &["--ice-endpoint", "127.0.0.1:0"]);
    let (addr, _) = bridge.endpoint_and_room().await;
    let (status, answer) = provider_post(addr).await;
    assert_eq!(status, 503);
    assert!(answer.get("username").is_none(), "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("--turn-secret"),
        "{answer}"
    );
    bridge.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_endpoint_is_refused_unless_asked_for() {
    let server = TestServer::with_config(turn_config(3600)).await;
    let robot = RobotStub::start().await;
    let bridge = Bridge::start(&server, &robot, &["--ice-endpoint", "0.0.0.0:0"]);
    let err = tokio::time::timeout(WAIT, bridge.task)
        .await
        .expect("refused up front")
        .unwrap()
        .expect_err("a non-loopback address is refused");
    assert!(matches!(err, BridgeError::IceEndpoint { .. }), "{err}");
    assert!(err.to_string().contains("--ice-endpoint-public"), "{err}");
    let mut bridge = Bridge::start(
        &server,
        &robot,
        &["--ice-endpoint", "0.0.0.0:0", "--ice-endpoint-public"],
    );
    let (addr, _) = bridge.endpoint_and_room().await;
    assert!(addr.ip().is_unspecified());
    let (status, _) = provider_post(SocketAddr::from(([127, 0, 0, 1], addr.port()))).await;
    assert_eq!(status, 200);
    bridge.stop().await;
    server.stop().await;
}
