//! The instance's local map: the rooms it has members in (each with its
//! [`RoomCache`]), events that arrived for rooms it does not know yet, and
//! the rooms whose shared state it failed to update.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::cache::{LocalRoom, RoomCache, HELD_MAX};
use super::events::Event;
use super::scripts::Snapshot;
use super::RedisRegistry;

/// How long an event for a peer or room that is not registered here yet is
/// kept (a peer's registration follows its script's reply within
/// milliseconds; the events it may race with are kept this long).
const HOLD_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Local {
    pub rooms: HashMap<String, Arc<LocalRoom>>,
    /// Events for rooms not (yet) known here.
    orphans: HashMap<String, Vec<(Instant, Event)>>,
    /// Rooms whose shared state this instance failed to update.
    pub dirty: HashSet<String>,
}

impl Local {
    /// Keeps an event for a room not known here (yet).
    pub fn hold_orphan(&mut self, room: String, event: Event) {
        let held = self.orphans.entry(room).or_default();
        if held.len() < HELD_MAX {
            held.push((Instant::now(), event));
        }
    }

    /// Takes `room` out of the map, if it is this entry.
    fn unlist(&mut self, room: &Arc<LocalRoom>) {
        if self
            .rooms
            .get(&room.id)
            .is_some_and(|r| Arc::ptr_eq(r, room))
        {
            self.rooms.remove(&room.id);
        }
    }
}

impl RedisRegistry {
    pub(super) fn local(&self) -> MutexGuard<'_, Local> {
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn mark_dirty(&self, room: &str) {
        self.local().dirty.insert(room.to_string());
    }

    /// The room's entry, created from `snapshot` if there is none (then
    /// `true`); events that arrived for the room before it are moved into it.
    pub(super) fn room_entry(&self, snapshot: &Snapshot) -> (Arc<LocalRoom>, bool) {
        let room = &snapshot.room;
        let mut local = self.local();
        if let Some(r) = local.rooms.get(room) {
            return (Arc::clone(r), false);
        }
        let mut cache = RoomCache::from_snapshot(snapshot);
        if let Some(orphans) = local.orphans.remove(room) {
            for (at, e) in orphans {
                cache.hold(at, e);
            }
        }
        let entry = Arc::new(LocalRoom::new(room.clone(), cache));
        local.rooms.insert(room.clone(), Arc::clone(&entry));
        (entry, true)
    }

    /// Forgets a room that has no member here any more.
    pub(super) fn forget_if_empty(&self, room: &Arc<LocalRoom>) {
        let mut local = self.local();
        let mut st = room.lock();
        if st.is_empty() && !st.detached {
            st.detached = true;
            drop(st);
            local.unlist(room);
        }
    }

    /// Forgets a room that closed.
    pub(super) fn forget(&self, room: &Arc<LocalRoom>) {
        let mut local = self.local();
        room.lock().detached = true;
        local.unlist(room);
    }

    /// Drops the held events that have waited too long.
    pub(super) fn prune(&self) {
        let before = Instant::now() - HOLD_FOR;
        let rooms: Vec<Arc<LocalRoom>> = {
            let mut local = self.local();
            local.orphans.retain(|_, held| {
                held.retain(|(at, _)| *at >= before);
                !held.is_empty()
            });
            local.rooms.values().cloned().collect()
        };
        for r in rooms {
            r.lock().prune(before);
        }
    }
}
