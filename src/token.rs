//! Random identifiers: room tokens, resume secrets and peer ids.
//!
//! Tokens are bearer credentials (whoever holds `join` may publish into the
//! room), so they come straight from the operating system's CSPRNG and are never
//! logged in full: use [`redact`] wherever one may reach a log line.

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

/// A new room token (`join`, `watch`) or resume secret: 16 URL-safe characters.
pub fn new_token() -> String {
    random_b64::<TOKEN_BYTES>()
}

/// A new peer id: 8 URL-safe characters.
pub fn new_peer_id() -> String {
    random_b64::<PEER_ID_BYTES>()
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
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(is_token_shaped(&t), "{t}");
            let p = new_peer_id();
            assert_eq!(p.len(), PEER_ID_LEN);
            assert!(is_peer_id_shaped(&p), "{p}");
        }
    }

    #[test]
    fn a_hundred_thousand_tokens_never_collide() {
        let n = 100_000;
        let set: HashSet<String> = (0..n).map(|_| new_token()).collect();
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
}
