//! Webhooks fed by real rooms: a server (in this process, on port 0) whose
//! sessions are driven by real WebSocket clients POSTs each room and peer
//! event to a real HTTP receiver on a loopback port: every event, in order
//! per room, signed (checked by the test's own HMAC), retried after a 500,
//! nothing lost over a receiver outage within the retry window, and with two
//! instances sharing Redis, each event exactly once.

mod admin_support;
mod common;
mod redis_support;
mod webhooks_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{attach, room, Client, Endpoint, Room, TestServer};
use redis_support::{quick_options, Instance, RedisServer};
use serde_json::{json, Value};
use signal_server::config::Config;
use webhooks_support::{always, options, secret, Hit, Receiver, Reply, Script};

fn config_for(receiver: &Receiver, secret: &str) -> Config {
    let mut o = options(vec![receiver.url("/hooks")], &[secret]);
    o.retry_window = Duration::from_secs(120);
    Config {
        webhooks: Some(o),
        host_grace: Duration::from_secs(120),
        ..Config::default()
    }
}

/// What a body says, for comparing: type, peer id and role, reason.
fn summary(v: &Value) -> (String, String, String, String) {
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    (
        s(&v["type"]),
        s(&v["peer"]["id"]),
        s(&v["peer"]["role"]),
        s(&v["reason"]),
    )
}

fn ev(kind: &str, peer: &str, role: &str, reason: &str) -> (String, String, String, String) {
    (kind.into(), peer.into(), role.into(), reason.into())
}

/// The delivered bodies, by room label, each room's sorted by `seq`.
fn by_room(hits: &[Hit]) -> BTreeMap<String, Vec<Value>> {
    let mut rooms: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for h in hits {
        let v = h.json();
        let label = v["room"]["label"].as_str().unwrap_or("-").to_string();
        rooms.entry(label).or_default().push(v);
    }
    for events in rooms.values_mut() {
        events.sort_by_key(|v| v["seq"].as_u64());
    }
    rooms
}

