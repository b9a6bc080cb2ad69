//! The built binary as users run it: signals, PORT, logs, and the seed
//! README's `python -m websockets` session.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Ended;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

/// The binary, started on a free loopback port; its address is read from its
/// JSON log.
struct Running {
    child: Child,
    addr: SocketAddr,
    logs: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is waited for by `Running`'s Drop on every path.
#[allow(clippy::zombie_processes)]
fn start(extra_args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json"])
        .args(extra_args)
        .env("RUST_LOG", "info")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !extra_args.contains(&"--bind") {
        cmd.args(["--bind", "127.0.0.1:0"]);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn signal-server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, logs) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server logs that it listens");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["message"] == "listening" {
            let addr = v["local"].as_str().expect("local").parse().expect("addr");
            return Running { child, addr, logs };
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

async fn connect(addr: SocketAddr, path: &str) -> common::Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("connect");
    common::Client { ws }
}

#[tokio::test]
async fn sigterm_and_sigint_close_sockets_with_1001_and_exit_0() {
    for sig in ["-TERM", "-INT"] {
        let mut server = start(&[], &[]);
        let mut host = connect(server.addr, "/webrtc").await;
        host.send(r#"{"type":"init"}"#).await;
        let watch = host.recv_type("init").await["watch"]
            .as_str()
            .unwrap()
            .to_string();
        let mut viewer = connect(server.addr, &format!("/?watch={watch}")).await;
        viewer.recv_type("init").await;
        let mut idle = connect(server.addr, "/webrtc").await;
        let started = Instant::now();
        signal(&server.child, sig);
        for c in [&mut host, &mut viewer, &mut idle] {
            assert_eq!(
                c.ended().await,
                Ended::Close(1001, "server shutting down".into()),
                "{sig}"
            );
        }
        let status = wait_exit(&mut server.child, Duration::from_secs(10));
        assert!(status.success(), "{sig}: exit status {status}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            tokio_tungstenite::connect_async(format!("ws://{}/webrtc", server.addr))
                .await
                .is_err(),
            "still accepting after {sig}"
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
        let mut child = Command::new(BIN)
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
        signal(&child, "-TERM");
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert!(status.success(), "{status}");
        assert_eq!(listening, format!("0.0.0.0:{port}"));
        return;
    }
    panic!("no free port in five attempts");
}

#[tokio::test]
async fn logs_are_json_lines_with_the_connection_span_and_no_tokens() {
    let mut server = start(&[], &[("RUST_LOG", "debug")]);
    let mut host = connect(server.addr, "/webrtc").await;
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    let tokens: Vec<String> = ["join", "watch", "resume"]
        .iter()
        .map(|k| init[k].as_str().unwrap().to_string())
        .collect();
    let mut viewer = connect(server.addr, &format!("/webrtc?watch={}", tokens[1])).await;
    viewer.recv_type("init").await;
    let mut guest = connect(server.addr, "/webrtc").await;
    guest
        .send(&format!(r#"{{"type":"init","join":"{}"}}"#, tokens[0]))
        .await;
    guest.recv_type("init").await;
    guest.close().await;
    viewer.close().await;
    signal(&server.child, "-TERM");
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
    let lines: Vec<String> = server.logs.try_iter().collect();
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
    let mut server = start(&[], &[]);
    let url = format!("ws://{}/webrtc", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        let mut py = Command::new("python3")
            .args(["-m", "websockets", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "python3 (install the PyPI package `websockets`: scripts/install-test-deps.sh)",
            );
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
    signal(&server.child, "-TERM");
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
}
