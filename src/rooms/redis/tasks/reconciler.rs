//! The reconciler: after Redis was unreachable, lost its data, or missed a
//! change of this instance, re-asserts what this instance knows of each of
//! its rooms (the `SYNC` script) and brings the room's local entry up to
//! what Redis then has.

use std::collections::HashSet;
use std::time::Duration;

use tracing::{info, warn, Instrument};

use crate::rooms::redis::cache::RoomCache;
use crate::rooms::redis::scripts::{Known, SyncArgs, Synced};
use crate::rooms::redis::store::Fail;
use crate::rooms::redis::RedisRegistry;

/// How long a burst of triggers may settle before a re-sync starts.
const SETTLE: Duration = Duration::from_millis(50);
/// Wait before retrying a failed re-sync.
const RETRY: Duration = Duration::from_millis(500);

impl RedisRegistry {
    pub(super) async fn reconciler(self) {
        let stop = self.inner.stop.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.reconcile.notified() => {}
            }
            tokio::time::sleep(SETTLE).await;
            if !self.healthy_now() {
                continue; // the recovery will notify again
            }
            if let Err(e) = self.reconcile_all().await {
                warn!(instance = %self.inner.me, "re-syncing rooms with Redis failed: {e}; will retry");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
                self.inner.reconcile.notify_one();
            }
        }
    }

    async fn reconcile_all(&self) -> Result<(), Fail> {
        let mut rooms: HashSet<String> = {
            let mut local = self.local();
            let mut set: HashSet<String> = local.rooms.keys().cloned().collect();
            set.extend(local.dirty.drain());
            set
        };
        match self.inner.store.instance_rooms(&self.inner.me).await {
            Ok(listed) => rooms.extend(listed),
            Err(e) => {
                self.local().dirty.extend(rooms);
                return Err(e);
            }
        }
        let n = rooms.len();
        let mut failed = None;
        let mut again = false;
        for room in rooms {
            let synced = {
                let _gate = self.inner.gate.write().await;
                self.sync_room(&room).await
            };
            match synced {
                Ok(doubt) => again |= doubt,
                Err(e) => {
                    self.mark_dirty(&room);
                    failed = Some(e);
                }
            }
        }
        if n > 0 {
            info!(instance = %self.inner.me, rooms = n, "re-synced rooms with Redis");
        }
        if again {
            self.reconcile_later();
        }
        failed.map_or(Ok(()), Err)
    }

    /// Peers of other instances were missing: looks again once their
    /// instances have had the time to put them back.
    fn reconcile_later(&self) {
        let registry = self.clone();
        let wait = self.inner.opts.heartbeat_ttl + self.inner.opts.heartbeat_interval;
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = registry.inner.stop.cancelled() => {}
                    _ = tokio::time::sleep(wait) => registry.inner.reconcile.notify_one(),
                }
            }
            .in_current_span(),
        );
    }

    /// Re-syncs one room; `Ok(true)` if it should be re-synced again later.
    async fn sync_room(&self, room: &str) -> Result<bool, Fail> {
        let entry = self.local().rooms.get(room).cloned();
        let args = SyncArgs {
            room,
            inst: &self.inner.me,
            key_ttl: self.inner.opts.key_ttl,
            heartbeat_ttl: self.inner.opts.heartbeat_ttl,
            known: entry.as_ref().map(|e| known(&e.lock())),
        };
        let synced = self.inner.store.sync(&args).await?;
        let Some(entry) = entry else { return Ok(false) };
        let snapshot = match synced {
            Synced::Ok(snapshot) => snapshot,
            Synced::Gone => {
                entry.lock().close(&self.ctx());
                self.forget(&entry);
                info!(room = %room, "room closed: Redis no longer has it");
                return Ok(false);
            }
        };
        let settle = self.inner.opts.heartbeat_ttl + self.inner.opts.heartbeat_interval;
        let doubt = entry
            .lock()
            .apply_sync(&snapshot, &self.inner.me, settle, &self.ctx());
        Ok(doubt)
    }
}

/// What this instance asserts of a room it has members in.
fn known(st: &RoomCache) -> Known {
    let host_here = st.local_host.as_ref();
    Known {
        join: st.join.clone(),
        watch: st.watch.clone(),
        resume: st.resume.clone(),
        host_id: st.host_id.clone(),
        epoch: host_here.map_or(st.epoch, |h| h.epoch),
        grace_ms: st.grace_ms,
        host_here: host_here.is_some(),
        host_inst: st.host.as_ref().map(|h| h.inst.clone()).unwrap_or_default(),
        cinst: st.cinst.clone(),
        local_peers: st
            .local_guests
            .iter()
            .map(|(id, g)| (id.clone(), g.role))
            .collect(),
    }
}
