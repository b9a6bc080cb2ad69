//! `GET /api/v1/openapi.json`: docs/openapi.json, compiled in. It holds no
//! secret, so it needs no credential (only the API being on).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{off, Admin};
use crate::rooms::Registry;

/// The document, as kept in the repository.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub(super) async fn document<R: Registry>(State(admin): State<Arc<Admin<R>>>) -> Response {
    if admin.key.is_none() {
        return off().into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_of_openapi_3() {
        let v: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    }
}
