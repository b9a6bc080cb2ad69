//! One typed call per Lua script of [`super::lua`]: its arguments and its
//! reply as Rust types, encoded here and decoded in [`reply`], nowhere
//! else. Attach, resume and sync reply with the same room [`Snapshot`],
//! decoded by [`Snapshot::decode`].

use std::time::Duration;

use ::redis::{Script, ScriptInvocation};

use super::lua;
use super::store::{Fail, Store};
use crate::protocol::Role;
use crate::token::{PeerId, Token};

mod reply;

use self::reply::unexpected;
pub(super) use self::reply::{role_code, role_from_code, Closed, Gone, ListedRoom, Snapshot};

/// The compiled scripts (each sent by its SHA, loaded on first use).
pub(super) struct Scripts {
    create: Script,
    attach: Script,
    resume: Script,
    leave: Script,
    leave_host: Script,
    sweep: Script,
    find_dead: Script,
    reap: Script,
    sync: Script,
    touch: Script,
    close: Script,
    kick: Script,
    rooms: Script,
}

impl Scripts {
    pub fn new() -> Self {
        let s = |body: &str| Script::new(&lua::source(body));
        Scripts {
            create: s(lua::CREATE),
            attach: s(lua::ATTACH),
            resume: s(lua::RESUME),
            leave: s(lua::LEAVE),
            leave_host: s(lua::LEAVE_HOST),
            sweep: s(lua::SWEEP),
            find_dead: s(lua::FIND_DEAD),
            reap: s(lua::REAP),
            sync: s(lua::SYNC),
            touch: s(lua::TOUCH),
            close: s(lua::CLOSE),
            kick: s(lua::KICK),
            rooms: s(lua::ROOMS),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A new room, created by instance `inst` as its host's instance.
pub(super) struct CreateArgs<'a> {
    pub room: &'a str,
    pub host_id: &'a str,
    pub join: &'a str,
    pub watch: &'a str,
    pub resume: &'a str,
    pub inst: &'a str,
    pub grace: Duration,
    pub key_ttl: Duration,
}

pub(super) enum Created {
    /// At this version.
    Ok { ver: u64 },
    /// The room id or a token is taken: draw new ones.
    Clash,
}

/// A guest or watcher entering with `token`, as peer `peer` of `inst`.
pub(super) struct AttachArgs<'a> {
    pub token: &'a str,
    pub role: Role,
    pub peer: &'a str,
    pub inst: &'a str,
    pub max_peers: usize,
    pub key_ttl: Duration,
}

pub(super) enum Attached {
    /// The room as the peer entered it (without its membership).
    Ok(Box<Snapshot>),
    NotFound,
    Full,
    /// The peer id is taken: draw another.
    Clash,
}

/// The host coming back with `secret`, on `inst`; `fresh` is its next
/// secret.
pub(super) struct ResumeArgs<'a> {
    pub secret: &'a str,
    pub fresh: &'a str,
    pub inst: &'a str,
    pub key_ttl: Duration,
}

pub(super) enum Resumed {
    /// The room as the host resumed it, with its membership.
    Ok(Box<Snapshot>),
    NotFound,
    /// The fresh secret is taken: draw another.
    Clash,
}

/// A guest or watcher of `inst` leaving `room`.
pub(super) struct LeaveArgs<'a> {
    pub room: &'a str,
    pub peer: &'a str,
    pub inst: &'a str,
}

/// The host of `epoch`, on `inst`, leaving `room` (its grace period starts).
pub(super) struct LeaveHostArgs<'a> {
    pub room: &'a str,
    pub epoch: u64,
    pub inst: &'a str,
}

/// What a leave found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Left {
    /// Done: the number of its event.
    Ok(u64),
    /// The room, or this peer in it, is no longer there.
    Gone,
    /// The host has been replaced by a later resume.
    Stale,
}

/// The members and host of dead instance `dead` in `room`, to remove.
pub(super) struct ReapArgs<'a> {
    pub room: &'a str,
    pub dead: &'a str,
}

