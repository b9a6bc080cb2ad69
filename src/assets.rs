//! The demo page: embedded in the binary (so it runs from any directory), or
//! read from a directory given with `--static-dir` while developing it.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use tower::ServiceExt as _;
use tower_http::services::ServeDir;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Embedded;

/// Where the page's files come from.
#[derive(Clone)]
pub enum StaticFiles {
    /// Compiled into the binary.
    Embedded,
    /// Served from a directory on disk.
    Dir(ServeDir),
}

impl StaticFiles {
    /// Embedded files, or the directory when one is given.
    pub fn new(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(dir) => StaticFiles::Dir(ServeDir::new(dir)),
            None => StaticFiles::Embedded,
        }
    }

    /// Answers a GET or HEAD for a file; 404 when there is none.
    pub async fn serve(&self, request: Request) -> Response {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        let mut response = match self {
            StaticFiles::Embedded => embedded(request.uri().path()),
            StaticFiles::Dir(dir) => match dir.clone().oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(never) => match never {},
            },
        };
        let headers = response.headers_mut();
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

fn embedded(path: &str) -> Response {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match Embedded::get(path) {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..8]));
            (
                [
                    (header::CONTENT_TYPE, mime.as_ref().to_string()),
                    (header::ETAG, etag),
                ],
                file.data.into_owned(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
