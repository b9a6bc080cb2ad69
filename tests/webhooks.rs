//! Webhook delivery against a real HTTP receiver on a loopback port: what
//! arrives, how it is signed (checked by an HMAC of the test's own), in what
//! order, and what happens when the receiver fails, refuses, goes away or
//! hangs.

mod webhooks_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use signal_server::protocol::Role;
use signal_server::webhooks::{DropReason, EndReason, Event, LeaveReason, Revocation, RoomRef};
use webhooks_support::*;

fn room(label: &str) -> RoomRef {
    RoomRef::label(label)
}

/// A room's whole life: every kind but `token_revoked`.
fn room_life(r: &RoomRef, host: &str, peer: &str) -> Vec<Event> {
    vec![
        Event::room_started(r.clone(), host),
        Event::peer_joined(r.clone(), peer, Role::Watch),
        Event::host_left(r.clone(), host, LeaveReason::Lost),
        Event::host_joined(r.clone(), host),
        Event::peer_left(r.clone(), peer, Role::Watch, LeaveReason::Left),
        Event::room_ended(r.clone(), EndReason::Closed),
    ]
}

/// The bodies received (2xx-answered), grouped by room label, in arrival
/// order.
fn by_room(hits: &[Hit]) -> BTreeMap<String, Vec<Value>> {
    let mut rooms: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for hit in hits {
        let v = hit.json();
        let label = v["room"]["label"].as_str().unwrap_or("-").to_string();
        rooms.entry(label).or_default().push(v);
    }
    rooms
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn every_event_kind_arrives_signed_and_in_order_per_room() {
    let receiver = Receiver::start(always(Reply::Status(204))).await;
    let (secret, key) = secret(1);
    let (hooks, delivery, metrics) =
        start(options(vec![receiver.url("/hooks/in?k=v")], &[&secret]));
    let a = RoomRef::named("roomAAAA", "robot-7");
    let b = room("roomBBBB");
    // Two rooms' lives interleaved, and a revocation in the middle.
    let (life_a, life_b) = (
        room_life(&a, "hostAAAA", "peerAAAA"),
        room_life(&b, "hostBBBB", "peerBBBB"),
    );
    for (i, (ea, eb)) in life_a.into_iter().zip(life_b).enumerate() {
        hooks.emit(ea);
        hooks.emit(eb);
        if i == 2 {
            hooks.emit(Event::token_revoked(Revocation::Jti {
                jti: "tok-42".into(),
            }));
        }
    }
    let hits = receiver.wait_for("13 events", |h| h.len() >= 13).await;
    assert_eq!(hits.len(), 13);

    for hit in &hits {
        assert!(hit.verifies(&key), "signature: {:?}", hit.headers);
        assert!(!hit.verifies(&secret_key_of(2)), "verifies under any key?");
        let v = hit.json();
        assert_eq!(
            hit.id(),
            v["id"].as_str().unwrap(),
            "webhook-id is the event id"
        );
        assert!(hit.id().starts_with("evt_") && !hit.id().contains('.'));
        assert_eq!(hit.header("content-type"), "application/json");
        assert!(hit.header("user-agent").starts_with("signal-server/"));
        let at = humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
        assert!(SystemTime::now().duration_since(at).unwrap() < WAIT);
    }
    let ids: HashSet<String> = hits.iter().map(Hit::id).collect();
    assert_eq!(ids.len(), 13, "event ids are unique");

    let rooms = by_room(&hits);
    let kinds = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|v| v["type"].as_str().unwrap().to_string())
            .collect()
    };
    let life = [
        "room_started",
        "peer_joined",
        "host_left",
        "host_joined",
        "peer_left",
        "room_ended",
    ];
    for label in ["roomAAAA", "roomBBBB"] {
        assert_eq!(kinds(&rooms[label]), life, "{label} in order");
        assert_eq!(seqs(&rooms[label]), [1, 2, 3, 4, 5, 6], "{label} numbered");
    }
    let a_events = &rooms["roomAAAA"];
    assert_eq!(
        a_events[0]["room"],
        json!({"label": "roomAAAA", "name": "robot-7"})
    );
    assert_eq!(
        a_events[0]["peer"],
        json!({"id": "hostAAAA", "role": "host"})
    );
    assert_eq!(
        a_events[1]["peer"],
        json!({"id": "peerAAAA", "role": "watch"})
    );
    assert_eq!(a_events[2]["reason"], "lost");
    assert_eq!(a_events[3]["peer"]["role"], "host");
    assert_eq!(a_events[4]["reason"], "left");
    assert_eq!(a_events[5]["reason"], "closed");
    assert!(a_events[5].get("peer").is_none());
    assert_eq!(rooms["roomBBBB"][0]["room"], json!({"label": "roomBBBB"}));
    let revoked = &rooms["-"];
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["type"], "token_revoked");
    assert_eq!(revoked[0]["revoked"], json!({"by": "jti", "jti": "tok-42"}));
    assert!(revoked[0].get("seq").is_none());

    until("13 delivered", || metrics.webhooks().delivered() == 13).await;
    assert_eq!(metrics.webhooks().retries(), 0);
    for reason in DropReason::ALL {
        assert_eq!(metrics.webhooks().dropped(reason), 0, "{reason:?}");
    }
    // The room's counter restarts after its room_ended (a new life).
    hooks.emit(Event::room_started(a.clone(), "hostAAAA"));
    let hits = receiver.wait_for("a 14th event", |h| h.len() >= 14).await;
    assert_eq!(hits[13].json()["seq"], 1);
    delivery.shutdown().await;
}

