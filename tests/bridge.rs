//! Integration tests of `signal-server bridge`: the real server and the bridge
//! in-process, a scripted stand-in for webrtc_ros, and real WebSocket clients
//! as viewers.

mod bridge_support;

use std::collections::HashMap;
use std::time::Duration;

use bridge_support::*;
use serde_json::json;
use signal_server::bridge::state;
use signal_server::config::Config;

const CAMERA: &str = "ros_image:/camera/image_raw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_get_their_own_isolated_robot_connections() {
    let Rig {
        server,
        mut robot,
        bridge,
        room,
    } = Rig::start(&[]).await;
    assert!(!room.resumed);
    assert_eq!(
        room.watch_url,
        format!("http://{}/?watch={}", server.addr, room.watch)
    );
    assert_eq!(
        room.join_url,
        format!("http://{}/?join={}", server.addr, room.join)
    );

    let mut a = Viewer::watch(server.addr, &room).await;
    let mut b = Viewer::watch(server.addr, &room).await;
    assert_ne!(a.peer, b.peer);

    // Each viewer's first configure opens a robot connection of its own and
    // reaches it exactly as the viewer wrote it, without the server's `from`.
    a.send(configure("stream-a", CAMERA)).await;
    let conn_a = robot.opened().await;
    assert_eq!(
        robot.received(conn_a, "configure").await,
        configure("stream-a", CAMERA)
    );
    assert_eq!(a.expect_offer().await, conn_a);

    b.send(configure("stream-b", "ros_image:/camera/depth"))
        .await;
    let conn_b = robot.opened().await;
    assert_ne!(conn_a, conn_b);
    assert_eq!(
        robot.received(conn_b, "configure").await,
        configure("stream-b", "ros_image:/camera/depth")
    );
    assert_eq!(b.expect_offer().await, conn_b);

    // Both answer and trickle at the same time.
    a.send(answer("answer-from-a")).await;
    b.send(answer("answer-from-b")).await;
    a.send(ice("candidate:a 1 udp 1 198.51.100.7 7000 typ host"))
        .await;
    b.send(ice("candidate:b 1 udp 1 198.51.100.8 8000 typ host"))
        .await;
    assert_eq!(
        robot.received(conn_a, "answer").await,
        answer("answer-from-a")
    );
    assert_eq!(
        robot.received(conn_b, "answer").await,
        answer("answer-from-b")
    );
    assert_eq!(
        robot.received(conn_a, "ice_candidate").await,
        ice("candidate:a 1 udp 1 198.51.100.7 7000 typ host")
    );
    assert_eq!(
        robot.received(conn_b, "ice_candidate").await,
        ice("candidate:b 1 udp 1 198.51.100.8 8000 typ host")
    );

    // A second configure renegotiates on the same robot connection. It also
    // flushes both paths: anything misrouted earlier would be in the logs
    // before these replies.
    a.send(configure("stream-a2", CAMERA)).await;
    b.send(configure("stream-b2", CAMERA)).await;
    assert_eq!(
        robot.received(conn_a, "configure").await,
        configure("stream-a2", CAMERA)
    );
    assert_eq!(
        robot.received(conn_b, "configure").await,
        configure("stream-b2", CAMERA)
    );
    assert_eq!(a.expect_offer().await, conn_a);
    assert_eq!(b.expect_offer().await, conn_b);
    assert_eq!(robot.opened_count(), 2);

    // Nothing of one viewer's exchange reached the other, either way.
    assert_eq!(
        robot.received_on(conn_a),
        vec![
            configure("stream-a", CAMERA),
            answer("answer-from-a"),
            ice("candidate:a 1 udp 1 198.51.100.7 7000 typ host"),
            configure("stream-a2", CAMERA),
        ]
    );
    assert_eq!(
        robot.received_on(conn_b),
        vec![
            configure("stream-b", "ros_image:/camera/depth"),
            answer("answer-from-b"),
            ice("candidate:b 1 udp 1 198.51.100.8 8000 typ host"),
            configure("stream-b2", CAMERA),
        ]
    );
    assert_eq!(conns_in(&a.log), HashMap::from([(Some(conn_a), 6)]));
    assert_eq!(conns_in(&b.log), HashMap::from([(Some(conn_b), 6)]));
    for m in a.log.iter() {
        assert_eq!(m["to"], a.peer.as_str(), "{m}");
    }
    for m in b.log.iter() {
        assert_eq!(m["to"], b.peer.as_str(), "{m}");
    }

    bridge.stop().await;
    robot.closed(conn_a).await;
    robot.closed(conn_b).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_left_closes_that_viewers_robot_connection_only() {
    let Rig {
        server,
        mut robot,
        bridge,
        room,
    } = Rig::start(&[]).await;

    let mut a = Viewer::watch(server.addr, &room).await;
    let mut b = Viewer::watch(server.addr, &room).await;
    let conn_a = media(&mut a, &mut robot, "stream-a", CAMERA).await;
    let conn_b = media(&mut b, &mut robot, "stream-b", CAMERA).await;

    a.close().await;
    robot.closed(conn_a).await;

    // B's connection is untouched and still relays both ways.
    b.send(ice("candidate:b-after 1 udp 1 198.51.100.8 8000 typ host"))
        .await;
    assert_eq!(
        robot.received(conn_b, "ice_candidate").await,
        ice("candidate:b-after 1 udp 1 198.51.100.8 8000 typ host")
    );
    b.send(configure("stream-b2", CAMERA)).await;
    assert_eq!(b.expect_offer().await, conn_b);
    assert!(!robot.is_closed(conn_b));

    // A newcomer gets a new connection.
    let mut c = Viewer::watch(server.addr, &room).await;
    c.send(configure("stream-c", CAMERA)).await;
    let conn_c = robot.opened().await;
    assert!(conn_c != conn_a && conn_c != conn_b);
    assert_eq!(c.expect_offer().await, conn_c);

    b.close().await;
    robot.closed(conn_b).await;
    assert!(!robot.is_closed(conn_c));
    bridge.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_never_reach_the_robot() {
    let Rig {
        server,
        mut robot,
        bridge,
        room,
    } = Rig::start(&["--allow-src", "ros_image:/camera/*", "--max-viewers", "2"]).await;
    let mut a = Viewer::watch(server.addr, &room).await;

    // A source outside the allow-list: refused by the bridge, for A only.
    a.send(configure("s", "ros_image:/secret/map")).await;
    let e = a.error("source_not_allowed").await;
    assert_eq!(e["to"], a.peer.as_str());
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("ros_image:/secret/map"));

    // A watcher's expect_*: the server refuses it already.
    let expect = json!({"type": "configure", "actions": [
        {"type": "expect_stream", "id": "in"},
        {"type": "expect_video_track", "stream_id": "in", "id": "in/v", "dest": "ros_image:/camera/in"},
    ]});
    a.send(expect.clone()).await;
    let e = a.error("forbidden").await;
    assert!(e.get("to").is_none(), "the server's own error: {e}");

    // An allowed source goes through.
    let conn_a = media(&mut a, &mut robot, "s", CAMERA).await;

    // A guest (join link) may send media into an allowed destination...
    let mut g = Viewer::connect(server.addr, "join", &room.join).await;
    g.send(expect.clone()).await;
    let conn_g = robot.opened().await;
    assert_eq!(robot.received(conn_g, "configure").await, expect);
    assert_eq!(g.expect_offer().await, conn_g);
    // ...but not into any other.
    g.send(json!({"type": "configure", "actions": [
        {"type": "expect_video_track", "stream_id": "in", "id": "in/v2", "dest": "ros_image:/secret/in"},
    ]}))
    .await;
    g.error("source_not_allowed").await;

    // A third viewer is over --max-viewers.
    let mut b = Viewer::watch(server.addr, &room).await;
    b.send(configure("s", CAMERA)).await;
    let e = b.error("viewer_limit").await;
    assert_eq!(e["to"], b.peer.as_str());

    // Flush both robot paths, then check that nothing refused got through.
    a.send(ice("candidate:a-marker 1 udp 1 198.51.100.7 7000 typ host"))
        .await;
    robot.received(conn_a, "ice_candidate").await;
    g.send(ice("candidate:g-marker 1 udp 1 198.51.100.9 9000 typ host"))
        .await;
    robot.received(conn_g, "ice_candidate").await;
    assert_eq!(robot.opened_count(), 2);
    assert_eq!(robot.received_on(conn_a).len(), 2);
    assert_eq!(robot.received_on(conn_g).len(), 2);
    let everything = format!("{:?}", robot.log());
    assert!(!everything.contains("/secret"), "{everything}");

    // Once A leaves, B may watch.
    a.close().await;
    robot.closed(conn_a).await;
    media(&mut b, &mut robot, "s", CAMERA).await;

    bridge.stop().await;
    server.stop().await;
}

