//! How a bridge's room ends: `--end-room-on-exit` ends it on SIGTERM (its
//! viewers are told at once), and a bridge whose room another host took
//! over (close 4000) stops with a clear error instead of fighting for it.
//! The real server in this process, the scripted stand-in robot, real
//! WebSocket viewers.

mod bridge_support;

use std::time::{Duration, Instant};

use bridge_support::*;
use serde_json::json;
use signal_server::bridge::{state, BridgeError};
use signal_server::config::Config;
use testkit::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_stopped_with_end_room_on_exit_ends_its_room_at_once() {
    init_logs();
    let dir = temp_dir("end");
    let state_file = dir.join("bridge-state.json");
    let state_arg = state_file.to_str().unwrap().to_string();
    // A grace period no test waits out: the viewers hear of the end at once.
    let server = TestServer::with_config(Config {
        host_grace: Duration::from_secs(120),
        ..Config::default()
    })
    .await;
    let mut robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(
        &server.ws_url(),
        &robot.url(),
        &["--end-room-on-exit", "--state-file", &state_arg],
    ));
    let room = bridge.room().await;
    assert!(state::load(&state_file).unwrap().is_some());
    let mut a = Viewer::watch(server.addr, &room).await;
    let conn = media(&mut a, &mut robot, "s", "ros_image:/camera/image_raw").await;

    let stopped = Instant::now();
    bridge.stop().await;
    a.recv("room_closed").await;
    assert!(stopped.elapsed() < Duration::from_secs(30), "not at once");
    robot.closed(conn).await;
    assert!(
        state::load(&state_file).unwrap().is_none(),
        "the state file of an ended room is removed"
    );
    let mut late = Client::connect(&server.ws_url()).await;
    late.send_json(json!({"type": "init", "watch": room.watch}))
        .await;
    late.expect_error("room_not_found").await;
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_a_stopped_bridge_leaves_its_room_waiting() {
    init_logs();
    let server = TestServer::with_config(Config::default()).await;
    let robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(&server.ws_url(), &robot.url(), &[]));
    let room = bridge.room().await;
    let mut a = Viewer::watch(server.addr, &room).await;
    bridge.stop().await;
    a.recv("host_left").await;
    let mut b = Viewer::watch(server.addr, &room).await;
    b.recv("host_left").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_whose_room_another_host_took_over_stops_with_a_clear_error() {
    init_logs();
    let fake = FakeServer::start().await;
    let robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(&fake.ws_url(), &robot.url(), &[]));
    let mut conn = fake.accept().await;
    assert_eq!(conn.recv().await, json!({"type": "init"}));
    conn.send(
        json!({"type": "init", "join": "54ICxFae_Ip7TJE2", "watch": "634w44TblL5Dbd9a",
        "resume": "Zm9vYmFyYmF6cXV4", "peer": "h0st1234", "role": "host", "ice_servers": []}),
    )
    .await;
    bridge.room().await;
    conn.close_with(4000, "replaced by another host").await;
    match bridge.finished().await {
        Err(e @ BridgeError::Replaced { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("4000") && text.contains("--state-file"),
                "{text}"
            );
        }
        other => panic!("expected the bridge to stop as replaced, got {other:?}"),
    }
}
