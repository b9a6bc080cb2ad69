//! The HTTP side on the same port: page, health, metrics.

mod common;

use common::{attach, room, TestServer};
use serde_json::{json, Value};

#[tokio::test]
async fn the_page_is_served_from_the_binary() {
    let server = TestServer::start().await;
    let (status, head, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(
        body.to_ascii_lowercase().contains("<!doctype html"),
        "{body}"
    );
    let (status, head, _) = server.get("/app.js").await;
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("javascript"), "{head}");
    assert_eq!(server.get("/no-such-file.txt").await.0, 404);
    assert_eq!(server.get("/../Cargo.toml").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn webrtc_without_upgrade_says_so() {
    let server = TestServer::start().await;
    let (status, _, body) = server.get("/webrtc").await;
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket"));
    server.stop().await;
}

#[tokio::test]
async fn healthz_reports_connections_and_rooms() {
    let server = TestServer::start().await;
    let (status, head, body) = server.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["connections"], 0);
    assert_eq!(v["rooms"], 0);
    let _r = room(&server).await;
    let (_, _, body) = server.get("/healthz").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["connections"], 1);
    assert_eq!(v["rooms"], 1);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let (mut g, gid) = attach(&server, &mut r, "join").await;
    let (mut w, _) = attach(&server, &mut r, "watch").await;
    g.send(r#"{"type":"answer","sdp":"s"}"#).await;
    r.host.recv().await;
    r.host
        .send_json(json!({"type":"ice_candidate","candidate":"c"}))
        .await; // broadcast: two deliveries
    g.recv().await;
    w.recv().await;
    r.host
        .send_json(json!({"type":"offer","sdp":"s","to":gid}))
        .await;
    g.recv().await;
    w.send("nope").await;
    w.expect_error("bad_json").await;

    let (status, head, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("openmetrics-text") || head.contains("text/plain"),
        "{head}"
    );
    for line in [
        "signal_connections 3",
        "signal_rooms 1",
        "signal_rooms_created_total 1",
        "signal_messages_relayed_total{type=\"answer\"} 1",
        "signal_messages_relayed_total{type=\"ice_candidate\"} 2",
        "signal_messages_relayed_total{type=\"offer\"} 1",
        "signal_messages_relayed_total{type=\"configure\"} 0",
        "signal_errors_total{code=\"bad_json\"} 1",
        "signal_errors_total{code=\"too_large\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let bytes = server.metric("signal_bytes_relayed_total").await;
    assert!(bytes > 60.0, "{bytes}");
    server.stop().await;
}