/// A room's whole life on `a` and `b` (the same server, or two instances):
/// created on `a`, a watcher on `b`, a guest on `a` who leaves, the host
/// drops and resumes on `b`, then ends the room. Returns the events it must
/// have caused, in order.
async fn room_life(a: &impl Endpoint, b: &impl Endpoint) -> Vec<(String, String, String, String)> {
    let mut r = room(a).await;
    let (mut w, wid) = attach(b, &mut r, "watch").await;
    let (g, gid) = attach(a, &mut r, "join").await;
    g.close().await;
    r.host.recv_type("peer_left").await;
    let Room {
        host,
        resume,
        host_id,
        ..
    } = r;
    host.close().await;
    w.recv_type("host_left").await;
    let mut h = Client::connect(&b.url_to("/webrtc")).await;
    h.send_json(json!({"type": "init", "resume": resume})).await;
    h.recv_type("init").await;
    w.recv_type("host_joined").await;
    h.send(r#"{"type":"close_room"}"#).await;
    w.recv_type("room_closed").await;
    h.skip_to("room_closed").await;
    vec![
        ev("room_started", &host_id, "host", ""),
        ev("peer_joined", &wid, "watch", ""),
        ev("peer_joined", &gid, "join", ""),
        ev("peer_left", &gid, "join", "left"),
        ev("host_left", &host_id, "host", "left"),
        ev("host_joined", &host_id, "host", ""),
        ev("room_ended", "", "", "closed"),
    ]
}

/// `events` of one room: numbered 1, 2, 3... in delivery order and equal to
/// `want`.
fn check_room(events: &[Value], want: &[(String, String, String, String)]) {
    let seqs: Vec<u64> = events.iter().filter_map(|v| v["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=want.len() as u64).collect::<Vec<_>>(),
        "{events:?}"
    );
    let got: Vec<_> = events.iter().map(summary).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn every_room_event_reaches_the_receiver_in_order_and_signed() {
    let receiver = Receiver::start(always(Reply::Status(204))).await;
    let (secret, key) = secret(3);
    let server = TestServer::with_config(config_for(&receiver, &secret)).await;
    let want = room_life(&server, &server).await;
    let hits = receiver
        .wait_for("the room's events", |h| h.len() >= want.len())
        .await;
    assert!(hits.iter().all(|h| h.verifies(&key)), "signatures verify");
    // Arrival order is the room's order: one room's events go one at a time.
    let arrived: Vec<_> = hits.iter().map(|h| summary(&h.json())).collect();
    assert_eq!(arrived, want);
    let rooms = by_room(&hits);
    assert_eq!(rooms.len(), 1);
    check_room(rooms.values().next().unwrap(), &want);
    // Nothing else: stopping delivers what was still queued.
    server.stop().await;
    assert_eq!(receiver.hits().len(), want.len());
}

#[tokio::test]
async fn a_room_event_answered_with_500_is_retried_and_the_order_holds() {
    // Every event's first attempt fails.
    let script: Script = std::sync::Arc::new(|_: &Value, attempt| {
        Reply::Status(if attempt == 1 { 500 } else { 200 })
    });
    let receiver = Receiver::start(script).await;
    let (secret, key) = secret(4);
    let server = TestServer::with_config(config_for(&receiver, &secret)).await;
    let want = room_life(&server, &server).await;
    let delivered = {
        receiver
            .wait_for("each event delivered", |h| {
                h.iter().filter(|h| h.status == Some(200)).count() >= want.len()
            })
            .await;
        receiver.delivered()
    };
    assert!(delivered.iter().all(|h| h.verifies(&key)));
    let got: Vec<_> = delivered.iter().map(|h| summary(&h.json())).collect();
    assert_eq!(got, want, "in order, each once");
    let hits = receiver.hits();
    for d in &delivered {
        let attempts: Vec<Option<u16>> = hits
            .iter()
            .filter(|h| h.id() == d.id())
            .map(|h| h.status)
            .collect();
        assert_eq!(attempts, [Some(500), Some(200)], "{}", d.id());
    }
    assert!(server.metric("signal_webhook_retries_total").await >= want.len() as f64);
    server.stop().await;
}

#[tokio::test]
async fn no_room_event_is_lost_over_a_receiver_outage_shorter_than_the_retry_window() {
    let mut receiver = Receiver::start(always(Reply::Status(200))).await;
    let (secret, key) = secret(5);
    let server = TestServer::with_config(config_for(&receiver, &secret)).await;
    receiver.stop().await;
    let want = room_life(&server, &server).await;
    // Attempts fail while it is down.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while server.metric("signal_webhook_retries_total").await < 3.0 {
        assert!(tokio::time::Instant::now() < deadline, "no failed attempts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receiver.delivered().is_empty());
    receiver.restart().await;
    receiver
        .wait_for("every event after the outage", |h| {
            h.iter().filter(|h| h.status == Some(200)).count() >= want.len()
        })
        .await;
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), want.len(), "each once");
    assert!(delivered.iter().all(|h| h.verifies(&key)));
    let rooms = by_room(&delivered);
    assert_eq!(rooms.len(), 1);
    check_room(rooms.values().next().unwrap(), &want);
    for reason in signal_server::webhooks::DropReason::ALL {
        let series = format!(
            "signal_webhook_events_dropped_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        assert_eq!(server.metric(&series).await, 0.0, "{series}");
    }
    server.stop().await;
}

#[tokio::test]
async fn with_two_instances_over_redis_each_event_is_sent_exactly_once() {
    let receiver = Receiver::start(always(Reply::Status(200))).await;
    let (secret, key) = secret(6);
    let redis = RedisServer::start().await;
    let config = || config_for(&receiver, &secret);
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let want = room_life(&a, &b).await;
    // A second room, ended by an operator through the registry, from the
    // instance that does not host it.
    let mut r2 = room(&a).await;
    let (_w2, w2) = attach(&b, &mut r2, "watch").await;
    let rooms = {
        use signal_server::rooms::Registry as _;
        b.registry.rooms().await.expect("rooms")
    };
    let label2 = rooms
        .iter()
        .find(|r| r.host == r2.host_id)
        .expect("the second room is listed")
        .label
        .clone();
    {
        use signal_server::rooms::Registry as _;
        assert!(b.registry.close_room(&label2).await.expect("close_room"));
    }
    r2.host.recv_type("room_closed").await;
    let want2 = vec![
        ev("room_started", &r2.host_id, "host", ""),
        ev("peer_joined", &w2, "watch", ""),
        ev("room_ended", "", "", "admin"),
    ];
    let total = want.len() + want2.len();
    receiver
        .wait_for("both rooms' events", |h| h.len() >= total)
        .await;
    // Both instances stop (delivering what they still hold): no duplicate
    // arrives meanwhile.
    a.stop().await;
    b.stop().await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), total, "each event once, not once per instance");
    assert!(hits.iter().all(|h| h.verifies(&key)));
    let rooms = by_room(&hits);
    assert_eq!(rooms.len(), 2);
    check_room(&rooms[&label2], &want2);
    let (_, first) = rooms
        .iter()
        .find(|(l, _)| **l != label2)
        .expect("the first room");
    check_room(first, &want);
}

#[tokio::test]
async fn a_revocation_through_the_admin_api_is_sent_once_as_token_revoked() {
    use signal_server::auth::{Auth, AuthConfig, KeyRing};
    let receiver = Receiver::start(always(Reply::Status(204))).await;
    let (secret, key) = secret(5);
    let ring = KeyRing::from_secret(b"webhook-revocation-secret-0123456789").expect("key");
    let config = Config {
        auth: AuthConfig::Token(std::sync::Arc::new(ring)),
        admin_key: admin_support::admin_config().admin_key,
        ..config_for(&receiver, &secret)
    };
    let auth = Auth::new(&config.auth);
    let (registry, metrics) = common::memory_registry(&config);
    let server = TestServer::start_with_auth(config, registry, metrics, auth).await;
    let rev = admin_support::admin(
        server.addr,
        "POST",
        "/api/v1/revocations",
        Some(r#"{"kind":"subject","sub":"alice"}"#),
    )
    .await;
    assert_eq!(rev.status, 201, "{rev:?}");
    let hits = receiver
        .wait_for("the token_revoked event", |h| {
            h.iter().any(|h| h.json()["type"] == "token_revoked")
        })
        .await;
    let revoked: Vec<Value> = hits
        .iter()
        .map(Hit::json)
        .filter(|v| v["type"] == "token_revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["revoked"]["sub"], "alice", "{}", revoked[0]);
    assert!(hits.iter().all(|h| h.verifies(&key)), "signatures verify");
    server.stop().await;
    assert_eq!(
        receiver
            .hits()
            .iter()
            .filter(|h| h.json()["type"] == "token_revoked")
            .count(),
        1
    );
}
