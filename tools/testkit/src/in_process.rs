//! The server in this process (`signal_server::server::run_with` on a
//! loopback listener bound to port 0), with rooms in memory or in Redis,
//! and the configs the tests use.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use signal_server::auth::Auth;
use signal_server::config::Config;
use signal_server::metrics::Metrics;
use signal_server::rooms::{MemoryRegistry, RedisOptions, RedisRegistry, Registry, RoomLimits};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{http, prom, Client, ConnectError, Endpoint, WAIT};

/// A server running in this process on a loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Endpoint for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl TestServer {
    /// The default config, rooms in memory.
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    /// Rooms in memory (`signal_server::server::run`).
    pub async fn with_config(config: Config) -> Self {
        Self::serve(|listener, stopped| signal_server::server::run(listener, config, stopped)).await
    }

    /// Rooms in `registry` (shared with a later server, as a shared room
    /// store would be), which reports to `metrics`
    /// (`signal_server::server::run_with`).
    pub async fn start_with<R: Registry>(config: Config, registry: R, metrics: Metrics) -> Self {
        Self::serve(|listener, stopped| {
            signal_server::server::run_with(listener, config, registry, metrics, stopped)
        })
        .await
    }

    /// [`TestServer::start_with`] with an access control handle the test
    /// keeps (to revoke tokens): `signal_server::server::run_with_auth`.
    pub async fn start_with_auth<R: Registry>(
        config: Config,
        registry: R,
        metrics: Metrics,
        auth: Arc<Auth>,
    ) -> Self {
        Self::serve(|listener, stopped| {
            signal_server::server::run_with_auth(listener, config, registry, metrics, auth, stopped)
        })
        .await
    }

    /// Spawns `run` on a listener bound to 127.0.0.1:0, with a shutdown
    /// future that completes on [`TestServer::shutdown`] (or on drop).
    async fn serve<F, Fut>(run: F) -> Self
    where
        F: FnOnce(TcpListener, futures_util::future::BoxFuture<'static, ()>) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = Box::pin(async move {
            let _ = stopped.await;
        });
        let handle = tokio::spawn(run(listener, stopped));
        TestServer {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        self.url_to(path_and_query)
    }

    /// The signalling URL, `ws://ADDR/webrtc`.
    pub fn ws_url(&self) -> String {
        self.url("/webrtc")
    }

    /// A client on `/webrtc`.
    pub async fn connect(&self) -> Client {
        self.connect_to("/webrtc").await
    }

    pub async fn connect_to(&self, path_and_query: &str) -> Client {
        Client::connect(&self.url(path_and_query)).await
    }

    /// The HTTP status of a refused upgrade, or `None` if it was accepted.
    pub async fn upgrade_status(&self, request: impl IntoClientRequest + Unpin) -> Option<u16> {
        upgrade_status(request).await
    }

    /// A plain HTTP GET: (status, headers text, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let r = http::get(self.addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status, r.head, r.body)
    }

    /// The value of one series in /metrics (panics when it is absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, _, body) = self.get("/metrics").await;
        prom::series_value(&body, series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{body}"))
    }

    /// Waits until a metric reaches `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.metric(series).await;
            if v == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {v}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Tells the server to stop and waits (within [`WAIT`]) for its result.
    pub async fn shutdown(&mut self) -> Option<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = self.handle.take()?;
        match tokio::time::timeout(WAIT, handle).await {
            Ok(Ok(result)) => Some(result),
            Ok(Err(join)) => panic!("server task: {join}"),
            Err(_) => None,
        }
    }

    /// Shuts the server down (every socket closed 1001) and waits for it;
    /// it must stop in time and cleanly.
    pub async fn stop(mut self) {
        self.shutdown()
            .await
            .expect("server stops in time")
            .expect("server result");
    }
}

