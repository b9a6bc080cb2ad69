//! `GET /api/v1/fleet` (the fleet now) and `GET /api/v1/events` (the same,
//! as Server-Sent Events: one `fleet` event at once, then one per change).
//!
//! A stream lives at most as long as the server lets a plain HTTP
//! connection live (`--http-timeout`); the browser's `EventSource`
//! reconnects after the `retry` the stream announces
//! ([`RECONNECT_AFTER`]) and gets the current view at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};

use super::access::{AccessQuery, Caller};
use super::error::ApiResult;
use super::views::FleetView;
use super::Admin;
use crate::rooms::Registry;

/// What the stream tells `EventSource` to wait before reconnecting.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A comment sent when nothing else was, so proxies keep the stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `view` as `caller` may see it (a room operator: its room only).
fn visible(caller: &Caller, view: &FleetView) -> FleetView {
    FleetView {
        at: view.at,
        robots: view
            .robots
            .iter()
            .filter(|r| caller.may_operate(&r.room))
            .cloned()
            .collect(),
    }
}

pub(super) async fn fleet<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let caller = admin.caller(&headers, &AccessQuery::from_raw(query.as_deref()))?;
    let view = admin.fleet.refresh(&admin.shared).await?;
    Ok(Json(visible(&caller, &view)).into_response())
}

pub(super) async fn events<R: Registry>(
    State(admin): State<Arc<Admin<R>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let caller = admin.caller(&headers, &AccessQuery::from_raw(query.as_deref()))?;
    let mut rx = admin.fleet.subscribe();
    // The first event: the view now (polled if none was taken yet).
    let first = match admin.fleet.refresh(&admin.shared).await {
        Ok(view) => view,
        Err(_) => admin.fleet.current(),
    };
    rx.borrow_and_update();
    let stop = admin.shared.shutdown.clone();
    let stream = first_then_changes(caller, first, rx, stop);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn event(caller: &Caller, view: &FleetView, first: bool) -> Event {
    let data = serde_json::to_string(&visible(caller, view)).unwrap_or_else(|_| "{}".into());
    let e = Event::default().event("fleet").data(data);
    if first {
        e.retry(RECONNECT_AFTER)
    } else {
        e
    }
}

fn first_then_changes(
    caller: Caller,
    first: Arc<FleetView>,
    rx: tokio::sync::watch::Receiver<Arc<FleetView>>,
    stop: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let head = stream::once(std::future::ready(Ok(event(&caller, &first, true))));
    let rest = stream::unfold((caller, rx, stop), |(caller, mut rx, stop)| async move {
        tokio::select! {
            _ = stop.cancelled() => None,
            changed = rx.changed() => {
                changed.ok()?;
                let view = rx.borrow_and_update().clone();
                let e = event(&caller, &view, false);
                Some((Ok(e), (caller, rx, stop)))
            }
        }
    });
    futures_util::StreamExt::chain(head, rest)
}
