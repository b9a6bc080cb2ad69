//! The server under test: started as a child process, watched through
//! /proc/PID, stopped with SIGTERM at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::net;

pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

/// A free loopback port (bound and released; the server binds it next).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Server {
    pub async fn start(bin: &Path, args: &[String], log: &Path) -> Result<Server, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
            let stderr =
                std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
            let mut child = Command::new(bin)
                .arg("--bind")
                .arg(addr.to_string())
                .args(args)
                .env(
                    "RUST_LOG",
                    std::env::var("SOAK_SERVER_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
            let pid = child.id().ok_or("server exited at once")?;
            let deadline = Instant::now() + net::STEP;
            while Instant::now() < deadline {
                if let Ok((200, _)) = net::http_get(addr, "/healthz").await {
                    return Ok(Server { child, pid, addr });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("server exited: {status}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill().await;
            if last.is_empty() {
                last = "server not ready".into();
            }
        }
        Err(format!("{last}; see {}", log.display()))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("server exited: {status}")),
            Err(e) => Err(format!("cannot wait for the server: {e}")),
        }
    }

    /// SIGTERM, then the exit status within `within`.
    pub async fn terminate(&mut self, within: Duration) -> Result<i32, String> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .map_err(|e| format!("kill: {e}"))?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.code().unwrap_or(-1)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!("did not exit within {within:?} of SIGTERM"))
            }
        }
    }
}

/// One reading of /proc/PID.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub at: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub cpu_s: f64,
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn sample(pid: u32, started: Instant, ticks: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks_used: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(Sample {
        at: started.elapsed().as_secs_f64(),
        rss_kib,
        fds,
        cpu_s: ticks_used / ticks,
    })
}

/// Samples every `every` until `stop`; the samples so far are in `out`.
pub async fn sampler(
    pid: u32,
    started: Instant,
    every: Duration,
    stop: CancellationToken,
    out: Arc<Mutex<Vec<Sample>>>,
) {
    let ticks = clock_ticks();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Some(s) = sample(pid, started, ticks) {
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
            }
        }
    }
}

pub fn now_sample(pid: u32, started: Instant) -> Option<Sample> {
    sample(pid, started, clock_ticks())
}

/// The value of one series in Prometheus text (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The counters of /metrics worth reporting, as JSON.
pub fn metrics_json(text: &str) -> Value {
    let mut out = serde_json::Map::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.rsplit_once(' ') {
            if let Ok(v) = v.parse::<f64>() {
                if v != 0.0 {
                    out.insert(k.to_string(), json!(v));
                }
            }
        }
    }
    Value::Object(out)
}
