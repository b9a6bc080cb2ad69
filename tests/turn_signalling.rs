//! TURN credentials on the signalling side, through real sockets: every
//! `init` reply (host, guest, watcher, query-string attach) carries
//! credentials of its peer's own, checked against an independent HMAC-SHA1;
//! `{"type":"ice_servers"}` mints fresh ones, is never relayed and is
//! rate-limited; and the binary's own relay accepts what its `init` replies
//! hand out (coturn's `turnutils_uclient` relaying through it with them).

mod common;

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use signal_server::config::Config;
use testkit::tools::{echo_peer, output_within};
use testkit::unix_now;

const SECRET: &str = "north-sea-secret";
const TTL: u64 = 600;
const URLS: [&str; 2] = [
    "turn:turn.example.com:3478?transport=udp",
    "turns:turn.example.com:443?transport=tcp",
];

fn stun() -> Value {
    json!([{"urls": "stun:stun.example.org:3478"}])
}

fn turn_config() -> Config {
    testkit::in_process::turn_config(SECRET, &URLS, Duration::from_secs(TTL), stun())
}

/// base64(HMAC-SHA1(secret, username)), computed with ring rather than the
/// server's hmac/sha1 crates.
fn independent_credential(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// What a reply's minted entry says, checked against the scheme: the static
/// entry first, then `{urls, username, credential}` with the expiry about
/// `TTL` after `since`, the label `<room>/<peer>`, and the HMAC. Returns
/// (expiry, room label).
fn check_minted(reply: &Value, peer: &str, since: u64) -> (u64, String) {
    let list = reply["ice_servers"].as_array().expect("ice_servers");
    assert_eq!(list.len(), 2, "{reply}");
    assert_eq!(list[0], stun()[0], "the static entry comes first");
    let minted = &list[1];
    assert_eq!(minted["urls"], json!(URLS));
    let username = minted["username"].as_str().expect("username");
    let (expiry, label) = username.split_once(':').expect("<expiry>:<label>");
    let expiry: u64 = expiry.parse().expect("a unix time");
    assert!(
        expiry >= since + TTL && expiry <= unix_now() + TTL,
        "expiry {expiry} is minted now, {TTL} s ahead"
    );
    let (room, who) = label.split_once('/').expect("<room>/<peer>");
    assert_eq!(who, peer, "the label names the peer");
    assert!(!room.is_empty());
    assert_eq!(
        minted["credential"].as_str().unwrap(),
        independent_credential(SECRET, username),
        "credential = base64(HMAC-SHA1(secret, username))"
    );
    assert_eq!(reply["ice_servers_ttl"], TTL);
    (expiry, room.to_string())
}

#[tokio::test]
async fn every_init_reply_carries_credentials_of_its_own_for_host_guest_and_watcher() {
    let server = TestServer::with_config(turn_config()).await;
    let since = unix_now();
    let mut host = server.connect().await;
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    let host_id = init["peer"].as_str().unwrap().to_string();
    let (_, room) = check_minted(&init, &host_id, since);
    let tokens: Vec<String> = ["join", "watch", "resume"]
        .iter()
        .map(|k| init[k].as_str().unwrap().to_string())
        .collect();

    // A guest by message, a watcher by query string: the same room label,
    // each its own peer id.
    let mut guest = server.connect().await;
    guest
        .send_json(json!({"type": "init", "join": tokens[0]}))
        .await;
    let g = guest.recv_type("init").await;
    let guest_id = g["peer"].as_str().unwrap();
    let mut watcher = server
        .connect_to(&format!("/webrtc?watch={}", tokens[1]))
        .await;
    let w = watcher.recv_type("init").await;
    let watcher_id = w["peer"].as_str().unwrap();
    assert_eq!(w["role"], "watch");
    let usernames: Vec<String> = [&init, &g, &w]
        .iter()
        .map(|r| {
            r["ice_servers"][1]["username"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (reply, peer) in [(&g, guest_id), (&w, watcher_id)] {
        let (_, r) = check_minted(reply, peer, since);
        assert_eq!(r, room, "one room, one label");
    }
    assert_ne!(usernames[0], usernames[1]);
    assert_ne!(usernames[1], usernames[2]);
    for name in &usernames {
        for token in &tokens {
            assert!(!name.contains(token.as_str()), "{name} names no token");
        }
    }
}

#[tokio::test]
async fn ice_servers_mints_fresh_credentials_and_is_never_relayed() {
    let server = TestServer::with_config(turn_config()).await;
    let mut c = server.connect().await;
    c.send(r#"{"type":"ice_servers"}"#).await;
    c.expect_error("not_in_room").await;

    let mut room = room(&server).await;
    let (mut guest, guest_id) = attach(&server, &mut room, "join").await;
    let since = unix_now();
    // Unknown fields are ignored, as on every message.
    guest
        .send(r#"{"type":"ice_servers","to":"h0st1234","x":[1]}"#)
        .await;
    let reply = guest.recv_type("ice_servers").await;
    check_minted(&reply, &guest_id, since);
    assert_eq!(
        reply.as_object().unwrap().len(),
        3,
        "type, ice_servers, ice_servers_ttl: {reply}"
    );
    // The host never sees it: the guest's next message is what it gets.
    guest.send(r#"{"type":"answer","sdp":"v=0\r\n"}"#).await;
    let next = room.host.recv().await;
    assert_eq!(next["type"], "answer", "{next}");
    assert_eq!(next["from"], guest_id.as_str());

    // The host (the robot's bridge) refreshes its own the same way.
    room.host.send(r#"{"type":"ice_servers"}"#).await;
    let reply = room.host.recv_type("ice_servers").await;
    check_minted(&reply, &room.host_id, since);
}

#[tokio::test]
async fn ice_servers_requests_are_rate_limited_like_any_message() {
    let server = TestServer::with_config(Config {
        // No refill: the test does not depend on how fast it runs.
        rate_per_sec: 0,
        rate_burst: 3,
        ..turn_config()
    })
    .await;
    let mut host = server.connect().await;
    host.send(r#"{"type":"init"}"#).await;
    host.recv_type("init").await;
    for _ in 0..4 {
        host.send(r#"{"type":"ice_servers"}"#).await;
    }
    // The init took one token of three: two replies, then the refusal.
    host.recv_type("ice_servers").await;
    host.recv_type("ice_servers").await;
    host.expect_error("rate_limited").await;
}

#[tokio::test]
async fn without_turn_the_static_list_is_handed_out_unchanged() {
    let server = TestServer::with_config(Config {
        ice_servers: stun(),
        ..Config::default()
    })
    .await;
    let mut room = room(&server).await;
    let (mut guest, _) = attach(&server, &mut room, "watch").await;
    guest.send(r#"{"type":"ice_servers"}"#).await;
    let reply = guest.recv_text().await;
    assert_eq!(
        reply,
        r#"{"type":"ice_servers","ice_servers":[{"urls":"stun:stun.example.org:3478"}]}"#
    );
}

#[test]
fn the_protocol_documents_credentials_verify_under_its_secret() {
    // docs/PROTOCOL.md's examples are literal: their credentials are what
    // `--turn-secret north-sea-secret` mints for their usernames.
    let doc = include_str!("../docs/PROTOCOL.md");
    let mut seen = 0;
    for line in doc.lines().filter(|l| l.contains("\"credential\"")) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let minted = v["ice_servers"].as_array().unwrap().last().unwrap();
        let username = minted["username"].as_str().unwrap();
        assert_eq!(
            minted["credential"].as_str().unwrap(),
            independent_credential(SECRET, username),
            "{line}"
        );
        let expiry: u64 = username.split_once(':').unwrap().0.parse().unwrap();
        assert!(expiry > 1_600_000_000, "{username}");
        seen += 1;
    }
    assert_eq!(seen, 2, "the init and ice_servers examples");
}

// ---- the binary: its relay accepts its own credentials ----

/// The server's HTTP and TURN addresses, from its JSON log lines.
fn addresses(logs: &std::sync::mpsc::Receiver<String>) -> (String, u16) {
    let (mut http, mut turn) = (None, None);
    while http.is_none() || turn.is_none() {
        let line = logs
            .recv_timeout(WAIT)
            .expect("the server logs its addresses");
        assert!(!line.contains(SECRET), "the secret is never logged: {line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["message"].as_str() {
            Some("listening") => http = v["local"].as_str().map(str::to_owned),
            Some("TURN relay listening (UDP and TCP)") => {
                turn = v["addr"]
                    .as_str()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .map(|a| a.port())
            }
            _ => {}
        }
    }
    (http.unwrap(), turn.unwrap())
}

#[tokio::test]
async fn the_binarys_relay_accepts_the_credentials_its_init_replies_hand_out() {
    let uclient = require_tool("turnutils_uclient", "coturn");
    let peer_bin = require_tool("turnutils_peer", "coturn");
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_signal-server"))
        .args(["--log-format", "json", "--bind", "127.0.0.1:0"])
        .args(["--turn-listen", "127.0.0.1:0", "--turn-secret", SECRET])
        .args(["--turn-allow-peer", "127.0.0.0/8", "--turn-ttl", "10m"])
        .env("RUST_LOG", "info")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn signal-server");
    let stderr = child.stderr.take().unwrap();
    let (tx, logs) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (http, turn_port) = addresses(&logs);
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/webrtc"))
        .await
        .expect("connect");
    let mut host = Client { ws };
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    let minted = &init["ice_servers"][0];
    assert_eq!(
        minted["urls"],
        json!([
            format!("turn:127.0.0.1:{turn_port}?transport=udp"),
            format!("turn:127.0.0.1:{turn_port}?transport=tcp")
        ]),
        "{init}"
    );
    assert_eq!(init["ice_servers_ttl"], 600);
    let username = minted["username"].as_str().unwrap();
    let credential = minted["credential"].as_str().unwrap();

    // coturn's client, with the minted username and password as long-term
    // credentials (not -W: it must not know the secret), through the
    // relay to an echo peer.
    let port = testkit::free_udp_port();
    let mut peer = echo_peer(&peer_bin, port).await;
    let mut cmd = tokio::process::Command::new(&uclient);
    cmd.args(["-u", username, "-w", credential, "-e", "127.0.0.1"])
        .args(["-r", &port.to_string(), "-n", "10", "-m", "1", "-l", "120"])
        .args(["-p", &turn_port.to_string(), "127.0.0.1"]);
    let text = output_within(&mut cmd, Duration::from_secs(60)).await;
    // Every packet sent came back. (uclient sometimes reports its 10
    // messages twice, as 20 sent and 20 received: what matters is that none
    // was lost and at least the 10 were sent.)
    let count = |key: &str| -> Option<u64> {
        let at = text.rfind(key)? + key.len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let (sent, received) = (count("tot_send_msgs="), count("tot_recv_msgs="));
    assert!(
        sent.is_some_and(|n| n >= 10) && sent == received,
        "sent {sent:?}, received {received:?}; uclient output:\n{text}"
    );
    // A forged credential for the same username is refused.
    let mut forged = tokio::process::Command::new(&uclient);
    forged
        .args(["-u", username, "-w", "Zm9yZ2VkIQ==", "-e", "127.0.0.1"])
        .args(["-r", &port.to_string(), "-n", "2", "-m", "1", "-l", "120"])
        .args(["-p", &turn_port.to_string(), "127.0.0.1"]);
    let text = output_within(&mut forged, Duration::from_secs(60)).await;
    assert!(
        text.contains("Cannot complete Allocation") && !text.contains("tot_recv_msgs"),
        "a forged credential allocates nothing:\n{text}"
    );
    let _ = peer.kill().await;
    let _ = child.kill();
    let _ = child.wait();
}
