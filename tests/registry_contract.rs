//! The registry contract (`tests/contract`) run for every registry: the
//! in-memory one (on tokio's paused clock, so its grace periods pass at
//! once) and the Redis one (three instances sharing a real `redis-server`
//! that each test starts on a free loopback port; a missing `redis-server`
//! fails these tests, saying so).
//!
//! The suite drives the registries through the `Registry` and `Member`
//! traits and reads the `PeerLink` outboxes directly: what a session relies
//! on, without sockets. What only sockets show (the wire format of the
//! session's own replies, HTTP statuses, close frames on the wire, rate
//! limits) stays in the socket-level tests.

mod common;
mod contract;
mod redis_support;

use std::time::Duration;

use contract::Fleet;
use redis_support::{init_logs, quick_options, RedisServer};
use signal_server::metrics::Metrics;
use signal_server::rooms::{MemoryRegistry, RedisRegistry, RoomLimits};

/// The in-memory registry: every instance is the same one.
struct Memory {
    registry: MemoryRegistry,
    metrics: Metrics,
}

impl Fleet for Memory {
    type R = MemoryRegistry;
    // On the paused clock: waited for in no time.
    const SHORT_GRACE: Duration = Duration::from_secs(5);

    async fn start(limits: RoomLimits) -> Self {
        let metrics = Metrics::new();
        Memory {
            registry: MemoryRegistry::new(limits, metrics.clone()),
            metrics,
        }
    }

    fn at(&self, _: usize) -> &MemoryRegistry {
        &self.registry
    }

    fn metrics(&self) -> Vec<&Metrics> {
        vec![&self.metrics]
    }

    fn instances(&self) -> usize {
        1
    }
}

/// Three Redis registries sharing one `redis-server`.
struct Redis {
    instances: Vec<(RedisRegistry, Metrics)>,
    _server: RedisServer,
}

impl Fleet for Redis {
    type R = RedisRegistry;
    // Grace deadlines are swept every 100 ms (`quick_options`).
    const SHORT_GRACE: Duration = Duration::from_millis(400);

    async fn start(limits: RoomLimits) -> Self {
        init_logs();
        let server = RedisServer::start().await;
        let mut instances = Vec::new();
        for _ in 0..3 {
            let metrics = Metrics::new();
            let registry =
                RedisRegistry::start(quick_options(&server.url()), limits, metrics.clone())
                    .expect("registry");
            instances.push((registry, metrics));
        }
        for (registry, _) in &instances {
            assert!(
                registry.wait_healthy(common::WAIT).await,
                "a Redis registry did not become healthy"
            );
        }
        Redis {
            instances,
            _server: server,
        }
    }

    fn at(&self, i: usize) -> &RedisRegistry {
        &self.instances[i % self.instances.len()].0
    }

    fn metrics(&self) -> Vec<&Metrics> {
        self.instances.iter().map(|(_, m)| m).collect()
    }

    fn instances(&self) -> usize {
        self.instances.len()
    }
}

/// One test per scenario of the suite and registry: `memory::NAME` and
/// `redis::NAME`.
macro_rules! contract_tests {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $scenario() {
                    contract::$scenario::<Memory>().await;
                }
            )*
        }

        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    contract::$scenario::<Redis>().await;
                }
            )*
        }
    };
}

contract_tests!(
    a_room_is_created_with_fresh_tokens_for_its_roles,
    guests_and_watchers_attach_and_the_host_is_told,
    a_full_room_refuses_more_peers_until_one_leaves,
    the_host_reaches_one_peer_with_to_or_all_without,
    leaving_is_told_to_the_peers_it_concerns,
    the_room_closes_when_the_grace_period_ends,
    resuming_replaces_the_host,
    a_slow_consumer_is_cut_off_once_and_its_room_carries_on,
    every_instance_lists_every_open_room_with_its_host_and_peers,
    an_administrator_closes_a_room_from_any_instance,
    the_host_closes_its_room_and_no_one_else_may,
    an_administrator_kicks_a_peer_or_the_host_from_any_instance,
    room_events_reach_live_subscribers_on_every_instance,
);
