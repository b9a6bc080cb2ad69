//! The per-room join rate: how many peers may enter one room, per second,
//! with a burst. It bounds the presence events (`peer_joined`, `peer_left`)
//! a host is sent, whatever its guests and watchers do: a watcher that
//! connects and disconnects in a loop gets `too_many_joins` instead of filling
//! a slow host's queue.
//!
//! Kept by the session, not the registry, so that it holds for every
//! registry; rooms are told apart by the token a peer enters with (`join` and
//! `watch` each have their own bucket). With `--redis-url` each instance
//! keeps its own count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets of entries, by room token. Only tokens that opened a room
/// have one (a bucket is made when a peer has entered), and full buckets are
/// forgotten, so a flood of wrong tokens costs nothing here.
pub struct JoinGate {
    rate: f64,
    burst: f64,
    rooms: Mutex<Rooms>,
}

#[derive(Default)]
struct Rooms {
    buckets: HashMap<Box<str>, Bucket>,
    /// Size at the last sweep: the next comes at twice as many.
    swept_at: usize,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

/// Buckets held before the first sweep.
const SWEEP_FROM: usize = 1024;

impl JoinGate {
    /// `burst` entries at once per room token, refilled at `rate` per second.
    pub fn new(rate: u32, burst: u32) -> Self {
        JoinGate {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            rooms: Mutex::new(Rooms::default()),
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether one more peer may enter with `token` now.
    pub fn may_enter(&self, token: &str, now: Instant) -> bool {
        self.rooms()
            .buckets
            .get(token)
            .map_or(true, |b| b.level(now, self.rate, self.burst) >= 1.0)
    }

    /// Counts a peer that entered with `token`.
    pub fn entered(&self, token: &str, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        let mut rooms = self.rooms();
        let bucket = rooms.buckets.entry(token.into()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = bucket.level(now, rate, burst) - 1.0;
        bucket.at = now;
        if rooms.buckets.len() >= SWEEP_FROM.max(rooms.swept_at * 2) {
            rooms
                .buckets
                .retain(|_, b| b.level(now, rate, burst) < burst);
            rooms.swept_at = rooms.buckets.len();
        }
    }

    /// Room tokens with a bucket (for tests).
    pub fn tracked(&self) -> usize {
        self.rooms().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_room_takes_its_burst_then_its_rate() {
        let gate = JoinGate::new(4, 64);
        let mut t = Instant::now();
        for _ in 0..64 {
            assert!(gate.may_enter("room-a", t));
            gate.entered("room-a", t);
        }
        assert!(!gate.may_enter("room-a", t));
        // Other rooms are not affected.
        assert!(gate.may_enter("room-b", t));
        t += Duration::from_millis(250);
        assert!(gate.may_enter("room-a", t));
        gate.entered("room-a", t);
        assert!(!gate.may_enter("room-a", t));
    }

    #[test]
    fn refilled_rooms_are_forgotten() {
        let gate = JoinGate::new(4, 2);
        let t = Instant::now();
        for i in 0..SWEEP_FROM - 1 {
            gate.entered(&format!("r{i}"), t);
        }
        assert_eq!(gate.tracked(), SWEEP_FROM - 1);
        let later = t + Duration::from_secs(1);
        gate.entered("last", later);
        assert_eq!(gate.tracked(), 1);
    }
}
