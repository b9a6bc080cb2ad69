//! A peer's membership of a shared room (the [`Member`] side): relays read
//! no Redis (a peer here gets the message in its outbox, a peer elsewhere
//! one `PUBLISH` to its instance), and leaves run their script.

use std::future::Future;
use std::sync::Arc;

use tracing::{debug, warn};

use super::cache::{LocalRoom, PeerAt, RoomCache};
use super::events;
use super::scripts::{Closed, LeaveArgs, LeaveHostArgs, Left};
use super::store::Fail;
use super::RedisRegistry;
use crate::protocol::{PeerError, RelayKind, Role, ServerMessage};
use crate::rooms::errors::{self, room_not_found, unavailable};
use crate::rooms::{Member, Queued, RoomEvent};
use crate::token::PeerId;
use crate::webhooks::{EndReason, LeaveReason, RoomRef};
use crate::ws::Utf8Bytes;

/// A peer's membership of a shared room.
pub struct RedisMember {
    pub(super) registry: RedisRegistry,
    pub(super) room: Arc<LocalRoom>,
    pub(super) peer_id: PeerId,
    pub(super) role: Role,
    /// For the host: the epoch it became host in.
    pub(super) epoch: u64,
}

/// Messages for other instances: `(channel, envelope)`.
type Remote = Vec<(String, String)>;

impl Member for RedisMember {
    fn peer_id(&self) -> &str {
        self.peer_id.as_str()
    }

    fn role(&self) -> Role {
        self.role
    }

    fn room(&self) -> &str {
        &self.room.id
    }

    async fn relay(
        &self,
        kind: RelayKind,
        to: Option<&str>,
        text: Utf8Bytes,
    ) -> Result<(), PeerError> {
        let remote = {
            let st = self.room.lock();
            if !st.open {
                return Err(room_not_found());
            }
            if self.role == Role::Host {
                self.relay_from_host(&st, kind, to, text)?
            } else {
                self.relay_to_host(&st, kind, text)?
            }
        };
        self.publish(remote).await
    }

    async fn close_room(&self) -> Result<(), PeerError> {
        if self.role != Role::Host {
            return Err(errors::not_host());
        }
        let registry = &self.registry;
        {
            let st = self.room.lock();
            if !st.open {
                return Err(room_not_found());
            }
            if st.local_host.as_ref().map(|h| h.epoch) != Some(self.epoch) {
                return Err(errors::replaced());
            }
        }
        if !registry.healthy_now() {
            return Err(unavailable());
        }
        match registry.inner.store.close(&self.room.id, self.epoch).await {
            Ok(Closed::Ok(seq)) => {
                registry.emit(seq, || {
                    RoomEvent::room_ended(RoomRef::label(&self.room.id), EndReason::Closed)
                });
                Ok(())
            }
            Ok(Closed::NotFound) => Err(room_not_found()),
            Ok(Closed::Stale) => Err(errors::replaced()),
            Err(e) => {
                warn!(room = %self.room.id, "close_room failed: Redis: {e}");
                Err(unavailable())
            }
        }
    }

    async fn leave_for(self, why: LeaveReason) {
        let _gate = self.registry.inner.gate.read().await;
        if self.role == Role::Host {
            self.leave_as_host(why).await;
        } else {
            self.leave_as_guest(why).await;
        }
        self.registry.forget_if_empty(&self.room);
    }
}

impl RedisMember {
    /// A guest's or watcher's message: to the host's outbox if it is here,
    /// else one envelope for the host's instance.
    fn relay_to_host(
        &self,
        st: &RoomCache,
        kind: RelayKind,
        text: Utf8Bytes,
    ) -> Result<Remote, PeerError> {
        let registry = &self.registry;
        let ctx = registry.ctx();
        let host = st.host.as_ref().ok_or_else(errors::host_absent)?;
        if host.inst == registry.inner.me {
            let local = st.local_host.as_ref().ok_or_else(errors::host_absent)?;
            let len = text.len();
            let from = st
                .local_guests
                .get(self.peer_id.as_str())
                .map(|g| g.link.state());
            match local.link.send_guest(text, from) {
                Queued::Yes => ctx.metrics.relayed(kind, len),
                Queued::Refused => return Err(errors::host_busy()),
                Queued::Full | Queued::Gone => {}
            }
            return Ok(Vec::new());
        }
        Ok(vec![(
            registry.inner.store.channel(&host.inst),
            events::to_host_envelope(&self.room.id, kind, text.as_str()),
        )])
    }

    /// The host's message: to the peer `to`, or to every member; those here
    /// get it in their outbox, those elsewhere in one envelope per instance.
    fn relay_from_host(
        &self,
        st: &RoomCache,
        kind: RelayKind,
        to: Option<&str>,
        text: Utf8Bytes,
    ) -> Result<Remote, PeerError> {
        if st.local_host.as_ref().map(|h| h.epoch) != Some(self.epoch) {
            return Err(errors::replaced());
        }
        let mut by_inst: Vec<(&str, Vec<&str>)> = Vec::new();
        match to {
            Some(to) => {
                let (id, peer) = st
                    .peers
                    .get_key_value(to)
                    .ok_or_else(errors::peer_not_found)?;
                self.deliver_or_batch(st, id, peer, kind, &text, &mut by_inst);
            }
            None => {
                for (id, peer) in &st.peers {
                    self.deliver_or_batch(st, id, peer, kind, &text, &mut by_inst);
                }
            }
        }
        let store = &self.registry.inner.store;
        Ok(by_inst
            .into_iter()
            .map(|(inst, ids)| {
                (
                    store.channel(inst),
                    events::to_peers_envelope(&self.room.id, kind, &ids, text.as_str()),
                )
            })
            .collect())
    }

