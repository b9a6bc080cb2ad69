//! The bridge with `--token` against a server in token mode (`--auth
//! token`): it claims its named room, keeps it across a server restart, and
//! a viewer's link made before the restart gets video again. The real
//! server and the bridge in-process, a scripted stand-in for webrtc_ros.

mod auth_support;
mod bridge_support;

use auth_support::{config, host_token, watch_token};
use bridge_support::*;

const CAMERA: &str = "ros_image:/camera/image_raw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_claims_its_named_room_with_a_host_token_and_keeps_it_across_a_server_restart() {
    init_logs();
    let server1 = TestServer::with_config(config()).await;
    let proxy = Proxy::start(server1.addr).await;
    let mut robot = RobotStub::start().await;
    let token = host_token("robot-7");
    let mut bridge = BridgeRun::start(bridge_args(
        &proxy.ws_url(),
        &robot.url(),
        &["--token", &token],
    ));
    let room = bridge.room().await;
    assert_eq!(room.room.as_deref(), Some("robot-7"));
    assert!(!room.resumed);
    // A link made before the restart.
    let link = watch_token("robot-7", "alice");
    let mut a = Viewer::with_token(server1.addr, &link).await;
    media(&mut a, &mut robot, "s", CAMERA).await;

    // The server restarts (rooms in memory: all lost).
    server1.stop().await;
    bridge.disconnected().await;
    let server2 = TestServer::with_config(config()).await;
    proxy.set_target(server2.addr);
    let again = bridge.room().await;
    assert_eq!(again.room.as_deref(), Some("robot-7"));
    assert!(again.resumed, "the same named room");

    let mut b = Viewer::with_token(server2.addr, &link).await;
    media(&mut b, &mut robot, "s2", CAMERA).await;

    // A viewer token cannot host: the server makes its holder a watcher,
    // which the bridge refuses to be.
    bridge.stop().await;
    let mut wrong = BridgeRun::start(bridge_args(
        &server2.ws_url(),
        &robot.url(),
        &["--token", &link],
    ));
    match wrong.disconnected().await {
        signal_server::bridge::Disconnect::NotHost => {}
        other => panic!("a watch token as the bridge's: {other:?}"),
    }
    wrong.stop().await;
    server2.stop().await;
}
