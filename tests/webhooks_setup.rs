//! Webhook delivery as the server sets it up: from its config and its
//! binary's environment (secrets never logged), over TLS with the webpki
//! roots or a CA file, and the disabled handle.

mod common;
mod webhooks_support;

use std::time::Duration;

use serde_json::Value;
use signal_server::webhooks::{DropReason, Event, EventKind, RoomRef, Webhooks};
use webhooks_support::*;

fn room(label: &str) -> RoomRef {
    RoomRef::label(label)
}

#[tokio::test]
async fn https_urls_are_verified_against_the_webpki_roots_and_the_ca_file() {
    let dir = std::env::temp_dir().join(format!("ss-webhooks-tls-{}", std::process::id()));
    let (ca_file, tls) = tls_fixture(&dir);
    let receiver = Receiver::start_tls(always(Reply::Status(200)), tls).await;
    let (secret, key) = secret(15);

    // Its CA is not among the webpki roots: refused, retried, given up.
    let mut o = options(vec![receiver.url("/tls")], &[&secret]);
    o.retry_window = Duration::from_millis(300);
    let (hooks, delivery, metrics) = start(o.clone());
    hooks.emit(Event::room_started(room("tlsroom1"), "hostLLLL"));
    until("given up", || {
        metrics.webhooks().dropped(DropReason::RetriesExhausted) == 1
    })
    .await;
    assert!(
        receiver.hits().is_empty(),
        "no request over an unverified connection"
    );
    delivery.shutdown().await;

    // Trusted through --webhook-ca-file: delivered over TLS.
    o.ca_file = Some(ca_file);
    let (hooks, delivery, metrics) = start(o);
    hooks.emit(Event::room_started(room("tlsroom1"), "hostLLLL"));
    until("delivered", || metrics.webhooks().delivered() == 1).await;
    assert!(receiver.hits()[0].verifies(&key));
    delivery.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_disabled_handle_accepts_events_and_does_nothing() {
    let hooks = Webhooks::disabled();
    assert!(!hooks.is_enabled());
    let mut built = false;
    hooks.emit_with(|| {
        built = true;
        Event::room_started(room("nowhere1"), "hostNNNN")
    });
    assert!(!built, "emit_with builds nothing when disabled");
    hooks.emit(Event::room_started(room("nowhere1"), "hostNNNN"));
    let (hooks, delivery) = signal_server::webhooks::start(
        None,
        signal_server::metrics::Metrics::new().webhooks().clone(),
    )
    .unwrap();
    assert!(!hooks.is_enabled());
    delivery.shutdown().await;
    assert_eq!(EventKind::ALL.len(), 7);
}

#[tokio::test]
async fn the_server_starts_delivery_from_its_config_and_serves_the_series() {
    let receiver = Receiver::start(always(Reply::Status(200))).await;
    let (secret, _) = secret(16);
    let config = signal_server::config::Config {
        webhooks: Some(options(vec![receiver.url("/")], &[&secret])),
        ..Default::default()
    };
    let server = common::TestServer::with_config(config).await;
    let (_, _, text) = server.get("/metrics").await;
    for reason in DropReason::ALL {
        let series = format!(
            "signal_webhook_events_dropped_total{{reason=\"{}\"}} 0",
            reason.as_str()
        );
        assert!(text.contains(&series), "{text}");
    }
    assert!(text.contains("signal_webhook_events_queued 0"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn the_binary_reads_its_webhook_settings_from_the_environment_and_never_logs_the_secret() {
    let (secret, _) = secret(17);
    let mut server = common::binary()
        .args(["--log-format", "json"])
        .env("RUST_LOG", "debug")
        .env(
            "SIGNAL_SERVER_WEBHOOK_URLS",
            "http://127.0.0.1:9/a,https://hooks.example/b?key=k3y",
        )
        .env("SIGNAL_SERVER_WEBHOOK_SECRET", &secret)
        .start()
        .await
        .expect("the server starts");
    let status = server.terminate(WAIT).await;
    let seen: Vec<String> = server.log_text().lines().map(str::to_string).collect();
    assert_eq!(status, Ok(0), "{}", seen.join("\n"));
    let enabled = seen
        .iter()
        .find(|l| l.contains("webhooks enabled"))
        .unwrap_or_else(|| panic!("no 'webhooks enabled' line:\n{}", seen.join("\n")));
    let v: Value = serde_json::from_str(enabled).unwrap();
    assert_eq!(
        v["urls"],
        "[\"http://127.0.0.1:9\", \"https://hooks.example\"]"
    );
    let key_b64 = secret.trim_start_matches("whsec_");
    for line in &seen {
        assert!(
            !line.contains(key_b64) && !line.contains("k3y"),
            "leaked: {line}"
        );
    }
}