    /// Delivers the host's `text` to member `id` if it is here, else adds it
    /// to the batch for its instance.
    fn deliver_or_batch<'a>(
        &self,
        st: &'a RoomCache,
        id: &'a str,
        peer: &'a PeerAt,
        kind: RelayKind,
        text: &Utf8Bytes,
        by_inst: &mut Vec<(&'a str, Vec<&'a str>)>,
    ) {
        if peer.inst == self.registry.inner.me {
            if let Some(g) = st.local_guests.get(id) {
                let ctx = self.registry.ctx();
                if ctx.deliver(&g.link, text.clone()) == Queued::Yes {
                    ctx.metrics.relayed(kind, text.len());
                }
            }
            return;
        }
        match by_inst.iter_mut().find(|(i, _)| *i == peer.inst) {
            Some((_, ids)) => ids.push(id),
            None => by_inst.push((peer.inst.as_str(), vec![id])),
        }
    }

    /// Sends what a relay has for other instances.
    async fn publish(&self, remote: Remote) -> Result<(), PeerError> {
        if remote.is_empty() {
            return Ok(());
        }
        let registry = &self.registry;
        if !registry.healthy_now() {
            return Err(unavailable());
        }
        registry.inner.store.publish(remote).await.map_err(|e| {
            debug!(room = %self.room.id, "relay through Redis failed: {e}");
            unavailable()
        })
    }

    async fn leave_as_guest(&self, why: LeaveReason) {
        let registry = &self.registry;
        let was_here = {
            let mut st = self.room.lock();
            st.local_guests.remove(self.peer_id.as_str()).is_some() && st.open
        };
        if !was_here {
            return;
        }
        let args = LeaveArgs {
            room: &self.room.id,
            peer: self.peer_id.as_str(),
            inst: &registry.inner.me,
        };
        let e = match self.record(registry.inner.store.leave(&args)).await {
            Ok(Some(Left::Ok(seq))) => {
                registry.emit(seq, || {
                    RoomEvent::peer_left(
                        RoomRef::label(&self.room.id),
                        self.peer_id.as_str(),
                        self.role,
                        why,
                    )
                });
                return;
            }
            Ok(_) => return,
            Err(e) => e,
        };
        warn!(room = %self.room.id, "leave not recorded in Redis ({e}): will re-sync");
        // Tell a host here now; others learn at the re-sync.
        let mut st = self.room.lock();
        if let Some(h) = &st.local_host {
            let link = h.link.clone();
            if st.peers.remove(self.peer_id.as_str()).is_some() {
                registry.ctx().deliver(
                    &link,
                    ServerMessage::PeerLeft {
                        peer: self.peer_id.as_str().into(),
                    }
                    .to_json(),
                );
            }
        }
        drop(st);
        registry.mark_dirty(&self.room.id);
    }

    async fn leave_as_host(&self, why: LeaveReason) {
        let registry = &self.registry;
        let current = {
            let mut st = self.room.lock();
            let current = st.open
                && st
                    .local_host
                    .as_ref()
                    .is_some_and(|h| h.epoch == self.epoch);
            if current {
                st.local_host = None;
                st.peers.clear();
            }
            current
        };
        if !current {
            return; // replaced by a resumed host, or the room is gone
        }
        let args = LeaveHostArgs {
            room: &self.room.id,
            epoch: self.epoch,
            inst: &registry.inner.me,
        };
        let e = match self.record(registry.inner.store.leave_host(&args)).await {
            Ok(Some(Left::Ok(seq))) => {
                registry.emit(seq, || {
                    RoomEvent::host_left(RoomRef::label(&self.room.id), self.peer_id.as_str(), why)
                });
                return;
            }
            Ok(_) => return,
            Err(e) => e,
        };
        warn!(room = %self.room.id, "host leave not recorded in Redis ({e}): will re-sync");
        let mut st = self.room.lock();
        let epoch = st.epoch;
        st.set_host(None, epoch, &registry.ctx());
        drop(st);
        registry.mark_dirty(&self.room.id);
    }

    /// Runs a leave's script if Redis can be used now. Returns what it
    /// found, nothing once the registry has stopped (it says nothing more
    /// to Redis), or the failure to make up for.
    async fn record(
        &self,
        script: impl Future<Output = Result<Left, Fail>>,
    ) -> Result<Option<Left>, Fail> {
        let result = if self.registry.healthy_now() {
            script.await
        } else {
            Err(self.registry.down())
        };
        match result {
            Ok(left) => Ok(Some(left)),
            Err(Fail::Stopped) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
