//! A peer's membership of an in-memory room: relay, leave, close.

use std::sync::Arc;

use super::{errors, room_not_found, MemoryRegistry, Room};
use crate::protocol::{PeerError, RelayKind, Role};
use crate::rooms::errors::host_busy;
use crate::rooms::{LinkState, Member, Queued};
use crate::token::PeerId;
use crate::webhooks::{EndReason, LeaveReason};
use crate::ws::Utf8Bytes;

/// A peer's membership of an in-memory room.
pub struct MemoryMember {
    pub(super) registry: MemoryRegistry,
    pub(super) room: Arc<Room>,
    pub(super) peer_id: PeerId,
    pub(super) role: Role,
    /// For the host: the epoch it became host in.
    pub(super) epoch: u64,
    /// The peer's own link's counts (a guest's messages to its host count
    /// in its share of the host's queue).
    pub(super) sender: Arc<LinkState>,
}

impl Member for MemoryMember {
    fn peer_id(&self) -> &str {
        self.peer_id.as_str()
    }

    fn role(&self) -> Role {
        self.role
    }

    fn room(&self) -> &str {
        &self.room.label
    }

    async fn relay(
        &self,
        kind: RelayKind,
        to: Option<&str>,
        text: Utf8Bytes,
    ) -> Result<(), PeerError> {
        let metrics = &self.registry.shared.metrics;
        let len = text.len();
        let st = self.room.lock();
        if !st.open {
            return Err(room_not_found());
        }
        if self.role != Role::Host {
            let host = st.host.as_ref().ok_or_else(errors::host_absent)?;
            match host.send_guest(text, Some(&self.sender)) {
                Queued::Yes => metrics.relayed(kind, len),
                Queued::Refused => return Err(host_busy()),
                Queued::Full | Queued::Gone => {}
            }
            return Ok(());
        }
        if st.epoch != self.epoch {
            return Err(errors::replaced());
        }
        match to {
            Some(to) => {
                let guest = st
                    .peers
                    .iter()
                    .find(|g| g.id == to)
                    .ok_or_else(errors::peer_not_found)?;
                if self.registry.deliver(&guest.link, text) == Queued::Yes {
                    metrics.relayed(kind, len);
                }
            }
            None => {
                for guest in &st.peers {
                    if self.registry.deliver(&guest.link, text.clone()) == Queued::Yes {
                        metrics.relayed(kind, len);
                    }
                }
            }
        }
        Ok(())
    }

    async fn leave_for(self, why: LeaveReason) {
        let mut st = self.room.lock();
        if !st.open {
            return;
        }
        if self.role != Role::Host {
            self.registry
                .remove_guest(&self.room, &mut st, self.peer_id.as_str(), why);
            return;
        }
        if st.epoch != self.epoch {
            return; // replaced by a resumed host, or kicked
        }
        self.registry.host_gone(&self.room, st, why);
    }

    async fn close_room(&self) -> Result<(), PeerError> {
        if self.role != Role::Host {
            return Err(errors::not_host());
        }
        let st = self.room.lock();
        if !st.open {
            return Err(room_not_found());
        }
        if st.epoch != self.epoch {
            return Err(errors::replaced());
        }
        self.registry.end(&self.room, st, EndReason::Closed);
        tracing::info!(room = %self.room.label, "room closed by its host");
        Ok(())
    }
}
