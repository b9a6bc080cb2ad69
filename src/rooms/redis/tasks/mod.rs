//! The registry's background tasks, each in a tracing span of its own:
//!
//! - the [subscriber](subscriber) receives this instance's events and
//!   re-subscribes after a failure;
//! - the [heartbeat](heartbeat) refreshes `{prefix}inst:{instance}`, which
//!   expires after `heartbeat_ttl`, and the expiry of the rooms' keys;
//! - the [janitor](janitor) closes rooms whose grace period ended, and reaps
//!   instances whose heartbeat expired (their peers are reported as left);
//! - the [reconciler](reconciler), after Redis was unreachable or lost its
//!   data, re-asserts what this instance knows and re-reads each room.

mod heartbeat;
mod janitor;
mod reconciler;
mod subscriber;

use tokio::task::JoinHandle;
use tracing::{info_span, Instrument};

use super::RedisRegistry;

impl RedisRegistry {
    /// Starts the four tasks, each in a span `redis_task` naming it and
    /// this instance; they run until the registry stops.
    pub(super) fn spawn_tasks(&self) -> Vec<JoinHandle<()>> {
        let span = |task: &'static str| info_span!("redis_task", task, instance = %self.inner.me);
        vec![
            tokio::spawn(self.clone().subscriber().instrument(span("subscriber"))),
            tokio::spawn(self.clone().heartbeat().instrument(span("heartbeat"))),
            tokio::spawn(self.clone().janitor().instrument(span("janitor"))),
            tokio::spawn(self.clone().reconciler().instrument(span("reconciler"))),
        ]
    }
}
