//! When to try again: exponential backoff with jitter, `Retry-After`, and the
//! retry window that bounds it all.

use std::time::{Duration, SystemTime};

use hyper::http::HeaderMap;
use rand::Rng as _;

/// Default delay before the first retry (before jitter).
pub const DEFAULT_FIRST_RETRY: Duration = Duration::from_secs(1);
/// Default longest delay between two attempts (before jitter).
pub const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The retry schedule: the `n`th retry waits `first · 2ⁿ⁻¹`, at most `max`,
/// of which a random part of up to a half is taken off ("equal jitter"), so
/// that many senders failing together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub first: Duration,
    /// Longest delay between two attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: DEFAULT_FIRST_RETRY,
            max: DEFAULT_MAX_RETRY_DELAY,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first), jittered.
    pub fn delay(&self, retry: u32) -> Duration {
        let doubled = self.first.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let ceiling = doubled.min(self.max);
        let half = ceiling / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        ceiling - Duration::from_millis(jitter).min(half)
    }

    /// How long to wait before retry number `retry`, given how long ago the
    /// first attempt started, the retry window, and the receiver's
    /// `Retry-After` (honoured as a lower bound). `None` when the retry would
    /// start after the window has closed: the event is given up.
    pub fn next(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        elapsed: Duration,
        window: Duration,
    ) -> Option<Duration> {
        let wait = self.delay(retry).max(retry_after.unwrap_or_default());
        (elapsed.saturating_add(wait) <= window).then_some(wait)
    }
}

/// The `Retry-After` header of a response: delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::http::HeaderValue;

    fn backoff() -> Backoff {
        Backoff {
            first: Duration::from_millis(1000),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_up_to_the_ceiling_and_keep_at_least_half() {
        let b = backoff();
        for _ in 0..200 {
            for (retry, ceiling) in [
                (1, 1_000),
                (2, 2_000),
                (3, 4_000),
                (7, 60_000),
                (40, 60_000),
            ] {
                let d = b.delay(retry).as_millis() as u64;
                assert!(d <= ceiling && d >= ceiling / 2, "retry {retry}: {d} ms");
            }
        }
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let b = backoff();
        let distinct: std::collections::HashSet<_> = (0..100).map(|_| b.delay(5)).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }

    #[test]
    fn no_retry_starts_after_the_window() {
        let b = backoff();
        let window = Duration::from_secs(30);
        assert!(b.next(1, None, Duration::ZERO, window).is_some());
        assert_eq!(b.next(1, None, Duration::from_secs(30), window), None);
        // Retry-After is a lower bound, and can push a retry out of the window.
        let w = b.next(1, Some(Duration::from_secs(20)), Duration::ZERO, window);
        assert_eq!(w, Some(Duration::from_secs(20)));
        assert_eq!(
            b.next(1, Some(Duration::from_secs(31)), Duration::ZERO, window),
            None
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
