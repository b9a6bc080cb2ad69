//! The bridge and TLS: a server with a self-made certificate reached over
//! wss:// with `--ca-file`, and a `--robot` URL that is really a
//! signal-server (the port mix-up the shared default 9090 invites),
//! refused at start with a message that says so.

mod bridge_support;
mod common;
mod tls_support;

use std::time::Duration;

use bridge_support::{bridge_args, BridgeRun, RobotStub};
use common::{TestServer, BIN, WAIT};
use signal_server::bridge::BridgeError;
use signal_server::config::Config;
use signal_server::tls::{CertFiles, ServerTls};
use tokio_util::sync::CancellationToken;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ss-bridge-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The files the server reads, in `dir/live`.
fn live(dir: &std::path::Path) -> CertFiles {
    CertFiles {
        cert: dir.join("live/fullchain.pem"),
        key: dir.join("live/privkey.pem"),
    }
}

/// Puts `cert` and `key` in place of the live files, each by a rename.
fn install(cert: &std::path::Path, key: &std::path::Path, live: &CertFiles) {
    std::fs::create_dir_all(live.cert.parent().unwrap()).unwrap();
    for (src, dst) in [(key, &live.key), (cert, &live.cert)] {
        let tmp = dst.with_extension("new");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, dst).unwrap();
    }
}

/// A renewal: a new key and leaf for localhost, signed by the same CA (in
/// `dir`, made by `ca_and_leaf`); returns (cert, key).
fn renew(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ssl = |args: &[&str]| testkit::tls::openssl(dir, args);
    ssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "renewed.key",
        "-out",
        "renewed.csr",
        "-subj",
        "/CN=localhost",
    ]);
    ssl(&[
        "x509",
        "-req",
        "-in",
        "renewed.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "renewed.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (dir.join("renewed.pem"), dir.join("renewed.key"))
}

/// A server with a certificate from a CA of the test's own, its files
/// checked for a renewal every 50 ms.
async fn tls_server(
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> (TestServer, testkit::tls::CaAndLeaf) {
    let made = testkit::tls::ca_and_leaf(dir, "bridge-test-ca");
    let files = live(dir);
    install(&made.cert, &made.key, &files);
    let resolver = signal_server::tls::files::watch(files, Duration::from_millis(50), stop.clone())
        .expect("certificate loads");
    let config = Config {
        tls: Some(ServerTls::new(resolver, false, Vec::new()).expect("TLS config")),
        ..Config::default()
    };
    (TestServer::with_config(config).await, made)
}

#[tokio::test]
async fn the_bridge_over_wss_with_ca_file_keeps_its_connection_while_a_renewed_certificate_is_served_to_new_ones(
) {
    let dir = temp_dir("ca-file");
    let stop = CancellationToken::new();
    let (server, made) = tls_server(&dir, &stop).await;
    let mut robot = RobotStub::start().await;
    let url = format!("wss://localhost:{}/webrtc", server.addr.port());

    // Without the CA: the bundled roots refuse the certificate, and the
    // bridge keeps retrying without a room.
    let mut untrusting = BridgeRun::start(bridge_args(&url, &robot.url(), &[]));
    let client = tls_support::client_config(&[&made.ca], &[b"http/1.1"]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = tls_support::get(server.addr, "localhost", &client, "/metrics")
            .await
            .unwrap();
        let failed = common::series_value(&metrics.body, "signal_tls_handshake_failures_total");
        if failed.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refused handshake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let no_room = tokio::time::timeout(Duration::from_millis(500), untrusting.room()).await;
    assert!(no_room.is_err(), "a room without trusting the certificate");
    drop(untrusting);

    let ca = made.ca.to_str().unwrap();
    let mut bridge = BridgeRun::start(bridge_args(&url, &robot.url(), &["--ca-file", ca]));
    let links = bridge.room().await;
    assert!(
        links
            .watch_url
            .starts_with(&format!("https://localhost:{}/", server.addr.port())),
        "the page link is https: {links:?}"
    );
    // The certificate is renewed (same CA, new key) while the bridge's
    // connection is up; new connections get the new one.
    let first = tls_support::pem_certs(&made.cert).remove(0);
    let (cert, key) = renew(&dir);
    let renewed = tls_support::pem_certs(&cert).remove(0);
    install(&cert, &key, &live(&dir));
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut viewer = loop {
        let (viewer, leaf) = tls_support::wss(server.addr, "localhost", &client, "/webrtc")
            .await
            .unwrap();
        if leaf == renewed {
            break viewer;
        }
        assert_eq!(leaf, first);
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A viewer on the new certificate reaches the robot through the
    // bridge's connection, made on the old one.
    viewer
        .send_json(serde_json::json!({"type":"init","watch":links.watch}))
        .await;
    assert_eq!(viewer.recv_type("init").await["role"], "watch");
    viewer
        .send_json(bridge_support::configure(
            "s",
            "ros_image:/camera/image_raw",
        ))
        .await;
    robot.opened().await;
    let offer = viewer.recv_type("offer").await;
    assert!(bridge_support::robot_conn_of(&offer).is_some(), "{offer}");
    let lost = tokio::time::timeout(Duration::from_millis(200), bridge.disconnected()).await;
    assert!(lost.is_err(), "the bridge's connection stayed up: {lost:?}");
    bridge.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn a_ca_file_that_holds_no_certificate_is_refused_at_start() {
    let dir = temp_dir("bad-ca");
    let bad = dir.join("ca.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let args = bridge_args(
        "wss://localhost:1/webrtc",
        "ws://127.0.0.1:1/webrtc",
        &["--ca-file", bad.to_str().unwrap()],
    );
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let result = signal_server::bridge::run_with_events(args, std::future::pending(), tx).await;
    let err = result.unwrap_err();
    assert!(matches!(err, BridgeError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains("--ca-file"), "{err}");
}

#[tokio::test]
async fn a_robot_url_that_answers_like_a_signal_server_stops_the_bridge_naming_the_port_mix_up() {
    let server = TestServer::with_config(Config::default()).await;
    // The upgrade says who answers, for every robot connection.
    let (_, response) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("upgrade");
    let header = response.headers().get("server").expect("a Server header");
    assert!(header.to_str().unwrap().starts_with("signal-server/"));

    // In-process: the bridge does not start.
    let args = bridge_args(&server.ws_url(), &server.ws_url(), &[]);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let run = signal_server::bridge::run_with_events(args, std::future::pending(), tx);
    let err = tokio::time::timeout(WAIT, run)
        .await
        .expect("the bridge stops at once")
        .unwrap_err();
    assert!(
        matches!(err, BridgeError::RobotIsSignalServer { .. }),
        "{err}"
    );

    // The binary, as a user runs it: exit status 1 and a plain message.
    let out = tokio::process::Command::new(BIN)
        .args([
            "bridge",
            "--server",
            &server.ws_url(),
            "--robot",
            &server.ws_url(),
        ])
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("the bridge exits")
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("answers like a signal-server")
            && stderr.contains("9090")
            && stderr.contains("--bind"),
        "stderr: {stderr}"
    );

    // A webrtc_ros stand-in is not mistaken for one, and sees no
    // connection from the look at it.
    let robot = RobotStub::start().await;
    let mut bridge = BridgeRun::start(bridge_args(&server.ws_url(), &robot.url(), &[]));
    bridge.room().await;
    assert_eq!(
        robot.opened_count(),
        0,
        "no WebSocket was opened to the robot"
    );
    bridge.stop().await;
}