/// The HTTP status of a refused upgrade, or `None` if it was accepted;
/// panics on any other failure.
pub async fn upgrade_status(request: impl IntoClientRequest + Unpin) -> Option<u16> {
    match Client::open(request).await {
        Ok(_) => None,
        Err(ConnectError::Http(status)) => Some(status),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

/// A short config for tests of timeouts.
pub fn quick_config() -> Config {
    Config {
        ping_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        host_grace: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A config whose `init` replies carry TURN credentials of the REST scheme
/// (`secret`, the relay `urls`, valid for `ttl`) after the static `stun`
/// entries, which are also its `ice_servers`.
pub fn turn_config(secret: &str, urls: &[&str], ttl: Duration, stun: Value) -> Config {
    let ice = signal_server::turn::IceServers::new(
        signal_server::turn::TurnSecret::new(secret).expect("a TURN secret"),
        urls.iter().map(|u| u.to_string()).collect(),
        ttl,
        &stun,
    );
    Config {
        ice_servers: stun,
        turn: Some(ice),
        ..Config::default()
    }
}

/// The registry limits `config` sets.
pub fn room_limits(config: &Config) -> RoomLimits {
    RoomLimits {
        max_peers: config.max_peers_per_room,
        host_grace: config.host_grace,
    }
}

/// An in-memory registry with `config`'s limits, and its metrics.
pub fn memory_registry(config: &Config) -> (MemoryRegistry, Metrics) {
    let metrics = Metrics::new();
    (
        MemoryRegistry::new(room_limits(config), metrics.clone()),
        metrics,
    )
}

/// Logs to the test output: `RUST_LOG`'s filter, warnings by default.
pub fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Registry timings for tests: heartbeats every 100 ms and the production
/// TTL (3 s), so an instance that stops is reported dead within 3.1 s, while
/// a test process starved of CPU on a loaded machine (every test's
/// instances share one thread) is not taken for dead.
pub fn quick_options(url: &str) -> RedisOptions {
    let mut o = RedisOptions::new(url);
    o.heartbeat_interval = Duration::from_millis(100);
    o.heartbeat_ttl = Duration::from_secs(3);
    o.reap_interval = Duration::from_millis(100);
    o.sweep_interval = Duration::from_millis(100);
    o.subscription_ping = Duration::from_millis(200);
    o
}

/// One server instance in this process with a Redis registry: one of a
/// fleet sharing rooms through one `redis-server`.
pub struct RedisInstance {
    pub addr: SocketAddr,
    pub registry: RedisRegistry,
    /// Its access control (from the config's `auth`): revoke through it.
    pub auth: Arc<Auth>,
    server: TestServer,
}

impl Endpoint for RedisInstance {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl RedisInstance {
    /// Starts, and waits until the registry reaches Redis.
    pub async fn start(opts: RedisOptions, config: Config) -> Self {
        let inst = Self::start_unchecked(opts, config).await;
        assert!(
            inst.registry.wait_healthy(WAIT).await,
            "instance did not become healthy"
        );
        inst
    }

    /// Starts without waiting for Redis.
    pub async fn start_unchecked(opts: RedisOptions, config: Config) -> Self {
        init_logs();
        let metrics = Metrics::new();
        let registry =
            RedisRegistry::start(opts, room_limits(&config), metrics.clone()).expect("registry");
        let auth = Auth::new(&config.auth);
        let server =
            TestServer::start_with_auth(config, registry.clone(), metrics, Arc::clone(&auth)).await;
        RedisInstance {
            addr: server.addr,
            registry,
            auth,
            server,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        self.url_to(path_and_query)
    }

    pub async fn connect(&self) -> Client {
        self.connect_to("/webrtc").await
    }

    pub async fn connect_to(&self, path_and_query: &str) -> Client {
        Client::connect(&self.url(path_and_query)).await
    }

    /// The HTTP status of a refused upgrade, or `None` if it was accepted.
    pub async fn upgrade_status(&self, path_and_query: &str) -> Option<u16> {
        upgrade_status(self.url(path_and_query)).await
    }

    /// A plain HTTP GET: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.server.get(path).await;
        (status, body)
    }

    /// Polls `/healthz` until it answers `status`; returns its JSON body.
    pub async fn wait_health(&self, status: u16) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (s, body) = self.get("/healthz").await;
            if s == status {
                return serde_json::from_str(&body).expect("healthz JSON");
            }
            assert!(
                Instant::now() < deadline,
                "/healthz stayed {s}, expected {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the instance cleanly: its sessions leave their rooms.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown().await;
        self.registry.shutdown().await;
    }

    /// Kills the instance as a crash would: the registry stops talking to
    /// Redis at once (no heartbeat, no leave of any peer), then the server
    /// goes down with it.
    pub async fn crash(mut self) {
        self.registry.crash();
        let _ = self.server.shutdown().await;
    }
}
