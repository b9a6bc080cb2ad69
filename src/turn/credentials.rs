//! Short-lived TURN credentials: the "TURN REST API" scheme of
//! draft-uberti-behave-turn-rest, which coturn implements as
//! `use-auth-secret`.
//!
//! A credential is minted for a label (naming a room and a peer, never a
//! token) from a secret shared with the relay:
//!
//! ```text
//! username   = "<expiry, unix seconds>:<label>"
//! credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! The relay recomputes the credential from the username alone, so nothing is
//! stored per credential, and refuses a username whose expiry has passed. This
//! module is pure: time comes in as an argument, nothing is logged (the
//! secret's `Debug` is redacted).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;

/// Longest label kept in a username; longer labels are cut (a STUN USERNAME
/// holds at most 513 bytes, and labels are for logs and quotas, not data).
pub const MAX_LABEL_LEN: usize = 64;

/// The secret shared between whoever mints credentials and the relay.
/// Cheap to clone; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSecret(Arc<str>);

impl TurnSecret {
    /// A secret given by the operator (`--turn-secret`), used as its UTF-8
    /// bytes, as coturn's `static-auth-secret` is.
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("the TURN secret must not be empty".into());
        }
        Ok(TurnSecret(secret.into()))
    }

    /// A random secret (32 alphanumeric characters, about 190 bits), made at
    /// start when `--turn-listen` is given without `--turn-secret`.
    pub fn random() -> Self {
        use rand::distr::{Alphanumeric, SampleString};
        TurnSecret(Alphanumeric.sample_string(&mut rand::rng(), 32).into())
    }

    /// The secret's text, for whoever must hand it to the relay (a test that
    /// starts coturn with the same secret).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

/// One minted credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `<expiry>:<label>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// The expiry, in unix seconds.
    pub expires_at: u64,
}

/// The credential (password) for `username` under `secret`.
pub fn password(secret: &TurnSecret, username: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.0.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `label` as it goes into a username: characters outside
/// `[A-Za-z0-9._~:/@+-]` become `_`, and it is cut to [`MAX_LABEL_LEN`].
pub fn clean_label(label: &str) -> String {
    label
        .chars()
        .take(MAX_LABEL_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._~:/@+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Mints a credential for `label`, valid for `ttl` from `now`.
pub fn mint(secret: &TurnSecret, label: &str, ttl: Duration, now: SystemTime) -> Credential {
    let expires_at = unix_seconds(now).saturating_add(ttl.as_secs());
    let label = clean_label(label);
    let username = if label.is_empty() {
        expires_at.to_string()
    } else {
        format!("{expires_at}:{label}")
    };
    let credential = password(secret, &username);
    Credential {
        username,
        credential,
        expires_at,
    }
}

/// Seconds since the unix epoch (0 for a clock set before 1970).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A username of the scheme, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestUsername<'a> {
    /// Expiry in unix seconds.
    pub expires_at: u64,
    /// What follows the first `:` (empty for a bare timestamp).
    pub label: &'a str,
}

/// Why the relay refuses a username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameError {
    /// Not `<digits>` or `<digits>:<label>`.
    Malformed,
    /// Its expiry has passed.
    Expired,
}

/// Parses a username of the scheme: `<expiry>` or `<expiry>:<label>`, the
/// expiry in decimal unix seconds. (coturn also accepts `<label>:<expiry>`;
/// nothing mints that form here, so it is refused as malformed.)
pub fn parse_username(username: &str) -> Result<RestUsername<'_>, UsernameError> {
    let (stamp, label) = username.split_once(':').unwrap_or((username, ""));
    if stamp.is_empty() || stamp.len() > 20 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UsernameError::Malformed);
    }
    let expires_at = stamp.parse().map_err(|_| UsernameError::Malformed)?;
    Ok(RestUsername { expires_at, label })
}

/// The relay's check of a username at unix time `now`: well formed and not
/// expired. The credential is valid up to and including its expiry second,
/// as in coturn (`timestamp >= now`).
pub fn check_username(username: &str, now: u64) -> Result<RestUsername<'_>, UsernameError> {
    let parsed = parse_username(username)?;
    if parsed.expires_at < now {
        return Err(UsernameError::Expired);
    }
    Ok(parsed)
}

/// What a signalling server hands to each peer: the static `--ice-servers`
/// entries plus one TURN entry with credentials of the peer's own.
#[derive(Debug, Clone)]
pub struct IceServers {
    secret: TurnSecret,
    urls: Vec<String>,
    ttl: Duration,
    fixed: Vec<Value>,
}

impl IceServers {
    /// `fixed` is the `--ice-servers` array (non-arrays count as empty);
    /// `urls` the TURN URLs the credentials are for.
    pub fn new(secret: TurnSecret, urls: Vec<String>, ttl: Duration, fixed: &Value) -> Self {
        let fixed = fixed.as_array().cloned().unwrap_or_default();
        IceServers {
            secret,
            urls,
            ttl,
            fixed,
        }
    }

