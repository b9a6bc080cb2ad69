//! Random identifiers: room tokens, resume secrets and peer ids.
//!
//! Tokens are bearer credentials (whoever holds `join` may publish into the
//! room), so they come straight from the operating system's CSPRNG and are never
//! logged in full. That holds by type: a token is held as a [`Token`] and a
//! peer id as a [`PeerId`], whose `Debug` and `Display` show only a prefix
//! ([`redact`]); the real value is reached only through
//! [`as_str`](Token::as_str) or [`into_string`](Token::into_string), which is
//! what the wire (JSON, Redis keys) uses. On the wire both are plain strings
//! (serde `transparent`).

use std::borrow::Borrow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::TryRngCore as _;

/// Random bytes in a room token or resume secret (96 bits of entropy).
pub const TOKEN_BYTES: usize = 12;
/// Length of a token on the wire: 12 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 16;
/// Random bytes in a peer id. Peer ids only need to be unique within a room and
/// unguessable enough not to help an attacker; they grant nothing by themselves.
pub const PEER_ID_BYTES: usize = 6;
/// Length of a peer id on the wire.
pub const PEER_ID_LEN: usize = 8;

fn random_b64<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    // The OS random source failing is not something a server can work around:
    // carrying on with predictable tokens would be worse than stopping.
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Declares a string newtype whose `Debug` and `Display` redact.
macro_rules! redacted_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The real value, for the wire (JSON, Redis keys), never for logs.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The real value, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        /// Maps keyed by it are looked up by `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// Only the prefix ([`redact`]).
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&redact(&self.0))
            }
        }

        /// Only the prefix ([`redact`]).
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), redact(&self.0))
            }
        }
    };
}

redacted_string! {
    /// A room token (`join`, `watch`), a resume secret, or a named room's
    /// registry token ([`crate::rooms::named_token`]): a bearer credential.
    Token
}

redacted_string! {
    /// A peer's id in its room (a host's, a guest's or a watcher's).
    PeerId
}

/// A new room token (`join`, `watch`) or resume secret: 16 URL-safe characters.
pub fn new_token() -> Token {
    Token(random_b64::<TOKEN_BYTES>())
}

