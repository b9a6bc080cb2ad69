//! The admin API (`/api/v1/`, issue 13) and the fleet page (`/fleet`,
//! issue 14), on the server's own port.
//!
//! Off unless an admin key is set (`--admin-key`,
//! `SIGNAL_SERVER_ADMIN_KEY`): then every `/api/v1/` path answers 404 and
//! `/fleet` 401. With a key, each request needs `Authorization: Bearer KEY`
//! (or, for the page and its event stream, `?access_token=`); a token with
//! the `operator` grant (token mode) may read the fleet and mint watch
//! links. Errors are `{"error":{"code":..,"message":..}}`. The contract is
//! docs/openapi.json, served at `/api/v1/openapi.json`.
//!
//! - `key.rs`: the admin key and its constant-time check;
//! - `access.rs`: who is calling (admin key or operator token);
//! - `error.rs`: the JSON errors; `views.rs`: the JSON bodies;
//! - `backend.rs`: the registry's and the auth state's operations, the
//!   only way out of this module;
//! - `rooms.rs`: list, show, close, kick; `links.rs`: watch links;
//!   `revoke.rs`: revocations;
//! - `fleet.rs`: the fleet view (polled, offline robots remembered);
//!   `events.rs`: its Server-Sent Events; `page.rs`: `/fleet`;
//!   `openapi.rs`: the document.

mod access;
mod args;
mod backend;
mod error;
mod events;
mod fleet;
mod key;
mod links;
mod openapi;
mod page;
mod revoke;
mod rooms;
mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{delete, get, post};
use axum::Router;

pub use args::AdminArgs;
pub use error::{ApiError, ApiResult};
pub use fleet::{FORGET_AFTER, MAX_REMEMBERED, POLL_INTERVAL};
pub use key::{parse_admin_key, AdminKey, MIN_ADMIN_KEY_LEN};
pub use views::{FleetView, PeerView, RobotView, RoomView, Viewers};

use crate::assets::StaticFiles;
use crate::rooms::Registry;
use crate::session::Shared;
use access::{AccessQuery, Caller};

/// Largest request body the admin API reads, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the admin routes share.
struct Admin<R> {
    shared: Shared<R>,
    /// `None`: the API is off.
    key: Option<AdminKey>,
    fleet: Arc<fleet::Fleet>,
    files: StaticFiles,
}

impl<R: Registry> Admin<R> {
    /// The caller of a request, or why it is refused (401; 404 when the API
    /// is off).
    fn caller(&self, headers: &HeaderMap, query: &AccessQuery) -> ApiResult<Caller> {
        let Some(key) = &self.key else {
            return Err(off());
        };
        let credential = access::credential(headers, query)?;
        let check = backend::operator_check(&self.shared);
        let check = check.as_ref().map(|f| f as &dyn Fn(&str) -> ApiResult<_>);
        access::caller(key, credential, check)
    }
}

fn off() -> ApiError {
    ApiError::not_found("the admin API is off: start the server with --admin-key")
}

/// The `/api/v1/` routes and `/fleet`, to merge into the server's router;
/// with an admin key, starts the fleet poller (until `shared.shutdown`).
pub fn routes<R: Registry>(shared: Shared<R>) -> Router {
    let key = shared.config.admin_key.clone();
    let fleet = Arc::new(fleet::Fleet::default());
    if key.is_some() {
        tokio::spawn(Arc::clone(&fleet).run(shared.clone(), shared.shutdown.clone()));
    }
    let admin = Arc::new(Admin {
        files: StaticFiles::new(shared.config.static_dir.clone()),
        shared,
        key,
        fleet,
    });
    Router::new()
        .route("/fleet", get(page::fleet::<R>))
        .route("/api/v1/openapi.json", get(openapi::document::<R>))
        .route("/api/v1/rooms", get(rooms::list::<R>))
        .route(
            "/api/v1/rooms/{room}",
            get(rooms::show::<R>).delete(rooms::close::<R>),
        )
        .route(
            "/api/v1/rooms/{room}/peers/{peer}",
            delete(rooms::kick::<R>),
        )
        .route("/api/v1/rooms/{room}/watch-links", post(links::mint::<R>))
        .route("/api/v1/revocations", post(revoke::revoke::<R>))
        .route("/api/v1/fleet", get(events::fleet::<R>))
        .route("/api/v1/events", get(events::events::<R>))
        .route("/api/v1", get(rooms::unknown::<R>))
        .route("/api/v1/", get(rooms::unknown::<R>))
        .route("/api/v1/{*rest}", axum::routing::any(rooms::unknown::<R>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(admin)
}
