//! What operators do to rooms (the admin API, the fleet page): list them,
//! close one, kick a peer.

use std::sync::Arc;

use super::{MemoryRegistry, Room};
use crate::protocol::PeerError;
use crate::rooms::{PeerInfo, RoomInfo, KICKED};
use crate::webhooks::{EndReason, LeaveReason};

impl MemoryRegistry {
    /// Every open room ([`Registry::rooms`](crate::rooms::Registry::rooms)).
    pub(super) fn list_rooms(&self) -> Result<Vec<RoomInfo>, PeerError> {
        let rooms: Vec<Arc<Room>> = self
            .shared
            .rooms
            .iter()
            .map(|r| Arc::clone(r.value()))
            .collect();
        Ok(rooms
            .iter()
            .filter_map(|room| {
                let st = room.lock();
                st.open.then(|| RoomInfo {
                    label: room.label.clone(),
                    name: room.named.then(|| room.label.clone()),
                    host: room.host_id.clone(),
                    host_connected: st.host.is_some(),
                    host_since: st.host_since,
                    since: room.since,
                    peers: st
                        .peers
                        .iter()
                        .map(|g| PeerInfo {
                            id: g.id.clone(),
                            role: g.role,
                            since: g.since,
                        })
                        .collect(),
                })
            })
            .collect())
    }

    /// Ends the room labelled `room`
    /// ([`Registry::close_room`](crate::rooms::Registry::close_room)).
    pub(super) fn close_by_label(&self, room: &str) -> Result<bool, PeerError> {
        let Some(room) = self.shared.rooms.get(room).map(|r| Arc::clone(r.value())) else {
            return Ok(false);
        };
        let st = room.lock();
        if !st.open {
            return Ok(false);
        }
        self.end(&room, st, EndReason::Admin);
        tracing::info!(room = %room.label, "room closed by an administrator");
        Ok(true)
    }

    /// Removes peer `peer` from room `room`
    /// ([`Registry::kick`](crate::rooms::Registry::kick)).
    pub(super) fn kick_peer(&self, room: &str, peer: &str) -> Result<bool, PeerError> {
        let Some(room) = self.shared.rooms.get(room).map(|r| Arc::clone(r.value())) else {
            return Ok(false);
        };
        let mut st = room.lock();
        if !st.open {
            return Ok(false);
        }
        if room.host_id == peer {
            let Some(link) = st.host.clone() else {
                return Ok(false);
            };
            // A later leave of this host's session must not start another
            // grace period: its epoch is no longer the room's.
            st.epoch += 1;
            self.host_gone(&room, st, LeaveReason::Kicked);
            link.close(KICKED.0, KICKED.1);
        } else {
            let Some(guest) = self.remove_guest(&room, &mut st, peer, LeaveReason::Kicked) else {
                return Ok(false);
            };
            drop(st);
            guest.link.close(KICKED.0, KICKED.1);
        }
        tracing::info!(room = %room.label, peer, "peer kicked by an administrator");
        Ok(true)
    }
}
