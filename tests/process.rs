//! The built binary as users run it: signals, PORT, logs, and the seed
//! README's `python -m websockets` session.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ended, ServerProcess};
use serde_json::Value;
use testkit::process::{send_signal, wait_exit_blocking, SIGINT, SIGTERM};

/// The binary on a free loopback port, logging JSON lines.
async fn start(envs: &[(&str, &str)]) -> ServerProcess {
    common::binary()
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .envs(envs)
        .start()
        .await
        .expect("the server starts")
}

#[tokio::test]
async fn sigterm_and_sigint_close_sockets_with_1001_and_exit_0() {
    for (sig, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
        let mut server = start(&[]).await;
        let mut host = server.connect().await;
        host.send(r#"{"type":"init"}"#).await;
        let watch = host.recv_type("init").await["watch"]
            .as_str()
            .unwrap()
            .to_string();
        let mut viewer = server.connect_to(&format!("/?watch={watch}")).await;
        viewer.recv_type("init").await;
        let mut idle = server.connect().await;
        let started = Instant::now();
        server.signal(sig);
        for c in [&mut host, &mut viewer, &mut idle] {
            assert_eq!(
                c.ended().await,
                Ended::Close(1001, "server shutting down".into()),
                "{name}"
            );
        }
        let status = server.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status, Ok(0), "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            tokio_tungstenite::connect_async(format!("ws://{}/webrtc", server.addr))
                .await
                .is_err(),
            "still accepting after {name}"
        );
    }
}

#[test]
fn port_from_the_environment_is_used_without_bind() {
    // The test also closes the log pipe early: the server must still shut
    // down cleanly (a log drain that goes away must not crash it).
    // A free port is found first and handed over through PORT, as Heroku does;
    // another process may take it in between, so a failed bind is retried.
    for _attempt in 0..5 {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(common::BIN)
            .args(["--log-format", "json"])
            .env("PORT", port.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut listening = None;
        let mut seen = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap();
            seen.push(line);
            if v["message"] == "listening" {
                listening = v["local"].as_str().map(str::to_string);
                break;
            }
        }
        let Some(listening) = listening else {
            // It exited without listening: the port was taken meanwhile.
            let status = child.wait().unwrap();
            assert!(
                seen.iter().any(|l| l.contains("cannot listen")),
                "{status}: {seen:?}"
            );
            continue;
        };
        send_signal(child.id(), SIGTERM);
        let status = wait_exit_blocking(&mut child, Duration::from_secs(10));
        assert!(status.success(), "{status}");
        assert_eq!(listening, format!("0.0.0.0:{port}"));
        return;
    }
    panic!("no free port in five attempts");
}

#[tokio::test]
async fn logs_are_json_lines_with_the_connection_span_and_no_tokens() {
    let mut server = start(&[("RUST_LOG", "debug")]).await;
    let mut host = server.connect().await;
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    let tokens: Vec<String> = ["join", "watch", "resume"]
        .iter()
        .map(|k| init[k].as_str().unwrap().to_string())
        .collect();
    let mut viewer = server
        .connect_to(&format!("/webrtc?watch={}", tokens[1]))
        .await;
    viewer.recv_type("init").await;
    let mut guest = server.connect().await;
    guest
        .send(&format!(r#"{{"type":"init","join":"{}"}}"#, tokens[0]))
        .await;
    guest.recv_type("init").await;
    guest.close().await;
    viewer.close().await;
    assert_eq!(server.terminate(Duration::from_secs(10)).await, Ok(0));
    let lines: Vec<String> = server.log_text().lines().map(str::to_string).collect();
    let mut attached = 0;
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        for t in &tokens {
            assert!(!line.contains(t.as_str()), "token in log line: {line}");
        }
        if v["message"] == "attached" {
            attached += 1;
            let span = &v["span"];
            assert_eq!(span["name"], "conn", "{line}");
            assert!(span["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.1:")));
            assert_eq!(span["room"].as_str().map(str::len), Some(8), "{line}");
            assert_eq!(span["peer"].as_str().map(str::len), Some(8), "{line}");
        }
    }
    assert_eq!(attached, 2, "{lines:#?}");
}

/// The seed README's manual test, run for real: `python -m websockets URL`,
/// type `{"type": "init"}`, read the reply.
#[tokio::test]
async fn python_websockets_interactive_client_gets_a_room() {
    let python = common::require_python_modules(&["websockets"]);
    let mut server = start(&[]).await;
    let url = server.url("/webrtc");
    let out = tokio::task::spawn_blocking(move || {
        let mut py = Command::new(python)
            .args(["-m", "websockets", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let mut stdin = py.stdin.take().unwrap();
        stdin.write_all(b"{\"type\": \"init\"}\n").unwrap();
        stdin.flush().unwrap();
        let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
        let mut reply = None;
        let mut seen = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            seen.push(line.clone());
            if let Some(i) = line.find("< {") {
                reply = Some(line[i + 2..].to_string());
                break;
            }
        }
        drop(stdin); // EOF: the client closes the connection and exits
        seen.extend(lines.map_while(Result::ok));
        let status = py.wait().unwrap();
        (reply, seen, status)
    })
    .await
    .unwrap();
    let (reply, seen, status) = out;
    let reply = reply.unwrap_or_else(|| panic!("no reply in {seen:?}"));
    let v: Value = serde_json::from_str(reply.trim()).unwrap();
    assert_eq!(v["type"], "init");
    assert_eq!(v["join"].as_str().map(str::len), Some(16));
    assert_eq!(v["watch"].as_str().map(str::len), Some(16));
    assert!(
        seen.iter().any(|l| l.contains("Connected to ws://")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("Connection closed: 1000 (OK)")),
        "{seen:?}"
    );
    assert!(status.success(), "{status}");
    assert_eq!(server.terminate(Duration::from_secs(10)).await, Ok(0));
}
