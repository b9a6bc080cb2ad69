//! The HTTP side: the accept loop, the routes, the checks made before a
//! WebSocket upgrade, and graceful shutdown.
//!
//! [`run`] takes a bound listener and a shutdown future, so tests bind port 0
//! and stop the server when they like.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::future::Either;
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::assets::StaticFiles;
use crate::config::Config;
use crate::metrics::{Metrics, Rejection};
use crate::protocol::Role;
use crate::rooms::{MemoryRegistry, RedisOptions, RedisRegistry, Registry, RoomLimits};
use crate::session;
use crate::ws::{self, NotUpgrade};

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
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let shutdown_timeout = config.shutdown_timeout;
    let files = StaticFiles::new(config.static_dir.clone());
    let app = Arc::new(App {
        permits: Arc::new(Semaphore::new(config.max_connections)),
        session: session::Shared {
            registry,
            pressure: session::Pressure::new(&config, &metrics),
            config: Arc::new(config),
            metrics,
            shutdown: stop.clone(),
        },
        tracker: tracker.clone(),
        files,
    });
    let router = router(app);
    let local = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        // Signalling messages are small and latency-bound.
        if let Err(err) = tcp.set_nodelay(true) {
            debug!("TCP_NODELAY failed: {err}");
        }
    });
    let serve = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned());
    let mut serving = tokio::spawn(async move { serve.await });
    info!(%local, "listening");

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
    info!("stopped");
    Ok(())
}

fn router<R: Registry>(app: Arc<App<R>>) -> Router {
    Router::new()
        .route("/", get(root::<R>))
        .route("/webrtc", get(webrtc::<R>))
        .route("/healthz", get(healthz::<R>))
        .route("/metrics", get(metrics::<R>))
        .fallback(files::<R>)
        .with_state(app)
}

/// Query-string tokens of a webrtc_ros.js-style client that never sends
/// `init` (`?join=TOKEN` or `?watch=TOKEN`), as the `Query` extractor reads
/// them.
#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    /// `?join=TOKEN`
    pub join: Option<String>,
    /// `?watch=TOKEN`
    pub watch: Option<String>,
}

impl TokenQuery {
    /// The room the query asks to attach to: `Ok(None)` without a token, an
    /// error (HTTP 400) when it gives both.
    pub fn attach(self) -> Result<Option<(Role, String)>, &'static str> {
        match self {
            TokenQuery {
                join: Some(t),
                watch: None,
            } => Ok(Some((Role::Join, t))),
            TokenQuery {
                join: None,
                watch: Some(t),
            } => Ok(Some((Role::Watch, t))),
            TokenQuery {
                join: None,
                watch: None,
            } => Ok(None),
            _ => Err("give at most one of `join` and `watch`\n"),
        }
    }
}

/// `/`: the demo page, or a WebSocket (the original deployment's URL).
async fn root<R: Registry>(
    State(app): State<Arc<App<R>>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    match ws::accept_key(request.headers()) {
        Ok(key) => accept(app, request, key, remote, query).await,
        Err(NotUpgrade::Plain) => app.files.serve(request).await,
        Err(why) => bad_upgrade(why),
    }
}

/// `/webrtc`: the signalling endpoint, as webrtc_ros names it.
async fn webrtc<R: Registry>(
    State(app): State<Arc<App<R>>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    match ws::accept_key(request.headers()) {
        Ok(key) => accept(app, request, key, remote, query).await,
        Err(NotUpgrade::Plain) => (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, HeaderValue::from_static("websocket"))],
            "this endpoint speaks WebSocket: connect with ws:// or wss://\n",
        )
            .into_response(),
        Err(why) => bad_upgrade(why),
    }
}

/// A WebSocket upgrade request this server cannot accept (RFC 6455 §4.2.2).
fn bad_upgrade(why: NotUpgrade) -> Response {
    match why {
        NotUpgrade::Version => (
            StatusCode::UPGRADE_REQUIRED,
            [(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            )],
            "unsupported WebSocket version: this server speaks version 13\n",
        )
            .into_response(),
        NotUpgrade::Key | NotUpgrade::Plain => (
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade without Sec-WebSocket-Key\n",
        )
            .into_response(),
    }
}

/// The checks made before upgrading, cheapest refusal first: origin (403),
/// query-string token (404), connection limit (503); then the 101 response,
/// and the session on the upgraded socket.
async fn accept<R: Registry>(
    app: Arc<App<R>>,
    mut request: Request,
    accept_key: HeaderValue,
    remote: SocketAddr,
    query: TokenQuery,
) -> Response {
    let metrics = &app.session.metrics;
    if !origin_allowed(&app.config().allowed_origins, request.headers()) {
        metrics.rejected(Rejection::Origin);
        debug!(%remote, "upgrade refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let attach = match query.attach() {
        Ok(attach) => attach,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    if let Some((role, token)) = &attach {
        let known = crate::token::is_token_shaped(token)
            && app.session.registry.has_token(*role, token).await;
        if !known {
            metrics.rejected(Rejection::UnknownToken);
            return (StatusCode::NOT_FOUND, "no open room has this token\n").into_response();
        }
    }
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    let Ok(permit) = Arc::clone(&app.permits).try_acquire_owned() else {
        metrics.rejected(Rejection::TooManyConnections);
        warn!(%remote, "upgrade refused: connection limit reached");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            "too many connections; try again later\n",
        )
            .into_response();
    };
    let shared = app.session.clone();
    // Combinators rather than an async block, which would hold a second copy
    // of the session's state (see `session::run`).
    let session = on_upgrade.then(move |upgraded| match upgraded {
        Ok(upgraded) => Either::Left(session::run(TokioIo::new(upgraded), shared, remote, attach)),
        Err(err) => {
            debug!(%remote, "upgrade failed: {err}");
            Either::Right(std::future::ready(()))
        }
    });
    app.tracker.spawn(session.map(move |()| drop(permit)));
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept_key),
        ],
    )
        .into_response()
}

fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN) {
        // Non-browser clients (robots, scripts) send no Origin.
        None => true,
        Some(origin) => origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
    }
}

async fn healthz<R: Registry>(State(app): State<Arc<App<R>>>) -> Response {
    let metrics = &app.session.metrics;
    let healthy = app.session.registry.healthy();
    let mut body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "connections": metrics.connections(),
        "rooms": metrics.rooms(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        // The only registry that can be unhealthy is the shared one.
        body["redis"] = "unreachable".into();
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response()
}

async fn metrics<R: Registry>(State(app): State<Arc<App<R>>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.session.metrics.render(),
    )
        .into_response()
}

async fn files<R: Registry>(State(app): State<Arc<App<R>>>, request: Request<Body>) -> Response {
    app.files.serve(request).await
}