    /// The TURN URLs credentials are minted for.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// How long each credential is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The secret (to start a relay that shares it).
    pub fn secret(&self) -> &TurnSecret {
        &self.secret
    }

    /// The RTCIceServer list for the peer `label` (room and peer, never a
    /// token), with credentials valid for the TTL from now.
    pub fn for_peer(&self, label: &str) -> Value {
        self.for_peer_at(label, SystemTime::now())
    }

    /// [`IceServers::for_peer`] at a given time.
    pub fn for_peer_at(&self, label: &str, now: SystemTime) -> Value {
        let mut list = self.fixed.clone();
        if !self.urls.is_empty() {
            let c = mint(&self.secret, label, self.ttl, now);
            list.push(json!({
                "urls": self.urls,
                "username": c.username,
                "credential": c.credential,
            }));
        }
        Value::Array(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_credential_matches_an_independent_hmac_sha1() {
        // Computed with Python's hmac/hashlib/base64:
        // base64.b64encode(hmac.new(b"north-sea-secret",
        //   b"1700000000:room-42/peer-7", hashlib.sha1).digest())
        let secret = TurnSecret::new("north-sea-secret").unwrap();
        assert_eq!(
            password(&secret, "1700000000:room-42/peer-7"),
            "YCKW7xvuZBGm9SEeQmU6Gjp882Y="
        );
        let secret = TurnSecret::new("SECRET").unwrap();
        assert_eq!(
            password(&secret, "1893456000:robot"),
            "jyNMou90n6xu8gUAQe6D5nY9hOo="
        );
    }

    #[test]
    fn minting_puts_the_expiry_before_the_label() {
        let secret = TurnSecret::new("north-sea-secret").unwrap();
        let c = mint(
            &secret,
            "room-42/peer-7",
            Duration::from_secs(600),
            at(1_699_999_400),
        );
        assert_eq!(c.username, "1700000000:room-42/peer-7");
        assert_eq!(c.credential, "YCKW7xvuZBGm9SEeQmU6Gjp882Y=");
        assert_eq!(c.expires_at, 1_700_000_000);
    }

    #[test]
    fn labels_are_cleaned_and_cut() {
        assert_eq!(clean_label("room 1/\"peer\"\n"), "room_1/_peer__");
        assert_eq!(clean_label(&"x".repeat(500)).len(), MAX_LABEL_LEN);
        let secret = TurnSecret::random();
        let c = mint(&secret, "", Duration::from_secs(1), at(10));
        assert_eq!(c.username, "11");
    }

    #[test]
    fn expiry_is_enforced_to_the_second() {
        assert_eq!(
            check_username("100:room/peer", 100),
            Ok(RestUsername {
                expires_at: 100,
                label: "room/peer"
            })
        );
        assert_eq!(
            check_username("100:room/peer", 101),
            Err(UsernameError::Expired)
        );
        assert_eq!(check_username("100", 50).unwrap().label, "");
        // A label may itself hold colons: only the first one splits.
        assert_eq!(check_username("100:a:b", 50).unwrap().label, "a:b");
    }

    #[test]
    fn malformed_usernames_are_refused() {
        for bad in [
            "",
            ":label",
            "robot",
            "label:100",
            "12a:x",
            "-5:x",
            "99999999999999999999999:x",
        ] {
            assert_eq!(
                parse_username(bad),
                Err(UsernameError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ice_servers_merge_the_static_entries_with_fresh_credentials() {
        let secret = TurnSecret::new("north-sea-secret").unwrap();
        let fixed = json!([{"urls": "stun:stun.example.org:3478"}]);
        let ice = IceServers::new(
            secret.clone(),
            vec![
                "turn:turn.example.com:3478?transport=udp".into(),
                "turns:turn.example.com:443?transport=tcp".into(),
            ],
            Duration::from_secs(600),
            &fixed,
        );
        let list = ice.for_peer_at("room-42/peer-7", at(1_699_999_400));
        assert_eq!(
            list,
            json!([
                {"urls": "stun:stun.example.org:3478"},
                {
                    "urls": [
                        "turn:turn.example.com:3478?transport=udp",
                        "turns:turn.example.com:443?transport=tcp"
                    ],
                    "username": "1700000000:room-42/peer-7",
                    "credential": "YCKW7xvuZBGm9SEeQmU6Gjp882Y="
                }
            ])
        );
        let none = IceServers::new(secret, Vec::new(), Duration::from_secs(1), &fixed);
        assert_eq!(none.for_peer("x"), fixed);
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let secret = TurnSecret::new("north-sea-secret").unwrap();
        assert!(!format!("{secret:?}").contains("north"));
        assert!(TurnSecret::new("").is_err());
        assert_ne!(TurnSecret::random(), TurnSecret::random());
        assert_eq!(TurnSecret::random().expose().len(), 32);
    }
}
