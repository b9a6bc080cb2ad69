//! Names that come out of tokens: rooms, subjects, token ids and key ids.
//!
//! Each is a newtype checked once, where it enters (a token's claims, a flag,
//! an admin request), so the rest of the server never sees anything else.
//! They end up in log lines, metric labels and Redis keys, so the allowed
//! characters are few: ASCII letters, digits and a handful of punctuation
//! marks, never spaces, quotes, slashes, `*` or control characters.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest room name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub const MAX_ROOM_NAME_LEN: usize = 64;
/// Longest subject: `[A-Za-z0-9._@:+|-]{1,128}`.
pub const MAX_SUBJECT_LEN: usize = 128;
/// Longest token id (`jti`): `[A-Za-z0-9._-]{1,64}`.
pub const MAX_TOKEN_ID_LEN: usize = 64;
/// Longest key id (`kid`): `[A-Za-z0-9._-]{1,64}`.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    what: &'static str,
    rule: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} must be {}", self.what, self.rule)
    }
}

impl std::error::Error for NameError {}

/// Letters, digits, `.`, `_`, `-`, and the `extra` bytes; `1..=max` bytes.
fn is_name(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') || extra.contains(&b)
        })
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The rule a valid value follows, for messages and help texts.
            pub const RULE: &'static str = $rule;

            /// Checks `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok($name(s))
                } else {
                    Err(NameError { what: $what, rule: $rule })
                }
            }

            /// The name itself.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A room name, the `room` claim: 1 to 64 ASCII letters, digits, `.`, `_`
    /// or `-`, starting with a letter or digit (so never `..`, `.hidden` or
    /// `-flag`). Case matters: `Robot-7` and `robot-7` are two rooms.
    RoomName,
    "room name",
    "1 to 64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    |s| is_name(s, MAX_ROOM_NAME_LEN, b"") && s.as_bytes()[0].is_ascii_alphanumeric()
);

name_type!(
    /// Who a token is for, the `sub` claim: 1 to 128 ASCII letters, digits or
    /// `. _ - @ : + |` (an e-mail address, `auth0|1234`, `robot-7`).
    Subject,
    "subject",
    "1 to 128 characters of A-Z a-z 0-9 . _ - @ : + |",
    |s| is_name(s, MAX_SUBJECT_LEN, b"@:+|")
);

name_type!(
    /// A token's own id, the `jti` claim, by which it can be revoked: 1 to 64
    /// ASCII letters, digits, `.`, `_` or `-` (a UUID fits).
    TokenId,
    "token id (jti)",
    "1 to 64 characters of A-Z a-z 0-9 . _ -",
    |s| is_name(s, MAX_TOKEN_ID_LEN, b"")
);

name_type!(
    /// A key id, the `kid` header naming the key a token is signed with: 1 to
    /// 64 ASCII letters, digits, `.`, `_` or `-`.
    KeyId,
    "key id (kid)",
    "1 to 64 characters of A-Z a-z 0-9 . _ -",
    |s| is_name(s, MAX_KEY_ID_LEN, b"")
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_short_plain_words() {
        for ok in ["robot-7", "R2.D2", "a", "lab_3-cam.front", &"x".repeat(64)] {
            assert!(RoomName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "..",
            ".hidden",
            "-flag",
            "_x",
            "robot 7",
            "robot/7",
            "robot:7",
            "robot*",
            "robot\n7",
            "rob\u{f4}t",
            "{ss}:room",
        ] {
            assert!(RoomName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subjects_allow_mail_addresses_and_provider_ids_but_no_spaces() {
        for ok in [
            "alice",
            "alice+robots@example.com",
            "auth0|1234",
            "urn:robot:7",
        ] {
            assert!(Subject::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice Smith", "a\"b", "a/b", "a\u{0}", &"s".repeat(129)] {
            assert!(Subject::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_and_key_ids_refuse_anything_but_the_plain_alphabet() {
        assert!(TokenId::new("54ICxFae_Ip7TJE2").is_ok());
        assert!(TokenId::new("6f1c2c7e-2b1f-4f6e-9d55-0c1a2b3c4d5e").is_ok());
        assert!(TokenId::new("a:b").is_err());
        assert!(KeyId::new("2024-06.primary").is_ok());
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new("../../etc/passwd").is_err());
        assert!(KeyId::new("k".repeat(65)).is_err());
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        let r: RoomName = serde_json::from_str("\"robot-7\"").unwrap();
        assert_eq!(r.as_str(), "robot-7");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"robot-7\"");
        let err = serde_json::from_str::<RoomName>("\"robot 7\"").unwrap_err();
        assert!(err.to_string().contains("room name must be"), "{err}");
    }
}
