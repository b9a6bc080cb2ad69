//! Access control as a running server holds it: the [`Auth`] handle every
//! session shares (`session::Shared::auth`), and what ends a live session
//! ([`SessionEnd`]: its token's expiry, or a revocation covering it).
//!
//! The admin API takes the same handle: [`Auth::keys`] mints tokens,
//! [`Auth::revocations`] lists what is revoked, and [`Auth::revoke`]
//! records a revocation, keeps it (in Redis when the server shares its
//! rooms through Redis, see `store.rs`), sends it to every instance, and
//! so ends the live sessions it covers within a second everywhere.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::claims::Claims;
use super::store::RevocationStore;
use super::{
    AuthConfig, AuthError, KeyRing, Revocation, RevocationError, RevocationList, RevocationTarget,
    DEFAULT_MAX_TOKEN_LIFETIME,
};

/// Why a live session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Its token's `exp` was reached: close 4001.
    Expired,
    /// A revocation covers its token: close 4002.
    Revoked,
}

/// The close code of a session whose token expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// The close code of a session whose token was revoked.
pub const CLOSE_TOKEN_REVOKED: u16 = 4002;

impl SessionEnd {
    /// The close code (4001 or 4002) and its reason.
    pub fn close(self) -> (u16, &'static str) {
        match self {
            SessionEnd::Expired => (CLOSE_TOKEN_EXPIRED, "token expired"),
            SessionEnd::Revoked => (CLOSE_TOKEN_REVOKED, "token revoked"),
        }
    }

    /// The refusal the peer is told before the close.
    pub fn error(self) -> AuthError {
        match self {
            SessionEnd::Expired => AuthError::Expired,
            SessionEnd::Revoked => AuthError::Revoked,
        }
    }
}

/// A revocation that could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum RevokeError {
    /// The local list is full (see [`RevocationList`]).
    Full(RevocationError),
    /// Redis did not take it: applied on this instance only, not kept.
    Store(String),
}

impl std::fmt::Display for RevokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevokeError::Full(e) => e.fmt(f),
            RevokeError::Store(e) => write!(
                f,
                "revoked on this instance only: Redis did not store it ({e}); try again"
            ),
        }
    }
}

impl std::error::Error for RevokeError {}

/// The server's access control: shared by every session (`shared.auth`) and
/// by the admin API. Cheap to share (`Arc<Auth>`).
#[derive(Debug)]
pub struct Auth {
    keys: Option<Arc<KeyRing>>,
    revocations: Arc<RevocationList>,
    store: OnceLock<RevocationStore>,
}

impl Auth {
    /// The access control `config` sets. Revocations are local until
    /// [`Auth::share_through_redis`].
    pub fn new(config: &AuthConfig) -> Arc<Auth> {
        let keys = match config {
            AuthConfig::Open => None,
            AuthConfig::Token(keys) => Some(Arc::clone(keys)),
        };
        let lifetime = keys
            .as_ref()
            .map_or(DEFAULT_MAX_TOKEN_LIFETIME, |k| k.max_lifetime());
        Arc::new(Auth {
            keys,
            revocations: Arc::new(RevocationList::new(lifetime)),
            store: OnceLock::new(),
        })
    }

    /// Open mode: nothing is checked.
    pub fn open() -> Arc<Auth> {
        Self::new(&AuthConfig::Open)
    }

    /// Keeps revocations in Redis and hears of every instance's (see
    /// `store.rs`); the background task stops with `stop`. Called once, by
    /// the server, before it accepts connections.
    pub fn share_through_redis(
        self: &Arc<Self>,
        opts: &crate::rooms::RedisOptions,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let store = RevocationStore::start(opts, Arc::clone(&self.revocations), stop)?;
        let _ = self.store.set(store);
        Ok(())
    }

    /// Whether tokens are checked (`--auth token`).
    pub fn is_token_mode(&self) -> bool {
        self.keys.is_some()
    }

    /// The keys (token mode only): [`KeyRing::mint`] makes tokens this
    /// server accepts, when one of them can sign.
    pub fn keys(&self) -> Option<&Arc<KeyRing>> {
        self.keys.as_ref()
    }

    /// The revocations this instance knows of (every instance's, with
    /// Redis).
    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
    }

    /// Whether revocations are kept in Redis.
    pub fn shared_through_redis(&self) -> bool {
        self.store.get().is_some()
    }

    /// Checks `token`: signature, claims, times, then revocation. Open mode
    /// accepts nothing (there are no keys): callers check the mode first.
    pub fn check(&self, token: &str) -> Result<Claims, AuthError> {
        let Some(keys) = &self.keys else {
            return Err(AuthError::UnknownKey);
        };
        let claims = keys.verify(token)?;
        if self.revocations.is_revoked(&claims) {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    /// Revokes `target`: applied here at once (ending this instance's
    /// sessions it covers), then, with Redis, stored (it survives restarts)
    /// and published to every instance, whose sessions it ends as soon as
    /// they receive it (well within a second). Returns what was recorded.
    pub async fn revoke(&self, target: RevocationTarget) -> Result<Revocation, RevokeError> {
        let revocation = self.revocations.revoke(target).map_err(RevokeError::Full)?;
        if let Some(store) = self.store.get() {
            store.put(&revocation).await.map_err(RevokeError::Store)?;
        }
        tracing::info!(
            target = ?revocation.target,
            expires_at = revocation.expires_at,
            "token revocation"
        );
        Ok(revocation)
    }

    /// Completes when the session holding `claims` must end: at `exp`, or
    /// as soon as a revocation covering it is applied here.
    pub fn session_end(
        self: &Arc<Self>,
        claims: Claims,
    ) -> impl Future<Output = SessionEnd> + Send {
        let auth = Arc::clone(self);
        async move {
            // A token is valid while now < exp: the session ends when the
            // clock reaches `exp`, to the millisecond.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let left = u128::from(claims.exp)
                .saturating_mul(1000)
                .saturating_sub(now_ms);
            let left = Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX));
            let deadline = tokio::time::Instant::now() + left;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => SessionEnd::Expired,
                _ = auth.revocations.wait_revoked(&claims) => SessionEnd::Revoked,
            }
        }
    }
}
