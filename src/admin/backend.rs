//! The one place the admin API reaches the rest of the server: the
//! registry's room operations (`Registry::rooms`, `close_room`, `kick`,
//! from the lifecycle work) and the auth state (`shared.auth`: mint,
//! verify, revoke, from the auth work). Everything else in `admin/` is
//! written against these functions and the views of `views.rs`.
//!
//! PENDING: until those two branches are merged, the operations answer 501
//! `not_implemented` (and operator tokens are not accepted).

use std::time::Duration;

use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use super::views::{RevocationRequest, RoomView, WatchLink};
use crate::auth::{unix_now, Claims, RevocationTarget, RoomName, Subject, TokenId};
use crate::rooms::Registry;
use crate::session::Shared;

fn pending(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        format!("{what} is not available in this build yet"),
    )
}

/// Every room of the registry (all instances with Redis).
pub async fn rooms<R: Registry>(_shared: &Shared<R>) -> ApiResult<Vec<RoomView>> {
    Err(pending("listing rooms"))
}

/// Closes room `room` (name or label); `false` when there is none.
pub async fn close_room<R: Registry>(_shared: &Shared<R>, _room: &str) -> ApiResult<bool> {
    Err(pending("closing a room"))
}

/// Kicks peer `peer` of room `room`; `false` when there is no such peer.
pub async fn kick<R: Registry>(_shared: &Shared<R>, _room: &str, _peer: &str) -> ApiResult<bool> {
    Err(pending("kicking a peer"))
}

/// Mints a watch token for `room`, for `sub`, valid `ttl`.
pub fn mint_watch<R: Registry>(
    _shared: &Shared<R>,
    _room: &str,
    _sub: &str,
    _ttl: Duration,
) -> ApiResult<WatchLink> {
    Err(pending("minting a watch link"))
}

/// The auth module's revocation target for `request` (names checked: 400).
pub fn target(request: RevocationRequest, now: u64) -> ApiResult<RevocationTarget> {
    let bad = |what: &str, e: crate::auth::NameError| ApiError::bad_request(format!("{what}: {e}"));
    Ok(match request {
        RevocationRequest::Token { jti, exp } => RevocationTarget::Token {
            jti: TokenId::new(jti).map_err(|e| bad("jti", e))?,
            exp,
        },
        RevocationRequest::Subject { sub, issued_before } => RevocationTarget::Subject {
            sub: Subject::new(sub).map_err(|e| bad("sub", e))?,
            issued_before: issued_before.unwrap_or(now + 1),
        },
        RevocationRequest::Room {
            room,
            issued_before,
        } => RevocationTarget::Room {
            room: RoomName::new(room).map_err(|e| bad("room", e))?,
            issued_before: issued_before.unwrap_or(now + 1),
        },
    })
}

/// Revokes what `request` says, persisted and applied to live sessions;
/// answers the revocation as stored.
pub async fn revoke<R: Registry>(
    _shared: &Shared<R>,
    request: RevocationRequest,
) -> ApiResult<serde_json::Value> {
    let _target = target(request, unix_now())?;
    Err(pending("revocation"))
}

/// Checks an operator token: `None` when the server does not check tokens
/// (open mode), so only the admin key is accepted.
pub fn operator_check<R: Registry>(
    _shared: &Shared<R>,
) -> Option<impl Fn(&str) -> ApiResult<Claims> + '_> {
    None::<fn(&str) -> ApiResult<Claims>>
}
