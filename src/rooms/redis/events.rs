//! The pub/sub encoding: what one instance tells another on its channel
//! `{prefix}i:{instance}`. The membership and host events are published by
//! the Lua scripts ([`super::lua`] documents their text); relays are
//! published by the instance of the sender, in the envelopes built here.

use crate::protocol::{RelayKind, Role};
use crate::token::Token;
use crate::ws::Utf8Bytes;

use super::scripts::role_from_code;

/// An event received on this instance's channel.
#[derive(Debug, Clone)]
pub(super) enum Event {
    Joined {
        ver: u64,
        peer: String,
        role: Role,
        inst: String,
    },
    Left {
        ver: u64,
        peer: String,
    },
    HostLeft {
        ver: u64,
    },
    HostJoined {
        ver: u64,
        inst: String,
        epoch: u64,
        resume: Token,
    },
    Closed {
        counted: bool,
    },
    /// An administrator kicked `peer` (the host of `epoch`, if not `0`).
    Kicked {
        peer: String,
        epoch: u64,
    },
    ToPeers {
        kind: RelayKind,
        peers: Vec<String>,
        text: Utf8Bytes,
    },
    ToHost {
        kind: RelayKind,
        text: Utf8Bytes,
    },
}

impl Event {
    /// A one-line description for trace logs (no message text, no secrets).
    pub fn describe(&self) -> String {
        match self {
            Event::Joined {
                ver, peer, inst, ..
            } => format!("J ver {ver} peer {peer} on {inst}"),
            Event::Left { ver, peer } => format!("L ver {ver} peer {peer}"),
            Event::HostLeft { ver } => format!("HL ver {ver}"),
            Event::HostJoined {
                ver, inst, epoch, ..
            } => format!("HJ ver {ver} on {inst} epoch {epoch}"),
            Event::Closed { counted } => format!("C counted {counted}"),
            Event::Kicked { peer, epoch } => format!("K peer {peer} epoch {epoch}"),
            Event::ToPeers { peers, text, .. } => {
                format!("relay of {} bytes to {}", text.len(), peers.join(","))
            }
            Event::ToHost { text, .. } => format!("relay of {} bytes to the host", text.len()),
        }
    }
}

/// Parses a message of an instance channel into its room and event.
pub(super) fn parse_event(payload: &str) -> Option<(String, Event)> {
    let (kind, rest) = payload.split_once('|')?;
    let (room, rest) = rest.split_once('|').unwrap_or((rest, ""));
    let room = room.to_string();
    let event = match kind {
        "m" => {
            let mut it = rest.splitn(3, '|');
            let kind = relay_kind(it.next()?)?;
            let peers = it.next()?.split(',').map(str::to_string).collect();
            let text = Utf8Bytes::from(it.next()?.to_string());
            Event::ToPeers { kind, peers, text }
        }
        "h" => {
            let (kind, text) = rest.split_once('|')?;
            Event::ToHost {
                kind: relay_kind(kind)?,
                text: Utf8Bytes::from(text.to_string()),
            }
        }
        "J" => {
            let mut it = rest.split('|');
            let ver = it.next()?.parse().ok()?;
            let peer = it.next()?.to_string();
            let role = role_from_code(it.next()?)?;
            let inst = it.next()?.to_string();
            Event::Joined {
                ver,
                peer,
                role,
                inst,
            }
        }
        "L" => {
            let (ver, peer) = rest.split_once('|')?;
            Event::Left {
                ver: ver.parse().ok()?,
                peer: peer.to_string(),
            }
        }
        "HL" => Event::HostLeft {
            ver: rest.parse().ok()?,
        },
        "HJ" => {
            let mut it = rest.split('|');
            let ver = it.next()?.parse().ok()?;
            let inst = it.next()?.to_string();
            let epoch = it.next()?.parse().ok()?;
            let resume = Token::from(it.next()?.to_string());
            Event::HostJoined {
                ver,
                inst,
                epoch,
                resume,
            }
        }
        "C" => {
            let (ver, counted) = rest.split_once('|')?;
            ver.parse::<u64>().ok()?;
            Event::Closed {
                counted: counted == "1",
            }
        }
        "K" => {
            let (peer, epoch) = rest.split_once('|')?;
            Event::Kicked {
                peer: peer.to_string(),
                epoch: epoch.parse().ok()?,
            }
        }
        _ => return None,
    };
    Some((room, event))
}

fn relay_kind(code: &str) -> Option<RelayKind> {
    RelayKind::ALL.get(code.parse::<usize>().ok()?).copied()
}

/// The envelope of a relay from the host to peers on another instance.
pub(super) fn to_peers_envelope(room: &str, kind: RelayKind, peers: &[&str], text: &str) -> String {
    let mut out = String::with_capacity(room.len() + text.len() + 16 + peers.len() * 9);
    out.push_str("m|");
    out.push_str(room);
    out.push('|');
    out.push_str(&kind.index().to_string());
    out.push('|');
    for (n, p) in peers.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(p);
    }
    out.push('|');
    out.push_str(text);
    out
}

/// The envelope of a relay from a peer to its host on another instance.
pub(super) fn to_host_envelope(room: &str, kind: RelayKind, text: &str) -> String {
    format!("h|{room}|{}|{text}", kind.index())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        let (room, e) = parse_event("J|r00m|17|p33r|w|inst").unwrap();
        assert_eq!(room, "r00m");
        assert!(
            matches!(e, Event::Joined { ver: 17, ref peer, role: Role::Watch, ref inst } if peer == "p33r" && inst == "inst")
        );
        let text = r#"{"type":"offer","sdp":"a|b,c","to":"p1"}"#;
        let env = to_peers_envelope("r00m", RelayKind::Offer, &["p1", "p2"], text);
        let (_, e) = parse_event(&env).unwrap();
        match e {
            Event::ToPeers {
                kind,
                peers,
                text: t,
            } => {
                assert_eq!(kind, RelayKind::Offer);
                assert_eq!(peers, ["p1", "p2"]);
                assert_eq!(t.as_str(), text);
            }
            other => panic!("{other:?}"),
        }
        let env = to_host_envelope("r00m", RelayKind::IceCandidate, "{|}");
        let (_, e) = parse_event(&env).unwrap();
        assert!(
            matches!(e, Event::ToHost { kind: RelayKind::IceCandidate, ref text } if text.as_str() == "{|}")
        );
        assert!(matches!(
            parse_event("HJ|r|5|i|2|secret").unwrap().1,
            Event::HostJoined {
                ver: 5,
                epoch: 2,
                ..
            }
        ));
        assert!(matches!(
            parse_event("C|r|9|1").unwrap().1,
            Event::Closed { counted: true }
        ));
        assert!(parse_event("X|r|1").is_none());
        assert!(parse_event("J|r|x|p|j|i").is_none());
    }
}
