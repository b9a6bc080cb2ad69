//! TLS termination through real sockets: the server on port 0 with a
//! certificate made by `openssl` for the test, and rustls clients that
//! trust only the test's CAs.

mod common;
mod tls_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestServer, WAIT};
use serde_json::json;
use signal_server::config::Config;
use signal_server::tls::{CertFiles, ServerTls};
use tls_support::{client_config, pem_certs};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ss-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Puts `from`'s leaf certificate and key in place of `live`'s, each by a
/// rename (as certbot swaps its links), key first.
fn install(from: &testkit::tls::CaAndLeaf, live: &CertFiles) {
    for (src, dst) in [(&from.key, &live.key), (&from.cert, &live.cert)] {
        let tmp = dst.with_extension("new");
        std::fs::copy(src, &tmp).expect("copy");
        std::fs::rename(&tmp, dst).expect("rename");
    }
}

/// Certificate files in `dir/live` holding the leaf of a new CA named
/// `ca`, and that CA.
fn live_files(dir: &Path, ca: &str) -> (CertFiles, testkit::tls::CaAndLeaf) {
    let made = testkit::tls::ca_and_leaf(&dir.join(ca), ca);
    let live = dir.join("live");
    std::fs::create_dir_all(&live).expect("live dir");
    let files = CertFiles {
        cert: live.join("fullchain.pem"),
        key: live.join("privkey.pem"),
    };
    install(&made, &files);
    (files, made)
}

/// A server with TLS from `files`, checked for changes every 50 ms.
async fn tls_server(files: CertFiles, mut config: Config, stop: &CancellationToken) -> TestServer {
    let resolver = signal_server::tls::files::watch(files, Duration::from_millis(50), stop.clone())
        .expect("certificate files load");
    config.tls = Some(ServerTls::new(resolver, false, Vec::new()).expect("TLS config"));
    TestServer::with_config(config).await
}

