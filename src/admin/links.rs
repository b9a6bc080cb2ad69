//! `POST /api/v1/rooms/{room}/watch-links`: a short-lived watch link for a
//! room (the fleet page's Watch button).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::access::AccessQuery;
use super::error::{ApiError, ApiResult};
use super::rooms::{checked, params};
use super::views::WatchLinkRequest;
use super::{backend, Admin};
use crate::rooms::Registry;

/// A watch link's lifetime unless the request says otherwise.
pub const DEFAULT_WATCH_TTL: Duration = Duration::from_secs(300);

/// The longest lifetime a watch link may be minted for here (longer-lived
/// links: `signal-server token create`).
pub const MAX_WATCH_TTL: Duration = Duration::from_secs(3600);

/// A JSON body, or its absence (`{}`), or 400/413.
pub(super) fn body<T: serde::de::DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    required: bool,
) -> ApiResult<T> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        return Ok(T::default());
    }
    // An object, never an array (serde would read a struct from one).
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("the body is not what this takes: {e}")))
}

pub(super) async fn mint<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    path: Result<Path<String>, PathRejection>,
    request: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let caller = admin.caller(&headers, &AccessQuery::from_raw(query.as_deref()))?;
    let room = params(path)?;
    checked("room", &room)?;
    caller.operate(&room)?;
    let request: WatchLinkRequest = body(request, false)?;
    let ttl = match request.ttl_secs {
        None => DEFAULT_WATCH_TTL,
        Some(s) if (1..=MAX_WATCH_TTL.as_secs()).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`ttl_secs` must be 1 to {}",
                MAX_WATCH_TTL.as_secs()
            )))
        }
    };
    let sub = request.sub.as_deref().unwrap_or(caller.subject());
    let link = backend::mint_watch(&admin.shared, &room, sub, ttl)?;
    tracing::info!(%room, sub, jti = %link.jti, ttl_secs = ttl.as_secs(), "admin: watch link minted");
    Ok((StatusCode::CREATED, Json(link)).into_response())
}
