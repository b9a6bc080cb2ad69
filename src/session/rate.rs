//! A connection's rate limits: token buckets of messages and of bytes, and
//! the run of `host_busy` refusals that closes a sender going on.

use std::time::Instant;

use crate::config::{Config, HOST_BUSY_RUN_RESET};
use crate::metrics::RateLimit;

/// What the rate limiter says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: drop it. `first` marks the first drop of a run, the one
    /// that gets an error reply.
    Drop {
        /// First drop since the last allowed message.
        first: bool,
        /// The limit it is over.
        limit: RateLimit,
    },
    /// Over the limit for too long: close the connection.
    Close,
}

/// The limits of a [`RateLimiter`]: shared by every connection (each keeps
/// only its buckets' levels).
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    messages: Rate,
    bytes: Rate,
    max_drops: u32,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    burst: f64,
}

impl Rates {
    /// `burst` messages at once, refilled at `rate` per second; bytes
    /// unlimited. More than a second's worth of messages (`rate`, at least
    /// 10) dropped in a row closes the connection.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Rates {
            messages: Rate {
                per_sec: f64::from(rate_per_sec),
                burst: f64::from(burst.max(1)),
            },
            bytes: Rate {
                per_sec: f64::INFINITY,
                burst: f64::INFINITY,
            },
            max_drops: rate_per_sec.max(10),
        }
    }

    /// Limits bytes too: `burst` at once, refilled at `rate` per second.
    pub fn with_bytes(mut self, rate_per_sec: usize, burst: usize) -> Self {
        self.bytes = Rate {
            per_sec: rate_per_sec as f64,
            burst: burst.max(1) as f64,
        };
        self
    }

    /// The rates `config` sets (the byte burst at least one message).
    pub fn from_config(config: &Config) -> Self {
        Rates::new(config.rate_per_sec, config.rate_burst).with_bytes(
            config.rate_bytes_per_sec,
            config.rate_bytes_burst.max(config.max_message_size),
        )
    }
}

/// Two token buckets, of messages and of bytes (see [`Rates`]); and the
/// run of `host_busy` refusals, which ends after [`HOST_BUSY_RUN_RESET`]
/// without one. Unlike a run of rate-limit drops, a delivered message does
/// not end it: a sender flooding a slow host has some messages delivered.
#[derive(Debug)]
pub struct RateLimiter {
    messages: f64,
    bytes: f64,
    last: Option<Instant>,
    dropped_in_a_row: u32,
    refusals: u32,
    /// Seconds since the last refusal, as the checks saw it.
    quiet: f32,
}

/// What to do with one more refusal.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The first of a run: answer it.
    First,
    /// Another: count it.
    Again,
    /// More than the limit: close the connection.
    Close,
}

impl RateLimiter {
    /// Full buckets.
    pub fn new(rates: &Rates) -> Self {
        RateLimiter {
            messages: rates.messages.burst,
            bytes: rates.bytes.burst,
            last: None,
            dropped_in_a_row: 0,
            refusals: 0,
            quiet: 0.0,
        }
    }

    /// Takes one message's token if there is one.
    pub fn check(&mut self, rates: &Rates, now: Instant) -> Verdict {
        self.check_bytes(rates, now, 0)
    }

