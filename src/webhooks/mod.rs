//! Webhooks: a signed POST to every `--webhook-url` for each room and peer
//! event. The wire format, the signature and what a receiver should check
//! are in `docs/WEBHOOKS.md`.
//!
//! ```text
//!  registry / session ──emit()──> per-URL queue ──> URL task ──POST──> receiver
//!    (never waits: try_acquire     (bounded:         lane per room,
//!     of a queue slot, or the       --webhook-queue)  retries with backoff
//!     event is counted dropped)
//! ```
//!
//! - **The relay never waits for a webhook.** [`Webhooks::emit`] is a plain
//!   function: it stamps the event (id, time, sequence number), takes a slot
//!   of each URL's queue without waiting and hands the event over. A full
//!   queue drops the event for that URL and counts it
//!   (`signal_webhook_events_dropped_total{reason="queue_full"}`). With no
//!   URL configured, [`Webhooks`] is `None` inside and `emit` returns at
//!   once; [`Webhooks::emit_with`] then does not even build the event.
//! - **Bounded memory.** A URL holds at most `queue_capacity` events, waiting,
//!   in flight or being retried (each holds a slot until it is done). An
//!   event is kept once however many URLs it goes to; its JSON body is made
//!   once, by the first delivery.
//! - **Order.** Each URL's task keeps one lane per room: a room's events go to
//!   a URL one at a time, in the order they were emitted; the next leaves only
//!   once the previous was delivered or given up. Other rooms are not held up
//!   by a room whose event is being retried (up to `max_in_flight` requests
//!   at once per URL), and every URL has its own queue and task, so a failing
//!   URL does not stall the others. Events without a room (`token_revoked`)
//!   share one lane.
//! - **Sequence numbers.** `emit` numbers each room's events 1, 2, 3...
//!   (per room label, under one lock so that the numbers follow the queue
//!   order), unless the event brings its own ([`Event::with_seq`]). A gap
//!   tells a receiver an event was lost (dropped, counted in `/metrics`).
//!   The counter of a room is forgotten at its `room_ended`: callers must
//!   emit `room_ended` for every room they emitted events for, or the counter
//!   stays (a few dozen bytes per room).
//! - **Retries**: 5xx, 408, 429, timeouts and connection errors, with
//!   exponential backoff and jitter ([`Backoff`]), at least the receiver's
//!   `Retry-After`, while the retry window lasts (`--webhook-retry-window`,
//!   from the first attempt). Other statuses are final (3xx included:
//!   redirects are not followed).
//! - **Shutdown** ([`Delivery::shutdown`]): no new events; what is queued is
//!   delivered (with retries) for at most `--webhook-flush-timeout`, then
//!   dropped and counted as `shutdown`.
//!
//! # With Redis: once per event, not once per instance
//!
//! This component does not coordinate instances. The rule that makes each
//! event sent once is the caller's: **an event is emitted only by the
//! instance that made the change** (the one whose Lua script created the
//! room, attached the peer, ...), never by instances that merely learn of it.
//! Such events should also bring the room's shared sequence number (a
//! counter of the room's hash incremented by the same script) with
//! [`Event::with_seq`], since this process's counters only see its own
//! events. Events are held in memory: an instance that dies loses what it had
//! queued.

mod client;
mod event;
mod metrics;
mod options;
mod retry;
mod sign;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use self::client::USER_AGENT_VALUE;
pub use self::event::{
    EndReason, Event, EventKind, LeaveReason, PeerRef, Revocation, RoomRef, EVENT_ID_PREFIX,
};
pub use self::metrics::{DropReason, WebhookMetrics, WARN_INTERVAL};
pub use self::options::{
    WebhookArgs, WebhookOptions, WebhookUrl, DEFAULT_FLUSH_TIMEOUT, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_RETRY_WINDOW, DEFAULT_TIMEOUT,
};
pub use self::retry::{Backoff, DEFAULT_FIRST_RETRY, DEFAULT_MAX_RETRY_DELAY};
pub use self::sign::{Secret, MAX_SECRET_BYTES, MIN_SECRET_BYTES, SECRET_PREFIX};

use self::event::Stamped;
use self::metrics::{Drops, WarnLimiter};
use self::worker::Job;

/// Where events go in; one per server. Cheap to clone; [`Webhooks::emit`]
/// never waits. `Webhooks::default()` is the disabled one.
#[derive(Clone, Default)]
pub struct Webhooks {
    producer: Option<Arc<Producer>>,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.producer {
            None => f.write_str("Webhooks(disabled)"),
            Some(p) => f
                .debug_list()
                .entries(p.endpoints.iter().map(|e| e.url.label()))
                .finish(),
        }
    }
}

/// One URL's queue, as the producer sees it.
struct Endpoint {
    url: WebhookUrl,
    /// The queue's free slots.
    slots: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Job>,
}

struct Producer {
    endpoints: Vec<Endpoint>,
    /// The last sequence number of each room (by label) with events.
    seqs: Mutex<HashMap<String, u64>>,
    drops: Arc<Drops>,
}

impl Webhooks {
    /// The disabled handle: `emit` does nothing.
    pub fn disabled() -> Self {
        Webhooks::default()
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.producer.is_some()
    }

    /// Queues `event` for every URL, without waiting. Where a URL's queue is
    /// full (or delivery has shut down), the event is dropped for that URL
    /// and counted.
    pub fn emit(&self, event: Event) {
        if let Some(producer) = &self.producer {
            producer.emit(event);
        }
    }

    /// [`Webhooks::emit`], building the event only when webhooks are enabled.
    pub fn emit_with(&self, event: impl FnOnce() -> Event) {
        if let Some(producer) = &self.producer {
            producer.emit(event());
        }
    }
}

