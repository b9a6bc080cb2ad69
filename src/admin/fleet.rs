//! The fleet as the fleet page shows it: the registry's rooms, polled once
//! a second while someone watches, with named rooms remembered once their
//! robot has gone (offline, "last seen").
//!
//! With Redis the registry's `rooms()` lists every instance's rooms, so
//! each instance's fleet view is the whole fleet; what it remembers of
//! offline robots is what it has seen since it started.
//!
//! Bounded: at most [`MAX_REMEMBERED`] offline robots are remembered (the
//! ones seen longest ago are forgotten first), each for at most
//! [`FORGET_AFTER`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::backend;
use super::error::ApiResult;
use super::views::{FleetView, PeerView, RobotView, RoomView, Viewers};
use crate::auth::unix_now;
use crate::rooms::Registry;
use crate::session::Shared;

/// How often the registry is polled while the fleet is watched (and at
/// once on each room event): a robot's change shows on the page within
/// this and the event's trip.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest time between two polls made on room events.
pub const MIN_EVENT_GAP: Duration = Duration::from_millis(200);

/// Offline robots remembered at most.
pub const MAX_REMEMBERED: usize = 10_000;

/// How long an offline robot is remembered.
pub const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
struct Robot {
    named: bool,
    online_since: Option<u64>,
    last_seen: u64,
    peers: Vec<PeerView>,
}

/// The fleet: the latest view, and a channel that says when it changes.
pub struct Fleet {
    known: Mutex<BTreeMap<String, Robot>>,
    view: watch::Sender<Arc<FleetView>>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            known: Mutex::new(BTreeMap::new()),
            view: watch::Sender::new(Arc::new(FleetView::default())),
        }
    }
}

impl Fleet {
    /// A receiver of every new view (the current one is marked seen only
    /// once read).
    pub fn subscribe(&self) -> watch::Receiver<Arc<FleetView>> {
        self.view.subscribe()
    }

    /// The latest view (possibly never taken: `at == 0`).
    pub fn current(&self) -> Arc<FleetView> {
        self.view.borrow().clone()
    }

    /// Polls the registry now and publishes the view if it changed.
    pub async fn refresh<R: Registry>(&self, shared: &Shared<R>) -> ApiResult<Arc<FleetView>> {
        let rooms = backend::rooms(shared).await?;
        Ok(self.merge(rooms, unix_now()))
    }

    /// Folds the registry's `rooms` at `now` into what is known, and
    /// publishes the view when it differs from the last one (`at` aside).
    pub fn merge(&self, rooms: Vec<RoomView>, now: u64) -> Arc<FleetView> {
        let view = {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            fold(&mut known, rooms, now);
            Arc::new(FleetView {
                at: now,
                robots: known
                    .iter()
                    .map(|(room, r)| RobotView {
                        room: room.clone(),
                        named: r.named,
                        online: r.online_since.is_some(),
                        online_since: r.online_since,
                        last_seen: r.last_seen,
                        viewers: Viewers::of(&r.peers),
                        peers: r.peers.clone(),
                    })
                    .collect(),
            })
        };
        self.view.send_if_modified(|old| {
            if old.robots == view.robots && old.at != 0 {
                return false;
            }
            *old = Arc::clone(&view);
            true
        });
        view
    }

    /// Polls every [`POLL_INTERVAL`] while the view has subscribers, until
    /// `stop`.
    pub async fn run<R: Registry>(self: Arc<Self>, shared: Shared<R>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A room event (any instance's, with Redis) polls at once; the
        // timer catches what no event tells (a peer's `since`, a missed
        // event).
        let mut events = shared.registry.events().subscribe();
        let mut last = tokio::time::Instant::now();
        loop {
            let by_event = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => false,
                got = async {
                    match events.as_mut() {
                        Some(rx) => rx.recv().await.map(drop),
                        None => std::future::pending().await,
                    }
                } => {
                    if matches!(got, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        events = None;
                    }
                    true
                }
            };
            // A burst of events costs one poll per MIN_EVENT_GAP at most.
            if self.view.receiver_count() == 0 || (by_event && last.elapsed() < MIN_EVENT_GAP) {
                continue;
            }
            last = tokio::time::Instant::now();
            if let Err(e) = self.refresh(&shared).await {
                debug!(code = e.code, "fleet poll failed: {}", e.message);
            }
        }
    }
}

