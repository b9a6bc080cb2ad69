//! The shared registry: several instances serve the same rooms through Redis.
//!
//! Rooms, tokens, membership and host-resume state live in Redis (Lua scripts
//! in [`lua`], each called through one typed function of [`scripts`], change
//! them atomically and publish what changed). Each instance subscribes to its
//! own channel, `{prefix}i:{instance}` (the encoding is in [`events`]), and
//! keeps a local copy of every room it has members in ([`local`], [`cache`]),
//! so a relay reads no Redis: a message for a peer on this instance goes
//! straight to its outbox; a message for a peer elsewhere is one `PUBLISH` to
//! that peer's instance.
//!
//! Where things are: [`options`] (settings), [`store`] (the connection,
//! timeouts, plain commands), [`scripts`] and [`lua`] (the scripts),
//! [`enter`] (create, attach, resume: the `Registry` impl), [`member`]
//! (relay and leave: the `Member` impl), [`events`] (pub/sub encoding),
//! [`local`] and [`cache`] (what this instance knows), [`tasks`] (the four
//! background tasks: subscriber, heartbeat, janitor, reconciler).
//!
//! Room events (for webhooks and live feeds, [`crate::rooms::RoomEvent`])
//! are emitted by the instance whose script made the change, numbered by
//! that script (the room's `seq`), and published on `{prefix}events` for
//! the other instances' live subscribers (never their webhooks).
//!
//! The design, its costs and its bounds are in `docs/SCALING.md`.

mod cache;
mod enter;
mod events;
mod local;
mod lua;
mod member;
mod ops;
mod options;
mod scripts;
mod store;
mod tasks;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::Client;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::cache::Ctx;
use self::local::Local;
use self::store::{Fail, Store};
use super::{EventSink, RoomEvent, RoomLimits};
use crate::metrics::Metrics;
use crate::token;

pub use self::member::RedisMember;
pub use self::options::{redact_url, RedisOptions};

struct Inner {
    me: String,
    opts: RedisOptions,
    limits: RoomLimits,
    metrics: Metrics,
    /// For the subscription (a connection of its own).
    client: Client,
    store: Store,
    local: Mutex<Local>,
    subscribed: AtomicBool,
    /// Subscriptions lost since start.
    losses: AtomicU64,
    reachable: AtomicBool,
    stop: CancellationToken,
    reconcile: Notify,
    /// Enters and leaves hold it shared across their script; a re-sync holds
    /// it exclusively for one room, so the local peers it asserts are not
    /// changed by an enter or leave whose script runs meanwhile.
    gate: tokio::sync::RwLock<()>,
    /// The background tasks.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Where the room events this instance causes go.
    events: std::sync::OnceLock<EventSink>,
}

