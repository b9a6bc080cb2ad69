//! The one place the admin API reaches the rest of the server: the
//! registry's room operations (`Registry::rooms`, `close_room`, `kick`)
//! and the auth state (`shared.auth`: mint, check, revoke). Everything
//! else in `admin/` is written against these functions and the views of
//! `views.rs`.

use std::time::Duration;

use super::error::{ApiError, ApiResult};
use super::views::{PeerView, RevocationRequest, RoomView, WatchLink};
use crate::auth::{
    unix_now, Claims, Grant, Grants, MintError, RevocationTarget, RevokeError, RoomName, Subject,
    TokenId, TokenRequest,
};
use crate::protocol::PeerError;
use crate::rooms::{Registry, RoomInfo};
use crate::session::Shared;

/// A registry failure: its store (Redis) cannot answer now.
fn registry_error(e: PeerError) -> ApiError {
    ApiError::unavailable(format!("the room registry cannot answer now: {e:?}"))
}

fn view(info: RoomInfo) -> RoomView {
    RoomView {
        named: info.name.is_some(),
        room: info.name.unwrap_or(info.label),
        host_connected: info.host_connected,
        since: info.host_since,
        peers: info
            .peers
            .into_iter()
            .map(|p| PeerView {
                id: p.id.into_string(),
                role: p.role.as_str().to_string(),
                since: p.since,
            })
            .collect(),
    }
}

/// Every room of the registry (all instances with Redis), by name.
pub async fn rooms<R: Registry>(shared: &Shared<R>) -> ApiResult<Vec<RoomView>> {
    let mut rooms: Vec<RoomView> = shared
        .registry
        .rooms()
        .await
        .map_err(registry_error)?
        .into_iter()
        .map(view)
        .collect();
    rooms.sort_by(|a, b| a.room.cmp(&b.room));
    Ok(rooms)
}

/// The label of the open room named or labelled `room`.
async fn label_of<R: Registry>(shared: &Shared<R>, room: &str) -> ApiResult<Option<String>> {
    let rooms = shared.registry.rooms().await.map_err(registry_error)?;
    Ok(rooms
        .into_iter()
        .find(|r| r.name.as_deref() == Some(room) || r.label == room)
        .map(|r| r.label))
}

/// Closes room `room` (name or label); `false` when there is none.
pub async fn close_room<R: Registry>(shared: &Shared<R>, room: &str) -> ApiResult<bool> {
    let Some(label) = label_of(shared, room).await? else {
        return Ok(false);
    };
    shared
        .registry
        .close_room(&label)
        .await
        .map_err(registry_error)
}

/// Kicks peer `peer` of room `room` (name or label); `false` when there is
/// no such peer.
pub async fn kick<R: Registry>(shared: &Shared<R>, room: &str, peer: &str) -> ApiResult<bool> {
    let Some(label) = label_of(shared, room).await? else {
        return Ok(false);
    };
    shared
        .registry
        .kick(&label, peer)
        .await
        .map_err(registry_error)
}

/// Mints a watch token for the room named `room`, for `sub`, valid `ttl`.
pub fn mint_watch<R: Registry>(
    shared: &Shared<R>,
    room: &str,
    sub: &str,
    ttl: Duration,
) -> ApiResult<WatchLink> {
    let Some(keys) = shared.auth.keys() else {
        return Err(ApiError::conflict(
            "watch links are signed tokens: start the server with --auth token",
        ));
    };
    let request = TokenRequest {
        sub: Subject::new(sub).map_err(|e| ApiError::bad_request(format!("sub: {e}")))?,
        room: Some(RoomName::new(room).map_err(|e| ApiError::bad_request(format!("room: {e}")))?),
        grants: Grants::new([Grant::Watch])
            .unwrap_or_else(|| unreachable!("one grant is not empty")),
        ttl,
    };
    let minted = keys.mint(&request).map_err(|e| match e {
        MintError::NoSigningKey => ApiError::conflict(e.to_string()),
        MintError::Invalid(why) => ApiError::bad_request(why),
        other => ApiError::conflict(other.to_string()),
    })?;
    Ok(WatchLink {
        path: format!("/?token={}", minted.token),
        room: room.to_string(),
        jti: minted.claims.jti.as_str().to_string(),
        expires_at: minted.claims.exp,
        token: minted.token,
    })
}

