//! The messages the server itself sends: written by the server, read by
//! clients (the bridge) with the same types.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::client::ClientMessage;
use super::error::{ErrorCode, PeerError};
use super::parse::{parse, Object};
use super::Role;
use crate::token::Token;

/// A message the server itself sends.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// The reply to `init` (and to a query-string attach).
    #[serde(borrow)]
    Init(InitReply<'a>),
    /// To the host: a peer attached.
    PeerJoined {
        /// The peer's id.
        #[serde(borrow)]
        peer: Cow<'a, str>,
        /// The peer's role.
        role: Role,
    },
    /// To the host: a peer left.
    PeerLeft {
        /// The peer's id.
        #[serde(borrow)]
        peer: Cow<'a, str>,
    },
    /// To guests and watchers: the host's socket dropped; the room waits for it.
    HostLeft,
    /// To guests and watchers: the host is back.
    HostJoined,
    /// To guests and watchers: the room ended; the server closes the socket.
    RoomClosed,
    /// Something went wrong; see [`ErrorCode`].
    Error {
        /// The stable code.
        code: ErrorCode,
        /// For humans.
        #[serde(borrow)]
        message: Cow<'a, str>,
    },
    /// The reply to a peer's `{"type":"ice_servers"}`: its ICE servers, with
    /// TURN credentials minted now.
    IceServers(IceServersReply<'a>),
    /// Read only: a `type` this build does not know (from a newer server),
    /// which a reader may ignore. Never written.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// The body of an `init` reply.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct InitReply<'a> {
    /// The room's join token (host only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Cow<'a, Token>>,
    /// The room's watch token (host only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Cow<'a, Token>>,
    /// The host's secret for resuming the room (host only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Cow<'a, Token>>,
    /// To a resumed host: the guests and watchers present now (each is
    /// also announced with `peer_joined` right after this reply), so the
    /// host knows its list is complete.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PresentPeer<'a>>>,
    /// The receiver's own peer id.
    #[serde(borrow)]
    pub peer: Cow<'a, str>,
    /// The receiver's role.
    pub role: Role,
    /// ICE servers the operator configured (RTCIceServer objects), possibly
    /// empty; with TURN configured, the last one carries credentials of the
    /// receiver's own.
    pub ice_servers: Cow<'a, serde_json::Value>,
    /// With TURN credentials in `ice_servers`: how many seconds they stay
    /// valid from now (ask for fresh ones with `{"type":"ice_servers"}`
    /// before then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_servers_ttl: Option<u64>,
    /// Token mode (`--auth token`): the name of the room entered (the
    /// token's `room`). Absent in open mode.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub room: Option<Cow<'a, str>>,
    /// Token mode: the token's `exp` (seconds since the Unix epoch), when
    /// the session will be closed 4001 unless it has ended before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// A peer present in a room, in a resume's `init` reply.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct PresentPeer<'a> {
    /// The peer's id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// `join` or `watch`.
    pub role: Role,
}

/// The body of an `ice_servers` reply: the fields of the same names of an
/// `init` reply, made afresh.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct IceServersReply<'a> {
    /// RTCIceServer objects, as in [`InitReply::ice_servers`].
    pub ice_servers: Cow<'a, serde_json::Value>,
    /// As in [`InitReply::ice_servers_ttl`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_servers_ttl: Option<u64>,
}

impl<'a> ServerMessage<'a> {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: they hold only strings, enums and
        // an already-valid JSON value (`Unknown` is never built to be sent).
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }

    /// Reads a message the server sent. A `type` this build does not know is
    /// [`ServerMessage::Unknown`]; an error code it does not know, or a
    /// missing or mistyped field, is an error.
    pub fn parse(text: &'a str) -> Result<Self, Unreadable> {
        serde_json::from_str::<Object<ServerMessage<'a>>>(text)
            .map(|Object(m)| m)
            .map_err(|e| Unreadable(format!("not a server message: {e}")))
    }
}

/// An error message as JSON text.
pub fn error_json(err: &PeerError) -> String {
    ServerMessage::Error {
        code: err.code,
        message: Cow::Borrowed(&err.message),
    }
    .to_json()
}