/// A re-sync of `room` by instance `inst`.
pub(super) struct SyncArgs<'a> {
    pub room: &'a str,
    pub inst: &'a str,
    pub key_ttl: Duration,
    pub heartbeat_ttl: Duration,
    /// What this instance knows of the room, if it has members in it.
    pub known: Option<Known>,
}

/// What an instance asserts of a room it has members in.
pub(super) struct Known {
    pub join: Token,
    pub watch: Token,
    pub resume: Token,
    pub host_id: PeerId,
    pub epoch: u64,
    pub grace_ms: u64,
    /// The host is connected to this instance.
    pub host_here: bool,
    /// The host's instance as last known (empty while it is away).
    pub host_inst: String,
    pub cinst: String,
    /// The guests and watchers connected to this instance.
    pub local_peers: Vec<(String, Role)>,
}

pub(super) enum Synced {
    /// The room as Redis now has it, with its membership.
    Ok(Box<Snapshot>),
    /// Redis no longer has the room (it closed).
    Gone,
}

/// Which rooms instance `inst` still takes part in, to keep their keys.
pub(super) struct TouchArgs<'a> {
    pub inst: &'a str,
    pub key_ttl: Duration,
    pub rooms: &'a [String],
}

impl Store {
    pub async fn create(&self, a: &CreateArgs<'_>) -> Result<Created, Fail> {
        let reply: String = self
            .invoke(&self.scripts.create, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(a.room)
                    .arg(a.host_id)
                    .arg(a.join)
                    .arg(a.watch)
                    .arg(a.resume)
                    .arg(a.inst)
                    .arg(ms(a.grace))
                    .arg(ms(a.key_ttl));
            })
            .await?;
        if reply == "clash" {
            return Ok(Created::Clash);
        }
        match reply.parse() {
            Ok(ver) => Ok(Created::Ok { ver }),
            Err(_) => Err(Fail::Reply(reply)),
        }
    }

    pub async fn attach(&self, a: &AttachArgs<'_>) -> Result<Attached, Fail> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.attach, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(a.token)
                    .arg(role_code(a.role))
                    .arg(a.peer)
                    .arg(a.inst)
                    .arg(a.max_peers)
                    .arg(ms(a.key_ttl));
            })
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Attached::Ok(Box::new(Snapshot::decode(&reply, false)?))),
            Some("nf") => Ok(Attached::NotFound),
            Some("full") => Ok(Attached::Full),
            Some("clash") => Ok(Attached::Clash),
            _ => Err(unexpected(&reply)),
        }
    }

    pub async fn resume(&self, a: &ResumeArgs<'_>) -> Result<Resumed, Fail> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.resume, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(a.secret)
                    .arg(a.fresh)
                    .arg(a.inst)
                    .arg(ms(a.key_ttl));
            })
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Resumed::Ok(Box::new(Snapshot::decode(&reply, true)?))),
            Some("nf") => Ok(Resumed::NotFound),
            Some("clash") => Ok(Resumed::Clash),
            _ => Err(unexpected(&reply)),
        }
    }

    pub async fn leave(&self, a: &LeaveArgs<'_>) -> Result<Left, Fail> {
        let reply: String = self
            .invoke(&self.scripts.leave, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(a.room).arg(a.peer).arg(a.inst);
            })
            .await?;
        left(reply)
    }

    pub async fn leave_host(&self, a: &LeaveHostArgs<'_>) -> Result<Left, Fail> {
        let reply: String = self
            .invoke(
                &self.scripts.leave_host,
                |inv: &mut ScriptInvocation<'_>| {
                    inv.arg(a.room).arg(a.epoch).arg(a.inst);
                },
            )
            .await?;
        left(reply)
    }

    /// Closes the rooms whose grace period has ended (at most 64 a call);
    /// returns them, each with the number of its `room_ended` event.
    pub async fn sweep(&self) -> Result<Vec<(String, u64)>, Fail> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.sweep, |_: &mut ScriptInvocation<'_>| {})
            .await?;
        reply
            .chunks(2)
            .map(|pair| match pair {
                [room, seq] => seq
                    .parse()
                    .map(|seq| (room.clone(), seq))
                    .map_err(|_| unexpected(&reply)),
                _ => Err(unexpected(&reply)),
            })
            .collect()
    }

    /// Closes `room` now; `epoch` is the closing host's (`0`: an
    /// administrator).
    pub async fn close(&self, room: &str, epoch: u64) -> Result<Closed, Fail> {
        let reply: String = self
            .invoke(&self.scripts.close, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(room).arg(epoch);
            })
            .await?;
        match reply.as_str() {
            "nf" => Ok(Closed::NotFound),
            "stale" => Ok(Closed::Stale),
            n => n.parse().map(Closed::Ok).map_err(|_| Fail::Reply(reply)),
        }
    }

    /// Removes `peer` (or the host) from `room`.
    pub async fn kick(&self, room: &str, peer: &str) -> Result<Option<Gone>, Fail> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.kick, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(room).arg(peer);
            })
            .await?;
        match &reply[..] {
            [nf] if nf == "nf" => Ok(None),
            [ok, seq, role] if ok == "ok" => Gone::decode(peer, role, seq)
                .map(Some)
                .ok_or_else(|| unexpected(&reply)),
            _ => Err(unexpected(&reply)),
        }
    }

    /// Every open room.
    pub async fn rooms(&self) -> Result<Vec<ListedRoom>, Fail> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.rooms, |_: &mut ScriptInvocation<'_>| {})
            .await?;
        ListedRoom::decode_all(&reply).ok_or_else(|| Fail::Reply("rooms".into()))
    }

    /// The instances, other than `me`, whose heartbeat key is gone.
    pub async fn find_dead(&self, me: &str) -> Result<Vec<String>, Fail> {
        self.invoke(&self.scripts.find_dead, |inv: &mut ScriptInvocation<'_>| {
            inv.arg(me);
        })
        .await
    }

    /// Returns the dead instance's peers (and host) that left.
    pub async fn reap(&self, a: &ReapArgs<'_>) -> Result<Vec<Gone>, Fail> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.reap, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(a.room).arg(a.dead);
            })
            .await?;
        reply
            .chunks(3)
            .map(|c| match c {
                [id, role, seq] => Gone::decode(id, role, seq).ok_or_else(|| unexpected(&reply)),
                _ => Err(unexpected(&reply)),
            })
            .collect()
    }

    pub async fn sync(&self, a: &SyncArgs<'_>) -> Result<Synced, Fail> {
        let reply: Vec<String> = self
            .invoke(&self.scripts.sync, |inv: &mut ScriptInvocation<'_>| {
                inv.arg(a.room)
                    .arg(a.inst)
                    .arg(ms(a.key_ttl))
                    .arg(ms(a.heartbeat_ttl));
                let Some(k) = &a.known else {
                    inv.arg("0");
                    return;
                };
                inv.arg("1")
                    .arg(k.join.as_str())
                    .arg(k.watch.as_str())
                    .arg(k.resume.as_str())
                    .arg(k.host_id.as_str())
                    .arg(k.epoch)
                    .arg(k.grace_ms)
                    .arg(if k.host_here { "1" } else { "0" })
                    .arg(&k.host_inst)
                    .arg(&k.cinst);
                for (id, role) in &k.local_peers {
                    inv.arg(id).arg(role_code(*role));
                }
            })
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Synced::Ok(Box::new(Snapshot::decode(&reply, true)?))),
            Some("gone") => Ok(Synced::Gone),
            _ => Err(unexpected(&reply)),
        }
    }

    pub async fn touch(&self, a: &TouchArgs<'_>) -> Result<(), Fail> {
        self.invoke::<i64>(&self.scripts.touch, |inv: &mut ScriptInvocation<'_>| {
            inv.arg(a.inst).arg(ms(a.key_ttl));
            for room in a.rooms {
                inv.arg(room);
            }
        })
        .await
        .map(drop)
    }
}

fn left(reply: String) -> Result<Left, Fail> {
    if let Some(seq) = reply.strip_prefix("ok|").and_then(|n| n.parse().ok()) {
        return Ok(Left::Ok(seq));
    }
    match reply.as_str() {
        "gone" => Ok(Left::Gone),
        "stale" => Ok(Left::Stale),
        _ => Err(Fail::Reply(reply)),
    }
}
