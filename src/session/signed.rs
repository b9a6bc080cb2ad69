//! Token mode (`--auth token`, docs/AUTH.md): entering a named room with a
//! signed token (`{"type":"init","token":JWT}` or `?token=JWT`), and ending
//! the session when the token expires (close 4001) or is revoked (4002).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use super::{End, Session};
use crate::auth::{authorize, Action, AuthError, AuthErrorKind, Claims, Grant, SessionEnd};
use crate::protocol::{ErrorCode, Init, InitRequest, PeerError, Role};
use crate::rooms::{named_token, Registry};

/// The close code of a host replaced by another connection: a second host
/// for a named room, or a resume (in either mode).
pub const CLOSE_REPLACED: u16 = 4000;

/// A token on the upgrade's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryToken {
    /// Open mode: `?join=TOKEN` or `?watch=TOKEN`, a room's random token.
    Open(Role, String),
    /// Token mode: `?token=JWT` (already checked once before the upgrade).
    Signed(String),
}

/// What ends a session in token mode besides its socket (boxed twice so
/// that an open-mode connection pays one pointer for it).
pub(super) type TokenEnd = Box<Pin<Box<dyn Future<Output = SessionEnd> + Send>>>;

/// Completes when the session's token ends (pending without one).
pub(super) fn token_ended(end: &mut Option<TokenEnd>) -> impl Future<Output = SessionEnd> + '_ {
    poll_fn(move |cx| match end {
        Some(f) => f.as_mut().as_mut().poll(cx),
        None => Poll::Pending,
    })
}

/// The wire error for a refused token.
pub fn peer_error(err: &AuthError) -> PeerError {
    let code = match err.kind() {
        AuthErrorKind::Unauthorized => ErrorCode::Unauthorized,
        AuthErrorKind::TokenExpired => ErrorCode::TokenExpired,
        AuthErrorKind::Forbidden => ErrorCode::Forbidden,
    };
    PeerError::new(code, err.to_string())
}

/// What a verified token lets its holder do on entering: host if it grants
/// `host`, else join, else watch.
pub fn entry_action(claims: &Claims) -> Result<Action, AuthError> {
    let action = if claims.grants.contains(Grant::Host) {
        Action::Host
    } else if claims.grants.contains(Grant::Join) {
        Action::Join
    } else {
        Action::Watch
    };
    authorize(claims, action, claims.room.as_ref())?;
    Ok(action)
}

/// The role an entry action gives.
pub fn entry_role(action: Action) -> Role {
    match action {
        Action::Join => Role::Join,
        Action::Watch => Role::Watch,
        _ => Role::Host,
    }
}

impl<R: Registry> Session<R> {
    /// `init` in token mode: it must carry `token`, alone.
    pub(super) async fn enter_init_signed(&mut self, init: &Init<'_>) {
        if init.token.is_some()
            && (init.join.is_some() || init.watch.is_some() || init.resume.is_some())
        {
            return self.reply_error(&PeerError::new(
                ErrorCode::BadMessage,
                "with `token`, init takes no `join`, `watch` or `resume`",
            ));
        }
        if init.token.is_none()
            && (init.join.is_some() || init.watch.is_some() || init.resume.is_some())
        {
            return self.reply_error(&PeerError::new(
                ErrorCode::Unauthorized,
                "this server needs a signed token: send {\"type\":\"init\",\"token\":JWT} (room tokens and resume secrets are not used here)",
            ));
        }
        self.enter_signed(init.token.as_deref()).await;
    }

    /// Enters the room `token` names, as what it grants; on success the
    /// session ends when the token does.
    pub(super) async fn enter_signed(&mut self, token: Option<&str>) {
        if self.member.is_some() {
            return self.reply_error(&PeerError::new(
                ErrorCode::AlreadyInRoom,
                "this connection is already in a room; open another to enter a second one",
            ));
        }
        let auth = &self.shared.auth;
        let checked = token
            .ok_or(AuthError::Missing)
            .and_then(|t| auth.check(t))
            .and_then(|claims| entry_action(&claims).map(|a| (claims, a)));
        let (claims, action) = match checked {
            Ok(ok) => ok,
            Err(err) => {
                tracing::debug!(reason = err.reason(), "token refused");
                return self.reply_error(&peer_error(&err));
            }
        };
        // `entry_action` has checked that the token names a room.
        let Some(name) = claims.room.as_ref().map(|r| r.as_str().to_string()) else {
            return;
        };
        let token = named_token(&name, Some(entry_role(action)));
        let request = match action {
            Action::Host => InitRequest::Host(&name),
            _ => InitRequest::Attach(entry_role(action), token.as_str()),
        };
        if self.enter(request, Some(&claims)).await {
            self.token_end = Some(Box::new(Box::pin(self.shared.auth.session_end(claims))));
        }
    }

    /// The session's token expired or was revoked: the peer is told, then
    /// closed 4001 or 4002.
    pub(super) fn on_token_end(&mut self, why: SessionEnd) -> End {
        self.token_end = None;
        self.reply_error(&peer_error(&why.error()));
        let (code, reason) = why.close();
        End::Close(code, reason)
    }
}