/// What a host reads from the server: the server's own messages, and its
/// peers' messages, relayed with `from` (which the server's own never have).
#[derive(Debug, PartialEq)]
pub enum ToHost<'a> {
    /// The server's own message.
    Server(ServerMessage<'a>),
    /// A message one of the host's peers sent.
    Peer {
        /// The sender's peer id, as the server wrote it.
        from: Cow<'a, str>,
        /// The message.
        message: ClientMessage<'a>,
    },
}

impl<'a> ToHost<'a> {
    /// Reads one text frame the server sent to a host.
    pub fn parse(text: &'a str) -> Result<Self, Unreadable> {
        #[derive(Deserialize)]
        struct Sender<'a> {
            #[serde(default, borrow)]
            from: Option<Cow<'a, str>>,
        }
        let Object(sender) = serde_json::from_str::<Object<Sender<'a>>>(text)
            .map_err(|e| Unreadable(format!("not a JSON object with a string `from`: {e}")))?;
        match sender.from {
            Some(from) => match parse(text) {
                Ok(message) => Ok(ToHost::Peer { from, message }),
                Err(e) => Err(Unreadable(format!("a peer's message: {e}"))),
            },
            None => ServerMessage::parse(text).map(ToHost::Server),
        }
    }
}

/// A message from the server that a client cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreadable {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The reply a host gets.
    fn host_init(ice: &serde_json::Value) -> ServerMessage<'_> {
        ServerMessage::Init(InitReply {
            join: Some(Cow::Owned("54ICxFae_Ip7TJE2".into())),
            watch: Some(Cow::Owned("634w44TblL5Dbd9a".into())),
            resume: Some(Cow::Owned("Zm9vYmFyYmF6cXV4".into())),
            peers: None,
            peer: "h0st1234".into(),
            role: Role::Host,
            ice_servers: Cow::Borrowed(ice),
            ice_servers_ttl: None,
            room: None,
            expires: None,
        })
    }

    #[test]
    fn pins_server_messages() {
        let ice = json!([{"urls": "stun:stun.example.org:3478"}]);
        let host = host_init(&ice);
        assert_eq!(
            host.to_json(),
            r#"{"type":"init","join":"54ICxFae_Ip7TJE2","watch":"634w44TblL5Dbd9a","resume":"Zm9vYmFyYmF6cXV4","peer":"h0st1234","role":"host","ice_servers":[{"urls":"stun:stun.example.org:3478"}]}"#
        );
        let none = json!([]);
        let guest = ServerMessage::Init(InitReply {
            join: None,
            watch: None,
            resume: None,
            peers: None,
            peer: "gUest123".into(),
            role: Role::Watch,
            ice_servers: Cow::Borrowed(&none),
            ice_servers_ttl: None,
            room: None,
            expires: None,
        });
        assert_eq!(
            guest.to_json(),
            r#"{"type":"init","peer":"gUest123","role":"watch","ice_servers":[]}"#
        );
        let turn = json!([
            {"urls": "stun:stun.example.org:3478"},
            {"urls": ["turn:turn.example.com:3478?transport=udp"],
             "username": "1700000000:r00m1234/gUest123",
             "credential": "DU/jmHBhXXqWFHbw0Cp0px25fdc="}
        ]);
        let with_turn = ServerMessage::Init(InitReply {
            join: None,
            watch: None,
            resume: None,
            peers: None,
            peer: "gUest123".into(),
            role: Role::Join,
            ice_servers: Cow::Borrowed(&turn),
            ice_servers_ttl: Some(86400),
            room: None,
            expires: None,
        });
        assert_eq!(
            with_turn.to_json(),
            r#"{"type":"init","peer":"gUest123","role":"join","ice_servers":[{"urls":"stun:stun.example.org:3478"},{"urls":["turn:turn.example.com:3478?transport=udp"],"username":"1700000000:r00m1234/gUest123","credential":"DU/jmHBhXXqWFHbw0Cp0px25fdc="}],"ice_servers_ttl":86400}"#
        );
        assert_eq!(
            ServerMessage::IceServers(IceServersReply {
                ice_servers: Cow::Borrowed(&turn),
                ice_servers_ttl: Some(600),
            })
            .to_json(),
            r#"{"type":"ice_servers","ice_servers":[{"urls":"stun:stun.example.org:3478"},{"urls":["turn:turn.example.com:3478?transport=udp"],"username":"1700000000:r00m1234/gUest123","credential":"DU/jmHBhXXqWFHbw0Cp0px25fdc="}],"ice_servers_ttl":600}"#
        );
        assert_eq!(
            ServerMessage::IceServers(IceServersReply {
                ice_servers: Cow::Borrowed(&none),
                ice_servers_ttl: None,
            })
            .to_json(),
            r#"{"type":"ice_servers","ice_servers":[]}"#
        );
        assert_eq!(
            ServerMessage::PeerJoined {
                peer: "gUest123".into(),
                role: Role::Join
            }
            .to_json(),
            r#"{"type":"peer_joined","peer":"gUest123","role":"join"}"#
        );
        assert_eq!(
            ServerMessage::PeerLeft {
                peer: "gUest123".into()
            }
            .to_json(),
            r#"{"type":"peer_left","peer":"gUest123"}"#
        );
        assert_eq!(ServerMessage::HostLeft.to_json(), r#"{"type":"host_left"}"#);
        assert_eq!(
            ServerMessage::HostJoined.to_json(),
            r#"{"type":"host_joined"}"#
        );
        assert_eq!(
            ServerMessage::RoomClosed.to_json(),
            r#"{"type":"room_closed"}"#
        );
        assert_eq!(
            error_json(&PeerError::new(ErrorCode::RoomNotFound, "no such room")),
            r#"{"type":"error","code":"room_not_found","message":"no such room"}"#
        );
    }

    #[test]
    fn server_messages_read_back_as_written() {
        let ice = json!([{"urls": ["stun:a.example:3478", "turn:b.example"], "username": "u"}]);
        let messages = [
            host_init(&ice),
            ServerMessage::PeerJoined {
                peer: "gUest123".into(),
                role: Role::Watch,
            },
            ServerMessage::PeerLeft {
                peer: "gUest123".into(),
            },
            ServerMessage::HostLeft,
            ServerMessage::HostJoined,
            ServerMessage::RoomClosed,
            ServerMessage::Error {
                code: ErrorCode::NotInRoom,
                message: "send {\"type\":\"init\"} first".into(),
            },
            ServerMessage::IceServers(IceServersReply {
                ice_servers: Cow::Owned(ice.clone()),
                ice_servers_ttl: Some(3600),
            }),
        ];
        for m in messages {
            let text = m.to_json();
            assert_eq!(ServerMessage::parse(&text).unwrap(), m, "{text}");
            assert_eq!(ToHost::parse(&text).unwrap(), ToHost::Server(m), "{text}");
        }
    }

    #[test]
    fn readers_tell_the_unknown_from_the_malformed() {
        // A newer server's event: ignorable.
        assert_eq!(
            ServerMessage::parse(r#"{"type":"room_renamed","name":"x"}"#).unwrap(),
            ServerMessage::Unknown
        );
        assert!(ServerMessage::Unknown.to_json().contains("error"));
        for text in [
            r#"{"type":"peer_joined","role":"join"}"#,
            r#"{"type":"peer_joined","peer":"p","role":"admiral"}"#,
            r#"{"type":"error","code":"launch_missiles","message":"m"}"#,
            r#"["peer_left","gUest123"]"#,
            r#"{"peer":"p"}"#,
            "not json",
        ] {
            assert!(ServerMessage::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_host_tells_its_peers_messages_from_the_servers() {
        let text = r#"{"from":"gUest123","type":"error","code":"not_allowed","message":"m"}"#;
        let ToHost::Peer { from, message } = ToHost::parse(text).unwrap() else {
            panic!("not a peer's message")
        };
        assert_eq!(from, "gUest123");
        assert!(matches!(message, ClientMessage::Error(e) if e.code == "not_allowed"));
        let text = r#"{"type":"error","code":"peer_not_found","message":"m"}"#;
        assert!(matches!(
            ToHost::parse(text).unwrap(),
            ToHost::Server(ServerMessage::Error {
                code: ErrorCode::PeerNotFound,
                ..
            })
        ));
        for text in [
            r#"{"from":5,"type":"offer","sdp":"s"}"#,
            r#"{"from":"p","type":"offer"}"#,
            r#"["offer","s"]"#,
        ] {
            assert!(ToHost::parse(text).is_err(), "{text}");
        }
    }
}
