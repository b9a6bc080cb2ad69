//! Access control: signed, expiring tokens that say who may do what in which
//! room (issue 13's core), after LiveKit's access tokens.
//!
//! - [`KeyRing`] (`keys.rs`): the configured keys, HS256 secrets and Ed25519
//!   keys, each with an optional `kid`; [`KeyRing::verify`] checks a token
//!   and [`KeyRing::mint`] makes one (`verify.rs`).
//! - [`Claims`], [`Grant`], [`authorize`] (`claims.rs`): what a token says,
//!   and whether it allows an [`Action`] on a room.
//! - [`AuthError`] (`error.rs`): every refusal, each mapping onto one wire
//!   code (`unauthorized`, `token_expired`, `forbidden`) and HTTP status.
//! - [`RevocationList`] (`revocation.rs`): revoked tokens, and a way for live
//!   sessions to hear of a revocation at once.
//! - [`AuthArgs`], [`AuthConfig`] (`args.rs`): `--auth open|token` and the
//!   key flags; `tool.rs`: `signal-server token create`.
//! - [`Auth`] (`live.rs`): what a running server holds (`shared.auth`):
//!   the keys, the revocations, [`Auth::revoke`], and the future that ends
//!   a session at its token's expiry or revocation; `store.rs` keeps
//!   revocations in Redis and applies every instance's.
//! - `names.rs`: the checked names tokens carry ([`RoomName`], [`Subject`],
//!   [`TokenId`], [`KeyId`]).
//!
//! A server in token mode does, per connection:
//!
//! ```no_run
//! # use signal_server::auth::*;
//! # fn f(ring: &KeyRing, revoked: &RevocationList, jwt: &str) -> Result<(), AuthError> {
//! let claims = ring.verify(jwt)?;                               // 401
//! if revoked.is_revoked(&claims) { return Err(AuthError::Revoked); } // 401
//! let room = claims.room.clone();
//! authorize(&claims, Action::Watch, room.as_ref())?;              // 403
//! // ... then end the session at `claims.exp` or on `revoked.wait_revoked(&claims)`.
//! # Ok(()) }
//! ```
//!
//! The user's side is docs/AUTH.md.

mod args;
mod claims;
mod error;
mod keys;
mod live;
mod names;
mod provider;
mod revocation;
mod store;
pub mod tool;
mod verify;

pub use args::{AuthArgs, AuthConfig, AuthMode, KeyArgs, PathSpec, Secret, SecretSpec};
pub use claims::{authorize, Action, Claims, Grant, Grants};
pub use error::{AuthError, AuthErrorKind};
pub use keys::{KeyError, KeyRing, KeyRingBuilder, DEFAULT_MAX_TOKEN_LIFETIME, MIN_SECRET_LEN};
pub use live::{Auth, RevokeError, SessionEnd, CLOSE_TOKEN_EXPIRED, CLOSE_TOKEN_REVOKED};
pub use names::{
    KeyId, NameError, RoomName, Subject, TokenId, MAX_KEY_ID_LEN, MAX_ROOM_NAME_LEN,
    MAX_SUBJECT_LEN, MAX_TOKEN_ID_LEN,
};
pub use revocation::{
    Revocation, RevocationError, RevocationList, RevocationTarget, DEFAULT_REVOCATION_CAPACITY,
};
pub use verify::{
    unix_now, MintError, Minted, TokenRequest, MAX_TOKEN_LEN, NOT_BEFORE_LEEWAY_SECS,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_handles_can_cross_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<KeyRing>();
        shared::<RevocationList>();
        shared::<AuthConfig>();
        shared::<Claims>();
        shared::<AuthError>();
    }
}
