//! Rooms through the protocol, on any server: a host creates one, guests
//! and watchers join it by `init` or by query string.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::Client;

/// Anything a client can connect to: a server in-process, a child process,
/// an instance of a Redis fleet, or a bare address.
pub trait Endpoint {
    fn addr(&self) -> SocketAddr;

    /// `ws://ADDR` followed by `path_and_query`.
    fn url_to(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr(), path_and_query)
    }
}

impl Endpoint for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

impl<E: Endpoint + ?Sized> Endpoint for &E {
    fn addr(&self) -> SocketAddr {
        (**self).addr()
    }
}

/// A room's host and its tokens.
pub struct Room {
    pub host: Client,
    pub join: String,
    pub watch: String,
    pub resume: String,
    pub host_id: String,
}

fn field(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_string()
}

/// Creates a room on `server` (its host connects to `/webrtc`).
pub async fn room(server: &impl Endpoint) -> Room {
    let mut host = Client::connect(&server.url_to("/webrtc")).await;
    host.send(r#"{"type":"init"}"#).await;
    let init = host.recv_type("init").await;
    assert_eq!(init["role"], "host", "{init}");
    Room {
        join: field(&init, "join"),
        watch: field(&init, "watch"),
        resume: field(&init, "resume"),
        host_id: field(&init, "peer"),
        host,
    }
}

/// A guest (`"join"`) or watcher (`"watch"`) on `server` with `token`, by
/// `{"type":"init",ROLE:TOKEN}`; returns the client and its peer id.
pub async fn join(server: &impl Endpoint, role: &str, token: &str) -> (Client, String) {
    let mut c = Client::connect(&server.url_to("/webrtc")).await;
    c.send_json(json!({"type": "init", role: token})).await;
    let init = c.recv_type("init").await;
    assert_eq!(init["role"], role, "{init}");
    let id = field(&init, "peer");
    (c, id)
}

/// [`join`] by the query string (`/webrtc?join=TOKEN`), as the demo page's
/// links and webrtc_ros.js-style clients do.
pub async fn join_by_query(server: &impl Endpoint, role: &str, token: &str) -> (Client, String) {
    let mut c = Client::connect(&server.url_to(&format!("/webrtc?{role}={token}"))).await;
    let init = c.recv_type("init").await;
    assert_eq!(init["role"], role, "{init}");
    let id = field(&init, "peer");
    (c, id)
}

/// Attaches a guest (`"join"`) or watcher (`"watch"`) on `server` (the
/// host may be on another instance) and consumes the host's `peer_joined`.
/// Returns the client and its peer id.
pub async fn attach(server: &impl Endpoint, room: &mut Room, role: &str) -> (Client, String) {
    let token = if role == "join" {
        room.join.clone()
    } else {
        room.watch.clone()
    };
    let (c, id) = join(server, role, &token).await;
    let joined = room.host.recv_type("peer_joined").await;
    assert_eq!(joined["peer"], id.as_str());
    assert_eq!(joined["role"], role);
    (c, id)
}
