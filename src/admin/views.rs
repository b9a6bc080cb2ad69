//! The admin API's JSON bodies (docs/openapi.json's schemas, one for one).

use serde::{Deserialize, Serialize};

/// A peer of a room (`Peer` in the OpenAPI document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// The peer's id (as the host sees it in `from`).
    pub id: String,
    /// `join` or `watch`.
    pub role: String,
    /// When it entered the room (seconds since the Unix epoch).
    pub since: u64,
}

/// A room (`Room`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomView {
    /// The room's name (token mode's named rooms) or label (open mode).
    pub room: String,
    /// Whether it is a named room (kept across restarts).
    pub named: bool,
    /// Whether its host is connected now (else the room waits for it,
    /// within the grace period).
    pub host_connected: bool,
    /// Since when the host has been connected, or since when it has been
    /// away (seconds since the Unix epoch).
    pub since: u64,
    /// Its guests and watchers.
    pub peers: Vec<PeerView>,
}

/// Viewers of a room by role (`Viewers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewers {
    /// Full peers (`join`).
    pub join: usize,
    /// Receive-only viewers (`watch`).
    pub watch: usize,
}

impl Viewers {
    /// The counts of `peers`.
    pub fn of(peers: &[PeerView]) -> Viewers {
        let mut v = Viewers::default();
        for p in peers {
            match p.role.as_str() {
                "watch" => v.watch += 1,
                _ => v.join += 1,
            }
        }
        v
    }
}

/// One robot of the fleet (`Robot`): a room as the fleet page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotView {
    /// The room's name or label.
    pub room: String,
    /// Whether it is a named room (those are remembered when offline).
    pub named: bool,
    /// Whether its host (the robot) is connected.
    pub online: bool,
    /// Online: since when (its uptime starts there). Offline: `null`.
    pub online_since: Option<u64>,
    /// Offline: when its host was last connected. Online: when this
    /// server saw it come online (seconds since the Unix epoch).
    pub last_seen: u64,
    /// Its viewers by role.
    pub viewers: Viewers,
    /// Its guests and watchers.
    pub peers: Vec<PeerView>,
}

/// The whole fleet at one time (`Fleet`): the body of `GET /api/v1/fleet`
/// and of each `fleet` event of `GET /api/v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    /// When this view was taken (seconds since the Unix epoch).
    pub at: u64,
    /// Every robot, by room name.
    pub robots: Vec<RobotView>,
}

/// `POST /api/v1/rooms/{room}/watch-links` body (`WatchLinkRequest`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchLinkRequest {
    /// Lifetime in seconds (1..=3600; default 300).
    pub ttl_secs: Option<u64>,
    /// Who the link is for (the token's `sub`); default the caller.
    pub sub: Option<String>,
}

/// A minted watch link (`WatchLink`).
#[derive(Debug, Clone, Serialize)]
pub struct WatchLink {
    /// The token (a JWT with the `watch` grant for the room).
    pub token: String,
    /// The page's path with the token: open it on this server's origin.
    pub path: String,
    /// The room.
    pub room: String,
    /// The token's `jti` (to revoke it alone).
    pub jti: String,
    /// When it stops working (seconds since the Unix epoch).
    pub expires_at: u64,
}

/// `POST /api/v1/revocations` body (`RevocationRequest`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RevocationRequest {
    /// One token.
    Token {
        /// Its `jti`.
        jti: String,
        /// Its `exp`, if known.
        exp: Option<u64>,
    },
    /// Every token of a subject issued before a time (default: now, so all
    /// issued so far).
    Subject {
        /// The subject.
        sub: String,
        /// Seconds since the Unix epoch.
        issued_before: Option<u64>,
    },
    /// Every token for a room issued before a time (default: now).
    Room {
        /// The room's name.
        room: String,
        /// Seconds since the Unix epoch.
        issued_before: Option<u64>,
    },
}
