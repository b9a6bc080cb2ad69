//! `GET /api/v1/rooms`, `GET|DELETE /api/v1/rooms/{room}`,
//! `DELETE /api/v1/rooms/{room}/peers/{peer}`.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::access::AccessQuery;
use super::error::{ApiError, ApiResult};
use super::{backend, Admin};
use crate::rooms::Registry;

/// Longest room name or label, and peer id, a path may carry (a room
/// name's maximum; labels and peer ids are 8 characters).
pub const MAX_PATH_PARAM: usize = 64;

/// A path's parameters, or 400.
pub(super) fn params<T>(path: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    let Path(t) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(t)
}

/// A room or peer id as the path carries it: `[A-Za-z0-9._-]{1,64}` (the
/// document's `Name`), else 400.
pub(super) fn checked(what: &str, value: &str) -> ApiResult<()> {
    let ok = (1..=MAX_PATH_PARAM).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "the {what} must be 1 to {MAX_PATH_PARAM} of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

pub(super) async fn list<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let caller = admin.caller(&headers, &AccessQuery::from_raw(query.as_deref()))?;
    let rooms: Vec<_> = backend::rooms(&admin.shared)
        .await?
        .into_iter()
        .filter(|r| caller.may_operate(&r.room))
        .collect();
    Ok(Json(json!({ "rooms": rooms })).into_response())
}

pub(super) async fn show<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let caller = admin.caller(&headers, &AccessQuery::from_raw(query.as_deref()))?;
    let room = params(path)?;
    checked("room", &room)?;
    caller.operate(&room)?;
    backend::rooms(&admin.shared)
        .await?
        .into_iter()
        .find(|r| r.room == room)
        .map(|r| Json(r).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no room `{room}`")))
}

pub(super) async fn close<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    admin
        .caller(&headers, &AccessQuery::from_raw(query.as_deref()))?
        .admin_only()?;
    let room = params(path)?;
    checked("room", &room)?;
    if backend::close_room(&admin.shared, &room).await? {
        tracing::info!(%room, "admin: room closed");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no room `{room}`")))
    }
}

pub(super) async fn kick<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    admin
        .caller(&headers, &AccessQuery::from_raw(query.as_deref()))?
        .admin_only()?;
    let (room, peer) = params(path)?;
    checked("room", &room)?;
    checked("peer id", &peer)?;
    if backend::kick(&admin.shared, &room, &peer).await? {
        tracing::info!(%room, %peer, "admin: peer kicked");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!(
            "no peer `{peer}` in room `{room}`"
        )))
    }
}

/// Any other `/api/v1/` path: 404 (after the credential check, so that an
/// unauthenticated caller learns nothing of which paths exist).
pub(super) async fn unknown<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    admin.caller(&headers, &AccessQuery::from_raw(query.as_deref()))?;
    Err(ApiError::not_found(
        "no such endpoint (see /api/v1/openapi.json)",
    ))
}
