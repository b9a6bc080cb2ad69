//! The heartbeat: refreshes this instance's heartbeat key, tracks whether
//! Redis is reachable, asks for a re-sync when the key was missing (this
//! instance was taken for dead, or Redis lost its data), drops held events
//! that waited too long, and now and then refreshes the expiry of the rooms'
//! keys.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::rooms::redis::scripts::TouchArgs;
use crate::rooms::redis::RedisRegistry;

/// Rooms refreshed per `TOUCH` call.
const TOUCH_BATCH: usize = 200;

impl RedisRegistry {
    pub(super) async fn heartbeat(self) {
        let stop = self.inner.stop.clone();
        let opts = &self.inner.opts;
        let mut tick = tokio::time::interval(opts.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let touch_every = (opts.key_ttl / 5).max(opts.heartbeat_interval);
        let mut last_touch = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.beat().await {
                continue;
            }
            self.prune();
            if last_touch.elapsed() >= touch_every {
                last_touch = Instant::now();
                self.touch_rooms().await;
            }
        }
    }

    /// One heartbeat; returns whether Redis answered.
    async fn beat(&self) -> bool {
        let inner = &self.inner;
        let result = inner
            .store
            .heartbeat(&inner.me, inner.opts.heartbeat_ttl)
            .await;
        let was = inner.reachable.load(Ordering::SeqCst);
        match result {
            Ok(present) => {
                inner.reachable.store(true, Ordering::SeqCst);
                if !was {
                    info!(instance = %inner.me, "Redis is reachable");
                }
                // Our heartbeat had expired (we were taken for dead) or
                // Redis lost its data: put back what we know.
                if !present && !self.local().rooms.is_empty() {
                    info!(instance = %inner.me, "heartbeat key was missing: re-asserting this instance's rooms");
                    inner.reconcile.notify_one();
                } else if !was {
                    inner.reconcile.notify_one();
                }
                true
            }
            Err(why) => {
                inner.reachable.store(false, Ordering::SeqCst);
                if was {
                    warn!(instance = %inner.me, "Redis is unreachable: {why}; new rooms are refused until it is back");
                }
                false
            }
        }
    }

    async fn touch_rooms(&self) {
        let rooms: Vec<String> = self.local().rooms.keys().cloned().collect();
        for chunk in rooms.chunks(TOUCH_BATCH) {
            let args = TouchArgs {
                inst: &self.inner.me,
                key_ttl: self.inner.opts.key_ttl,
                rooms: chunk,
            };
            if let Err(e) = self.inner.store.touch(&args).await {
                debug!("refreshing room expiry failed: {e}");
            }
        }
    }
}