    /// Takes one message's token and `bytes` bytes' if there are.
    pub fn check_bytes(&mut self, rates: &Rates, now: Instant, bytes: usize) -> Verdict {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.messages =
                (self.messages + elapsed * rates.messages.per_sec).min(rates.messages.burst);
            self.bytes = (self.bytes + elapsed * rates.bytes.per_sec).min(rates.bytes.burst);
            self.quiet += elapsed as f32;
        }
        self.last = Some(now);
        let limit = if self.messages < 1.0 {
            RateLimit::Messages
        } else if self.bytes < bytes as f64 {
            RateLimit::Bytes
        } else {
            self.messages -= 1.0;
            self.bytes -= bytes as f64;
            self.dropped_in_a_row = 0;
            return Verdict::Allow;
        };
        self.dropped_in_a_row += 1;
        if self.dropped_in_a_row > rates.max_drops {
            Verdict::Close
        } else {
            Verdict::Drop {
                first: self.dropped_in_a_row == 1,
                limit,
            }
        }
    }

    /// One more refusal of the message just checked; `limit` refusals in a
    /// run are allowed.
    pub(super) fn refuse(&mut self, limit: u32) -> Refused {
        if self.quiet > HOST_BUSY_RUN_RESET.as_secs_f32() {
            self.refusals = 0;
        }
        self.quiet = 0.0;
        self.refusals += 1;
        if self.refusals > limit {
            Refused::Close
        } else if self.refusals == 1 {
            Refused::First
        } else {
            Refused::Again
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_allows_its_burst_then_drops_then_closes() {
        let rates = Rates::new(100, 500);
        let mut rl = RateLimiter::new(&rates);
        let t = Instant::now();
        for _ in 0..500 {
            assert_eq!(rl.check(&rates, t), Verdict::Allow);
        }
        assert_eq!(rl.check(&rates, t), drop(true, RateLimit::Messages));
        for _ in 1..100 {
            assert_eq!(rl.check(&rates, t), drop(false, RateLimit::Messages));
        }
        assert_eq!(rl.check(&rates, t), Verdict::Close);
    }

    #[test]
    fn the_bucket_refills_at_the_sustained_rate() {
        let rates = Rates::new(100, 500);
        let mut rl = RateLimiter::new(&rates);
        let mut t = Instant::now();
        for _ in 0..500 {
            rl.check(&rates, t);
        }
        // 100 per second sustained: one message every 10 ms always passes.
        for _ in 0..1000 {
            t += Duration::from_millis(10);
            assert_eq!(rl.check(&rates, t), Verdict::Allow);
        }
        // After a drop, an allowed message resets the run.
        assert_eq!(rl.check(&rates, t), drop(true, RateLimit::Messages));
        t += Duration::from_millis(10);
        assert_eq!(rl.check(&rates, t), Verdict::Allow);
        assert_eq!(rl.check(&rates, t), drop(true, RateLimit::Messages));
    }

    fn drop(first: bool, limit: RateLimit) -> Verdict {
        Verdict::Drop { first, limit }
    }

    #[test]
    fn bytes_have_a_bucket_of_their_own() {
        let rates = Rates::new(100, 500).with_bytes(1000, 4000);
        let mut rl = RateLimiter::new(&rates);
        let mut t = Instant::now();
        assert_eq!(rl.check_bytes(&rates, t, 3000), Verdict::Allow);
        assert_eq!(
            rl.check_bytes(&rates, t, 1500),
            drop(true, RateLimit::Bytes)
        );
        // Small messages still fit; a host's (0 bytes) always do.
        assert_eq!(rl.check_bytes(&rates, t, 1000), Verdict::Allow);
        assert_eq!(rl.check_bytes(&rates, t, 0), Verdict::Allow);
        t += Duration::from_secs(2);
        assert_eq!(rl.check_bytes(&rates, t, 1500), Verdict::Allow);
    }

    #[test]
    fn refusals_close_a_sender_that_goes_on_and_a_pause_ends_the_run() {
        let rates = Rates::new(100, 500);
        let mut r = RateLimiter::new(&rates);
        let mut t = Instant::now();
        // Each refusal follows the check of its message.
        let mut refuse = |t| {
            r.check(&rates, t);
            r.refuse(3)
        };
        assert_eq!(refuse(t), Refused::First);
        assert_eq!(refuse(t), Refused::Again);
        t += Duration::from_secs(9);
        assert_eq!(refuse(t), Refused::Again);
        t += HOST_BUSY_RUN_RESET + Duration::from_millis(1);
        assert_eq!(refuse(t), Refused::First);
        for _ in 0..2 {
            assert_eq!(refuse(t), Refused::Again);
        }
        assert_eq!(refuse(t), Refused::Close);
    }
}
