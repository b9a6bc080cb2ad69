//! The scripts' replies, decoded: the one room [`Snapshot`] layout of
//! attach, resume and sync, and the replies of kick, reap and `ROOMS`.

use std::collections::HashMap;

use super::super::cache::{HostAt, PeerAt};
use super::super::store::Fail;
use crate::protocol::Role;
use crate::token::{PeerId, Token};

/// A role as stored in Redis: `j` (join) or `w` (watch).
pub(in crate::rooms::redis) fn role_code(role: Role) -> &'static str {
    if role == Role::Watch {
        "w"
    } else {
        "j"
    }
}

pub(in crate::rooms::redis) fn role_from_code(code: &str) -> Option<Role> {
    match code {
        "j" => Some(Role::Join),
        "w" => Some(Role::Watch),
        _ => None,
    }
}

/// `role|inst` as stored in a room's peers hash.
fn parse_peer_value(v: &str) -> Option<PeerAt> {
    let (role, inst) = v.split_once('|')?;
    Some(PeerAt {
        role: role_from_code(role)?,
        inst: inst.to_string(),
    })
}

/// Peers from `id, value, id, value...`.
fn parse_peers(flat: &[String]) -> Option<HashMap<String, PeerAt>> {
    let mut peers = HashMap::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let [id, value] = pair else { return None };
        peers.insert(id.clone(), parse_peer_value(value)?);
    }
    Some(peers)
}

/// The room's state as a script returned it (or, for a room just created,
/// as the creating instance knows it).
#[derive(Debug, Clone)]
pub(in crate::rooms::redis) struct Snapshot {
    pub room: String,
    pub ver: u64,
    pub host_id: PeerId,
    /// Where the host is; `None` while it is away.
    pub host: Option<HostAt>,
    pub epoch: u64,
    pub join: Token,
    pub watch: Token,
    pub resume: Token,
    pub grace_ms: u64,
    pub cinst: String,
    /// The room's last event number (webhooks).
    pub seq: u64,
    /// The full membership, when the script returned it.
    pub peers: Option<HashMap<String, PeerAt>>,
}

impl Snapshot {
    /// Fields of the layout before the peers: status, room, ver, host,
    /// hinst, epoch, join, watch, resume, grace, cinst, seq.
    const FIELDS: usize = 12;

    /// Decodes the reply of the `snapshot` helper of [`lua`] (its status
    /// already checked); `with_peers` when the script added the peers.
    pub(super) fn decode(reply: &[String], with_peers: bool) -> Result<Snapshot, Fail> {
        let (head, peers) = reply
            .split_at_checked(Self::FIELDS)
            .ok_or_else(|| Fail::Reply(format!("{} fields", reply.len())))?;
        let [_status, room, ver, host_id, hinst, epoch, join, watch, resume, grace, cinst, seq] =
            head
        else {
            return Err(Fail::Reply(format!("{} fields", reply.len())));
        };
        let number = |s: &String| {
            s.parse::<u64>()
                .map_err(|_| Fail::Reply(format!("not a number: {s}")))
        };
        let epoch = number(epoch)?;
        let peers = if with_peers {
            Some(parse_peers(peers).ok_or_else(|| Fail::Reply("peers".into()))?)
        } else {
            None
        };
        Ok(Snapshot {
            room: room.clone(),
            ver: number(ver)?,
            host_id: host_id.as_str().into(),
            host: (!hinst.is_empty()).then(|| HostAt {
                inst: hinst.clone(),
                epoch,
            }),
            epoch,
            join: join.as_str().into(),
            watch: watch.as_str().into(),
            resume: resume.as_str().into(),
            grace_ms: number(grace)?,
            cinst: cinst.clone(),
            seq: number(seq)?,
            peers,
        })
    }
}

/// What a close found.
pub(in crate::rooms::redis) enum Closed {
    /// Closed: the number of its `room_ended`.
    Ok(u64),
    NotFound,
    /// The closing host was replaced.
    Stale,
}

