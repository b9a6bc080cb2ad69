//! One URL's delivery task: a lane per room, so that one room's events go
//! out one after the other (the next only once the previous is delivered or
//! given up) while other rooms' events are not held up by a room whose event
//! is being retried.
//!
//! The task owns what its queue holds; every job carries one of the URL's
//! queue slots, given back when the job is done, so the jobs waiting in lanes,
//! in flight or in the channel never exceed the queue's capacity.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::client::{Attempt, Client, Signed};
use super::event::Stamped;
use super::metrics::{DropReason, Drops, WarnLimiter};
use super::options::WebhookUrl;
use super::retry::Backoff;
use super::sign::{signature_header, Secret};

/// One event queued for one URL. Dropping it gives its queue slot back.
pub(crate) struct Job {
    pub(crate) event: Arc<Stamped>,
    _slot: OwnedSemaphorePermit,
    queued: Gauge,
}

impl Job {
    pub(crate) fn new(event: Arc<Stamped>, slot: OwnedSemaphorePermit, queued: Gauge) -> Self {
        queued.inc();
        Job {
            event,
            _slot: slot,
            queued,
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.queued.dec();
    }
}

/// What one URL's task needs.
pub(crate) struct Ctx {
    pub(crate) url: WebhookUrl,
    pub(crate) client: Arc<Client>,
    pub(crate) secrets: Arc<[Secret]>,
    pub(crate) backoff: Backoff,
    pub(crate) retry_window: Duration,
    /// Requests in flight at once to this URL.
    pub(crate) requests: Semaphore,
    pub(crate) drops: Arc<Drops>,
    pub(crate) retrying: WarnLimiter,
}

enum Outcome {
    Delivered,
    Dropped(DropReason, String),
}

type Lane = Option<Arc<str>>;

/// Delivers what arrives on `rx` until `draining` is cancelled and all of it
/// is done, or until `abort` is cancelled (what is left is counted as
/// dropped for `shutdown`).
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    draining: CancellationToken,
    abort: CancellationToken,
) {
    // A lane is present while one of its jobs is in flight; it holds the
    // ones waiting behind it.
    let mut lanes: HashMap<Lane, VecDeque<Job>> = HashMap::new();
    let mut in_flight: FuturesUnordered<BoxFuture<'static, (Job, Outcome)>> =
        FuturesUnordered::new();
    let mut open = true;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = abort.cancelled() => break,
            _ = draining.cancelled(), if !closing => {
                // Takes no more jobs; those already sent are still received.
                closing = true;
                rx.close();
            }
            job = rx.recv(), if open => match job {
                Some(job) => match lanes.entry(job.event.lane.clone()) {
                    Entry::Occupied(waiting) => waiting.into_mut().push_back(job),
                    Entry::Vacant(lane) => {
                        lane.insert(VecDeque::new());
                        in_flight.push(Box::pin(deliver(Arc::clone(&ctx), job)));
                    }
                },
                None => open = false,
            },
            Some((job, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                let lane = job.event.lane.clone();
                record(&ctx, &job, outcome);
                drop(job);
                if let Some(waiting) = lanes.get_mut(&lane) {
                    match waiting.pop_front() {
                        Some(next) => in_flight.push(Box::pin(deliver(Arc::clone(&ctx), next))),
                        None => {
                            lanes.remove(&lane);
                        }
                    }
                }
            }
        }
        if !open && in_flight.is_empty() && lanes.is_empty() {
            return;
        }
    }
    // Aborted: what is still here will not be delivered; the requests in
    // flight are abandoned.
    rx.close();
    let mut left = in_flight.len() as u64;
    drop(in_flight);
    left += lanes.values().map(|jobs| jobs.len() as u64).sum::<u64>();
    lanes.clear();
    while let Ok(job) = rx.try_recv() {
        drop(job);
        left += 1;
    }
    if left > 0 {
        ctx.drops.record_many(
            DropReason::Shutdown,
            ctx.url.label(),
            left,
            &"the flush time of the shutdown ran out",
        );
    }
}

fn record(ctx: &Ctx, job: &Job, outcome: Outcome) {
    let event = &job.event;
    match outcome {
        Outcome::Delivered => {
            ctx.drops.metrics().delivered.inc();
            debug!(url = ctx.url.label(), id = %event.id, event = event.kind().as_str(), "webhook delivered");
        }
        Outcome::Dropped(reason, why) => {
            ctx.drops
                .record(reason, ctx.url.label(), event.kind().as_str(), &why);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Tries `job` until it is delivered, refused, or its retry window closes.
/// Each attempt is signed afresh: the timestamp is the attempt's.
async fn deliver(ctx: Arc<Ctx>, job: Job) -> (Job, Outcome) {
    let started = tokio::time::Instant::now();
    let mut retries = 0u32;
    let outcome = loop {
        let attempt = {
            // Closed only if the context is torn down, which cannot happen
            // while this future holds it.
            let Ok(_request) = ctx.requests.acquire().await else {
                break Outcome::Dropped(DropReason::Shutdown, "stopped".into());
            };
            let event = &job.event;
            let timestamp = unix_now();
            let body = event.body().clone();
            let signed = Signed {
                id: &event.id,
                timestamp,
                signature: signature_header(&ctx.secrets, &event.id, timestamp, &body),
            };
            // Boxed: a future waiting out its backoff then holds a pointer,
            // not the request's whole state.
            Box::pin(ctx.client.post(ctx.url.uri(), signed, body)).await
        };
        match attempt {
            Attempt::Delivered => break Outcome::Delivered,
            Attempt::Rejected { why } => break Outcome::Dropped(DropReason::Rejected, why),
            Attempt::Retry { after, why } => {
                retries += 1;
                let Some(wait) =
                    ctx.backoff
                        .next(retries, after, started.elapsed(), ctx.retry_window)
                else {
                    let why = format!(
                        "{why} (after {retries} attempts over {:?})",
                        started.elapsed()
                    );
                    break Outcome::Dropped(DropReason::RetriesExhausted, why);
                };
                ctx.drops.metrics().retries.inc();
                if let Some(held) = ctx.retrying.allow() {
                    warn!(
                        url = ctx.url.label(),
                        event = job.event.kind().as_str(),
                        attempt = retries,
                        similar_since_last_warning = held,
                        "webhook attempt failed, retrying in {wait:?}: {why}"
                    );
                } else {
                    debug!(
                        url = ctx.url.label(),
                        attempt = retries,
                        "webhook retry in {wait:?}: {why}"
                    );
                }
                tokio::time::sleep(wait).await;
            }
        }
    };
    (job, outcome)
}
