//! The ICE servers the signalling server gives the bridge, kept fresh for
//! webrtc_ros.
//!
//! The `init` reply carries `ice_servers` and, when the server mints TURN
//! credentials, `ice_servers_ttl` (seconds). The bridge keeps the latest list
//! ([`IceGrant`]), asks for a fresh one (`{"type":"ice_servers"}`) well
//! before it expires ([`IceGrant::refresh_at`]), and serves its TURN
//! credential to webrtc_ros's ICE server provider ([`super::ice_endpoint`]).
//! Lifetimes are measured on the bridge's monotonic clock from when the
//! list arrived, never from the expiry written in the username: a robot's
//! wall clock may be far off (a Raspberry Pi without a real-time clock
//! boots in the past).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::turn::credentials::parse_username;

/// At the latest, a credential is refreshed when it is this old, so that a
/// viewer's robot connection gets one with nearly its whole lifetime ahead
/// (webrtc_ros asks once per viewer, and a relay allocation cannot outlive
/// its credential at the embedded relay).
pub const REFRESH_MAX_AGE: Duration = Duration::from_secs(3600);
/// The shortest wait before a refresh (a tiny TTL must not make a loop).
pub const REFRESH_MIN_WAIT: Duration = Duration::from_secs(1);
/// When a refresh got no reply (dropped by the server's rate limit, say),
/// ask again after this long.
pub const REFRESH_RETRY: Duration = Duration::from_secs(30);

/// A TURN credential, as webrtc_ros's stock provider wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// The TURN username (`<expiry>:<label>` for minted credentials).
    pub username: String,
    /// The credential, which webrtc_ros calls `password`.
    pub password: String,
    /// The TURN URLs it is for.
    pub uris: Vec<String>,
}

/// The ICE servers of the last `init` or `ice_servers` reply.
#[derive(Debug, Clone)]
pub struct IceGrant {
    /// The RTCIceServer list, as the server sent it.
    pub servers: Value,
    /// How long its TURN credentials are valid from `received` (none when
    /// the server said nothing: static or no credentials).
    pub ttl: Option<Duration>,
    /// When the list arrived.
    pub received: Instant,
}

impl IceGrant {
    /// The list of a reply that has just arrived.
    pub fn new(servers: &Value, ttl_seconds: Option<u64>) -> Self {
        IceGrant {
            servers: servers.clone(),
            ttl: ttl_seconds.map(Duration::from_secs),
            received: Instant::now(),
        }
    }

    /// How long its credentials stay valid from `now` (`None`: no known
    /// expiry; zero: expired).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.ttl
            .map(|ttl| ttl.saturating_sub(now.saturating_duration_since(self.received)))
    }

    /// When to ask for fresh credentials: at half their lifetime, and at
    /// most [`REFRESH_MAX_AGE`] after they arrived. `None` when they do not
    /// expire (an older server, or no TURN).
    pub fn refresh_at(&self) -> Option<Instant> {
        let ttl = self.ttl?;
        let wait = (ttl / 2).min(REFRESH_MAX_AGE).max(REFRESH_MIN_WAIT);
        Some(self.received + wait)
    }

    /// The TURN credential to hand to webrtc_ros: the entry whose username
    /// is a minted one (`<expiry>:<label>`; the server appends it after the
    /// static entries), else the first TURN entry with credentials.
    pub fn turn(&self) -> Option<TurnCredential> {
        let entries: Vec<TurnCredential> = self
            .servers
            .as_array()?
            .iter()
            .filter_map(turn_entry)
            .collect();
        entries
            .iter()
            .rev()
            .find(|c| parse_username(&c.username).is_ok())
            .or_else(|| entries.first())
            .cloned()
    }
}

/// An RTCIceServer with TURN URLs, a username and a credential.
fn turn_entry(entry: &Value) -> Option<TurnCredential> {
    let username = entry.get("username")?.as_str()?;
    let password = entry.get("credential")?.as_str()?;
    let uris: Vec<String> = match entry.get("urls")? {
        Value::String(url) => vec![url.clone()],
        Value::Array(urls) => urls
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect(),
        _ => return None,
    };
    let uris: Vec<String> = uris
        .into_iter()
        .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
        .collect();
    if uris.is_empty() || username.is_empty() {
        return None;
    }
    Some(TurnCredential {
        username: username.to_owned(),
        password: password.to_owned(),
        uris,
    })
}

/// The bridge's latest ICE servers, shared with the endpoint.
pub type IceShare = watch::Sender<Option<IceGrant>>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!([
            {"urls": "stun:stun.example.org:3478"},
            {"urls": "turn:static.example.org:3478", "username": "fleet", "credential": "pw"},
            {"urls": ["turn:198.51.100.1:3478?transport=udp", "stun:198.51.100.1:3478",
                      "turn:198.51.100.1:3478?transport=tcp"],
             "username": "1700000000:r00m1234/h0st1234", "credential": "c2VjcmV0"}
        ])
    }

    #[test]
    fn the_minted_entry_is_the_one_for_webrtc_ros() {
        let grant = IceGrant::new(&list(), Some(600));
        assert_eq!(
            grant.turn(),
            Some(TurnCredential {
                username: "1700000000:r00m1234/h0st1234".into(),
                password: "c2VjcmV0".into(),
                uris: vec![
                    "turn:198.51.100.1:3478?transport=udp".into(),
                    "turn:198.51.100.1:3478?transport=tcp".into(),
                ],
            })
        );
        // Without a minted entry, a static TURN entry will do.
        let fixed = IceGrant::new(&json!([list()[0], list()[1]]), None);
        assert_eq!(fixed.turn().unwrap().username, "fleet");
        for none in [
            json!([]),
            json!([list()[0]]),
            json!({"urls": "turn:x"}),
            json!([{"urls": 5, "username": "u", "credential": "c"}]),
        ] {
            assert_eq!(IceGrant::new(&none, None).turn(), None, "{none}");
        }
    }

    #[test]
    fn credentials_are_refreshed_at_half_life_and_at_least_hourly() {
        let day = IceGrant::new(&list(), Some(86_400));
        assert_eq!(day.refresh_at(), Some(day.received + REFRESH_MAX_AGE));
        let short = IceGrant::new(&list(), Some(600));
        assert_eq!(
            short.refresh_at(),
            Some(short.received + Duration::from_secs(300))
        );
        let tiny = IceGrant::new(&list(), Some(1));
        assert_eq!(tiny.refresh_at(), Some(tiny.received + REFRESH_MIN_WAIT));
        assert_eq!(IceGrant::new(&list(), None).refresh_at(), None);
    }

    #[test]
    fn the_lifetime_runs_on_the_bridges_own_clock() {
        let grant = IceGrant::new(&list(), Some(600));
        let at = grant.received + Duration::from_secs(100);
        assert_eq!(grant.remaining(at), Some(Duration::from_secs(500)));
        let late = grant.received + Duration::from_secs(601);
        assert_eq!(grant.remaining(late), Some(Duration::ZERO));
        assert_eq!(IceGrant::new(&list(), None).remaining(at), None);
    }
}
