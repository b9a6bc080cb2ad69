//! Rooms, relay, presence and resume, through real sockets.

mod common;

use std::time::Duration;

use common::{attach, room, Ended, TestServer};
use serde_json::{json, Value};

const SDP: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

fn is_token(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[tokio::test]
async fn the_seed_readme_exchange() {
    let server = TestServer::start().await;
    // Connect at `/`, as the original Heroku deployment was used.
    let mut c = server.connect_to("/").await;
    c.send(r#"{"type": "init"}"#).await;
    let init = c.recv().await;
    assert_eq!(init["type"], "init");
    assert!(is_token(&init["join"]), "{init}");
    assert!(is_token(&init["watch"]), "{init}");
    assert_ne!(init["join"], init["watch"]);
    assert!(is_token(&init["resume"]), "{init}");
    assert_ne!(init["resume"], init["join"]);
    assert_eq!(init["role"], "host");
    assert_eq!(init["peer"].as_str().map(str::len), Some(8));
    assert_eq!(init["ice_servers"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn every_message_type_is_relayed_both_ways_with_every_field() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut guest, gid) = attach(&server, &mut r, "join").await;

    // Guest -> host: every field kept, unknown ones included, `from` added.
    let from_guest = [
        json!({"type":"configure","actions":[
            {"type":"add_stream","id":"webrtc_ros-stream-123"},
            {"type":"add_video_track","stream_id":"webrtc_ros-stream-123",
             "id":"webrtc_ros-stream-123/subscribed_video","src":"ros_image:/camera/image_raw"},
            {"type":"add_audio_track","stream_id":"webrtc_ros-stream-123","id":"a","src":"local:"},
            {"type":"remove_stream","id":"old"},
            {"type":"expect_stream","id":"up"},
            {"type":"expect_video_track","stream_id":"up","id":"v","dest":"ros_image:/browser"}],
            "x-client":"test"}),
        json!({"type":"answer","sdp":SDP,"x-extra":{"nested":[1,2,3]}}),
        json!({"type":"offer","sdp":SDP}),
        json!({"type":"ice_candidate","sdp_mid":"video","sdp_mline_index":1,
               "candidate":"candidate:1 1 udp 2122260223 198.51.100.1 50000 typ host"}),
        json!({"type":"error","code":"negotiation_failed","message":"setRemoteDescription failed"}),
    ];
    for m in &from_guest {
        guest.send_json(m.clone()).await;
        let got = r.host.recv().await;
        let mut want = m.clone();
        want["from"] = json!(gid);
        assert_eq!(got, want);
    }

    // Host -> guest: delivered unchanged (`to` kept, no `from`).
    let from_host = [
        json!({"type":"offer","sdp":SDP,"to":gid}),
        json!({"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candidate":"c","to":gid,"x":null}),
        json!({"type":"answer","sdp":SDP,"to":gid}),
        json!({"type":"configure","actions":[{"type":"add_stream","id":"s"}],"to":gid}),
    ];
    for m in &from_host {
        r.host.send_json(m.clone()).await;
        assert_eq!(guest.recv().await, *m);
    }
    server.stop().await;
}

#[tokio::test]
async fn relayed_text_is_kept_byte_for_byte() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut guest, gid) = attach(&server, &mut r, "join").await;
    let text = r#"{ "type" : "answer", "sdp":"v=0\r\n\u00e9", "z":1.50 }"#;
    guest.send(text).await;
    let got = r.host.recv_text().await;
    assert_eq!(
        got,
        format!(r#"{{"from":"{gid}", "type" : "answer", "sdp":"v=0\r\n\u00e9", "z":1.50 }}"#)
    );
    let text =
        r#"{"type":"offer","sdp":"v=0\r\n","to":"GID","order":[3,2,1]}"#.replace("GID", &gid);
    r.host.send(&text).await;
    assert_eq!(guest.recv_text().await, text);
    server.stop().await;
}

#[tokio::test]
async fn a_forged_from_is_replaced_and_the_misspelling_normalised() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut guest, gid) = attach(&server, &mut r, "join").await;
    guest
        .send(r#"{"type":"offer","sdp":"s","from":"h0st1234"}"#)
        .await;
    let got = r.host.recv().await;
    assert_eq!(got, json!({"type":"offer","sdp":"s","from":gid}));
    // The seed README's spelling, `candiate`, reaches webrtc_ros as `candidate`.
    r.host
        .send_json(json!({"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candiate":"candidate:9","to":gid}))
        .await;
    let got = guest.recv().await;
    assert_eq!(got["candidate"], "candidate:9");
    assert!(got.get("candiate").is_none(), "{got}");
    server.stop().await;
}

#[tokio::test]
async fn host_addresses_one_peer_with_to_or_all_without() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut a, aid) = attach(&server, &mut r, "join").await;
    let (mut b, bid) = attach(&server, &mut r, "watch").await;
    let (mut c, _cid) = attach(&server, &mut r, "watch").await;

    r.host
        .send_json(json!({"type":"offer","sdp":"for-b","to":bid}))
        .await;
    assert_eq!(b.recv().await["sdp"], "for-b");
    r.host
        .send_json(json!({"type":"offer","sdp":"for-a","to":aid}))
        .await;
    assert_eq!(a.recv().await["sdp"], "for-a");
    r.host
        .send_json(json!({"type":"configure","actions":[]}))
        .await;
    for peer in [&mut a, &mut b, &mut c] {
        assert_eq!(peer.recv().await["type"], "configure");
    }
    // Nobody got anything meant for someone else.
    for peer in [&mut a, &mut b, &mut c] {
        peer.expect_silence(Duration::from_millis(150)).await;
    }
    r.host
        .send_json(json!({"type":"offer","sdp":"x","to":"nobody00"}))
        .await;
    r.host.expect_error("peer_not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn guests_reach_only_the_host_and_their_to_is_ignored() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut a, aid) = attach(&server, &mut r, "join").await;
    let (mut b, bid) = attach(&server, &mut r, "join").await;
    a.send_json(json!({"type":"offer","sdp":"s","to":bid}))
        .await;
    let got = r.host.recv().await;
    assert_eq!(got["from"], aid.as_str());
    b.expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn messages_never_cross_rooms() {
    let server = TestServer::start().await;
    let mut r1 = room(&server).await;
    let mut r2 = room(&server).await;
    let (mut g1, g1id) = attach(&server, &mut r1, "join").await;
    let (mut g2, g2id) = attach(&server, &mut r2, "join").await;

    for i in 0..20 {
        g1.send_json(json!({"type":"ice_candidate","candidate":format!("r1-{i}")}))
            .await;
        g2.send_json(json!({"type":"ice_candidate","candidate":format!("r2-{i}")}))
            .await;
        r1.host
            .send_json(json!({"type":"offer","sdp":format!("r1-{i}")}))
            .await;
        r2.host
            .send_json(json!({"type":"offer","sdp":format!("r2-{i}")}))
            .await;
    }
    for i in 0..20 {
        assert_eq!(r1.host.recv().await["candidate"], format!("r1-{i}"));
        assert_eq!(r2.host.recv().await["candidate"], format!("r2-{i}"));
        assert_eq!(g1.recv().await["sdp"], format!("r1-{i}"));
        assert_eq!(g2.recv().await["sdp"], format!("r2-{i}"));
    }
    // A host naming another room's peer reaches nobody.
    r1.host
        .send_json(json!({"type":"offer","sdp":"x","to":g2id}))
        .await;
    r1.host.expect_error("peer_not_found").await;
    g2.expect_silence(Duration::from_millis(200)).await;
    assert_ne!(g1id, g2id);
    for c in [&mut r1.host, &mut r2.host, &mut g1] {
        c.expect_silence(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn each_sender_order_is_kept() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut a, aid) = attach(&server, &mut r, "join").await;
    let (mut b, bid) = attach(&server, &mut r, "join").await;
    for i in 0..200 {
        a.send_json(json!({"type":"ice_candidate","candidate":format!("{i}")}))
            .await;
        b.send_json(json!({"type":"ice_candidate","candidate":format!("{i}")}))
            .await;
    }
    let (mut next_a, mut next_b) = (0, 0);
    for _ in 0..400 {
        let m = r.host.recv().await;
        let n: usize = m["candidate"].as_str().unwrap().parse().unwrap();
        if m["from"] == aid.as_str() {
            assert_eq!(n, next_a);
            next_a += 1;
        } else {
            assert_eq!(m["from"], bid.as_str());
            assert_eq!(n, next_b);
            next_b += 1;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn presence_events_reach_the_right_peers() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (g, gid) = attach(&server, &mut r, "join").await;
    let (mut w, _wid) = attach(&server, &mut r, "watch").await;
    g.close().await;
    let left = r.host.recv_type("peer_left").await;
    assert_eq!(left["peer"], gid.as_str());
    // Guests and watchers are not told about each other.
    w.expect_silence(Duration::from_millis(150)).await;
    // A connection that drops without a close frame counts as leaving too.
    let (w2, w2id) = attach(&server, &mut r, "watch").await;
    drop(w2);
    let left = r.host.recv_type("peer_left").await;
    assert_eq!(left["peer"], w2id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn a_webrtc_ros_js_client_attaches_by_query_string_and_sends_configure_first() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let mut viewer = server
        .connect_to(&format!("/webrtc?watch={}", r.watch))
        .await;
    // It never sends init; the first thing it sends is configure.
    viewer
        .send(r#"{"type":"configure","actions":[{"type":"add_stream","id":"webrtc_ros-stream-123"},{"type":"add_video_track","stream_id":"webrtc_ros-stream-123","id":"webrtc_ros-stream-123/subscribed_video","src":"ros_image:/camera/image_raw"}]}"#)
        .await;
    let joined = r.host.recv_type("peer_joined").await;
    assert_eq!(joined["role"], "watch");
    let vid = joined["peer"].as_str().unwrap().to_string();
    let configure = r.host.recv_type("configure").await;
    assert_eq!(configure["from"], vid.as_str());
    assert_eq!(
        configure["actions"][1]["src"],
        "ros_image:/camera/image_raw"
    );
    // The server tells the viewer its id first (webrtc_ros.js ignores it).
    let init = viewer.recv_type("init").await;
    assert_eq!(init["peer"], vid.as_str());
    assert_eq!(init["role"], "watch");
    r.host
        .send_json(json!({"type":"offer","sdp":SDP,"to":vid}))
        .await;
    assert_eq!(viewer.recv_type("offer").await["sdp"], SDP);

    // With `join` at the root path too.
    let mut guest = server.connect_to(&format!("/?join={}", r.join)).await;
    assert_eq!(guest.recv_type("init").await["role"], "join");
    assert_eq!(r.host.recv_type("peer_joined").await["role"], "join");

    // Unknown, malformed and resume-secret tokens are refused before the upgrade.
    assert_eq!(
        server
            .upgrade_status(server.url("/webrtc?watch=AAAAAAAAAAAAAAAA"))
            .await,
        Some(404)
    );
    assert_eq!(
        server.upgrade_status(server.url("/webrtc?join=nope")).await,
        Some(404)
    );
    assert_eq!(
        server
            .upgrade_status(server.url(&format!("/webrtc?join={}", r.resume)))
            .await,
        Some(404)
    );
    // The watch token does not work as a join token.
    assert_eq!(
        server
            .upgrade_status(server.url(&format!("/webrtc?join={}", r.watch)))
            .await,
        Some(404)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_may_not_send_expect_actions_but_a_guest_may() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut w, _) = attach(&server, &mut r, "watch").await;
    let (mut g, gid) = attach(&server, &mut r, "join").await;
    let expect = json!({"type":"configure","actions":[
        {"type":"add_stream","id":"s"},
        {"type":"expect_video_track","stream_id":"s","id":"t","dest":"ros_image:/cmd"}]});
    w.send_json(expect.clone()).await;
    w.expect_error("forbidden").await;
    w.send_json(json!({"type":"configure","actions":[{"type":"expect_stream","id":"s"}]}))
        .await;
    w.expect_error("forbidden").await;
    r.host.expect_silence(Duration::from_millis(150)).await;
    g.send_json(expect).await;
    assert_eq!(r.host.recv_type("configure").await["from"], gid.as_str());
    server.stop().await;
}

#[tokio::test]
async fn a_resume_on_a_new_socket_closes_the_replaced_one_4000() {
    // What a resume does to the room is the registry contract's
    // (`resuming_replaces_the_host`); what it looks like on the wire, and
    // what becomes of the replaced socket, is checked here.
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut g, gid) = attach(&server, &mut r, "join").await;
    // The host's old connection is half-open: it resumes on a new socket.
    let mut host = server.connect().await;
    host.send_json(json!({"type":"init","resume":r.resume}))
        .await;
    let init = host.recv().await;
    assert_eq!(init["type"], "init", "{init}");
    assert_eq!(init["role"], "host");
    assert_eq!(init["peer"], r.host_id.as_str());
    assert_eq!(
        (&init["join"], &init["watch"]),
        (&json!(r.join), &json!(r.watch))
    );
    assert!(
        is_token(&init["resume"]) && init["resume"] != r.resume.as_str(),
        "{init}"
    );
    assert_eq!(init["ice_servers"], json!([]));
    assert_eq!(
        host.recv().await,
        json!({"type":"peer_joined","peer":gid,"role":"join"})
    );
    assert_eq!(g.recv().await, json!({"type":"host_joined"}));
    // The replaced socket is closed 4000, saying why.
    assert_eq!(
        r.host.ended().await,
        Ended::Close(4000, "replaced by another host".into())
    );
    g.send(r#"{"type":"answer","sdp":"again"}"#).await;
    assert_eq!(host.recv().await["from"], gid.as_str());
    server.stop().await;
}

#[tokio::test]
async fn the_room_closes_when_the_grace_period_ends() {
    let server = TestServer::with_config(common::quick_config()).await;
    let mut r = room(&server).await;
    let (mut g, _) = attach(&server, &mut r, "join").await;
    let (join, watch, resume) = (r.join.clone(), r.watch.clone(), r.resume.clone());
    server.wait_metric("signal_rooms", 1.0).await;
    r.host.close().await;
    g.recv_type("host_left").await;
    g.recv_type("room_closed").await;
    g.expect_close(1000).await;
    server.wait_metric("signal_rooms", 0.0).await;
    // Every token of the room is dead.
    for (k, t) in [("join", &join), ("watch", &watch), ("resume", &resume)] {
        let mut c = server.connect().await;
        c.send_json(json!({"type":"init", k: t})).await;
        c.expect_error("room_not_found").await;
    }
    assert_eq!(
        server
            .upgrade_status(server.url(&format!("/webrtc?join={join}")))
            .await,
        Some(404)
    );
    server.stop().await;
}
