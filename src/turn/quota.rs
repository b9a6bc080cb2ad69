//! Bounds on what one credential, and everyone together, may take: live
//! allocations, and relayed bytes per second.
//!
//! Allocations are counted per credential label (the username without its
//! expiry, as coturn's `user-quota` counts its "real username"), so fresh
//! credentials for the same room and peer share one quota. Bandwidth is a
//! token bucket per allocation, per label and in total; a packet over any of
//! them is dropped (UDP semantics: the relay never queues for a sender).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Instant;

/// Why an allocation was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The label holds its maximum of live allocations (486).
    User,
    /// The server holds its maximum of live allocations (508).
    Total,
}

/// A token bucket of bytes: `rate` per second, holding up to one second's
/// worth (so a video keyframe burst passes), 0 meaning unlimited.
#[derive(Debug)]
pub struct Bucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes `bytes` if the bucket holds them.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed > Duration::ZERO {
            let refill =
                (elapsed.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000) as u64;
            if refill > 0 {
                self.tokens = self.tokens.saturating_add(refill).min(self.rate);
                self.last = now;
            }
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

/// The limits, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Live allocations per credential label (0: unlimited).
    pub per_user: usize,
    /// Live allocations in total (0: unlimited).
    pub total: usize,
    /// Bytes per second per allocation, both directions (0: unlimited).
    pub allocation_rate: u64,
    /// Bytes per second per credential label (0: unlimited).
    pub user_rate: u64,
    /// Bytes per second through the whole relay (0: unlimited).
    pub total_rate: u64,
}

struct UserState {
    allocations: usize,
    bucket: Arc<Mutex<Bucket>>,
}

/// The shared accounting of one relay.
pub struct Quotas {
    limits: Limits,
    users: Mutex<HashMap<Arc<str>, UserState>>,
    total: Mutex<usize>,
    total_bucket: Mutex<Bucket>,
}

