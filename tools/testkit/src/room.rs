//! Rooms through the protocol, on any server: a host creates one, guests
//! and watchers join it by `init` or by query string.

use std::net::{Ipv4Addr, SocketAddr};

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

impl Room {
    /// The token of `role`: `"join"` or `"watch"`.
    pub fn token(&self, role: &str) -> &str {
        if role == "join" {
            &self.join
        } else {
            &self.watch
        }
    }
}

fn field(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_string()
}

/// Creates a room on `server` (its host connects to `/webrtc`).
pub async fn room(server: &impl Endpoint) -> Room {
    new_room(Client::connect(&server.url_to("/webrtc")).await).await
}

/// [`room`], its host connecting from the loopback address `from`.
pub async fn room_from(server: &impl Endpoint, from: Ipv4Addr) -> Room {
    new_room(Client::connect_from(from, &server.url_to("/webrtc")).await).await
}

async fn new_room(mut host: Client) -> Room {
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
    init_as(
        Client::connect(&server.url_to("/webrtc")).await,
        role,
        token,
    )
    .await
}

/// [`join`] from the loopback address `from`.
pub async fn join_from(
    server: &impl Endpoint,
    from: Ipv4Addr,
    role: &str,
    token: &str,
) -> (Client, String) {
    init_as(
        Client::connect_from(from, &server.url_to("/webrtc")).await,
        role,
        token,
    )
    .await
}

async fn init_as(mut c: Client, role: &str, token: &str) -> (Client, String) {
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
    let (c, id) = join(server, role, room.token(role)).await;
    host_saw(room, role, c, id).await
}

/// [`attach`] from the loopback address `from`.
pub async fn attach_from(
    server: &impl Endpoint,
    from: Ipv4Addr,
    room: &mut Room,
    role: &str,
) -> (Client, String) {
    let (c, id) = join_from(server, from, role, room.token(role)).await;
    host_saw(room, role, c, id).await
}

async fn host_saw(room: &mut Room, role: &str, c: Client, id: String) -> (Client, String) {
    let joined = room.host.recv_type("peer_joined").await;
    assert_eq!(joined["peer"], id.as_str());
    assert_eq!(joined["role"], role);
    (c, id)
}
