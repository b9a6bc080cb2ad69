//! The room the bridge hosts: its tokens and resume secret (kept in the state
//! file across restarts), its links, and what the server's answers to the
//! bridge's `init` make of it.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::protocol::{ClientMessage, Init, InitReply, Role};
use crate::token::Token;

use super::host::Disconnect;
use super::links::{Links, RoomLinks};
use super::report::BridgeEvent;
use super::state;
use super::viewers::Viewers;

/// The tokens of the room the bridge hosts (or is to resume).
#[derive(Debug, Clone)]
struct RoomTokens {
    join: Token,
    watch: Token,
    resume: Token,
}

/// The hosted room, as far as the bridge knows it, and who hears of it.
pub struct Hosting {
    server_url: String,
    links: Links,
    state_path: Option<PathBuf>,
    room: Option<RoomTokens>,
    observer: mpsc::UnboundedSender<BridgeEvent>,
    /// `--token`: the host token claiming a named room.
    token: Option<String>,
    /// With a token: the name of the room hosted so far.
    named: Option<String>,
}

impl Hosting {
    /// The room named by the state file at `state_path`, if it is for this
    /// server; otherwise none yet.
    pub fn new(
        server_url: String,
        links: Links,
        state_path: Option<PathBuf>,
        observer: mpsc::UnboundedSender<BridgeEvent>,
    ) -> Self {
        let room = state_path
            .as_deref()
            .and_then(|path| match state::load(path) {
                Ok(Some(saved)) if saved.server == server_url => {
                    let tokens = RoomTokens {
                        join: saved.join.into(),
                        watch: saved.watch.into(),
                        resume: saved.resume.into(),
                    };
                    info!(
                        watch = %tokens.watch,
                        "state file: will resume the room it names"
                    );
                    Some(tokens)
                }
                Ok(Some(_)) => {
                    warn!(
                        "state file {} is for another server: opening a new room",
                        path.display()
                    );
                    None
                }
                Ok(None) => None,
                Err(e) => {
                    warn!(
                        "cannot read state file {}: {e}; opening a new room",
                        path.display()
                    );
                    None
                }
            });
        Hosting {
            server_url,
            links,
            state_path,
            room,
            observer,
            token: None,
            named: None,
        }
    }

    /// Claims the named room `token` (a host token) is for, instead of
    /// opening a room with random tokens.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        if token.is_some() {
            if self.state_path.is_some() {
                info!(
                    "--token given: the named room needs no state file; --state-file is not used"
                );
            }
            self.state_path = None;
            self.room = None;
        }
        self.token = token;
        self
    }

    /// The signalling server's URL.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Whether there is a room to resume.
    pub fn resuming(&self) -> bool {
        self.room.is_some() || self.named.is_some()
    }

    /// The `init` for a new server connection: resume the room when there is
    /// one, open one otherwise.
    pub fn init(&self) -> ClientMessage<'_> {
        if let Some(token) = &self.token {
            return ClientMessage::Init(Init {
                token: Some(token.as_str().into()),
                ..Init::default()
            });
        }
        ClientMessage::Init(Init {
            resume: self.room.as_ref().map(|r| r.resume.as_str().into()),
            ..Init::default()
        })
    }

    /// The server's reply to `init`: the bridge hosts the room it names.
    /// Whether it is the room the bridge had (its viewers' robot connections
    /// live on until the server has listed the peers still present).
    pub async fn on_init(
        &mut self,
        reply: InitReply<'_>,
        viewers: &mut Viewers,
    ) -> Result<bool, Disconnect> {
        if reply.role != Role::Host {
            return Err(Disconnect::NotHost);
        }
        if self.token.is_some() {
            return self.on_named_init(reply, viewers);
        }
        let (Some(join), Some(watch), Some(resume)) = (reply.join, reply.watch, reply.resume)
        else {
            return Err(Disconnect::BadInitReply(
                "no join, watch and resume tokens".into(),
            ));
        };
        let resumed = self
            .room
            .as_ref()
            .is_some_and(|r| r.join == *join && r.watch == *watch);
        viewers.new_generation();
        if !resumed {
            viewers.close_all();
        }
        let tokens = RoomTokens {
            join: join.into_owned(),
            watch: watch.into_owned(),
            resume: resume.into_owned(),
        };
        let links = self
            .links
            .room(tokens.join.as_str(), tokens.watch.as_str(), resumed);
        self.save(&tokens, &links).await;
        info!(
            watch = %tokens.watch,
            join = %tokens.join,
            resumed,
            "hosting the room"
        );
        self.room = Some(tokens);
        let _ = self.observer.send(BridgeEvent::Room(links));
        Ok(resumed)
    }

    /// The reply to a host token's `init`: the named room, the same one as
    /// before when the bridge had it already.
    fn on_named_init(
        &mut self,
        reply: InitReply<'_>,
        viewers: &mut Viewers,
    ) -> Result<bool, Disconnect> {
        let Some(room) = reply.room else {
            return Err(Disconnect::BadInitReply(
                "no room name (is the server in token mode?)".into(),
            ));
        };
        let resumed = self.named.as_deref() == Some(&*room);
        viewers.new_generation();
        if !resumed {
            viewers.close_all();
        }
        info!(room = %room, resumed, expires = ?reply.expires, "hosting the named room");
        let links = self.links.named(&room, resumed);
        self.named = Some(room.into_owned());
        let _ = self.observer.send(BridgeEvent::Room(links));
        Ok(resumed)
    }

    /// The room to resume is gone (the bridge was away longer than the
    /// server's grace period, or the server lost it): the next `init` opens
    /// a new one, with new links.
    pub fn room_closed(&mut self, viewers: &mut Viewers) {
        info!(
            "the room has closed (the bridge was away longer than the server's grace \
             period, or the server lost it): opening a new room with new links"
        );
        self.room = None;
        viewers.forget_room();
        if let Some(path) = &self.state_path {
            if let Err(e) = state::remove(path) {
                warn!("cannot remove the state file {}: {e}", path.display());
            }
        }
    }

    /// The bridge ended the room itself (`--end-room-on-exit`): nothing is
    /// left to resume.
    pub fn ended(&mut self) {
        self.room = None;
        if let Some(path) = &self.state_path {
            if let Err(e) = state::remove(path) {
                warn!("cannot remove the state file {}: {e}", path.display());
            }
        }
    }

    /// Tells the observer the server connection was lost.
    pub fn disconnected(&self, reason: Disconnect) {
        let _ = self.observer.send(BridgeEvent::Disconnected { reason });
    }

    async fn save(&self, tokens: &RoomTokens, links: &RoomLinks) {
        let Some(path) = self.state_path.clone() else {
            return;
        };
        let saved = state::SavedRoom::new(
            &self.server_url,
            tokens.resume.as_str(),
            tokens.join.as_str(),
            tokens.watch.as_str(),
            &links.join_url,
            &links.watch_url,
        );
        let shown = path.display().to_string();
        match tokio::task::spawn_blocking(move || state::save(&path, &saved)).await {
            Ok(Ok(())) => debug!("state file {shown} written"),
            Ok(Err(e)) => error!(
                "cannot write the state file {shown}: {e}; a restarted bridge will open a new room"
            ),
            Err(e) => error!("cannot write the state file {shown}: {e}"),
        }
    }
}
