//! `--ice-endpoint`: the robot's TURN credentials over HTTP, in the form
//! webrtc_ros's stock ICE server provider reads.
//!
//! webrtc_ros (ROS 1) asks the ROS service `get_ice_servers` for ICE servers
//! once per viewer, when it creates that viewer's peer connection. Its stock
//! provider, `ice_server_service.py`, POSTs (form fields `username` and
//! `password`, its own login for a credentials service) to its parameter
//! `turn_server_creds_uri` and takes `username` and `password` from the JSON
//! answer, for each of its `turn_server_uris`. This endpoint is such a
//! service: any path, POST or GET, answers
//!
//! ```json
//! {"username":"1700003600:r00m1234/h0st1234","password":"…",
//!  "uris":["turn:203.0.113.7:3478?transport=udp"],"ttl":3541,
//!  "ice_servers":[…]}
//! ```
//!
//! with the credential of the bridge's own `init` (kept fresh, see
//! [`super::ice`]); `uris`, `ttl` (seconds left) and the whole `ice_servers`
//! list are for other providers (the stock one ignores them). Before the
//! bridge has a credential, or after it expired, it answers 503 with
//! `{"error":…}`, and the stock provider goes on with STUN only.
//!
//! The credential opens the relay to whoever holds it, so the endpoint is
//! off by default and binds only to a loopback address unless told
//! otherwise (`--ice-endpoint-public`).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::error::BridgeError;
use super::ice::IceGrant;

/// Binds the endpoint's socket (at start, so that a bad address is an error
/// up front). A non-loopback address needs `public`.
pub fn bind(addr: SocketAddr, public: bool) -> Result<std::net::TcpListener, BridgeError> {
    if !addr.ip().is_loopback() && !public {
        return Err(BridgeError::IceEndpoint {
            addr,
            why: "not a loopback address: anyone who reaches it gets TURN credentials \
                  (add --ice-endpoint-public if that is what you want)"
                .into(),
        });
    }
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| BridgeError::IceEndpoint {
            addr,
            why: e.to_string(),
        })?;
    Ok(listener)
}

/// Serves the endpoint on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: std::net::TcpListener,
    ice: watch::Receiver<Option<IceGrant>>,
    stop: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("ICE endpoint: cannot serve: {e}");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        info!("ICE endpoint for webrtc_ros: set turn_server_creds_uri to http://{addr}/");
    }
    let app = Router::new().fallback(answer).with_state(ice);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!("ICE endpoint stopped: {e}");
    }
}

async fn answer(State(ice): State<watch::Receiver<Option<IceGrant>>>, method: Method) -> Response {
    if method != Method::POST && method != Method::GET {
        let mut r = (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST (or GET) for TURN credentials\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        return r;
    }
    let body = credentials(ice.borrow().as_ref(), Instant::now());
    let status = if body.get("username").is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The answer's JSON at `now`: the credential, or why there is none.
fn credentials(grant: Option<&IceGrant>, now: Instant) -> serde_json::Value {
    let Some(grant) = grant else {
        return json!({"error": "no TURN credentials yet: the bridge has not reached the signalling server"});
    };
    let Some(turn) = grant.turn() else {
        return json!({"error": "the signalling server hands out no TURN credentials (--turn-secret or --turn-listen)"});
    };
    let remaining = grant.remaining(now);
    if remaining == Some(std::time::Duration::ZERO) {
        return json!({"error": "the TURN credentials expired: the bridge cannot reach the signalling server to renew them"});
    }
    let mut body = json!({
        "username": turn.username,
        "password": turn.password,
        "uris": turn.uris,
        "ice_servers": grant.servers,
    });
    if let (Some(left), Some(obj)) = (remaining, body.as_object_mut()) {
        obj.insert("ttl".into(), json!(left.as_secs()));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_loopback_unless_told() {
        assert!(matches!(
            bind("0.0.0.0:0".parse().unwrap(), false),
            Err(BridgeError::IceEndpoint { .. })
        ));
        assert!(matches!(
            bind("198.51.100.9:0".parse().unwrap(), false),
            Err(BridgeError::IceEndpoint { .. })
        ));
        assert!(bind("127.0.0.1:0".parse().unwrap(), false).is_ok());
        assert!(bind("0.0.0.0:0".parse().unwrap(), true).is_ok());
    }

    #[test]
    fn the_answer_says_why_it_has_no_credential() {
        let now = Instant::now();
        assert!(credentials(None, now)["error"]
            .as_str()
            .unwrap()
            .contains("not reached"));
        let stun = IceGrant::new(&json!([{"urls": "stun:s.example:3478"}]), None);
        assert!(credentials(Some(&stun), now)["error"]
            .as_str()
            .unwrap()
            .contains("no TURN"));
        let turn = json!([{"urls": "turn:t.example:3478", "username": "9:r/p", "credential": "c"}]);
        let grant = IceGrant::new(&turn, Some(60));
        let body = credentials(Some(&grant), grant.received + Duration::from_secs(10));
        assert_eq!(body["username"], "9:r/p");
        assert_eq!(body["password"], "c");
        assert_eq!(body["ttl"], 50);
        assert_eq!(body["uris"], json!(["turn:t.example:3478"]));
        let expired = credentials(Some(&grant), grant.received + Duration::from_secs(60));
        assert!(expired["error"].as_str().unwrap().contains("expired"));
    }
}
