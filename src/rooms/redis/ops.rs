//! What operators do to shared rooms (the admin side of the [`Registry`]
//! trait): list every room, close one, kick a peer, from any instance. Each
//! is one script; the instances concerned hear of it on their channels
//! (`C`, `K`, `HL`, `L`), and this instance, which made the change, emits
//! its event.
//!
//! [`Registry`]: crate::rooms::Registry

use tracing::{info, warn};

use super::scripts::Closed;
use super::store::Fail;
use super::RedisRegistry;
use crate::protocol::PeerError;
use crate::rooms::errors::unavailable;
use crate::rooms::{named_token, PeerInfo, RoomEvent, RoomInfo};
use crate::webhooks::{EndReason, LeaveReason, RoomRef};

/// Longer than any label or peer id: not looked up.
const MAX_ID: usize = 64;

impl RedisRegistry {
    fn op_failed(&self, what: &str, e: Fail) -> PeerError {
        warn!(instance = %self.inner.me, "{what} failed: Redis: {e}");
        unavailable()
    }

    fn usable(&self) -> Result<(), PeerError> {
        if self.healthy_now() {
            Ok(())
        } else {
            Err(unavailable())
        }
    }

    pub(super) async fn list_rooms(&self) -> Result<Vec<RoomInfo>, PeerError> {
        self.usable()?;
        let listed = self
            .inner
            .store
            .rooms()
            .await
            .map_err(|e| self.op_failed("listing rooms", e))?;
        Ok(listed
            .into_iter()
            .map(|r| RoomInfo {
                label: r.room,
                name: r.name,
                host: r.host.into(),
                host_connected: r.host_connected,
                host_since: r.host_since,
                since: r.since,
                peers: r
                    .peers
                    .into_iter()
                    .map(|(id, role, since)| PeerInfo {
                        id: id.into(),
                        role,
                        since,
                    })
                    .collect(),
            })
            .collect())
    }

    /// The label of the room `room` names: a named room's (`robot-7`, found
    /// through its name's resume token, on whichever instance hosts it), or
    /// `room` itself, taken as a label.
    async fn label_of(&self, room: &str) -> Result<String, PeerError> {
        let by_name = self
            .inner
            .store
            .token(named_token(room, None).as_str())
            .await
            .map_err(|e| self.op_failed("finding a room by name", e))?;
        Ok(
            match by_name.as_deref().and_then(|v| v.strip_prefix("r|")) {
                Some(label) => label.to_owned(),
                None => room.to_owned(),
            },
        )
    }

    pub(super) async fn close_by_admin(&self, room: &str) -> Result<bool, PeerError> {
        if room.len() > MAX_ID {
            return Ok(false);
        }
        self.usable()?;
        let label = self.label_of(room).await?;
        let room = label.as_str();
        match self.inner.store.close(room, 0).await {
            Ok(Closed::Ok(seq)) => {
                self.emit(seq, || {
                    RoomEvent::room_ended(RoomRef::label(room), EndReason::Admin)
                });
                info!(room, "room closed by an administrator");
                Ok(true)
            }
            Ok(Closed::NotFound | Closed::Stale) => Ok(false),
            Err(e) => Err(self.op_failed("close_room", e)),
        }
    }

    pub(super) async fn kick_peer(&self, room: &str, peer: &str) -> Result<bool, PeerError> {
        if room.len() > MAX_ID || peer.len() > MAX_ID {
            return Ok(false);
        }
        self.usable()?;
        let label = self.label_of(room).await?;
        let room = label.as_str();
        let gone = match self.inner.store.kick(room, peer).await {
            Ok(Some(gone)) => gone,
            Ok(None) => return Ok(false),
            Err(e) => return Err(self.op_failed("kick", e)),
        };
        self.emit(gone.seq, || match gone.role {
            None => RoomEvent::host_left(RoomRef::label(room), &gone.id, LeaveReason::Kicked),
            Some(role) => {
                RoomEvent::peer_left(RoomRef::label(room), &gone.id, role, LeaveReason::Kicked)
            }
        });
        info!(room, peer, "peer kicked by an administrator");
        Ok(true)
    }
}
