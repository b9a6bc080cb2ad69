//! The routes, and the checks made before a WebSocket upgrade.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::future::Either;
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tracing::{debug, warn};

use super::edge::Peer;
use super::App;
use crate::clients::Admission;
use crate::metrics::{Limited, Rejection};
use crate::protocol::Role;
use crate::rooms::Registry;
use crate::session::{self, QueryToken};
use crate::ws::{self, NotUpgrade};

/// The `Server` header of the WebSocket upgrade.
pub const SERVER_HEADER: &str = concat!("signal-server/", env!("CARGO_PKG_VERSION"));

/// Seconds a client over one of its limits is told to wait.
const CLIENT_RETRY_AFTER: &str = "10";

pub(super) fn router<R: Registry>(app: Arc<App<R>>) -> Router {
    let admin = crate::admin::routes(app.session.clone());
    Router::new()
        .route("/", get(root::<R>))
        .route("/webrtc", get(webrtc::<R>))
        .route("/healthz", get(healthz::<R>))
        .route("/metrics", get(metrics::<R>))
        .fallback(files::<R>)
        .with_state(app)
        .merge(admin)
}

/// The routes of the plain-HTTP port beside a TLS one
/// (`--http-redirect-bind`): `/healthz` as on the TLS port (load balancers
/// and uptime probes often check plain HTTP, and it tells nothing a client
/// could misuse), every other request a 308 to the same path and query on
/// `https://` at `tls_port` (308 rather than 301: the method is kept).
pub(super) fn redirect_router<R: Registry>(app: Arc<App<R>>, tls_port: u16) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<R>))
        .fallback(move |request: Request| std::future::ready(to_https(&request, tls_port)))
        .with_state(app)
}

/// A 308 to `request`'s URL over https:// on `tls_port` (omitted when 443).
fn to_https(request: &Request, tls_port: u16) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_name);
    let Some(host) = host else {
        return (
            StatusCode::BAD_REQUEST,
            "this port redirects to https://: send a Host header\n",
        )
            .into_response();
    };
    let port = if tls_port == 443 {
        String::new()
    } else {
        format!(":{tls_port}")
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
            "use https://\n",
        )
            .into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad request\n").into_response(),
    }
}

/// The host of a `Host` header without its port, if it is a plain DNS
/// name or an IP address (anything else gets no redirect).
fn host_name(host: &str) -> Option<&str> {
    let name = if host.starts_with('[') {
        // [v6] or [v6]:port
        &host[..=host.find(']')?]
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let ok = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    ok.then_some(name)
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
    /// `?token=JWT` (token mode)
    pub token: Option<String>,
}

impl TokenQuery {
    /// The room the query asks to attach to: `Ok(None)` without a token, an
    /// error (HTTP 400) when it gives both.
    pub fn attach(self) -> Result<Option<QueryToken>, &'static str> {
        match self {
            TokenQuery {
                join: Some(t),
                watch: None,
                token: None,
            } => Ok(Some(QueryToken::Open(Role::Join, t))),
            TokenQuery {
                join: None,
                watch: Some(t),
                token: None,
            } => Ok(Some(QueryToken::Open(Role::Watch, t))),
            TokenQuery {
                join: None,
                watch: None,
                token: Some(t),
            } => Ok(Some(QueryToken::Signed(t))),
            TokenQuery {
                join: None,
                watch: None,
                token: None,
            } => Ok(None),
            _ => Err("give at most one of `join`, `watch` and `token`\n"),
        }
    }
}

/// `/`: the demo page, or a WebSocket (the original deployment's URL).
async fn root<R: Registry>(
    State(app): State<Arc<App<R>>>,
    Extension(peer): Extension<Arc<Peer>>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    match ws::accept_key(&request) {
        Ok(key) => accept(app, request, key, &peer, query).await,
        Err(NotUpgrade::Plain) => app.files.serve(request).await,
        Err(why) => bad_upgrade(&app, why),
    }
}

/// `/webrtc`: the signalling endpoint, as webrtc_ros names it.
async fn webrtc<R: Registry>(
    State(app): State<Arc<App<R>>>,
    Extension(peer): Extension<Arc<Peer>>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    match ws::accept_key(&request) {
        Ok(key) => accept(app, request, key, &peer, query).await,
        Err(NotUpgrade::Plain) => (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, HeaderValue::from_static("websocket"))],
            "this endpoint speaks WebSocket: connect with ws:// or wss://\n",
        )
            .into_response(),
        Err(why) => bad_upgrade(&app, why),
    }
}

/// A WebSocket upgrade request this server cannot accept (RFC 6455 §4.2.2).
fn bad_upgrade<R: Registry>(app: &App<R>, why: NotUpgrade) -> Response {
    app.session.metrics.rejected(Rejection::BadHandshake);
    debug!(?why, "upgrade refused: malformed handshake");
    match why {
        NotUpgrade::Version => (
            StatusCode::UPGRADE_REQUIRED,
            [(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            )],
            why.describe(),
        )
            .into_response(),
        _ => (StatusCode::BAD_REQUEST, why.describe()).into_response(),
    }
}

/// HTTP 429 for a client over one of its limits.
fn too_many(message: String) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(
            header::RETRY_AFTER,
            HeaderValue::from_static(CLIENT_RETRY_AFTER),
        )],
        message,
    )
        .into_response()
}