fn fold(known: &mut BTreeMap<String, Robot>, rooms: Vec<RoomView>, now: u64) {
    let mut present = std::collections::HashSet::with_capacity(rooms.len());
    for room in rooms {
        present.insert(room.room.clone());
        let entry = known.entry(room.room).or_insert(Robot {
            named: room.named,
            online_since: None,
            // A room first seen with its host away was last seen when it left.
            last_seen: room.since,
            peers: Vec::new(),
        });
        entry.named = room.named;
        entry.peers = room.peers;
        if room.host_connected {
            // Changed only on coming online, so that an unchanged fleet
            // makes no event.
            if entry.online_since.is_none() {
                entry.last_seen = now;
            }
            entry.online_since = Some(room.since);
        } else {
            if entry.online_since.is_some() {
                // When it left.
                entry.last_seen = room.since.max(entry.last_seen);
            }
            entry.online_since = None;
        }
    }
    // Rooms gone from the registry: unnamed ones are forgotten, named ones
    // stay offline.
    known.retain(|room, r| {
        if present.contains(room) {
            return true;
        }
        if r.online_since.take().is_some() {
            r.last_seen = now;
        }
        r.peers.clear();
        r.named && now.saturating_sub(r.last_seen) < FORGET_AFTER.as_secs()
    });
    let offline = known.values().filter(|r| r.online_since.is_none()).count();
    if offline > MAX_REMEMBERED {
        let mut ages: Vec<(u64, String)> = known
            .iter()
            .filter(|(_, r)| r.online_since.is_none())
            .map(|(k, r)| (r.last_seen, k.clone()))
            .collect();
        ages.sort_unstable();
        for (_, k) in ages.into_iter().take(offline - MAX_REMEMBERED) {
            known.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, named: bool, up: bool, since: u64, peers: &[(&str, &str)]) -> RoomView {
        RoomView {
            room: name.into(),
            named,
            host_connected: up,
            since,
            peers: peers
                .iter()
                .map(|(id, role)| PeerView {
                    id: (*id).into(),
                    role: (*role).into(),
                    since,
                })
                .collect(),
        }
    }

    #[test]
    fn a_named_robot_that_goes_stays_offline_with_its_last_seen_time() {
        let fleet = Fleet::default();
        let v = fleet.merge(
            vec![room("robot-7", true, true, 100, &[("p1", "watch")])],
            110,
        );
        let r = &v.robots[0];
        assert!(r.online);
        assert_eq!((r.online_since, r.last_seen), (Some(100), 110));
        let v = fleet.merge(
            vec![room("robot-7", true, true, 100, &[("p1", "watch")])],
            112,
        );
        assert_eq!(v.robots[0].last_seen, 110, "unchanged while online");
        assert_eq!(r.viewers, Viewers { join: 0, watch: 1 });
        // Host away (grace period): offline, last seen when it left.
        let v = fleet.merge(vec![room("robot-7", true, false, 115, &[])], 116);
        assert!(!v.robots[0].online);
        assert_eq!(v.robots[0].last_seen, 115);
        // Room gone: still listed, offline.
        let v = fleet.merge(vec![], 200);
        assert_eq!(v.robots.len(), 1);
        assert!(!v.robots[0].online);
        assert_eq!(v.robots[0].last_seen, 115);
        assert!(v.robots[0].peers.is_empty());
    }

    #[test]
    fn an_unnamed_room_is_forgotten_when_it_ends() {
        let fleet = Fleet::default();
        fleet.merge(vec![room("r-abc", false, true, 1, &[])], 2);
        let v = fleet.merge(vec![], 3);
        assert!(v.robots.is_empty());
    }

    #[test]
    fn subscribers_hear_of_changes_only() {
        let fleet = Fleet::default();
        let mut rx = fleet.subscribe();
        fleet.merge(vec![room("a", true, true, 1, &[])], 2);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        fleet.merge(vec![room("a", true, true, 1, &[])], 3);
        assert!(!rx.has_changed().unwrap(), "nothing changed but the time");
        fleet.merge(vec![room("a", true, true, 1, &[("p", "join")])], 4);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn offline_robots_are_bounded() {
        let mut known = BTreeMap::new();
        let rooms: Vec<_> = (0..MAX_REMEMBERED + 5)
            .map(|i| room(&format!("r{i}"), true, true, 1, &[]))
            .collect();
        fold(&mut known, rooms, 10);
        fold(&mut known, vec![], 11);
        assert_eq!(known.len(), MAX_REMEMBERED);
    }
}