impl Producer {
    fn emit(&self, event: Event) {
        let ended = event.kind() == EventKind::RoomEnded;
        // One lock around numbering and queueing, so that a room's numbers
        // follow its queue order on every URL. Nothing in it waits.
        let mut seqs = self.seqs.lock().unwrap_or_else(PoisonError::into_inner);
        let stamped = Stamped::new(event, |room| match seqs.get_mut(&room.label) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                seqs.insert(room.label.clone(), 1);
                1
            }
        });
        if ended {
            if let Some(label) = &stamped.lane {
                seqs.remove(&**label);
            }
        }
        let stamped = Arc::new(stamped);
        let kind = stamped.kind().as_str();
        // Drops are counted and logged once the lock is released: a log line
        // may wait on a slow stderr, and other emitters must not.
        let mut dropped = Vec::new();
        for endpoint in &self.endpoints {
            let (reason, why) = match Arc::clone(&endpoint.slots).try_acquire_owned() {
                Ok(slot) => {
                    let queued = self.drops.metrics().queued.clone();
                    match endpoint
                        .tx
                        .send(Job::new(Arc::clone(&stamped), slot, queued))
                    {
                        Ok(()) => continue,
                        Err(_) => (DropReason::Shutdown, "delivery has stopped"),
                    }
                }
                Err(TryAcquireError::NoPermits) => {
                    (DropReason::QueueFull, "the URL's queue is full")
                }
                Err(TryAcquireError::Closed) => (DropReason::Shutdown, "delivery is shutting down"),
            };
            dropped.push((reason, why, endpoint.url.label()));
        }
        drop(seqs);
        for (reason, why, url) in dropped {
            self.drops.record(reason, url, kind, &why);
        }
    }
}

/// The delivery tasks, owned by whoever started them (the server), to shut
/// them down. Dropping it without [`Delivery::shutdown`] stops them at once.
#[derive(Debug)]
pub struct Delivery {
    workers: Vec<JoinHandle<()>>,
    slots: Vec<Arc<Semaphore>>,
    draining: CancellationToken,
    abort: CancellationToken,
    flush_timeout: Duration,
    metrics: Option<WebhookMetrics>,
}

impl Delivery {
    /// Stops taking events, delivers what is queued for at most the flush
    /// timeout, then drops (and counts) the rest.
    pub async fn shutdown(mut self) {
        if self.workers.is_empty() {
            return;
        }
        for slots in &self.slots {
            slots.close();
        }
        self.draining.cancel();
        let queued = self.metrics.as_ref().map_or(0, WebhookMetrics::queued);
        if queued > 0 {
            tracing::info!(
                queued,
                "delivering the queued webhook events (at most {:?})",
                self.flush_timeout
            );
        }
        let mut all = futures_util::future::join_all(std::mem::take(&mut self.workers));
        if tokio::time::timeout(self.flush_timeout, &mut all)
            .await
            .is_err()
        {
            self.abort.cancel();
            all.await;
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.abort.cancel();
    }
}

/// Starts delivery to the URLs of `options` (none: the disabled handle),
/// counting into `metrics`. Fails on a bad `ca_file`, or when URLs come
/// without a secret.
pub fn start(
    options: Option<WebhookOptions>,
    metrics: WebhookMetrics,
) -> std::io::Result<(Webhooks, Delivery)> {
    let draining = CancellationToken::new();
    let abort = CancellationToken::new();
    let mut delivery = Delivery {
        workers: Vec::new(),
        slots: Vec::new(),
        draining: draining.clone(),
        abort: abort.clone(),
        flush_timeout: Duration::ZERO,
        metrics: None,
    };
    let Some(options) = options.filter(|o| !o.urls.is_empty()) else {
        return Ok((Webhooks::disabled(), delivery));
    };
    if options.secrets.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "webhook URLs need a signing secret (--webhook-secret)",
        ));
    }
    let client = Arc::new(client::Client::new(
        options.ca_file.as_deref(),
        options.timeout,
        options.max_in_flight,
    )?);
    let secrets: Arc<[Secret]> = options.secrets.clone().into();
    let drops = Arc::new(Drops::new(metrics.clone()));
    let mut endpoints = Vec::with_capacity(options.urls.len());
    for url in &options.urls {
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(options.queue_capacity.max(1)));
        let ctx = Arc::new(worker::Ctx {
            url: url.clone(),
            client: Arc::clone(&client),
            secrets: Arc::clone(&secrets),
            backoff: options.backoff,
            retry_window: options.retry_window,
            requests: Semaphore::new(options.max_in_flight.max(1)),
            drops: Arc::clone(&drops),
            retrying: WarnLimiter::new(),
        });
        let span = tracing::info_span!("webhook", url = url.label());
        let task = worker::run(ctx, rx, draining.clone(), abort.clone()).instrument(span);
        delivery.workers.push(tokio::spawn(task));
        delivery.slots.push(Arc::clone(&slots));
        endpoints.push(Endpoint {
            url: url.clone(),
            slots,
            tx,
        });
    }
    tracing::info!(
        urls = ?options.urls.iter().map(WebhookUrl::label).collect::<Vec<_>>(),
        queue = options.queue_capacity,
        "webhooks enabled"
    );
    delivery.flush_timeout = options.flush_timeout;
    delivery.metrics = Some(metrics);
    let producer = Producer {
        endpoints,
        seqs: Mutex::new(HashMap::new()),
        drops,
    };
    Ok((
        Webhooks {
            producer: Some(Arc::new(producer)),
        },
        delivery,
    ))
}
