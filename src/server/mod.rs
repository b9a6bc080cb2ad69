//! The HTTP side: the accept loop and each connection until it is a
//! WebSocket ([`edge`]), the routes and the checks made before an upgrade
//! ([`routes`]), and graceful shutdown (here).
//!
//! [`run`] takes a bound listener and a shutdown future, so tests bind port 0
//! and stop the server when they like.

mod edge;
mod routes;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::assets::StaticFiles;
use crate::clients::{ClientLimits, Clients};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rooms::{EventSink, MemoryRegistry, RedisOptions, RedisRegistry, Registry, RoomLimits};
use crate::session;

pub use edge::{bind, raise_open_files_limit, LISTEN_BACKLOG};
pub use routes::{TokenQuery, SERVER_HEADER};

/// What the routes share.
struct App<R> {
    session: session::Shared<R>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    files: StaticFiles,
}

impl<R: Registry> App<R> {
    fn config(&self) -> &Config {
        &self.session.config
    }
}

/// Serves until `shutdown` completes, then closes every WebSocket with 1001
/// (going away) and returns once they are closed or the shutdown timeout has
/// passed. Rooms live in memory.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Metrics::new();
    let registry = MemoryRegistry::new(
        RoomLimits {
            max_peers: config.max_peers_per_room,
            host_grace: config.host_grace,
        },
        metrics.clone(),
    );
    run_with(listener, config, registry, metrics, shutdown).await
}

/// [`run`] with rooms shared through Redis ([`RedisRegistry`]), so that
/// several instances behind one URL serve the same rooms. Redis need not be
/// reachable at start: until it is, `/healthz` answers 503 and new rooms are
/// refused with `unavailable`. Fails at once only on a malformed URL.
pub async fn run_redis(
    listener: TcpListener,
    config: Config,
    redis: RedisOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Metrics::new();
    let limits = RoomLimits {
        max_peers: config.max_peers_per_room,
        host_grace: config.host_grace,
    };
    let registry = RedisRegistry::start(redis, limits, metrics.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let result = run_with(listener, config, registry.clone(), metrics, shutdown).await;
    registry.shutdown().await;
    result
}

/// [`run`] with a given registry (and the metrics it reports to).
pub async fn run_with<R: Registry>(
    listener: TcpListener,
    config: Config,
    registry: R,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let auth = crate::auth::Auth::new(&config.auth);
    run_with_auth(listener, config, registry, metrics, auth, shutdown).await
}

/// [`run_with`] with a given access control handle (made with
/// [`Auth::new`](crate::auth::Auth::new) from `config.auth`), which the
/// caller keeps to revoke tokens. With a [`RedisRegistry`], its
/// revocations are shared through the same Redis.
pub async fn run_with_auth<R: Registry>(
    listener: TcpListener,
    config: Config,
    registry: R,
    metrics: Metrics,
    auth: Arc<crate::auth::Auth>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let shutdown_timeout = config.shutdown_timeout;
    // Room events go to the webhooks (and any live subscriber of the sink).
    let (webhooks, webhook_delivery) =
        crate::webhooks::start(config.webhooks.clone(), metrics.webhooks().clone())?;
    registry.set_events(EventSink::new(webhooks));
    let files = StaticFiles::new(config.static_dir.clone());
    let max_http = edge::max_http_connections(&config);
    let clients = Clients::new(
        ClientLimits {
            connections: config.max_connections_per_client,
            creations_per_minute: config.room_creations_per_minute,
            attaches_per_minute: config.attaches_per_minute,
            max_rooms: config.max_rooms,
            // Room for every connection's client twice over.
            table: crate::clients::MIN_TABLE.max(2 * (config.max_connections + max_http)),
        },
        metrics.clone(),
    );
    let edge = edge::Edge::new(&config, max_http, clients.clone(), metrics.clone());
    // With rooms in Redis, revocations are kept there too (every instance
    // hears of them, and they survive restarts).
    let registry_any: &dyn std::any::Any = &registry;
    if let (Some(redis), false) = (
        registry_any.downcast_ref::<RedisRegistry>(),
        auth.shared_through_redis(),
    ) {
        auth.share_through_redis(redis.options(), stop.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    let tls = config
        .tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.web_config()));
    // The plain-HTTP port that sends browsers to https://.
    let redirect = match (config.http_redirect, &tls) {
        (Some(addr), Some(_)) => Some(edge::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("--http-redirect-bind {addr}: {e}"))
        })?),
        (Some(_), None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "--http-redirect-bind needs TLS (--tls-cert/--tls-key or --acme-domain)",
            ))
        }
        (None, _) => None,
    };
    let app = Arc::new(App {
        permits: Arc::new(Semaphore::new(config.max_connections)),
        session: session::Shared::new(session::SharedState {
            registry,
            pressure: session::Pressure::new(&config, &metrics),
            config: Arc::new(config),
            metrics,
            shutdown: stop.clone(),
            clients,
            auth,
        }),
        tracker: tracker.clone(),
        files,
    });
    let local = listener.local_addr()?;
    if let Some(redirect) = redirect {
        let plain = redirect.local_addr()?;
        let router = routes::redirect_router(Arc::clone(&app), local.port());
        tracker.spawn(edge::accept_loop(
            redirect,
            router,
            None,
            Arc::clone(&edge),
            stop.clone(),
            tracker.clone(),
        ));
        info!(%plain, "plain HTTP: redirecting to https:// (but /healthz)");
    }
    let scheme = if tls.is_some() {
        "https, wss"
    } else {
        "http, ws"
    };
    let router = routes::router(app);
    let mut serving = tokio::spawn(edge::accept_loop(
        listener,
        router,
        tls,
        edge,
        stop.clone(),
        tracker.clone(),
    ));
    info!(%local, scheme, max_http_connections = max_http, "listening");

    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut serving => {
            stop.cancel();
            return result.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        }
        _ = &mut shutdown => {}
    }
    info!(
        connections = tracker.len(),
        "shutting down: no new connections; closing open ones (1001)"
    );
    stop.cancel();
    tracker.close();
    let drained = tokio::time::timeout(shutdown_timeout, async {
        let _ = (&mut serving).await;
        tracker.wait().await;
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = tracker.len(),
            "shutdown timeout: dropping connections still open"
        );
        serving.abort();
    }
    webhook_delivery.shutdown().await;
    info!("stopped");
    Ok(())
}