impl Quotas {
    /// Accounting under `limits`.
    pub fn new(limits: Limits, now: Instant) -> Arc<Self> {
        Arc::new(Quotas {
            limits,
            users: Mutex::new(HashMap::new()),
            total: Mutex::new(0),
            total_bucket: Mutex::new(Bucket::new(limits.total_rate, now)),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether `label` could take one more allocation now (checked before an
    /// Allocate reaches the relay, so the refusal is a clean 486).
    pub fn user_has_room(&self, label: &str) -> bool {
        if self.limits.per_user == 0 {
            return true;
        }
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        !matches!(users.get(label), Some(u) if u.allocations >= self.limits.per_user)
    }

    /// Takes one allocation for `label`; released when the grant drops.
    pub fn acquire(
        self: &Arc<Self>,
        label: &Arc<str>,
        now: Instant,
    ) -> Result<Grant, QuotaRefusal> {
        let mut total = self.total.lock().unwrap_or_else(|e| e.into_inner());
        if self.limits.total != 0 && *total >= self.limits.total {
            return Err(QuotaRefusal::Total);
        }
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let user = users.entry(label.clone()).or_insert_with(|| UserState {
            allocations: 0,
            bucket: Arc::new(Mutex::new(Bucket::new(self.limits.user_rate, now))),
        });
        if self.limits.per_user != 0 && user.allocations >= self.limits.per_user {
            return Err(QuotaRefusal::User);
        }
        user.allocations += 1;
        *total += 1;
        Ok(Grant {
            quotas: self.clone(),
            label: label.clone(),
            user_bucket: user.bucket.clone(),
            bucket: Bucket::new(self.limits.allocation_rate, now),
        })
    }

    /// Live allocations in total.
    pub fn allocations(&self) -> usize {
        *self.total.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live allocations of `label`.
    pub fn user_allocations(&self, label: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(label).map_or(0, |u| u.allocations)
    }

    fn release(&self, label: &str) {
        let mut total = self.total.lock().unwrap_or_else(|e| e.into_inner());
        *total = total.saturating_sub(1);
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(user) = users.get_mut(label) {
            user.allocations = user.allocations.saturating_sub(1);
            if user.allocations == 0 {
                users.remove(label);
            }
        }
    }
}

/// One live allocation's share: its count in the quotas and its buckets.
pub struct Grant {
    quotas: Arc<Quotas>,
    label: Arc<str>,
    user_bucket: Arc<Mutex<Bucket>>,
    bucket: Bucket,
}

impl Grant {
    /// Whether `bytes` more may be relayed now (allocation, label and total
    /// buckets all hold them).
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if !self.bucket.take(bytes, now) {
            return false;
        }
        let limits = self.quotas.limits;
        if limits.user_rate != 0 {
            let mut b = self.user_bucket.lock().unwrap_or_else(|e| e.into_inner());
            if !b.take(bytes, now) {
                return false;
            }
        }
        if limits.total_rate != 0 {
            let mut b = self
                .quotas
                .total_bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !b.take(bytes, now) {
                return false;
            }
        }
        true
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.quotas.release(&self.label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: usize, total: usize) -> Limits {
        Limits {
            per_user,
            total,
            allocation_rate: 0,
            user_rate: 0,
            total_rate: 0,
        }
    }

    fn t(ms: i64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn allocations_are_bounded_per_label_and_in_total() {
        let q = Quotas::new(limits(2, 3), t(0));
        let a: Arc<str> = "room/a".into();
        let b: Arc<str> = "room/b".into();
        let a1 = q.acquire(&a, t(0)).unwrap();
        let _a2 = q.acquire(&a, t(0)).unwrap();
        assert!(!q.user_has_room("room/a"));
        assert!(matches!(q.acquire(&a, t(0)), Err(QuotaRefusal::User)));
        let _b1 = q.acquire(&b, t(0)).unwrap();
        assert!(matches!(q.acquire(&b, t(0)), Err(QuotaRefusal::Total)));
        assert_eq!(q.allocations(), 3);
        drop(a1);
        assert_eq!(q.allocations(), 2);
        assert_eq!(q.user_allocations("room/a"), 1);
        assert!(q.user_has_room("room/a"));
        let _b2 = q.acquire(&b, t(0)).unwrap();
        assert_eq!(q.user_allocations("room/b"), 2);
    }

    #[test]
    fn released_labels_leave_no_state_behind() {
        let q = Quotas::new(limits(0, 0), t(0));
        for i in 0..100 {
            let label: Arc<str> = format!("room/{i}").into();
            let _g = q.acquire(&label, t(0)).unwrap();
        }
        assert_eq!(q.allocations(), 0);
        assert!(q.users.lock().unwrap().is_empty());
    }

    #[test]
    fn a_bucket_allows_its_rate_with_one_second_of_burst() {
        let mut b = Bucket::new(1000, t(0));
        assert!(b.take(1000, t(0)));
        assert!(!b.take(1, t(0)));
        // 100 ms later: 100 bytes more.
        assert!(b.take(100, t(100)));
        assert!(!b.take(1, t(100)));
        // Never more than one second's worth, however long it rested.
        assert!(b.take(1000, t(60_000)));
        assert!(!b.take(1, t(60_000)));
        let mut unlimited = Bucket::new(0, t(0));
        assert!(unlimited.take(usize::MAX, t(0)));
    }

    #[test]
    fn bandwidth_is_bounded_per_allocation_per_label_and_in_total() {
        let q = Quotas::new(
            Limits {
                per_user: 0,
                total: 0,
                allocation_rate: 1000,
                user_rate: 1500,
                total_rate: 2500,
            },
            t(0),
        );
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let mut a1 = q.acquire(&a, t(0)).unwrap();
        let mut a2 = q.acquire(&a, t(0)).unwrap();
        let mut b1 = q.acquire(&b, t(0)).unwrap();
        assert!(a1.take(1000, t(0)));
        assert!(!a1.take(1, t(0)), "allocation bucket");
        assert!(a2.take(500, t(0)));
        assert!(!a2.take(1, t(0)), "label bucket shared by a1 and a2");
        assert!(b1.take(1000, t(0)));
        assert!(!b1.take(1, t(0)));
        let mut b2 = q.acquire(&b, t(0)).unwrap();
        assert!(!b2.take(1, t(0)), "total bucket: 2500 taken");
    }
}
