//! `/fleet`: the fleet page, for the admin key or an operator token only
//! (401 otherwise, also when the API is off).

use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::AccessQuery;
use super::Admin;
use crate::rooms::Registry;

const REFUSED: &str = "<!doctype html><meta charset=utf-8><title>Fleet: key needed</title>\
<h1>The fleet page needs a key</h1>\
<p>Open <code>/fleet?access_token=KEY</code> with the server's admin key \
(<code>--admin-key</code>) or a token with the <code>operator</code> grant \
(<code>signal-server token create --grant operator</code>).</p>\n";

pub(super) async fn fleet<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let query = AccessQuery::from_raw(query.as_deref());
    let allowed = admin.key.is_some() && admin.caller(request.headers(), &query).is_ok();
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"signal-server fleet\""),
                ),
            ],
            REFUSED,
        )
            .into_response();
    }
    let (mut parts, body) = request.into_parts();
    parts.uri = axum::http::Uri::from_static("/fleet.html");
    let mut response = admin.files.serve(Request::from_parts(parts, body)).await;
    let headers = response.headers_mut();
    // The key is in the page's URL: never send it on, never keep the page.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