/// A client for `opts`' Redis (for subscriptions) and a lazily connected,
/// self-reconnecting connection for commands, with `opts`' timeouts.
pub(crate) fn connect(opts: &RedisOptions) -> Result<(Client, ConnectionManager), String> {
    let url = opts.effective_url();
    let client = Client::open(url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
    let config = ::redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.command_timeout))
        .set_response_timeout(Some(opts.command_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
    Ok((client, conn))
}

/// The shared registry. Cheap to clone.
#[derive(Clone)]
pub struct RedisRegistry {
    inner: Arc<Inner>,
}

impl RedisRegistry {
    /// Starts a registry on `opts.url` and its background tasks. Redis need
    /// not be reachable yet: until it is, `healthy()` is false and new rooms
    /// are refused with `unavailable`. Fails only on a malformed URL.
    pub fn start(opts: RedisOptions, limits: RoomLimits, metrics: Metrics) -> Result<Self, String> {
        let insecure = opts.effective_url().ends_with("#insecure");
        let (client, conn) = connect(&opts)?;
        let me = token::new_peer_id().into_string();
        info!(
            instance = %me,
            redis = %redact_url(&opts.url),
            prefix = %opts.prefix,
            "rooms are shared through Redis"
        );
        if insecure {
            warn!("Redis TLS certificate verification is disabled (--redis-insecure-tls or #insecure)");
        }
        let store = Store::new(conn, opts.prefix.clone(), opts.command_timeout);
        let registry = RedisRegistry {
            inner: Arc::new(Inner {
                me,
                opts,
                limits,
                metrics,
                client,
                store,
                local: Mutex::new(Local::default()),
                subscribed: AtomicBool::new(false),
                losses: AtomicU64::new(0),
                reachable: AtomicBool::new(false),
                stop: CancellationToken::new(),
                reconcile: Notify::new(),
                gate: tokio::sync::RwLock::new(()),
                tasks: Mutex::new(Vec::new()),
                events: std::sync::OnceLock::new(),
            }),
        };
        *registry.tasks() = registry.spawn_tasks();
        Ok(registry)
    }

    /// This instance's id (in Redis keys, channels and logs).
    pub fn instance(&self) -> &str {
        &self.inner.me
    }

    /// How many times the subscription to this instance's channel was lost
    /// since start (each loss is followed by a re-sync of its rooms).
    pub fn subscription_losses(&self) -> u64 {
        self.inner.losses.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    /// Waits until the registry is healthy, up to `timeout`.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.healthy_now() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops the background tasks and removes this instance's heartbeat, so
    /// the others reap what is left of it at once. Call after the server has
    /// stopped (its sessions have left their rooms by then).
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        // A heartbeat in flight must not re-register us after we leave.
        let tasks = std::mem::take(&mut *self.tasks());
        for task in tasks {
            if tokio::time::timeout(inner.opts.command_timeout * 2, task)
                .await
                .is_err()
            {
                debug!("a background task did not stop in time");
            }
        }
        let _ = inner.store.deregister(&inner.me).await;
        inner.store.stop();
        info!(instance = %inner.me, "left the shared registry");
    }

    /// Stops this registry as if its process had been killed: its background
    /// tasks end, its subscription drops, and from now on it sends Redis
    /// nothing at all, not even the leaves of its peers. For tests of
    /// instance failure.
    pub fn crash(&self) {
        self.inner.store.stop();
        self.inner.stop.cancel();
        for task in self.tasks().drain(..) {
            task.abort();
        }
        warn!(instance = %self.inner.me, "registry crashed (simulated)");
    }

    /// Sends a room event this instance caused (its script made the
    /// change), with the room's event number from that script.
    pub(super) fn emit(&self, seq: u64, event: impl FnOnce() -> RoomEvent) {
        let Some(sink) = self.inner.events.get() else {
            return;
        };
        let event = event().with_seq(seq);
        // The other instances' live subscribers hear of it too (their
        // webhooks do not: this instance sends it).
        if let Ok(json) = serde_json::to_string(&event) {
            let registry = self.clone();
            let text = format!("{}|{json}", self.inner.me);
            tokio::spawn(async move {
                let channel = registry.inner.store.key("events");
                // No other instance listening is not a failure.
                let _ = registry.inner.store.publish(vec![(channel, text)]).await;
            });
        }
        sink.emit(event);
    }

    /// A room event another instance published: to the live subscribers.
    pub(super) fn on_remote_event(&self, payload: &str) {
        let Some((from, json)) = payload.split_once('|') else {
            return;
        };
        if from == self.inner.me {
            return;
        }
        let Some(sink) = self.inner.events.get() else {
            return;
        };
        match serde_json::from_str::<RoomEvent>(json) {
            Ok(event) => sink.feed(event),
            Err(e) => debug!("ignored a malformed room event: {e}"),
        }
    }

    fn tasks(&self) -> MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            metrics: &self.inner.metrics,
        }
    }

    /// Whether new rooms and peers can be taken now: not stopped, subscribed
    /// to this instance's channel, and the last heartbeat reached Redis.
    fn healthy_now(&self) -> bool {
        let i = &self.inner;
        !i.store.is_stopped()
            && i.subscribed.load(Ordering::Relaxed)
            && i.reachable.load(Ordering::Relaxed)
    }

    /// Why Redis cannot be used now.
    fn down(&self) -> Fail {
        if self.inner.store.is_stopped() {
            Fail::Stopped
        } else {
            Fail::Reply("Redis is unreachable".into())
        }
    }
}