fn secret_key_of(fill: u8) -> Vec<u8> {
    secret(fill).1
}

#[tokio::test]
async fn a_request_carries_one_signature_per_secret_while_rotating() {
    let receiver = Receiver::start(always(Reply::Status(200))).await;
    let ((old, old_key), (new, new_key)) = (secret(3), secret(4));
    let (hooks, delivery, _) = start(options(vec![receiver.url("/")], &[&new, &old]));
    hooks.emit(Event::room_started(room("rotating"), "hostXXXX"));
    let hits = receiver.wait_for("one event", |h| !h.is_empty()).await;
    assert_eq!(hits[0].header("webhook-signature").split(' ').count(), 2);
    assert!(hits[0].verifies(&old_key) && hits[0].verifies(&new_key));
    delivery.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_answers_500_gets_the_event_again_until_it_accepts() {
    // Each event is refused with 500 twice, then accepted.
    let receiver = Receiver::start(std::sync::Arc::new(|_: &Value, attempt: usize| {
        if attempt <= 2 {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let (secret, key) = secret(5);
    let (hooks, delivery, metrics) = start(options(vec![receiver.url("/")], &[&secret]));
    let r = room("retried1");
    for event in room_life(&r, "hostRRRR", "peerRRRR") {
        hooks.emit(event);
    }
    let hits = receiver
        .wait_for("6 events accepted", |h| {
            h.iter().filter(|h| h.status == Some(200)).count() == 6
        })
        .await;
    until("6 delivered", || metrics.webhooks().delivered() == 6).await;
    assert_eq!(hits.len(), 18, "three attempts per event");
    assert_eq!(metrics.webhooks().retries(), 12);
    // Every attempt is signed (each with its own timestamp); the id and body
    // are the same on every attempt.
    let mut bodies: HashMap<String, Vec<bytes::Bytes>> = HashMap::new();
    for hit in &hits {
        assert!(hit.verifies(&key));
        bodies.entry(hit.id()).or_default().push(hit.body.clone());
    }
    assert_eq!(bodies.len(), 6);
    assert!(bodies
        .values()
        .all(|b| b.len() == 3 && b.iter().all(|x| x == &b[0])));
    // In order: an event is not tried before the previous one was accepted.
    let order: Vec<u64> = hits
        .iter()
        .map(|h| h.json()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]
    );
    delivery.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_waited_for_and_408_and_429_are_retried() {
    let receiver = Receiver::start(std::sync::Arc::new(|v: &Value, attempt: usize| {
        match (v["peer"]["id"].as_str(), attempt) {
            (Some("peer0408"), 1) => Reply::Status(408),
            (Some("peer0429"), 1) => Reply::RetryAfter(429, 1),
            (Some("peer0503"), 1) => Reply::RetryAfter(503, 2),
            _ => Reply::Status(200),
        }
    }))
    .await;
    let (secret, _) = secret(6);
    let (hooks, delivery, metrics) = start(options(vec![receiver.url("/")], &[&secret]));
    for (label, peer) in [
        ("room0408", "peer0408"),
        ("room0429", "peer0429"),
        ("room0503", "peer0503"),
    ] {
        hooks.emit(Event::peer_joined(room(label), peer, Role::Join));
    }
    until("3 delivered", || metrics.webhooks().delivered() == 3).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 6);
    assert_eq!(metrics.webhooks().retries(), 3);
    // The backoff alone would retry within 20 ms: the gaps are the receiver's.
    for (peer, at_least) in [("peer0429", 1), ("peer0503", 2)] {
        let attempts: Vec<&Hit> = hits
            .iter()
            .filter(|h| h.json()["peer"]["id"] == peer)
            .collect();
        let gap = attempts[1].at - attempts[0].at;
        assert!(
            gap >= Duration::from_millis(at_least * 1000 - 50),
            "{peer}: {gap:?}"
        );
    }
    delivery.shutdown().await;
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let receiver = Receiver::start(std::sync::Arc::new(|v: &Value, _| {
        match v["peer"]["id"].as_str() {
            Some("peer0400") => Reply::Status(400),
            Some("peer0401") => Reply::Status(401),
            Some("peer0404") => Reply::Status(404),
            Some("peer0410") => Reply::Status(410),
            Some("peer0302") => Reply::Status(302),
            _ => Reply::Status(200),
        }
    }))
    .await;
    let (secret, _) = secret(7);
    let (hooks, delivery, metrics) = start(options(vec![receiver.url("/")], &[&secret]));
    let r = room("refused1");
    for peer in [
        "peer0400", "peer0401", "peer0404", "peer0410", "peer0302", "peer0200",
    ] {
        hooks.emit(Event::peer_joined(r.clone(), peer, Role::Join));
    }
    until("5 rejected, 1 delivered", || {
        metrics.webhooks().dropped(DropReason::Rejected) == 5 && metrics.webhooks().delivered() == 1
    })
    .await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 6, "one attempt each");
    assert_eq!(metrics.webhooks().retries(), 0);
    // A refused event does not hold up the room: the next one followed.
    assert_eq!(
        seqs(&hits.iter().map(Hit::json).collect::<Vec<_>>()),
        [1, 2, 3, 4, 5, 6]
    );
    let text = metrics.render();
    assert!(
        text.contains("signal_webhook_events_dropped_total{reason=\"rejected\"} 5"),
        "{text}"
    );
    delivery.shutdown().await;
}

#[tokio::test]
async fn nothing_is_lost_across_a_receiver_outage_shorter_than_the_retry_window() {
    let mut receiver = Receiver::start(always(Reply::Status(200))).await;
    let (secret, key) = secret(8);
    let mut o = options(vec![receiver.url("/")], &[&secret]);
    o.retry_window = Duration::from_secs(120);
    let (hooks, delivery, metrics) = start(o);
    // A first event opens a pooled connection; then the receiver goes away.
    hooks.emit(Event::room_started(room("outage01"), "host0001"));
    until("the first delivery", || metrics.webhooks().delivered() == 1).await;
    receiver.stop().await;

    let labels = ["outage01", "outage02", "outage03"];
    for i in 0..8 {
        for label in labels {
            hooks.emit(Event::peer_joined(
                room(label),
                format!("peer{i:04}"),
                Role::Watch,
            ));
        }
    }
    // Attempts fail while it is down (connection refused), for every room.
    until("failed attempts during the outage", || {
        metrics.webhooks().retries() >= 9
    })
    .await;
    assert_eq!(metrics.webhooks().delivered(), 1);
    receiver.restart().await;

    until("all 25 delivered", || metrics.webhooks().delivered() == 25).await;
    for reason in DropReason::ALL {
        assert_eq!(metrics.webhooks().dropped(reason), 0, "{reason:?}");
    }
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 25, "each event once");
    assert!(delivered.iter().all(|h| h.verifies(&key)));
    let rooms = by_room(&delivered);
    assert_eq!(seqs(&rooms["outage01"]), (1..=9).collect::<Vec<_>>());
    for label in ["outage02", "outage03"] {
        assert_eq!(seqs(&rooms[label]), (1..=8).collect::<Vec<_>>(), "{label}");
        let peers: Vec<&str> = rooms[label]
            .iter()
            .map(|v| v["peer"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            peers,
            (0..8).map(|i| format!("peer{i:04}")).collect::<Vec<_>>()
        );
    }
    assert_eq!(metrics.webhooks().queued(), 0);
    delivery.shutdown().await;
}

#[tokio::test]
async fn an_event_failing_past_the_retry_window_is_dropped_and_counted_and_its_room_moves_on() {
    // room "doomed01"'s first event always fails; everything else is fine.
    let receiver = Receiver::start(std::sync::Arc::new(|v: &Value, _| {
        if v["seq"] == 1 && v["room"]["label"] == "doomed01" {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let (secret, _) = secret(9);
    let mut o = options(vec![receiver.url("/")], &[&secret]);
    o.retry_window = Duration::from_millis(600);
    let (hooks, delivery, metrics) = start(o);
    hooks.emit(Event::room_started(room("doomed01"), "hostDDDD"));
    hooks.emit(Event::peer_joined(room("doomed01"), "peerDDDD", Role::Join));
    until("one given up", || {
        metrics.webhooks().dropped(DropReason::RetriesExhausted) == 1
    })
    .await;
    until("the next delivered", || metrics.webhooks().delivered() == 1).await;
    let hits = receiver.hits();
    let first: Vec<&Hit> = hits.iter().filter(|h| h.json()["seq"] == 1).collect();
    assert!(
        first.len() >= 2,
        "retried before giving up: {}",
        first.len()
    );
    // The last attempt of the first event came before the second event.
    let second = hits.iter().position(|h| h.json()["seq"] == 2).unwrap();
    assert!(hits[..second].iter().all(|h| h.json()["seq"] == 1));
    assert_eq!(hits.len(), second + 1);
    let text = metrics.render();
    assert!(
        text.contains("signal_webhook_events_dropped_total{reason=\"retries_exhausted\"} 1"),
        "{text}"
    );
    delivery.shutdown().await;
}

#[tokio::test]
async fn a_room_being_retried_does_not_hold_up_other_rooms() {
    let receiver = Receiver::start(std::sync::Arc::new(|v: &Value, _| {
        if v["room"]["label"] == "stuck001" {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let (secret, _) = secret(10);
    let (hooks, delivery, metrics) = start(options(vec![receiver.url("/")], &[&secret]));
    hooks.emit(Event::room_started(room("stuck001"), "hostSSSS"));
    hooks.emit(Event::peer_joined(room("stuck001"), "peerSSSS", Role::Join));
    for i in 0..5 {
        hooks.emit(Event::room_started(
            room(&format!("free{i:04}")),
            "hostFFFF",
        ));
    }
    until("the free rooms delivered", || {
        metrics.webhooks().delivered() == 5
    })
    .await;
    until("the stuck room retried", || {
        metrics.webhooks().retries() >= 3
    })
    .await;
    let hits = receiver.hits();
    // Its second event waits behind its first.
    assert!(hits
        .iter()
        .all(|h| !(h.json()["room"]["label"] == "stuck001" && h.json()["seq"] == 2)));
    assert_eq!(metrics.webhooks().queued(), 2);
    drop(hooks);
    drop(delivery); // stops at once: nothing waits for the stuck room
}

#[tokio::test]
async fn a_hanging_url_does_not_hold_up_another_url() {
    let hanging = Receiver::start(always(Reply::Hang)).await;
    let healthy = Receiver::start(always(Reply::Status(200))).await;
    let (secret, _) = secret(11);
    let (hooks, delivery, metrics) = start(options(
        vec![hanging.url("/"), healthy.url("/")],
        &[&secret],
    ));
    for i in 0..50 {
        hooks.emit(Event::room_started(
            room(&format!("room{i:04}")),
            "hostHHHH",
        ));
    }
    healthy.wait_for("50 events", |h| h.len() == 50).await;
    until("50 delivered", || metrics.webhooks().delivered() == 50).await;
    // The hanging URL got as many requests as may be in flight at once.
    assert!(hanging.hits().len() <= signal_server::webhooks::DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(metrics.webhooks().queued(), 50);
    drop(delivery);
}

#[tokio::test]
async fn emit_never_waits_a_stalled_receiver_fills_the_queue_and_the_rest_is_counted_dropped() {
    let receiver = Receiver::start(always(Reply::Hang)).await;
    let (secret, _) = secret(12);
    let mut o = options(vec![receiver.url("/")], &[&secret]);
    o.queue_capacity = 4;
    o.flush_timeout = Duration::from_millis(200);
    let (hooks, delivery, metrics) = start(o);
    hooks.emit(Event::room_started(room("stalled1"), "hostTTTT"));
    receiver
        .wait_for("the first request", |h| h.len() == 1)
        .await;
    // `emit` is not async: each call returns having queued or dropped.
    const N: usize = 10_000;
    for i in 0..N {
        hooks.emit(Event::peer_joined(
            room(&format!("room{:04}", i % 100)),
            "peerTTTT",
            Role::Watch,
        ));
    }
    let m = metrics.webhooks();
    assert_eq!(m.queued(), 4, "the queue holds at most its capacity");
    assert_eq!(
        m.dropped(DropReason::QueueFull) as usize,
        N + 1 - 4,
        "everything else counted at once"
    );
    assert_eq!(m.delivered(), 0);
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "signal_webhook_events_dropped_total{{reason=\"queue_full\"}} {}",
            N - 3
        )),
        "{text}"
    );
    assert!(text.contains("signal_webhook_events_queued 4"), "{text}");
    // Shutting down waits the flush time at most, then counts what was left.
    tokio::time::timeout(WAIT, delivery.shutdown())
        .await
        .expect("shutdown is bounded");
    assert_eq!(m.dropped(DropReason::Shutdown), 4);
    assert_eq!(m.queued(), 0);
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued_and_then_refuses_new_events() {
    let receiver = Receiver::start(std::sync::Arc::new(|_: &Value, attempt: usize| {
        if attempt == 1 {
            Reply::Status(502)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let (secret, _) = secret(13);
    let (hooks, delivery, metrics) = start(options(vec![receiver.url("/")], &[&secret]));
    for i in 0..20 {
        hooks.emit(Event::room_started(
            room(&format!("flush{i:03}")),
            "hostFFFF",
        ));
    }
    delivery.shutdown().await;
    // Everything queued was delivered (after a retry each) before it returned.
    assert_eq!(metrics.webhooks().delivered(), 20);
    assert_eq!(receiver.delivered().len(), 20);
    hooks.emit(Event::room_started(room("toolate1"), "hostFFFF"));
    assert_eq!(metrics.webhooks().dropped(DropReason::Shutdown), 1);
}

#[tokio::test]
async fn shutdown_gives_up_on_a_hanging_receiver_after_the_flush_time() {
    let receiver = Receiver::start(always(Reply::Hang)).await;
    let (secret, _) = secret(14);
    let mut o = options(vec![receiver.url("/")], &[&secret]);
    o.flush_timeout = Duration::from_millis(300);
    let (hooks, delivery, metrics) = start(o);
    for i in 0..5 {
        hooks.emit(Event::room_started(
            room(&format!("hang{i:04}")),
            "hostGGGG",
        ));
    }
    receiver.wait_for("5 requests", |h| h.len() == 5).await;
    tokio::time::timeout(WAIT, delivery.shutdown())
        .await
        .expect("shutdown is bounded");
    assert_eq!(metrics.webhooks().dropped(DropReason::Shutdown), 5);
    assert_eq!(metrics.webhooks().queued(), 0);
}
