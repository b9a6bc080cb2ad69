//! A room's end and a host's return over real sockets: `{"type":"close_room"}`
//! from a host (its viewers hear `room_closed` at once, not after the grace
//! period; anyone else is refused), on one instance and across instances
//! sharing Redis, and the `peers` list of a resumed host's `init` reply.

mod common;
mod redis_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{attach, room, Client, Endpoint, Room, TestServer};
use redis_support::{quick_options, Instance, RedisServer};
use serde_json::{json, Value};
use signal_server::config::Config;

/// A grace period no test waits out: a close within it is "at once".
const LONG_GRACE: Duration = Duration::from_secs(120);

fn config() -> Config {
    Config {
        host_grace: LONG_GRACE,
        ..Config::default()
    }
}

/// The peer sees `room_closed`, then the close 1000.
async fn told_room_closed(c: &mut Client) {
    c.recv_type("room_closed").await;
    c.expect_close(1000).await;
}

/// A host, a guest and a watcher on `a`, `b` and `c`: the watcher's and the
/// guest's `close_room` are refused and change nothing; the host's ends the
/// room for everyone at once; its tokens die on every instance.
async fn the_host_ends_its_room(a: &impl Endpoint, b: &impl Endpoint, c: &impl Endpoint) {
    let mut r = room(a).await;
    let (mut g, _) = attach(b, &mut r, "join").await;
    let (mut w, _) = attach(c, &mut r, "watch").await;
    for p in [&mut g, &mut w] {
        p.send(r#"{"type":"close_room"}"#).await;
        let e = p.expect_error("forbidden").await;
        assert!(e["message"].as_str().unwrap_or("").contains("host"), "{e}");
    }
    r.host.send(r#"{"type":"offer","sdp":"v=0\r\n"}"#).await;
    for p in [&mut g, &mut w] {
        assert_eq!(p.recv_type("offer").await["sdp"], "v=0\r\n");
    }
    let asked = Instant::now();
    r.host.send(r#"{"type":"close_room"}"#).await;
    for p in [&mut g, &mut w, &mut r.host] {
        told_room_closed(p).await;
    }
    assert!(asked.elapsed() < LONG_GRACE / 4, "not at once");
    for server in [a.addr(), b.addr(), c.addr()] {
        for (k, t) in [
            ("join", &r.join),
            ("watch", &r.watch),
            ("resume", &r.resume),
        ] {
            let mut x = Client::connect(&server.url_to("/webrtc")).await;
            x.send_json(json!({"type": "init", k: t})).await;
            x.expect_error("room_not_found").await;
        }
    }
}

#[tokio::test]
async fn a_host_ends_its_room_at_once_and_no_viewer_may() {
    let server = TestServer::with_config(config()).await;
    the_host_ends_its_room(&server, &server, &server).await;
    server.wait_metric("signal_rooms", 0.0).await;
    // Before entering a room, there is nothing to close.
    let mut c = server.connect().await;
    c.send(r#"{"type":"close_room"}"#).await;
    c.expect_error("not_in_room").await;
    server.stop().await;
}

#[tokio::test]
async fn a_host_ends_its_room_for_viewers_on_other_instances() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let c = Instance::start(quick_options(&redis.url()), config()).await;
    the_host_ends_its_room(&a, &b, &c).await;
    // A viewer on the host's own instance, too.
    the_host_ends_its_room(&b, &b, &a).await;
    for i in [a, b, c] {
        i.stop().await;
    }
}

/// The `(id, role)` pairs of a `peers` list.
fn peer_set(peers: &Value) -> BTreeSet<(String, String)> {
    peers
        .as_array()
        .unwrap_or_else(|| panic!("peers is a list: {peers}"))
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id").to_string(),
                p["role"].as_str().expect("role").to_string(),
            )
        })
        .collect()
}

/// A host with peers on `b` and `c` drops and resumes on `c`: its `init`
/// lists exactly the peers present (one that left meanwhile is not), each
/// also announced by a `peer_joined`; a fresh room's `init` has no list.
async fn a_resumed_host_is_told_who_is_present(
    a: &impl Endpoint,
    b: &impl Endpoint,
    c: &impl Endpoint,
) {
    let mut r = room(a).await;
    let (_g, gid) = attach(b, &mut r, "join").await;
    let (_w, wid) = attach(c, &mut r, "watch").await;
    let (gone, _) = attach(c, &mut r, "join").await;
    let Room { host, resume, .. } = r;
    host.close().await;
    gone.close().await;
    // Each close is answered once the server has recorded the leave.
    let mut h = Client::connect(&c.url_to("/webrtc")).await;
    h.send_json(json!({"type": "init", "resume": resume})).await;
    let init = h.recv_type("init").await;
    let want: BTreeSet<(String, String)> =
        [(gid, "join".to_string()), (wid, "watch".to_string())].into();
    assert_eq!(peer_set(&init["peers"]), want, "{init}");
    let mut announced = BTreeSet::new();
    for _ in 0..want.len() {
        let m = h.recv_type("peer_joined").await;
        announced.insert((
            m["peer"].as_str().unwrap_or("").to_string(),
            m["role"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert_eq!(announced, want);
    let mut fresh = Client::connect(&a.url_to("/webrtc")).await;
    fresh.send(r#"{"type":"init"}"#).await;
    let init = fresh.recv_type("init").await;
    assert!(init.get("peers").is_none(), "{init}");
}

#[tokio::test]
async fn a_resumed_host_is_told_the_peers_still_present() {
    let server = TestServer::with_config(config()).await;
    a_resumed_host_is_told_who_is_present(&server, &server, &server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_host_resumed_on_another_instance_is_told_the_peers_still_present() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let c = Instance::start(quick_options(&redis.url()), config()).await;
    a_resumed_host_is_told_who_is_present(&a, &b, &c).await;
    for i in [a, b, c] {
        i.stop().await;
    }
}

/// The idle timeout closes a connection that has not entered a room (1008,
/// "not in a room"), and only such a one: a host and a guest that entered
/// theirs carry on relaying well past it.
#[tokio::test]
async fn a_connection_outside_any_room_is_closed_after_the_idle_timeout_and_members_are_not() {
    let idle = Duration::from_millis(600);
    let server = TestServer::with_config(Config {
        idle_timeout: idle,
        ..config()
    })
    .await;
    let mut lurker = server.connect().await;
    let mut r = room(&server).await;
    let (mut g, _) = attach(&server, &mut r, "join").await;
    let opened = Instant::now();
    match lurker.ended().await {
        testkit::client::Ended::Close(code, reason) => {
            assert_eq!((code, reason.as_str()), (1008, "not in a room"));
        }
        other => panic!("not closed: {other:?}"),
    }
    assert!(
        opened.elapsed() >= idle / 2,
        "closed before its idle timeout"
    );
    tokio::time::sleep(idle * 2).await;
    r.host.send(r#"{"type":"offer","sdp":"v=0\r\n"}"#).await;
    assert_eq!(g.recv_type("offer").await["sdp"], "v=0\r\n");
    g.send(r#"{"type":"answer","sdp":"v=0\r\n"}"#).await;
    assert_eq!(r.host.recv_type("answer").await["type"], "answer");
    server.stop().await;
}
