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

/// Longest room name or label, and peer id, a path may carry.
pub const MAX_PATH_PARAM: usize = 256;

/// A path's parameters, or 400.
pub(super) fn params<T>(path: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    let Path(t) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(t)
}

fn checked(what: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() || value.len() > MAX_PATH_PARAM {
        return Err(ApiError::bad_request(format!(
            "the {what} must be 1 to {MAX_PATH_PARAM} bytes"
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
