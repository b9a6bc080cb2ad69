//! The janitor: closes the rooms whose grace period has ended, and reaps the
//! instances whose heartbeat has expired (their peers are reported as left,
//! their hosts as away). Every instance runs one; what one closes or reaps
//! the others find done.

use tracing::{debug, warn};

use crate::rooms::redis::scripts::ReapArgs;
use crate::rooms::redis::RedisRegistry;
use crate::rooms::RoomEvent;
use crate::webhooks::{EndReason, LeaveReason, RoomRef};

impl RedisRegistry {
    pub(super) async fn janitor(self) {
        let stop = self.inner.stop.clone();
        let opts = self.inner.opts.clone();
        let mut sweep = tokio::time::interval(opts.sweep_interval);
        let mut reap = tokio::time::interval(opts.reap_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sweep.tick() => {
                    if self.healthy_now() {
                        match self.inner.store.sweep().await {
                            Ok(closed) => {
                                if !closed.is_empty() {
                                    debug!(closed = closed.len(), "closed rooms whose host did not come back");
                                }
                                for (room, seq) in closed {
                                    self.emit(seq, || RoomEvent::room_ended(RoomRef::label(&room), EndReason::HostGone));
                                }
                            }
                            Err(e) => debug!("grace sweep failed: {e}"),
                        }
                    }
                }
                _ = reap.tick() => {
                    if self.healthy_now() {
                        self.reap_dead().await;
                    }
                }
            }
        }
    }

    async fn reap_dead(&self) {
        let dead = match self.inner.store.find_dead(&self.inner.me).await {
            Ok(d) => d,
            Err(e) => {
                debug!("looking for dead instances failed: {e}");
                return;
            }
        };
        for inst in dead {
            self.reap(&inst).await;
        }
    }

    /// Reaps one dead instance, unless another instance does.
    async fn reap(&self, inst: &str) {
        let store = &self.inner.store;
        let lock_ttl = self.inner.opts.heartbeat_ttl * 4;
        if !store.lock_reap(inst, &self.inner.me, lock_ttl).await {
            return; // another instance reaps it
        }
        let Ok(rooms) = store.instance_rooms(inst).await else {
            return;
        };
        let mut left = 0;
        for room in &rooms {
            match store.reap(&ReapArgs { room, dead: inst }).await {
                Ok(gone) => {
                    left += gone.len();
                    for g in gone {
                        self.emit(g.seq, || match g.role {
                            None => {
                                RoomEvent::host_left(RoomRef::label(room), &g.id, LeaveReason::Lost)
                            }
                            Some(role) => RoomEvent::peer_left(
                                RoomRef::label(room),
                                &g.id,
                                role,
                                LeaveReason::Lost,
                            ),
                        });
                    }
                }
                Err(e) => debug!("reaping {inst} in {room} failed: {e}"),
            }
        }
        let _ = store.forget_instance(inst).await;
        warn!(
            instance = %self.inner.me,
            dead = %inst,
            rooms = rooms.len(),
            left,
            "an instance stopped sending heartbeats: its peers were reported as left"
        );
    }
}
