//! `POST /api/v1/revocations`: revoke tokens by `jti`, by subject, or every
//! token of a room issued before a time; live sessions they opened end.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::access::AccessQuery;
use super::error::ApiResult;
use super::links::body;
use super::views::RevocationRequest;
use super::{backend, Admin};
use crate::rooms::Registry;

impl Default for RevocationRequest {
    // Never used: the body is required.
    fn default() -> Self {
        RevocationRequest::Token {
            jti: String::new(),
            exp: None,
        }
    }
}

pub(super) async fn revoke<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    request: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    admin
        .caller(&headers, &AccessQuery::from_raw(query.as_deref()))?
        .admin_only()?;
    let request: RevocationRequest = body(request, true)?;
    let stored = backend::revoke(&admin.shared, request).await?;
    tracing::info!(revocation = %stored, "admin: tokens revoked");
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}
