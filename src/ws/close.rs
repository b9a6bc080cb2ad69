//! WebSocket close codes (RFC 6455 §7.4): the ones the server sends, and
//! which ones a peer may send.

/// Normal closure (the room ended, or an answer to a close without a code).
pub const NORMAL: u16 = 1000;
/// Going away (server shutdown).
pub const GOING_AWAY: u16 = 1001;
/// Protocol error at the WebSocket layer.
pub const PROTOCOL: u16 = 1002;
/// A text message that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// Policy violation (idle, ping timeout, persistent flooding).
pub const POLICY: u16 = 1008;
/// Message too big.
pub const TOO_BIG: u16 = 1009;

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4.1 and
/// the IANA registry; 1004-1006 and 1015 are never sent on the wire).
pub fn valid_from_peer(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_unassigned_codes_are_not_accepted_from_peers() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(valid_from_peer(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000] {
            assert!(!valid_from_peer(bad), "{bad}");
        }
    }
}
