//! The subscriber: holds the subscription to this instance's channel
//! (pinged, so that a silent half-open connection is noticed), applies each
//! event it brings to the room's local entry, and re-subscribes after a
//! failure, asking for a re-sync since events may have been missed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::PubSub;
use ::redis::RedisError;
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use crate::rooms::redis::cache::Applied;
use crate::rooms::redis::events::{parse_event, Event};
use crate::rooms::redis::RedisRegistry;

/// First and longest wait between two subscription attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

impl RedisRegistry {
    pub(super) async fn subscriber(self) {
        let stop = self.inner.stop.clone();
        let mut backoff = BACKOFF.0;
        let mut lost = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(self.inner.opts.command_timeout * 2, self.subscribe()) => r,
            };
            let pubsub = match pubsub {
                Ok(Ok(p)) => p,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    if !lost {
                        warn!(instance = %self.inner.me, "Redis subscription failed: {why}; retrying");
                        lost = true;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            };
            backoff = BACKOFF.0;
            self.inner.subscribed.store(true, Ordering::SeqCst);
            if lost {
                info!(instance = %self.inner.me, "Redis subscription restored");
                // Events may have been missed meanwhile.
                self.inner.reconcile.notify_one();
            }
            let Some(why) = self.listen(pubsub).await else {
                self.inner.subscribed.store(false, Ordering::SeqCst);
                return; // stopped
            };
            self.inner.subscribed.store(false, Ordering::SeqCst);
            self.inner.losses.fetch_add(1, Ordering::Relaxed);
            warn!(instance = %self.inner.me, "Redis subscription lost: {why}; rooms are unavailable until it is back");
            lost = true;
        }
    }

    async fn subscribe(&self) -> Result<PubSub, RedisError> {
        let mut pubsub = self.inner.client.get_async_pubsub().await?;
        pubsub
            .subscribe(&self.inner.store.channel(&self.inner.me))
            .await?;
        pubsub.subscribe(&self.inner.store.key("events")).await?;
        Ok(pubsub)
    }

    /// Applies the subscription's events until it fails (then why) or the
    /// registry stops (then `None`).
    async fn listen(&self, pubsub: PubSub) -> Option<String> {
        let stop = &self.inner.stop;
        let events = self.inner.store.key("events");
        let events = events.as_str();
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(self.inner.opts.subscription_ping);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return None,
                msg = stream.next() => match msg {
                    Some(msg) => match std::str::from_utf8(msg.get_payload_bytes()) {
                        Ok(text) if msg.get_channel_name() == events => self.on_remote_event(text),
                        Ok(text) => self.on_message(text),
                        Err(_) => debug!("ignored a non-UTF-8 event"),
                    },
                    None => return Some("connection closed".to_string()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(self.inner.opts.command_timeout, sink.ping::<::redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(e.to_string()),
                        Err(_) => return Some("ping timed out".to_string()),
                    }
                }
            }
        }
    }

    /// Applies one event of this instance's channel.
    fn on_message(&self, payload: &str) {
        let Some((room, event)) = parse_event(payload) else {
            debug!("ignored a malformed event");
            return;
        };
        tracing::trace!(instance = %self.inner.me, room = %room, "event {}", event.describe());
        if let Event::Closed { counted: true, .. } = &event {
            self.inner.metrics.room_closed();
        }
        let entry = {
            let mut local = self.local();
            match local.rooms.get(&room) {
                Some(r) => Arc::clone(r),
                None => {
                    if !matches!(event, Event::Closed { .. }) {
                        local.hold_orphan(room, event);
                    }
                    return;
                }
            }
        };
        let mut st = entry.lock();
        if st.detached {
            tracing::trace!(room = %room, "event for a detached room dropped");
            return;
        }
        match st.apply(event, &self.ctx()) {
            Applied::Done => {}
            Applied::Emptied => {
                drop(st);
                self.forget_if_empty(&entry);
            }
            Applied::Hold(event) => {
                tracing::trace!(room = %room, "event held: {}", event.describe());
                st.hold(Instant::now(), event)
            }
            Applied::Closed => {
                drop(st);
                self.forget(&entry);
                debug!(room = %room, "room closed: its host did not come back");
            }
        }
    }
}