/// Defence in depth, with a scripted server that lets through what the real
/// one refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_refuses_expect_actions_from_watchers_itself() {
    init_logs();
    let fake = FakeServer::start().await;
    let mut robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(&fake.ws_url(), &robot.url(), &[]));
    let mut conn = fake.accept().await;
    assert_eq!(conn.recv().await, json!({"type": "init"}));
    conn.send(
        json!({"type": "init", "join": "54ICxFae_Ip7TJE2", "watch": "634w44TblL5Dbd9a",
        "resume": "Zm9vYmFyYmF6cXV4", "peer": "h0st1234", "role": "host", "ice_servers": []}),
    )
    .await;
    let room = bridge.room().await;
    assert_eq!(room.watch, "634w44TblL5Dbd9a");
    assert_eq!(
        room.watch_url,
        format!("http://{}/?watch=634w44TblL5Dbd9a", fake.addr)
    );

    conn.send(json!({"type": "peer_joined", "peer": "wAtcher1", "role": "watch"}))
        .await;
    let expect = json!({"from": "wAtcher1", "type": "configure", "actions": [
        {"type": "expect_stream", "id": "s"},
        {"type": "expect_video_track", "stream_id": "s", "id": "t", "dest": "ros_image:/cmd_video"},
    ]});
    conn.send(expect).await;
    let e = conn.recv().await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "forbidden");
    assert_eq!(e["to"], "wAtcher1");

    // A peer the server never announced gets a watcher's rights.
    conn.send(json!({"from": "nObody12", "type": "configure", "actions": [{"type": "expect_stream", "id": "s"}]}))
        .await;
    let e = conn.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["to"].as_str()),
        (Some("forbidden"), Some("nObody12"))
    );

    // An allowed request goes through, and the robot's replies are addressed.
    let mut ok = configure("s", CAMERA);
    ok.as_object_mut()
        .unwrap()
        .shift_insert(0, "from".into(), json!("wAtcher1"));
    conn.send(ok).await;
    let id = robot.opened().await;
    assert_eq!(
        robot.received(id, "configure").await,
        configure("s", CAMERA)
    );
    let offer = conn.recv().await;
    assert_eq!(offer["type"], "offer");
    assert_eq!(offer["to"], "wAtcher1");
    assert_eq!(robot_conn_of(&offer), Some(id));
    // `to` is spliced in front, the rest is webrtc_ros's text.
    let first_key = offer.as_object().unwrap().keys().next().unwrap().clone();
    assert_eq!(first_key, "to");
    for _ in 0..2 {
        let c = conn.recv().await;
        assert_eq!(
            (c["type"].as_str(), c["to"].as_str()),
            (Some("ice_candidate"), Some("wAtcher1"))
        );
    }

    conn.send(json!({"type": "peer_left", "peer": "wAtcher1"}))
        .await;
    robot.closed(id).await;
    assert_eq!(robot.opened_count(), 1);
    assert_eq!(robot.received_on(id), vec![configure("s", CAMERA)]);

    // Shutdown says goodbye with 1001.
    bridge.stop().await;
    let frame = conn.ws_next().await;
    match frame {
        Some(tokio_tungstenite::tungstenite::Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1001)
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_robot_is_reported_and_retried_on_the_next_configure() {
    let Rig {
        server,
        mut robot,
        bridge,
        room,
    } = Rig::start(&[]).await;
    let mut a = Viewer::watch(server.addr, &room).await;

    // webrtc_ros is down.
    robot.set_down(true);
    a.send(configure("s1", CAMERA)).await;
    let e = a.error("robot_unavailable").await;
    assert_eq!(e["to"], a.peer.as_str());
    assert_eq!(robot.opened_count(), 0);

    // It is back: the next configure (as the page sends it, removing its old
    // stream) opens a connection, without the stale remove_stream.
    robot.set_down(false);
    let mut retry = configure("s2", CAMERA);
    retry["actions"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"type": "remove_stream", "id": "s1"}));
    a.send(retry).await;
    let conn1 = robot.opened().await;
    assert_eq!(
        robot.received(conn1, "configure").await,
        configure("s2", CAMERA)
    );
    assert_eq!(a.expect_offer().await, conn1);

    // webrtc_ros crashes mid-session.
    robot.kill_all();
    robot.closed(conn1).await;
    a.error("robot_unavailable").await;
    a.send(configure("s3", CAMERA)).await;
    let conn2 = robot.opened().await;
    assert_ne!(conn1, conn2);
    assert_eq!(a.expect_offer().await, conn2);

    bridge.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_server_connection_resumes_the_same_room() {
    init_logs();
    let server = TestServer::with_config(Config::default()).await;
    let proxy = Proxy::start(server.addr).await;
    let mut robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(&proxy.ws_url(), &robot.url(), &[]));
    let room = bridge.room().await;
    assert!(!room.resumed);

    let mut a = Viewer::watch(server.addr, &room).await;
    let mut b = Viewer::watch(server.addr, &room).await;
    let conn_a = media(&mut a, &mut robot, "a1", CAMERA).await;
    let conn_b = media(&mut b, &mut robot, "b1", CAMERA).await;

    // The network drops, and stays down for a moment.
    proxy.set_blocked(true);
    proxy.sever();
    bridge.disconnected().await;
    a.recv("host_left").await;
    b.recv("host_left").await;
    // Robot connections outlive the outage (media does not need the server).
    assert!(!robot.is_closed(conn_a) && !robot.is_closed(conn_b));
    // B leaves while the bridge is away.
    b.close().await;

    proxy.set_blocked(false);
    let again = bridge.room().await;
    assert!(again.resumed);
    assert_eq!(
        (again.watch.as_str(), again.join.as_str()),
        (room.watch.as_str(), room.join.as_str())
    );
    assert_eq!(again.watch_url, room.watch_url);
    a.recv("host_joined").await;
    // B is not in the room any more: its robot connection is closed.
    robot.closed(conn_b).await;

    // A starts over (as the page does on host_joined): a fresh robot
    // connection replaces the old one.
    a.send(configure("a1", CAMERA)).await;
    robot.closed(conn_a).await;
    let conn_a2 = robot.opened().await;
    assert_eq!(a.expect_offer().await, conn_a2);
    a.send(answer("answer-a2")).await;
    assert_eq!(robot.received(conn_a2, "answer").await, answer("answer-a2"));

    bridge.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bridge_gets_its_room_back_from_the_state_file() {
    init_logs();
    let dir = temp_dir("restart");
    let state_file = dir.join("bridge-state.json");
    let state_arg = state_file.to_str().unwrap().to_string();
    let server = TestServer::with_config(Config::default()).await;
    let mut robot = RobotStub::start().await;
    let args = bridge_args(
        &server.ws_url(),
        &robot.url(),
        &["--state-file", &state_arg],
    );

    let mut first = BridgeRun::start(args.clone());
    let room = first.room().await;
    let saved = state::load(&state_file).unwrap().unwrap();
    assert_eq!(
        (saved.watch.as_str(), saved.join.as_str()),
        (room.watch.as_str(), room.join.as_str())
    );
    assert_eq!(saved.watch_url, room.watch_url);
    assert_eq!(saved.server, server.ws_url());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let mut a = Viewer::watch(server.addr, &room).await;
    let conn1 = media(&mut a, &mut robot, "s", CAMERA).await;

    // A clean stop (SIGTERM) closes the robot connections; the room waits.
    first.stop().await;
    robot.closed(conn1).await;
    a.recv("host_left").await;

    let mut second = BridgeRun::start(args);
    let again = second.room().await;
    assert!(again.resumed);
    assert_eq!(
        (again.watch.as_str(), again.join.as_str()),
        (room.watch.as_str(), room.join.as_str())
    );
    // The secret was rotated by the resume, and the file follows.
    let resaved = state::load(&state_file).unwrap().unwrap();
    assert_ne!(resaved.resume, saved.resume);
    assert_eq!(resaved.watch, room.watch);

    a.recv("host_joined").await;
    media(&mut a, &mut robot, "s", CAMERA).await;

    second.stop().await;
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_with_a_shared_room_store_keeps_the_links() {
    init_logs();
    let config = Config::default();
    let (registry, metrics) = memory_registry(&config);
    let server1 = TestServer::start_with(config.clone(), registry.clone(), metrics.clone()).await;
    let proxy = Proxy::start(server1.addr).await;
    let mut robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(&proxy.ws_url(), &robot.url(), &[]));
    let room = bridge.room().await;

    server1.stop().await;
    bridge.disconnected().await;
    let server2 = TestServer::start_with(config, registry, metrics).await;
    proxy.set_target(server2.addr);

    let again = bridge.room().await;
    assert!(again.resumed);
    assert_eq!(
        (again.watch.as_str(), again.join.as_str()),
        (room.watch.as_str(), room.join.as_str())
    );

    let mut a = Viewer::watch(server2.addr, &again).await;
    media(&mut a, &mut robot, "s", CAMERA).await;

    bridge.stop().await;
    server2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_closed_meanwhile_is_replaced_with_new_links() {
    init_logs();
    let dir = temp_dir("expired");
    let state_file = dir.join("state.json");
    let state_arg = state_file.to_str().unwrap().to_string();
    let config = Config {
        host_grace: Duration::from_millis(300),
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let proxy = Proxy::start(server.addr).await;
    let mut robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(
        &proxy.ws_url(),
        &robot.url(),
        &["--state-file", &state_arg],
    ));
    let room = bridge.room().await;
    let mut a = Viewer::watch(server.addr, &room).await;
    let conn = media(&mut a, &mut robot, "s", CAMERA).await;

    // Away for longer than the grace period: the room closes.
    proxy.set_blocked(true);
    proxy.sever();
    bridge.disconnected().await;
    a.recv("host_left").await;
    a.recv("room_closed").await;
    proxy.set_blocked(false);

    let fresh = bridge.room().await;
    assert!(!fresh.resumed);
    assert_ne!(fresh.watch, room.watch);
    assert_ne!(fresh.join, room.join);
    // The old room's robot connections are closed, the file names the new room.
    robot.closed(conn).await;
    let saved = state::load(&state_file).unwrap().unwrap();
    assert_eq!(saved.watch, fresh.watch);

    let mut b = Viewer::watch(server.addr, &fresh).await;
    media(&mut b, &mut robot, "s", CAMERA).await;

    bridge.stop().await;
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_up_front() {
    init_logs();
    for extra in [
        &["--allow-src", "ros_image:/camera/["][..],
        &[
            "--state-file",
            "/nonexistent-dir-for-bridge-test/state.json",
        ][..],
        &["--page-url", "ftp://example.org/"][..],
    ] {
        let args = bridge_args("ws://127.0.0.1:9/webrtc", "ws://127.0.0.1:9/webrtc", extra);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let result = signal_server::bridge::run_with_events(args, std::future::pending(), tx).await;
        assert!(result.is_err(), "{extra:?}");
    }
    let args = bridge_args("http://127.0.0.1:9/", "ws://127.0.0.1:9/webrtc", &[]);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = signal_server::bridge::run_with_events(args, std::future::pending(), tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ws://"), "{err}");
}

/// `wss://` goes through rustls (bundled roots, no system store needed): the
/// first bytes the bridge sends are a TLS ClientHello naming the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_urls_are_spoken_over_tls() {
    use tokio::io::AsyncReadExt;
    init_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = format!("wss://localhost:{port}/webrtc");
    let bridge = BridgeRun::start(bridge_args(&server, "ws://127.0.0.1:9/webrtc", &[]));
    let (mut tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the bridge connects")
        .unwrap();
    let mut hello = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut hello))
        .await
        .expect("the bridge writes")
        .unwrap();
    let hello = &hello[..n];
    assert!(n > 5, "{n} bytes");
    assert_eq!(hello[0], 0x16, "a TLS handshake record");
    assert_eq!(hello[5], 0x01, "a ClientHello");
    assert!(
        hello.windows(b"localhost".len()).any(|w| w == b"localhost"),
        "SNI names the host"
    );
    drop(tcp);
    bridge.stop().await;
}
