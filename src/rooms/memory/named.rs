//! Named rooms (token mode, `--auth token`): opened by name with the
//! name's own tokens, and taken over by a new host.

use std::sync::Arc;

use super::{MemoryMember, MemoryRegistry, Room, TokenEntry, TokenKind};
use crate::protocol::Role;
use crate::rooms::{named_token, PeerLink, Welcome};
use crate::token::Token;

impl MemoryRegistry {
    /// Opens the room named `name` as its host, or takes it over (the old
    /// host is cut off with [`Kick::Replaced`](crate::rooms::Kick::Replaced)).
    /// Its tokens are the name's ([`named_token`]), so they are the same
    /// whenever the room is opened again; its resume secret stays the same
    /// across take-overs.
    pub(super) fn host_named(
        &self,
        name: &str,
        link: PeerLink,
        welcome: impl FnOnce(&Welcome) -> String,
    ) -> MemoryMember {
        let secret = named_token(name, None);
        let mut welcome = Some(welcome);
        loop {
            if let Some(room) = self.lookup(secret.as_str(), TokenKind::Resume) {
                if let Some(member) = self.take_over(&room, &secret, &link, &mut welcome) {
                    return member;
                }
                // Closed meanwhile: its tokens are about to go; replace them.
                self.shared
                    .tokens
                    .remove_if(&secret, |_, e| Arc::ptr_eq(&e.room, &room));
                continue;
            }
            let tokens = [
                named_token(name, Some(Role::Join)),
                named_token(name, Some(Role::Watch)),
                secret.clone(),
            ];
            // Claims the name first, so that two hosts opening it at once
            // make one room (the second takes it over).
            let placeholder = Arc::new(Room::placeholder());
            match self.shared.tokens.entry(secret.clone()) {
                dashmap::mapref::entry::Entry::Occupied(_) => {
                    // Another host is making it this instant (no `.await`
                    // in between): take it over once it is made.
                    std::hint::spin_loop();
                    continue;
                }
                dashmap::mapref::entry::Entry::Vacant(v) => {
                    v.insert(TokenEntry {
                        room: placeholder,
                        kind: TokenKind::Join,
                    });
                }
            }
            let Some(welcome) = welcome.take() else {
                unreachable!("the welcome is used once")
            };
            return self.create_with(name.to_string(), true, tokens, link, welcome);
        }
    }

    /// Makes `link` the host of `room` with the unchanged secret `secret`;
    /// `None` if the room has closed.
    fn take_over<F: FnOnce(&Welcome) -> String>(
        &self,
        room: &Arc<Room>,
        secret: &Token,
        link: &PeerLink,
        welcome: &mut Option<F>,
    ) -> Option<MemoryMember> {
        let mut st = room.lock();
        if !st.open || st.resume != *secret {
            return None;
        }
        let welcome = welcome.take()?;
        st.epoch += 1;
        let epoch = st.epoch;
        link.send_text(welcome(&room.host_welcome(secret, &st)));
        self.seat_host(room, st, link);
        Some(MemoryMember {
            registry: self.clone(),
            peer_id: room.host_id.clone(),
            role: Role::Host,
            epoch,
            room: Arc::clone(room),
            sender: Arc::clone(link.state()),
        })
    }
}
