//! Helpers for the shared-registry tests: a real `redis-server` on a free
//! loopback port (no persistence, a temporary directory), and server
//! instances sharing it. A missing `redis-server` fails the test that needs
//! it, saying so.

#![allow(dead_code)] // not every test uses every helper

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use signal_server::config::Config;
use signal_server::metrics::Metrics;
use signal_server::rooms::{RedisOptions, RedisRegistry, RoomLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{Client, WAIT};

/// Where `redis-server` is. Panics, saying so, when it is not installed:
/// a Redis test must fail rather than pass untested
/// (`scripts/install-test-deps.sh` installs it).
pub fn redis_server_binary() -> PathBuf {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| which("redis-server"))
        .clone()
        .unwrap_or_else(|| {
            panic!(
                "redis-server is not installed (not on PATH, nor in /usr/bin or /usr/sbin): \
                 the Redis tests need it; scripts/install-test-deps.sh installs it"
            )
        })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A `redis-server` child process on a loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    bin: PathBuf,
    /// TLS only (a self-signed certificate in `dir`).
    tls: bool,
}

impl RedisServer {
    /// A Redis on a free port (panics if `redis-server` is missing).
    pub async fn start() -> Self {
        Self::start_on(free_port().await).await
    }

    /// A Redis on a given port.
    pub async fn start_on(port: u16) -> Self {
        let bin = redis_server_binary();
        let dir =
            std::env::temp_dir().join(format!("signal-server-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir for redis-server");
        let mut r = RedisServer {
            port,
            dir,
            child: None,
            bin,
            tls: false,
        };
        r.spawn().await;
        r
    }

    /// A Redis that speaks only TLS, with a self-signed certificate (as
    /// Heroku's does). Needs `openssl` to make the certificate.
    pub async fn start_tls() -> Self {
        let bin = redis_server_binary();
        let port = free_port().await;
        let dir = std::env::temp_dir().join(format!(
            "signal-server-redis-tls-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir for redis-server");
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=redis-self-signed"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "openssl could not make a test certificate (scripts/install-test-deps.sh installs openssl)"
        );
        let mut r = RedisServer {
            port,
            dir,
            child: None,
            bin,
            tls: true,
        };
        r.spawn().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("key.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        if self.tls {
            // Listening is all a test can check without a TLS client.
            return TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
        }
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_millis(500),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await,
            Ok(Ok(_)) if &buf == b"+PONG\r\n"
        )
    }

    /// Kills the server (SIGKILL: no save, every key lost).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// One command through redis-cli-free RESP, for inspecting keys.
    pub async fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect redis");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("reply in time")
            .expect("read");
        String::from_utf8_lossy(&buf[..n]).to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// Registry timings for tests: heartbeats every 100 ms and the production
/// TTL (3 s), so an instance that stops is reported dead within 3.1 s, while a
/// test process starved of CPU on a loaded machine (every test's instances
/// share one thread) is not taken for dead.
pub fn quick_options(url: &str) -> RedisOptions {
    let mut o = RedisOptions::new(url);
    o.heartbeat_interval = Duration::from_millis(100);
    o.heartbeat_ttl = Duration::from_secs(3);
    o.reap_interval = Duration::from_millis(100);
    o.sweep_interval = Duration::from_millis(100);
    o.subscription_ping = Duration::from_millis(200);
    o
}

/// One server instance on a loopback port, with a Redis registry.
pub struct Instance {
    pub addr: SocketAddr,
    pub registry: RedisRegistry,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

impl Instance {
    pub async fn start(opts: RedisOptions, config: Config) -> Self {
        Self::start_unchecked(opts, config).await.ready().await
    }

    /// Starts without waiting for Redis.
    pub async fn start_unchecked(opts: RedisOptions, config: Config) -> Self {
        init_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Metrics::new();
        let registry = RedisRegistry::start(
            opts,
            RoomLimits {
                max_peers: config.max_peers_per_room,
                host_grace: config.host_grace,
            },
            metrics.clone(),
        )
        .expect("registry");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(signal_server::server::run_with(
            listener,
            config,
            registry.clone(),
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Instance {
            addr,
            registry,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    async fn ready(self) -> Self {
        assert!(
            self.registry.wait_healthy(WAIT).await,
            "instance did not become healthy"
        );
        self
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub async fn connect(&self) -> Client {
        self.connect_to("/webrtc").await
    }

    pub async fn connect_to(&self, path_and_query: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.url(path_and_query))
            .await
            .unwrap_or_else(|e| panic!("connect {path_and_query}: {e}"));
        Client { ws }
    }

    /// The HTTP status of a refused upgrade, or `None` if it was accepted.
    pub async fn upgrade_status(&self, path_and_query: &str) -> Option<u16> {
        match tokio_tungstenite::connect_async(self.url(path_and_query)).await {
            Ok(_) => None,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
            Err(e) => panic!("unexpected connect error: {e}"),
        }
    }

    /// A plain HTTP GET: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
            .await
            .expect("response in time")
            .expect("read");
        let raw = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, body.to_string())
    }

    /// Polls `/healthz` until it answers `status`; returns its JSON body.
    pub async fn wait_health(&self, status: u16) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (s, body) = self.get("/healthz").await;
            if s == status {
                return serde_json::from_str(&body).expect("healthz JSON");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/healthz stayed {s}, expected {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the instance cleanly: its sessions leave their rooms.
    pub async fn stop(mut self) {
        self.stop_server().await;
        self.registry.shutdown().await;
    }

    async fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(WAIT, handle).await;
        }
    }

    /// Kills the instance as a crash would: the registry stops talking to
    /// Redis at once (no heartbeat, no leave of any peer), then the server
    /// goes down with it.
    pub async fn crash(mut self) {
        self.registry.crash();
        self.stop_server().await;
    }
}
