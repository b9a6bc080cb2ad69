//! Bad input and limits: every error code, close codes, floods, idle
//! sockets and the connection limit. (Origins: `tests/reliability.rs`; slow
//! readers: there and in the registry contract suite.)

mod common;

use std::time::{Duration, Instant};

use common::{attach, quick_config, room, TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signal_server::config::Config;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn every_error_code_is_reachable_and_the_socket_stays_open() {
    let server = TestServer::with_config(Config {
        max_peers_per_room: 1,
        ..Config::default()
    })
    .await;
    let mut c = server.connect().await;
    let cases: &[(&str, &str)] = &[
        ("{\"type\":", "bad_json"),
        ("hello", "bad_json"),
        ("[1,2,3]", "bad_message"),
        ("{\"sdp\":\"x\"}", "bad_message"),
        ("{\"type\":42}", "bad_message"),
        ("{\"type\":\"offer\"}", "bad_message"),
        ("{\"type\":\"offer\",\"sdp\":7}", "bad_message"),
        (
            "{\"type\":\"ice_candidate\",\"sdp_mid\":\"0\"}",
            "bad_message",
        ),
        (
            "{\"type\":\"ice_candidate\",\"candidate\":\"c\",\"sdp_mline_index\":-1}",
            "bad_message",
        ),
        ("{\"type\":\"configure\",\"actions\":{}}", "bad_message"),
        (
            "{\"type\":\"configure\",\"actions\":[{\"type\":\"add_video_track\",\"id\":\"t\"}]}",
            "bad_message",
        ),
        (
            "{\"type\":\"configure\",\"actions\":[{\"type\":\"self_destruct\"}]}",
            "bad_message",
        ),
        (
            "{\"type\":\"init\",\"join\":\"a\",\"watch\":\"b\"}",
            "bad_message",
        ),
        ("{\"type\":\"subscribe\"}", "unknown_type"),
        ("{\"type\":\"offer\",\"sdp\":\"s\"}", "not_in_room"),
        (
            "{\"type\":\"init\",\"join\":\"AAAAAAAAAAAAAAAA\"}",
            "room_not_found",
        ),
        ("{\"type\":\"init\",\"watch\":\"short\"}", "room_not_found"),
        (
            "{\"type\":\"init\",\"resume\":\"AAAAAAAAAAAAAAAA\"}",
            "room_not_found",
        ),
    ];
    for (text, code) in cases {
        c.send(text).await;
        let err = c.recv().await;
        assert_eq!(err["type"], "error", "{text} -> {err}");
        assert_eq!(err["code"], *code, "{text} -> {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Binary frames.
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    c.expect_error("unsupported_frame").await;

    // After all that, the same socket still works.
    c.send(r#"{"type":"init"}"#).await;
    let init = c.recv_type("init").await;
    let join = init["join"].as_str().unwrap().to_string();
    c.send(r#"{"type":"init"}"#).await;
    c.expect_error("already_in_room").await;
    c.send(r#"{"type":"offer","sdp":"s","to":"nobody00"}"#)
        .await;
    c.expect_error("peer_not_found").await;

    let mut g = server.connect().await;
    g.send_json(json!({"type":"init","join":join})).await;
    g.recv_type("init").await;
    c.recv_type("peer_joined").await;
    let mut full = server.connect().await;
    full.send_json(json!({"type":"init","join":join})).await;
    full.expect_error("room_full").await;

    drop(c); // the host drops: the guest's messages have nowhere to go
    g.recv_type("host_left").await;
    g.send(r#"{"type":"answer","sdp":"s"}"#).await;
    g.expect_error("host_absent").await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_message_is_refused_with_1009_and_the_room_carries_on() {
    let server = TestServer::with_config(Config {
        max_message_size: 16 * 1024,
        ..Config::default()
    })
    .await;
    let mut r = room(&server).await;
    let (mut big, _) = attach(&server, &mut r, "join").await;
    let (mut other, oid) = attach(&server, &mut r, "join").await;
    let sdp = "a".repeat(20 * 1024);
    big.send_json(json!({"type":"offer","sdp":sdp})).await;
    big.expect_error("too_large").await;
    big.expect_close(1009).await;
    r.host.recv_type("peer_left").await;
    // Just under the limit is fine.
    let sdp = "b".repeat(15 * 1024);
    other.send_json(json!({"type":"offer","sdp":sdp})).await;
    let got = r.host.recv_type("offer").await;
    assert_eq!(got["from"], oid.as_str());
    assert_eq!(got["sdp"].as_str().map(str::len), Some(15 * 1024));
    server.stop().await;
}

#[tokio::test]
async fn a_flood_gets_rate_limited_then_closed_1008() {
    // A slow refill (1/s) keeps the test independent of how fast this machine
    // sends: the bucket cannot refill noticeably while the flood goes on.
    let server = TestServer::with_config(Config {
        rate_per_sec: 1,
        rate_burst: 40,
        ..Config::default()
    })
    .await;
    let mut r = room(&server).await;
    let (mut flooder, fid) = attach(&server, &mut r, "join").await;
    let (mut honest, hid) = attach(&server, &mut r, "join").await;
    // The burst passes (every message counts, `init` included: 1 + 39)...
    for i in 0..39 {
        flooder
            .send_json(json!({"type":"ice_candidate","candidate":format!("{i}")}))
            .await;
    }
    for i in 0..39 {
        assert_eq!(r.host.recv().await["candidate"], format!("{i}"));
    }
    // ...then messages are dropped with one rate_limited error per run of
    // drops, and a client that keeps going (more than max(rate, 10) drops in
    // a row) is closed.
    let flood_started = Instant::now();
    for _ in 0..30 {
        if flooder
            .ws
            .send(Message::text(r#"{"type":"ice_candidate","candidate":"x"}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut rate_limited = 0;
    let end = loop {
        let frame = tokio::time::timeout(WAIT, flooder.ws.next())
            .await
            .expect("the flood is closed in time");
        match frame {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(v["code"], "rate_limited", "{v}");
                assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
                rate_limited += 1;
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(end, Some(1008));
    // The host saw at most what refilled (one a second), then the flooder left.
    let mut passed = 0;
    loop {
        let m = r.host.recv().await;
        if m["type"] == "peer_left" {
            assert_eq!(m["peer"], fid.as_str());
            break;
        }
        assert_eq!(m["candidate"], "x", "{m}");
        passed += 1;
    }
    let refilled = flood_started.elapsed().as_secs() + 1;
    assert!(passed <= refilled, "{passed} passed, {refilled} refilled");
    // A refill ends a run of drops; the next drop starts another.
    assert!(
        (1..=1 + passed).contains(&rate_limited),
        "{rate_limited} rate_limited replies for {passed} refills"
    );
    // The room is unharmed.
    honest.send(r#"{"type":"answer","sdp":"s"}"#).await;
    assert_eq!(r.host.recv().await["from"], hid.as_str());
    server.stop().await;
}

#[tokio::test]
async fn the_default_limits_let_a_host_trickle_ice_to_many_peers() {
    // The contract: at least a burst of 500 and 100/s sustained by default.
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut g, gid) = attach(&server, &mut r, "join").await;
    for i in 0..500 {
        r.host
            .send_json(json!({"type":"ice_candidate","candidate":format!("{i}"),"to":gid}))
            .await;
    }
    for i in 0..500 {
        assert_eq!(g.recv().await["candidate"], format!("{i}"));
    }
    r.host.expect_silence(Duration::from_millis(100)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_socket_that_never_enters_a_room_is_closed() {
    let server = TestServer::with_config(quick_config()).await;
    let mut idle = server.connect().await;
    idle.expect_close(1008).await;
    // A socket that entered a room is not.
    let mut r = room(&server).await;
    r.host.expect_silence(Duration::from_millis(800)).await;
    // A failed init does not count as entering.
    let mut lost = server.connect().await;
    lost.send(r#"{"type":"init","join":"AAAAAAAAAAAAAAAA"}"#)
        .await;
    lost.expect_error("room_not_found").await;
    lost.expect_close(1008).await;
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed() {
    let server = TestServer::with_config(Config {
        ping_interval: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    let mut r = room(&server).await;
    let (quiet, qid) = attach(&server, &mut r, "watch").await;
    // A client library answers pings only while it reads; this one doesn't.
    let left = r.host.recv_type("peer_left").await;
    assert_eq!(left["peer"], qid.as_str());
    // The host, which reads (and so answers pings), is still there.
    let (mut g, gid) = attach(&server, &mut r, "join").await;
    g.send(r#"{"type":"answer","sdp":"s"}"#).await;
    assert_eq!(r.host.recv().await["from"], gid.as_str());
    drop(quiet);
    server.stop().await;
}

#[tokio::test]
async fn over_the_connection_limit_upgrades_get_503() {
    let server = TestServer::with_config(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let a = server.connect().await;
    let b = server.connect().await;
    assert_eq!(
        server.upgrade_status(server.url("/webrtc")).await,
        Some(503)
    );
    // HTTP still answers, and a slot frees when a socket leaves.
    assert_eq!(server.get("/healthz").await.0, 200);
    a.close().await;
    server.wait_metric("signal_connections", 1.0).await;
    assert_eq!(server.upgrade_status(server.url("/webrtc")).await, None);
    drop(b);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_in_one_room_does_not_disturb_another() {
    let server = TestServer::start().await;
    let mut calm = room(&server).await;
    let (mut cg, cgid) = attach(&server, &mut calm, "join").await;
    let mut noisy = room(&server).await;
    let (mut ng, _) = attach(&server, &mut noisy, "join").await;
    for _ in 0..50 {
        ng.send("{{{{").await;
        ng.ws.send(Message::binary(vec![0u8; 100])).await.unwrap();
    }
    for i in 0..50 {
        cg.send_json(json!({"type":"ice_candidate","candidate":format!("{i}")}))
            .await;
    }
    for i in 0..50 {
        let m = calm.host.recv().await;
        assert_eq!(m["from"], cgid.as_str());
        assert_eq!(m["candidate"], format!("{i}"));
    }
    let mut errors = 0;
    while errors < 100 {
        match ng.ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"error\"") => errors += 1,
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    noisy.host.expect_silence(Duration::from_millis(100)).await;
    server.stop().await;
}
