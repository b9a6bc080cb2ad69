//! The admin key (`--admin-key`, `SIGNAL_SERVER_ADMIN_KEY`) and its
//! constant-time check.

use std::fmt;

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Shortest admin key accepted, in bytes: a bearer secret guessed online
/// must have at least 128 bits (`openssl rand -base64 24` gives 32 bytes).
pub const MIN_ADMIN_KEY_LEN: usize = 16;

/// The admin key. Never shown by `Debug`; compared in constant time.
#[derive(Clone)]
pub struct AdminKey {
    /// A random per-process key the presented key is MACed with, so that
    /// the comparison costs the same whatever the presented key's length
    /// and content.
    salt: [u8; 32],
    /// HMAC(salt, key).
    tag: Vec<u8>,
}

type HmacSha1 = Hmac<Sha1>;

fn mac(salt: &[u8; 32]) -> HmacSha1 {
    // Any key length is valid for HMAC.
    HmacSha1::new_from_slice(salt).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

impl AdminKey {
    /// The key `key`; refused when shorter than [`MIN_ADMIN_KEY_LEN`] or not
    /// printable ASCII (it travels in an `Authorization` header).
    pub fn new(key: &str) -> Result<AdminKey, String> {
        if key.len() < MIN_ADMIN_KEY_LEN {
            return Err(format!(
                "the admin key must be at least {MIN_ADMIN_KEY_LEN} bytes \
                 (e.g. from `openssl rand -base64 24`)"
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin key must be printable ASCII without spaces".into());
        }
        let salt: [u8; 32] = rand::random();
        let mut m = mac(&salt);
        m.update(key.as_bytes());
        Ok(AdminKey {
            salt,
            tag: m.finalize().into_bytes().to_vec(),
        })
    }

    /// Whether `presented` is the key, in time independent of where they
    /// differ (HMAC's constant-time tag check).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mut m = mac(&self.salt);
        m.update(presented);
        m.verify_slice(&self.tag).is_ok()
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

/// clap's parser for `--admin-key`.
pub fn parse_admin_key(s: &str) -> Result<AdminKey, String> {
    AdminKey::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_matches_only_itself() {
        let key = AdminKey::new("0123456789abcdef-admin").unwrap();
        assert!(key.matches(b"0123456789abcdef-admin"));
        assert!(!key.matches(b"0123456789abcdef-admiN"));
        assert!(!key.matches(b"0123456789abcdef-admin "));
        assert!(!key.matches(b""));
    }

    #[test]
    fn short_or_unprintable_keys_are_refused() {
        assert!(AdminKey::new("short").is_err());
        assert!(AdminKey::new("0123456789abcdef with space").is_err());
        assert!(!format!("{:?}", AdminKey::new("0123456789abcdef").unwrap()).contains("0123"));
    }
}