#[tokio::test]
async fn the_page_healthz_metrics_and_websockets_work_the_same_over_tls() {
    let dir = temp_dir("same");
    let (files, ca) = live_files(&dir, "ca-same");
    let stop = CancellationToken::new();
    let server = tls_server(files, Config::default(), &stop).await;
    let client = client_config(&[&ca.ca], &[b"http/1.1"]);

    let page = tls_support::get(server.addr, "localhost", &client, "/")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.body.contains("<html"), "the page: {}", page.body);
    let health = tls_support::get(server.addr, "localhost", &client, "/healthz")
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.json().unwrap()["service"], "signal-server");
    let metrics = tls_support::get(server.addr, "localhost", &client, "/metrics")
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .body
        .contains("signal_tls_handshake_failures_total 0"));

    // A room over wss://: the host creates it, a guest joins, a message
    // goes through.
    let (mut host, _) = tls_support::wss(server.addr, "localhost", &client, "/webrtc")
        .await
        .unwrap();
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    let token = init["join"].as_str().unwrap().to_string();
    let (mut guest, _) = tls_support::wss(server.addr, "localhost", &client, "/webrtc")
        .await
        .unwrap();
    guest.send_json(json!({"type":"init","join":token})).await;
    let joined = guest.recv_type("init").await;
    let guest_id = joined["peer"].as_str().unwrap().to_string();
    host.recv_type("peer_joined").await;
    host.send_json(json!({"type":"offer","to":guest_id,"sdp":"v=0\r\n"}))
        .await;
    let offer = guest.recv_type("offer").await;
    assert_eq!(offer["sdp"], "v=0\r\n");

    // Plain HTTP on the TLS port is not served: the handshake fails.
    let plain = testkit::http::get(server.addr, "/healthz").await;
    assert!(plain.is_err() || plain.unwrap().status != 200);
    stop.cancel();
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_new_connections_while_an_open_wss_session_stays_up(
) {
    let dir = temp_dir("reload");
    let (files, first) = live_files(&dir, "ca-first");
    let stop = CancellationToken::new();
    let server = tls_server(files.clone(), Config::default(), &stop).await;
    let second = testkit::tls::ca_and_leaf(&dir.join("ca-second"), "ca-second");
    let client = client_config(&[&first.ca, &second.ca], &[b"http/1.1"]);
    let first_leaf = pem_certs(&first.cert).remove(0);
    let second_leaf = pem_certs(&second.cert).remove(0);

    let (mut host, leaf) = tls_support::wss(server.addr, "localhost", &client, "/webrtc")
        .await
        .unwrap();
    assert_eq!(leaf, first_leaf);
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    let token = init["join"].as_str().unwrap().to_string();

    install(&second, &files);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let tls = tls_support::connect(server.addr, "localhost", &client)
            .await
            .unwrap();
        if tls_support::served_leaf(&tls) == second_leaf {
            break;
        }
        assert_eq!(tls_support::served_leaf(&tls), first_leaf);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is not served within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The session opened before the swap still relays, to a guest that
    // connected after it (and saw the new certificate).
    let (mut guest, leaf) = tls_support::wss(server.addr, "localhost", &client, "/webrtc")
        .await
        .unwrap();
    assert_eq!(leaf, second_leaf);
    guest.send_json(json!({"type":"init","join":token})).await;
    let guest_id = guest.recv_type("init").await["peer"]
        .as_str()
        .unwrap()
        .to_string();
    host.recv_type("peer_joined").await;
    host.send_json(json!({"type":"offer","to":guest_id,"sdp":"v=0\r\n"}))
        .await;
    guest.recv_type("offer").await;
    // A client trusting only the first CA is refused from now on.
    let old_only = client_config(&[&first.ca], &[b"http/1.1"]);
    assert!(tls_support::connect(server.addr, "localhost", &old_only)
        .await
        .is_err());
    stop.cancel();
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_certificate_in_use_and_a_broken_file_fails_at_start() {
    let dir = temp_dir("broken");
    let (files, ca) = live_files(&dir, "ca-broken");
    let other = testkit::tls::ca_and_leaf(&dir.join("ca-other"), "ca-other");
    // A key that is not the certificate's: refused at start, naming both.
    let mismatched = CertFiles {
        cert: files.cert.clone(),
        key: other.key.clone(),
    };
    let err = mismatched.load().unwrap_err();
    assert!(
        err.contains("--tls-cert") && err.contains("--tls-key"),
        "{err}"
    );
    let missing = CertFiles {
        cert: dir.join("nope.pem"),
        key: files.key.clone(),
    };
    assert!(missing.load().unwrap_err().contains("nope.pem"));

    let stop = CancellationToken::new();
    let server = tls_server(files.clone(), Config::default(), &stop).await;
    let client = client_config(&[&ca.ca], &[b"http/1.1"]);
    let leaf = pem_certs(&ca.cert).remove(0);
    // A renewal caught half-way: the new key is there, the certificate
    // not yet (they do not match), then a file that is not PEM at all.
    std::fs::copy(&other.key, &files.key).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tls = tls_support::connect(server.addr, "localhost", &client)
        .await
        .unwrap();
    assert_eq!(tls_support::served_leaf(&tls), leaf);
    std::fs::write(&files.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = tls_support::get(server.addr, "localhost", &client, "/healthz")
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    stop.cancel();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_tls_handshake_is_cut_off_at_the_header_timeout() {
    let dir = temp_dir("slow");
    let (files, ca) = live_files(&dir, "ca-slow");
    let stop = CancellationToken::new();
    let config = Config {
        header_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let server = tls_server(files, config, &stop).await;
    // A TLS record header and the start of a ClientHello, then nothing.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, slow.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server closes the connection: {read:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let client = client_config(&[&ca.ca], &[b"http/1.1"]);
    let series = "signal_limited_total{reason=\"header_timeout\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = tls_support::get(server.addr, "localhost", &client, "/metrics")
            .await
            .unwrap();
        if common::series_value(&metrics.body, series) == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", metrics.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A handshake that completes, then no request: the same deadline.
    let mut idle = tls_support::connect(server.addr, "localhost", &client)
        .await
        .unwrap();
    let read = tokio::time::timeout(WAIT, idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    stop.cancel();
}

#[tokio::test]
async fn the_plain_http_port_redirects_to_https_and_answers_healthz() {
    let dir = temp_dir("redirect");
    let (files, ca) = live_files(&dir, "ca-redirect");
    let stop = CancellationToken::new();
    // The redirect port is picked free, then bound by the server task; an
    // ephemeral port taken by a neighbouring test in between leaves the
    // server without it (connection refused): then start again on another.
    let mut attempts = 0;
    let (server, plain, moved) = 'started: loop {
        attempts += 1;
        let plain = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let config = Config {
            http_redirect: Some(plain),
            ..Config::default()
        };
        let server = tls_server(files.clone(), config, &stop).await;
        let deadline = tokio::time::Instant::now() + WAIT / 2;
        let err = loop {
            match testkit::http::get(plain, "/room?join=abc").await {
                Ok(r) => break 'started (server, plain, r),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => break e,
            }
        };
        assert!(attempts < 3, "the redirect port never answered: {err}");
        server.stop().await;
    };
    let port = server.addr.port();
    assert_eq!(moved.status, 308, "{}", moved.head);
    let location = format!("location: https://127.0.0.1:{port}/room?join=abc");
    assert!(
        moved.head.to_ascii_lowercase().contains(&location),
        "{}",
        moved.head
    );
    let health = testkit::http::get(plain, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.json().unwrap()["service"], "signal-server");
    let metrics = testkit::http::get(plain, "/metrics").await.unwrap();
    assert_eq!(metrics.status, 308, "metrics only over TLS");
    // Where it points answers.
    let client = client_config(&[&ca.ca], &[b"http/1.1"]);
    let there = tls_support::get(server.addr, "localhost", &client, "/healthz")
        .await
        .unwrap();
    assert_eq!(there.status, 200);
    stop.cancel();
}
