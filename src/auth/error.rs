//! Why a token was refused, and the protocol code each reason maps onto.
//!
//! Every refusal is one of three wire codes (the protocol's `ErrorCode` is
//! owned by the protocol module; [`AuthError::code`] gives the wire string for
//! it to map):
//!
//! | code            | HTTP | reasons                                              |
//! |-----------------|------|------------------------------------------------------|
//! | `unauthorized`  | 401  | no token, malformed, over-long, unsigned, algorithm not allowed, unknown key, bad signature, invalid claims, not valid yet, revoked |
//! | `token_expired` | 401  | `exp` reached                                        |
//! | `forbidden`     | 403  | a valid token whose grants or room do not allow the action |
//!
//! The messages are sentences meant for the person holding the token (the
//! page shows them): they never contain a secret, a key id from the server's
//! configuration, or any of the token's own bytes.

use std::fmt;

/// A refused token or action.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Token mode, and no token was presented.
    Missing,
    /// Longer than [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN) bytes; refused
    /// before any parsing.
    TooLong {
        /// The token's length in bytes.
        len: usize,
    },
    /// Not a compact JWT (three base64url parts), or a header that cannot
    /// be read.
    Malformed(&'static str),
    /// A JWT whose signature part is empty.
    Unsigned,
    /// The header's `alg` is one this server never accepts (`none`, RS256,
    /// ...) or not the algorithm of the key the token names (HS256 against an
    /// Ed25519 key, or the reverse).
    AlgorithmNotAllowed(String),
    /// The `kid` names no configured key, or there is no `kid` and no key
    /// without an id is configured.
    UnknownKey,
    /// The signature does not match the key.
    BadSignature,
    /// Signed, but the claims are missing, mistyped or inconsistent (an
    /// unknown grant, a bad room name, `exp` before `iat`, ...).
    InvalidClaims(String),
    /// `nbf` (or `iat`) is later than now, beyond the allowed clock skew.
    NotYetValid,
    /// `exp` is now or in the past.
    Expired,
    /// Revoked by its `jti`, its subject, or its room.
    Revoked,
    /// A valid token that does not allow this action (missing grant, other
    /// room).
    Forbidden(String),
}

/// The three outcomes a client is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthErrorKind {
    /// `unauthorized`: the token proves nothing (HTTP 401).
    Unauthorized,
    /// `token_expired`: it did, until `exp` (HTTP 401).
    TokenExpired,
    /// `forbidden`: it proves who you are, and that is not enough (HTTP 403).
    Forbidden,
}

impl AuthErrorKind {
    /// The wire code, for the protocol's `ErrorCode`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthErrorKind::Unauthorized => "unauthorized",
            AuthErrorKind::TokenExpired => "token_expired",
            AuthErrorKind::Forbidden => "forbidden",
        }
    }

    /// The HTTP status of a refused upgrade.
    pub fn http_status(self) -> u16 {
        match self {
            AuthErrorKind::Unauthorized | AuthErrorKind::TokenExpired => 401,
            AuthErrorKind::Forbidden => 403,
        }
    }
}

impl AuthError {
    /// Which of the three outcomes this is.
    pub fn kind(&self) -> AuthErrorKind {
        match self {
            AuthError::Expired => AuthErrorKind::TokenExpired,
            AuthError::Forbidden(_) => AuthErrorKind::Forbidden,
            _ => AuthErrorKind::Unauthorized,
        }
    }

    /// The wire code: `unauthorized`, `token_expired` or `forbidden`.
    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The HTTP status for a refused upgrade: 401 or 403.
    pub fn http_status(&self) -> u16 {
        self.kind().http_status()
    }

    /// A short stable label for metrics and logs (`bad_signature`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::TooLong { .. } => "too_long",
            AuthError::Malformed(_) => "malformed",
            AuthError::Unsigned => "unsigned",
            AuthError::AlgorithmNotAllowed(_) => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::InvalidClaims(_) => "invalid_claims",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Expired => "expired",
            AuthError::Revoked => "revoked",
            AuthError::Forbidden(_) => "forbidden",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("this server needs a token"),
            AuthError::TooLong { len } => write!(
                f,
                "the token is {len} bytes long; at most {} are accepted",
                super::MAX_TOKEN_LEN
            ),
            AuthError::Malformed(what) => write!(f, "the token is not a valid JWT: {what}"),
            AuthError::Unsigned => f.write_str("the token is not signed"),
            AuthError::AlgorithmNotAllowed(alg) => {
                write!(f, "the token's algorithm is not accepted: {alg}")
            }
            AuthError::UnknownKey => {
                f.write_str("the token is signed with a key this server does not have")
            }
            AuthError::BadSignature => f.write_str("the token's signature is wrong"),
            AuthError::InvalidClaims(what) => write!(f, "the token's claims are invalid: {what}"),
            AuthError::NotYetValid => f.write_str("the token is not valid yet"),
            AuthError::Expired => f.write_str("the token has expired"),
            AuthError::Revoked => f.write_str("the token has been revoked"),
            AuthError::Forbidden(what) => write!(f, "the token does not allow this: {what}"),
        }
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_maps_onto_one_of_the_three_wire_codes() {
        let cases = [
            (AuthError::Missing, "unauthorized", 401),
            (AuthError::TooLong { len: 5000 }, "unauthorized", 401),
            (AuthError::Malformed("x"), "unauthorized", 401),
            (AuthError::Unsigned, "unauthorized", 401),
            (
                AuthError::AlgorithmNotAllowed("none".into()),
                "unauthorized",
                401,
            ),
            (AuthError::UnknownKey, "unauthorized", 401),
            (AuthError::BadSignature, "unauthorized", 401),
            (AuthError::InvalidClaims("x".into()), "unauthorized", 401),
            (AuthError::NotYetValid, "unauthorized", 401),
            (AuthError::Revoked, "unauthorized", 401),
            (AuthError::Expired, "token_expired", 401),
            (AuthError::Forbidden("x".into()), "forbidden", 403),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.http_status(), status, "{err:?}");
            assert!(!err.to_string().is_empty());
            assert!(!err.reason().is_empty());
        }
    }
}