/// A peer (or the host) a kick or a reap removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::rooms::redis) struct Gone {
    pub id: String,
    /// `None` for the host.
    pub role: Option<Role>,
    /// The number of its event.
    pub seq: u64,
}

impl Gone {
    pub(super) fn decode(id: &str, role: &str, seq: &str) -> Option<Gone> {
        let role = match role {
            "h" => None,
            r => Some(role_from_code(r)?),
        };
        Some(Gone {
            id: id.to_string(),
            role,
            seq: seq.parse().ok()?,
        })
    }
}

/// A room as the `ROOMS` script lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::rooms::redis) struct ListedRoom {
    pub room: String,
    /// A named room's name (`--auth token`).
    pub name: Option<String>,
    pub host: String,
    pub host_connected: bool,
    pub since: u64,
    pub host_since: u64,
    /// id, role, since.
    pub peers: Vec<(String, Role, u64)>,
}

impl ListedRoom {
    pub(super) fn decode_all(reply: &[String]) -> Option<Vec<ListedRoom>> {
        let mut out = Vec::new();
        let mut it = reply.iter();
        while let Some(room) = it.next() {
            let host = it.next()?.clone();
            let hinst = it.next()?;
            let since = it.next()?.parse().ok()?;
            let host_since = it.next()?.parse().ok()?;
            let name = it.next()?;
            let n: usize = it.next()?.parse().ok()?;
            let mut peers = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let id = it.next()?.clone();
                let role = role_from_code(it.next()?)?;
                let since = it.next()?.parse().ok()?;
                peers.push((id, role, since));
            }
            out.push(ListedRoom {
                room: room.clone(),
                name: (!name.is_empty()).then(|| name.clone()),
                host,
                host_connected: !hinst.is_empty(),
                since,
                host_since,
                peers,
            });
        }
        Some(out)
    }
}

pub(super) fn unexpected(reply: &[String]) -> Fail {
    Fail::Reply(format!("{reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_snapshot_decodes_from_the_one_layout() {
        let head = [
            "ok", "r00m", "17", "h0st", "instA", "3", "J", "W", "R", "1500", "instC", "4",
        ];
        let s = Snapshot::decode(&reply(&head), false).unwrap();
        assert_eq!((s.room.as_str(), s.ver, s.epoch), ("r00m", 17, 3));
        assert_eq!(
            s.host,
            Some(HostAt {
                inst: "instA".into(),
                epoch: 3
            })
        );
        assert_eq!((s.join.as_str(), s.watch.as_str()), ("J", "W"));
        assert_eq!((s.resume.as_str(), s.grace_ms), ("R", 1500));
        assert_eq!(s.cinst, "instC");
        assert!(s.peers.is_none());

        let mut with = head.to_vec();
        with[4] = ""; // the host is away
        with.extend(["p1", "j|instB", "p2", "w|instA"]);
        let s = Snapshot::decode(&reply(&with), true).unwrap();
        assert_eq!(s.host, None);
        let peers = s.peers.unwrap();
        assert_eq!(
            peers["p1"],
            PeerAt {
                role: Role::Join,
                inst: "instB".into()
            }
        );
        assert_eq!(peers["p2"].role, Role::Watch);

        // Short, malformed numbers, odd or malformed peers: refused.
        assert_eq!(s.seq, 4);
        assert!(Snapshot::decode(&reply(&head[..11]), false).is_err());
        let mut bad = head.to_vec();
        bad[2] = "x";
        assert!(Snapshot::decode(&reply(&bad), false).is_err());
        let mut odd = head.to_vec();
        odd.push("p1");
        assert!(Snapshot::decode(&reply(&odd), true).is_err());
        let mut role = head.to_vec();
        role.extend(["p1", "x|instB"]);
        assert!(Snapshot::decode(&reply(&role), true).is_err());
    }
}