/// The largest time a request may give (JavaScript's largest safe integer,
/// as the document says).
pub const MAX_TIME: u64 = (1 << 53) - 1;

/// The auth module's revocation target for `request` (names checked: 400).
pub fn target(request: RevocationRequest, now: u64) -> ApiResult<RevocationTarget> {
    let bad = |what: &str, e: crate::auth::NameError| ApiError::bad_request(format!("{what}: {e}"));
    let time = |what: &str, t: Option<u64>| match t {
        Some(t) if t > MAX_TIME => Err(ApiError::bad_request(format!(
            "`{what}` must be at most {MAX_TIME}"
        ))),
        t => Ok(t),
    };
    Ok(match request {
        RevocationRequest::Token { jti, exp } => RevocationTarget::Token {
            jti: TokenId::new(jti).map_err(|e| bad("jti", e))?,
            exp: time("exp", exp)?,
        },
        RevocationRequest::Subject { sub, issued_before } => RevocationTarget::Subject {
            sub: Subject::new(sub).map_err(|e| bad("sub", e))?,
            issued_before: time("issued_before", issued_before)?.unwrap_or(now + 1),
        },
        RevocationRequest::Room {
            room,
            issued_before,
        } => RevocationTarget::Room {
            room: RoomName::new(room).map_err(|e| bad("room", e))?,
            issued_before: time("issued_before", issued_before)?.unwrap_or(now + 1),
        },
    })
}

/// Revokes what `request` says, persisted and applied to live sessions;
/// answers the revocation as stored.
pub async fn revoke<R: Registry>(
    shared: &Shared<R>,
    request: RevocationRequest,
) -> ApiResult<serde_json::Value> {
    let target = target(request, unix_now())?;
    if !shared.auth.is_token_mode() {
        return Err(ApiError::conflict(
            "this server checks no tokens (--auth open): there is nothing to revoke",
        ));
    }
    let stored = shared.auth.revoke(target).await.map_err(|e| match e {
        RevokeError::Store(_) => ApiError::unavailable(e.to_string()),
        other => ApiError::unavailable(other.to_string()),
    })?;
    // The webhook, once: from the instance that took the request.
    shared
        .registry
        .events()
        .emit_webhook(crate::webhooks::Event::token_revoked(revoked_event(
            &stored.target,
        )));
    serde_json::to_value(&stored)
        .map_err(|e| ApiError::unavailable(format!("cannot render the revocation: {e}")))
}

/// What a `token_revoked` webhook says of a revocation.
fn revoked_event(target: &RevocationTarget) -> crate::webhooks::Revocation {
    use crate::webhooks::Revocation as Revoked;
    let at = |secs: u64| std::time::UNIX_EPOCH + Duration::from_secs(secs);
    match target {
        RevocationTarget::Token { jti, .. } => Revoked::Jti {
            jti: jti.as_str().to_owned(),
        },
        RevocationTarget::Subject { sub, .. } => Revoked::Subject {
            sub: sub.as_str().to_owned(),
        },
        RevocationTarget::Room {
            room,
            issued_before,
        } => Revoked::Room {
            room: room.as_str().to_owned(),
            issued_before: at(*issued_before),
        },
    }
}

/// Checks an operator token (signature, times, revocation, the `operator`
/// grant): `None` when the server does not check tokens (open mode), so
/// only the admin key is accepted.
pub fn operator_check<R: Registry>(
    shared: &Shared<R>,
) -> Option<impl Fn(&str) -> ApiResult<Claims> + '_> {
    shared.auth.is_token_mode().then_some(|token: &str| {
        let claims = shared.auth.check(token).map_err(|e| {
            let message = format!("the token is refused: {e}");
            match e.http_status() {
                403 => ApiError::forbidden(message),
                _ => ApiError::unauthorized(message),
            }
        })?;
        if !claims.grants.contains(Grant::Operator) {
            return Err(ApiError::forbidden(format!(
                "the token grants {} but not operator",
                claims.grants
            )));
        }
        Ok(claims)
    })
}