/// A new peer id: 8 URL-safe characters.
pub fn new_peer_id() -> PeerId {
    PeerId(random_b64::<PEER_ID_BYTES>())
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` could be a token this server issued. Used to turn away garbage
/// before it reaches the registry (and to keep it out of logs).
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == TOKEN_LEN && is_b64url(s)
}

/// Whether `s` could be a peer id this server issued.
pub fn is_peer_id_shaped(s: &str) -> bool {
    s.len() == PEER_ID_LEN && is_b64url(s)
}

/// The first four characters of a token followed by an ellipsis: enough to
/// correlate log lines, far too little to use the token.
pub fn redact(token: &str) -> String {
    let prefix: String = token.chars().take(4).collect();
    format!("{prefix}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_have_the_documented_shape() {
        for _ in 0..1000 {
            let t = new_token();
            assert_eq!(t.as_str().len(), TOKEN_LEN);
            assert!(is_token_shaped(t.as_str()), "{}", t.as_str());
            let p = new_peer_id();
            assert_eq!(p.as_str().len(), PEER_ID_LEN);
            assert!(is_peer_id_shaped(p.as_str()), "{}", p.as_str());
        }
    }

    #[test]
    fn a_hundred_thousand_tokens_never_collide() {
        let n = 100_000;
        let set: HashSet<Token> = (0..n).map(|_| new_token()).collect();
        assert_eq!(set.len(), n);
    }

    #[test]
    fn shape_checks_reject_garbage() {
        assert!(!is_token_shaped(""));
        assert!(!is_token_shaped("short"));
        assert!(!is_token_shaped("aaaaaaaaaaaaaaa=")); // padding is not issued
        assert!(!is_token_shaped("aaaaaaaaaaaaaaa/")); // standard base64 alphabet
        assert!(!is_token_shaped("ééééééééé"));
        assert!(is_token_shaped("54ICxFae_Ip7TJE2")); // the seed README's example
    }

    #[test]
    fn redaction_keeps_only_a_prefix() {
        assert_eq!(redact("54ICxFae_Ip7TJE2"), "54IC…");
        assert_eq!(redact("ab"), "ab…");
    }

    #[test]
    fn a_tokens_debug_and_display_never_show_more_than_its_prefix() {
        let t = Token::from("54ICxFae_Ip7TJE2");
        assert_eq!(t.to_string(), "54IC…");
        assert_eq!(format!("{t:?}"), "Token(54IC…)");
        assert_eq!(format!("{t:#?}"), "Token(54IC…)");
        let p = PeerId::from("Xy3_ab9Q");
        assert_eq!(p.to_string(), "Xy3_…");
        assert_eq!(format!("{p:?}"), "PeerId(Xy3_…)");
        for _ in 0..100 {
            let t = new_token();
            assert!(!format!("{t} {t:?} {t:#?}").contains(t.as_str()));
            let p = new_peer_id();
            assert!(!format!("{p} {p:?} {p:#?}").contains(p.as_str()));
        }
    }

    #[test]
    fn a_token_on_the_wire_is_its_plain_string() {
        let t = Token::from("54ICxFae_Ip7TJE2");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"54ICxFae_Ip7TJE2\"");
        let back: Token = serde_json::from_str("\"54ICxFae_Ip7TJE2\"").unwrap();
        assert_eq!(back, t);
        assert_eq!(back.as_str(), "54ICxFae_Ip7TJE2");
        let p: PeerId = serde_json::from_str("\"Xy3_ab9Q\"").unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), "Xy3_ab9Q");
        assert_eq!(p.into_string(), "Xy3_ab9Q");
    }

    #[test]
    fn maps_keyed_by_tokens_are_looked_up_by_str() {
        let mut map = std::collections::HashMap::new();
        map.insert(Token::from("54ICxFae_Ip7TJE2"), 1);
        map.insert(Token::from("634w44TblL5Dbd9a"), 2);
        assert_eq!(map.get("54ICxFae_Ip7TJE2"), Some(&1));
        assert_eq!(map.get("634w44TblL5Dbd9a"), Some(&2));
        assert_eq!(map.get("54IC…"), None);
        let set: HashSet<PeerId> = [PeerId::from("Xy3_ab9Q")].into();
        assert!(set.contains("Xy3_ab9Q"));
        assert_eq!(PeerId::from("Xy3_ab9Q"), "Xy3_ab9Q");
    }

    #[test]
    fn a_token_is_no_bigger_than_a_string() {
        assert_eq!(std::mem::size_of::<Token>(), std::mem::size_of::<String>());
        assert_eq!(std::mem::size_of::<PeerId>(), std::mem::size_of::<String>());
        assert_eq!(
            std::mem::size_of::<Option<Token>>(),
            std::mem::size_of::<Option<String>>()
        );
    }

    /// A room's host welcome, as a registry hands it to a session.
    fn host_welcome() -> (crate::rooms::Welcome, [Token; 3], PeerId) {
        let (join, watch, resume) = (new_token(), new_token(), new_token());
        let (host, guest) = (new_peer_id(), new_peer_id());
        let welcome = crate::rooms::Welcome {
            room: "r00mlab1".into(),
            peer: host.clone(),
            role: crate::protocol::Role::Host,
            join: Some(join.clone()),
            watch: Some(watch.clone()),
            resume: Some(resume.clone()),
            peers: Some(vec![(guest.clone(), crate::protocol::Role::Join)]),
        };
        (welcome, [join, watch, resume], guest)
    }

    #[test]
    fn the_debug_of_a_welcome_holds_none_of_its_tokens_or_peer_ids() {
        let (welcome, tokens, guest) = host_welcome();
        for shown in [format!("{welcome:?}"), format!("{welcome:#?}")] {
            for t in &tokens {
                assert!(!shown.contains(t.as_str()), "{shown}");
                assert!(shown.contains(&redact(t.as_str())), "{shown}");
            }
            assert!(!shown.contains(welcome.peer.as_str()), "{shown}");
            assert!(!shown.contains(guest.as_str()), "{shown}");
            assert!(shown.contains("r00mlab1"), "the room's label is no secret");
        }
    }

    #[test]
    fn a_log_line_with_tokens_in_it_shows_only_their_prefixes() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let (welcome, [join, watch, resume], _) = host_welcome();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(join = %join, watch = ?watch, ?welcome, "hosting the room");
            tracing::warn!("resume with {resume} or {resume:?}");
        });
        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("hosting the room"), "{logged}");
        assert!(logged.contains(&redact(join.as_str())), "{logged}");
        for t in [&join, &watch, &resume] {
            assert!(!logged.contains(t.as_str()), "{logged}");
        }
    }

    #[test]
    fn the_debug_of_an_init_reply_holds_none_of_its_tokens_and_its_json_all_of_them() {
        use crate::protocol::{InitReply, Role, ServerMessage};
        use std::borrow::Cow;
        let (join, watch, resume) = (new_token(), new_token(), new_token());
        let ice = serde_json::json!([]);
        let reply = ServerMessage::Init(InitReply {
            join: Some(Cow::Borrowed(&join)),
            watch: Some(Cow::Borrowed(&watch)),
            resume: Some(Cow::Borrowed(&resume)),
            peers: None,
            peer: "h0st1234".into(),
            role: Role::Host,
            ice_servers: Cow::Borrowed(&ice),
            ice_servers_ttl: None,
            room: None,
            expires: None,
        });
        let shown = format!("{reply:?}");
        let json = reply.to_json();
        for t in [&join, &watch, &resume] {
            assert!(!shown.contains(t.as_str()), "{shown}");
            assert!(json.contains(&format!("\"{}\"", t.as_str())), "{json}");
        }
        let ServerMessage::Init(back) = ServerMessage::parse(&json).unwrap() else {
            panic!("not an init: {json}");
        };
        assert_eq!(back.join.as_deref(), Some(&join));
        assert_eq!(back.resume.as_deref(), Some(&resume));
    }
}
