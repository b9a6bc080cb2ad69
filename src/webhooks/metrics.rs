//! What webhook delivery counts in `/metrics`, and its rate-limited warnings.
//!
//! | series | what |
//! | --- | --- |
//! | `signal_webhook_events_delivered_total` | events a URL answered with 2xx (once per URL) |
//! | `signal_webhook_events_dropped_total{reason}` | events given up for a URL, by reason ([`DropReason`]) |
//! | `signal_webhook_retries_total` | attempts after a failed one |
//! | `signal_webhook_events_queued` | events waiting or in flight, summed over URLs |
//!
//! Every series exists from the start (zero), with or without a URL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why an event was not delivered to a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The URL's queue was full when the event was emitted.
    QueueFull,
    /// Every attempt failed (5xx, 408, 429, timeout, connection error) until
    /// the retry window closed.
    RetriesExhausted,
    /// The receiver refused it for good (a 4xx other than 408 and 429, or a
    /// 3xx: redirects are not followed).
    Rejected,
    /// Still queued when the flush time of a shutdown ran out, or emitted
    /// after shutdown began.
    Shutdown,
}

impl DropReason {
    /// Every reason, in declaration order.
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::RetriesExhausted,
        DropReason::Rejected,
        DropReason::Shutdown,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Rejected => "rejected",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// The webhook series, registered once with the server's metrics. Cheap to
/// clone (each series is an `Arc`).
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    pub(crate) delivered: Counter,
    dropped: [Counter; 4],
    pub(crate) retries: Counter,
    pub(crate) queued: Gauge,
}

impl WebhookMetrics {
    /// Registers every series in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let delivered = Counter::default();
        registry.register(
            "webhook_events_delivered",
            "Webhook events a URL accepted (2xx), counted once per URL",
            delivered.clone(),
        );
        let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "webhook_events_dropped",
            "Webhook events given up for a URL, by reason",
            family.clone(),
        );
        let dropped =
            DropReason::ALL.map(|r| family.get_or_create(&[("reason", r.as_str())]).clone());
        let retries = Counter::default();
        registry.register(
            "webhook_retries",
            "Webhook delivery attempts made after a failed one",
            retries.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "webhook_events_queued",
            "Webhook events waiting or in flight, summed over URLs",
            queued.clone(),
        );
        WebhookMetrics {
            delivered,
            dropped,
            retries,
            queued,
        }
    }

    /// Events dropped for `reason` so far (every URL).
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }

    /// Events delivered so far (every URL).
    pub fn delivered(&self) -> u64 {
        self.delivered.get()
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    /// Events waiting or in flight now.
    pub fn queued(&self) -> i64 {
        self.queued.get()
    }
}

/// Shortest time between two warnings of one kind.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one warning through per [`WARN_INTERVAL`], and counts the ones it
/// held back, so that a flood of drops costs an atomic add each, not a log
/// line each. Never blocks.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    start: Instant,
    /// Milliseconds since `start` before which warnings are held back.
    next: AtomicU64,
    held: AtomicU64,
}

impl WarnLimiter {
    pub(crate) fn new() -> Self {
        WarnLimiter {
            start: Instant::now(),
            next: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be logged now (`n`: how many were held
    /// back since the last one), `None` when it is held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + WARN_INTERVAL.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Counts drops and warns about them, at most once per interval and reason.
#[derive(Debug)]
pub(crate) struct Drops {
    metrics: WebhookMetrics,
    limiters: [WarnLimiter; 4],
}

impl Drops {
    pub(crate) fn new(metrics: WebhookMetrics) -> Self {
        Drops {
            metrics,
            limiters: [
                WarnLimiter::new(),
                WarnLimiter::new(),
                WarnLimiter::new(),
                WarnLimiter::new(),
            ],
        }
    }

    pub(crate) fn metrics(&self) -> &WebhookMetrics {
        &self.metrics
    }

    /// One event was not delivered to `url` (a log label, never the full
    /// URL): `detail` says why, for the log.
    pub(crate) fn record(
        &self,
        reason: DropReason,
        url: &str,
        event: &str,
        detail: &dyn std::fmt::Display,
    ) {
        self.metrics.dropped[reason as usize].inc();
        if let Some(held) = self.limiters[reason as usize].allow() {
            tracing::warn!(
                url,
                event,
                reason = reason.as_str(),
                similar_since_last_warning = held,
                "webhook event dropped: {detail}"
            );
        }
    }
}

impl Drops {
    /// `n` events were not delivered to `url`, for one reason.
    pub(crate) fn record_many(
        &self,
        reason: DropReason,
        url: &str,
        n: u64,
        detail: &dyn std::fmt::Display,
    ) {
        self.metrics.dropped[reason as usize].inc_by(n);
        if let Some(held) = self.limiters[reason as usize].allow() {
            tracing::warn!(
                url,
                events = n,
                reason = reason.as_str(),
                similar_since_last_warning = held,
                "webhook events dropped: {detail}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_lets_one_warning_through_per_interval_and_counts_the_rest() {
        let limiter = WarnLimiter::new();
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow(), None);
        }
        // As if the interval had passed.
        limiter.next.store(0, Ordering::Relaxed);
        assert_eq!(limiter.allow(), Some(5));
        assert_eq!(limiter.allow(), None);
    }

    #[test]
    fn every_series_is_there_from_the_start() {
        let mut registry = Registry::with_prefix("signal");
        let m = WebhookMetrics::register(&mut registry);
        m.dropped[DropReason::QueueFull as usize].inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("signal_webhook_events_dropped_total{reason=\"queue_full\"} 1"),
            "{text}"
        );
        for reason in ["retries_exhausted", "rejected", "shutdown"] {
            assert!(
                text.contains(&format!(
                    "signal_webhook_events_dropped_total{{reason=\"{reason}\"}} 0"
                )),
                "{text}"
            );
        }
        assert!(text.contains("signal_webhook_events_delivered_total 0"));
        assert!(text.contains("signal_webhook_retries_total 0"));
        assert!(text.contains("signal_webhook_events_queued 0"));
    }
}