/// What every request of a connection over its client's limit gets: HTTP
/// 429, and the connection closes.
pub(super) async fn client_over_limit(limit: u32) -> Response {
    let mut response = too_many(format!(
        "too many connections from your address (limit {limit}); try again later\n"
    ));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The checks made before upgrading, cheapest refusal first: origin (403),
/// query (400), the client's connections and attaches (429), query-string
/// token (404), connection limit (503); then the 101 response, and the
/// session on the upgraded socket.
async fn accept<R: Registry>(
    app: Arc<App<R>>,
    mut request: Request,
    accept_key: HeaderValue,
    peer: &Peer,
    query: TokenQuery,
) -> Response {
    let metrics = &app.session.metrics;
    let clients = &app.session.clients;
    // The client, and the address its session is known by: behind a
    // trusted proxy, the one the proxy names (its port is not known).
    let proxy = &app.config().proxy;
    let client = proxy.client(peer.addr.ip(), request.headers());
    let remote = if proxy.is_proxy(peer.addr.ip()) {
        SocketAddr::new(client, 0)
    } else {
        peer.addr
    };
    if !origin_allowed(&app.config().allowed_origins, request.headers()) {
        metrics.rejected(Rejection::Origin);
        debug!(%remote, "upgrade refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let attach = match query.attach() {
        Ok(attach) => attach,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    // Through a proxy: counted now, for the client it names. Directly: the
    // connection's own count, taken from the edge below, once the upgrade
    // is certain.
    let proxied = if peer.counted() {
        None
    } else {
        match clients.connect(client) {
            Admission::Admit(slot) => Some(slot),
            Admission::Refuse(_) | Admission::Drop => {
                metrics.rejected(Rejection::ClientConnections);
                debug!(%remote, "upgrade refused: client over its connection limit");
                return too_many(format!(
                    "too many connections from your address (limit {}); try again later\n",
                    clients.limits().connections
                ));
            }
        }
    };
    if attach.is_some() && !clients.may_attach(client) {
        metrics.rejected(Rejection::ClientAttaches);
        metrics.limited(Limited::ClientAttaches);
        debug!(%remote, "upgrade refused: client over its attaches per minute");
        return too_many(format!(
            "rooms entered too often from your address (limit {} per minute); try again later\n",
            clients.limits().attaches_per_minute
        ));
    }
    match &attach {
        Some(QueryToken::Open(role, token)) if !app.session.auth.is_token_mode() => {
            let known = crate::token::is_token_shaped(token)
                && app.session.registry.has_token(*role, token).await;
            if !known {
                metrics.rejected(Rejection::UnknownToken);
                return (StatusCode::NOT_FOUND, "no open room has this token\n").into_response();
            }
        }
        Some(QueryToken::Open(..)) => {
            metrics.rejected(Rejection::Unauthorized);
            return refused_token(&crate::auth::AuthError::Missing);
        }
        Some(QueryToken::Signed(jwt)) if app.session.auth.is_token_mode() => {
            if let Err((why, response)) = check_query_token(&app, jwt).await {
                metrics.rejected(why);
                return response;
            }
        }
        // Open mode ignores `?token=`, as it did before token mode existed.
        Some(QueryToken::Signed(_)) | None => {}
    }
    let attach = match attach {
        Some(QueryToken::Signed(_)) if !app.session.auth.is_token_mode() => None,
        other => other,
    };
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
    let slot = proxied.or_else(|| peer.take_slot());
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
    // The client's count and the connection permit are held until the
    // session ends.
    app.tracker
        .spawn(session.map(move |()| drop((permit, slot))));
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept_key),
            // What the bridge reads to tell a signal-server from webrtc_ros
            // when its --robot URL points here by mistake.
            (header::SERVER, HeaderValue::from_static(SERVER_HEADER)),
        ],
    )
        .into_response()
}

/// HTTP 401 or 403 for a refused `?token=`, the reason in words.
fn refused_token(err: &crate::auth::AuthError) -> Response {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    debug!(reason = err.reason(), "upgrade refused: token");
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        format!("{}: {err}\n", err.code()),
    )
        .into_response()
}

/// Token mode: `?token=` checked before the upgrade (401, 403), and for a
/// guest or watcher, whether its room is open (404, as for `?watch=`).
async fn check_query_token<R: Registry>(
    app: &App<R>,
    jwt: &str,
) -> Result<(), (Rejection, Response)> {
    let refused = |e: crate::auth::AuthError| (Rejection::Unauthorized, refused_token(&e));
    let claims = app.session.auth.check(jwt).map_err(refused)?;
    let action = session::entry_action(&claims).map_err(refused)?;
    let role = session::entry_role(action);
    if role == Role::Host {
        return Ok(());
    }
    let Some(room) = &claims.room else {
        return Ok(());
    };
    let token = crate::rooms::named_token(room.as_str(), Some(role));
    if app.session.registry.has_token(role, token.as_str()).await {
        return Ok(());
    }
    Err((
        Rejection::UnknownToken,
        (
            StatusCode::NOT_FOUND,
            format!(
                "room_not_found: the room {} is not open (its host is not connected)\n",
                room.as_str()
            ),
        )
            .into_response(),
    ))
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
        "service": "signal-server",
        "connections": metrics.connections(),
        "rooms": metrics.rooms(),
        "http_connections": metrics.http_connections(),
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
