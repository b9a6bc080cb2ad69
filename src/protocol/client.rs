//! The messages a peer sends: read by the server (and by a host reading what
//! the server relays), written by clients such as the bridge.
//!
//! Values borrow from the text they were read from. The server relays the
//! sender's own text, never a re-serialisation of these values; writing them
//! ([`ClientMessage::to_json`]) is for clients.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};

use super::error::ErrorCode;
use super::parse::objects;
use super::{PeerError, Role};

/// Marks whether a field was present at all, whatever its value (`null`
/// included). Used for `from`, which only the server may write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

/// A message a peer may send.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage<'a> {
    /// Create a room, attach to one with a token, or resume hosting one.
    #[serde(borrow)]
    Init(Init<'a>),
    /// An SDP offer.
    #[serde(borrow)]
    Offer(Sdp<'a>),
    /// An SDP answer.
    #[serde(borrow)]
    Answer(Sdp<'a>),
    /// A trickled ICE candidate, in webrtc_ros's field names.
    #[serde(borrow)]
    IceCandidate(IceCandidate<'a>),
    /// Ask the other side to add or remove streams and tracks.
    #[serde(borrow)]
    Configure(Configure<'a>),
    /// An error reported by one peer to another (for example a bridge refusing
    /// a viewer's action by its robot's policy). Relayed like the others; the
    /// server's own errors never carry `to` or `from`.
    #[serde(borrow)]
    Error(RelayedError<'a>),
    /// Ask the server for ICE servers with fresh TURN credentials (answered
    /// with [`ServerMessage::IceServers`](super::ServerMessage::IceServers));
    /// never relayed.
    IceServers,
    /// From the host: end the room now (its guests and watchers get
    /// `room_closed`); never relayed.
    CloseRoom,
}

impl ClientMessage<'_> {
    /// The message as JSON text, as a client sends it.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: they hold only strings,
        // integers and enums.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// `{"type":"init"}` and its variants.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Init<'a> {
    /// Attach as a guest with this token.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub join: Option<Cow<'a, str>>,
    /// Attach as a watcher with this token.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Cow<'a, str>>,
    /// Resume hosting the room this secret belongs to.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Cow<'a, str>>,
    /// Token mode (`--auth token`): the signed token (JWT) saying which
    /// room the sender may enter and as what. Ignored in open mode, where a
    /// `token` of any type is accepted and unused, as before token mode
    /// existed; a value that is not a string reads as no token.
    #[serde(
        default,
        borrow,
        deserialize_with = "string_or_nothing",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<Cow<'a, str>>,
}

/// A string, or `None` for a value of any other type (consumed whole).
fn string_or_nothing<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOr<'a> {
        String(#[serde(borrow)] Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match StringOr::deserialize(d)? {
        StringOr::String(s) => Some(s),
        StringOr::Other(_) => None,
    })
}

/// What an `init` asks for, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitRequest<'m> {
    /// Create a new room and become its host.
    Create,
    /// Attach with a `join` or `watch` token.
    Attach(Role, &'m str),
    /// Become the host again with a resume secret.
    Resume(&'m str),
    /// Token mode: open the room of this name, or take it over, as its host
    /// (a host token's `room`). Never read from the wire as such: the
    /// session makes it from a verified token.
    Host(&'m str),
}

impl<'a> Init<'a> {
    /// What this `init` asks for; more than one of `join`, `watch` and `resume`
    /// is an error.
    pub fn request(&self) -> Result<InitRequest<'_>, PeerError> {
        match (&self.join, &self.watch, &self.resume) {
            (None, None, None) => Ok(InitRequest::Create),
            (Some(t), None, None) => Ok(InitRequest::Attach(Role::Join, t)),
            (None, Some(t), None) => Ok(InitRequest::Attach(Role::Watch, t)),
            (None, None, Some(r)) => Ok(InitRequest::Resume(r)),
            _ => Err(PeerError::new(
                ErrorCode::BadMessage,
                "init takes at most one of `join`, `watch` and `resume`",
            )),
        }
    }
}

/// Routing fields common to every relayed message.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Route<'a> {
    /// From the host: the peer to deliver to (all guests and watchers when
    /// absent). Ignored on messages from guests and watchers.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub to: Option<Cow<'a, str>>,
    /// Written by the server only; a sender's own `from` is replaced.
    #[serde(default, skip_serializing)]
    pub from: Present,
}

impl<'a> Route<'a> {
    /// A route to one peer (from the host).
    pub fn to(peer: &'a str) -> Self {
        Route {
            to: Some(Cow::Borrowed(peer)),
            from: Present(false),
        }
    }
}

/// `offer` and `answer`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Sdp<'a> {
    /// The session description.
    #[serde(borrow)]
    pub sdp: Cow<'a, str>,
    /// Routing.
    #[serde(flatten, borrow)]
    pub route: Route<'a>,
}

/// `ice_candidate`. webrtc_ros writes `candidate`; its protocol document spells
/// it `candiate`, which is accepted too and relayed as `candidate`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct IceCandidate<'a> {
    /// The candidate line (empty for end-of-candidates).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Cow<'a, str>>,
    /// The documented misspelling of `candidate`.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub candiate: Option<Cow<'a, str>>,
    /// The media stream identification tag.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<Cow<'a, str>>,
    /// The index of the m-line the candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u32>,
    /// Routing.
    #[serde(flatten, borrow)]
    pub route: Route<'a>,
}

/// `configure`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Configure<'a> {
    /// What to do, in order. Each action is a JSON object: serde would also
    /// read one from an array (tag first, then the fields in order), which
    /// is refused.
    #[serde(borrow, deserialize_with = "objects")]
    pub actions: Vec<Action<'a>>,
    /// Routing.
    #[serde(flatten, borrow)]
    pub route: Route<'a>,
}

/// `error`, sent by a peer.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct RelayedError<'a> {
    /// A snake_case code.
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    /// For humans.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub message: Option<Cow<'a, str>>,
    /// Routing.
    #[serde(flatten, borrow)]
    pub route: Route<'a>,
}

impl<'a> RelayedError<'a> {
    /// An error with one of the protocol's codes for peer `to` (from the
    /// host): `{"type":"error","code":C,"message":M,"to":P}`.
    pub fn to(to: &'a str, code: ErrorCode, message: &'a str) -> Self {
        RelayedError {
            code: Cow::Borrowed(code.as_str()),
            message: Some(Cow::Borrowed(message)),
            route: Route::to(to),
        }
    }
}

/// One action of a `configure` message.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action<'a> {
    /// Start a new stream.
    #[serde(borrow)]
    AddStream(Stream<'a>),
    /// Remove a stream.
    #[serde(borrow)]
    RemoveStream(Stream<'a>),
    /// Add a video track, taken from `src` (e.g. `ros_image:/camera/image_raw`).
    #[serde(borrow)]
    AddVideoTrack(Track<'a>),
    /// Add an audio track, taken from `src`.
    #[serde(borrow)]
    AddAudioTrack(Track<'a>),
    /// Expect a stream from the other side.
    #[serde(borrow)]
    ExpectStream(Stream<'a>),
    /// Expect a video track and write it to `dest` (into the robot).
    #[serde(borrow)]
    ExpectVideoTrack(ExpectedTrack<'a>),
}

/// The stream an action names: `add_stream`, `remove_stream`,
/// `expect_stream`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Stream<'a> {
    /// Stream id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

/// A track the receiver is to send: `add_video_track`, `add_audio_track`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Track<'a> {
    /// The stream to add it to.
    #[serde(borrow)]
    pub stream_id: Cow<'a, str>,
    /// Track id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Where the media comes from.
    #[serde(borrow)]
    pub src: Cow<'a, str>,
}

/// A track the receiver is to take in: `expect_video_track`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct ExpectedTrack<'a> {
    /// The stream it belongs to.
    #[serde(borrow)]
    pub stream_id: Cow<'a, str>,
    /// Track id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Where the received media goes.
    #[serde(borrow)]
    pub dest: Cow<'a, str>,
}

impl Action<'_> {
    /// Whether the action makes the receiver take media in (`expect_*`), which a
    /// watcher may not ask for.
    pub fn writes_into_receiver(&self) -> bool {
        matches!(self, Action::ExpectStream(_) | Action::ExpectVideoTrack(_))
    }

    /// The media URI the action reads from or writes to, if any.
    pub fn media_uri(&self) -> Option<&str> {
        match self {
            Action::AddVideoTrack(t) | Action::AddAudioTrack(t) => Some(&t.src),
            Action::ExpectVideoTrack(t) => Some(&t.dest),
            _ => None,
        }
    }
}

/// The kinds of relayed message, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    /// `offer`.
    Offer,
    /// `answer`.
    Answer,
    /// `ice_candidate`.
    IceCandidate,
    /// `configure`.
    Configure,
    /// `error` from a peer.
    Error,
}

impl RelayKind {
    /// Every kind, for metrics.
    pub const ALL: [RelayKind; 5] = [
        RelayKind::Offer,
        RelayKind::Answer,
        RelayKind::IceCandidate,
        RelayKind::Configure,
        RelayKind::Error,
    ];

    /// The wire name of the message type.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::IceCandidate => "ice_candidate",
            RelayKind::Configure => "configure",
            RelayKind::Error => "error",
        }
    }

    /// The index of the kind in [`RelayKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A validated message to relay: its kind, routing, and what the relay must
/// change in its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay<'m> {
    /// The message type.
    pub kind: RelayKind,
    /// The host's addressee, if any.
    pub to: Option<&'m str>,
    /// The sender wrote a `from` field (it will be replaced).
    pub has_from: bool,
    /// The sender wrote `candiate` but no `candidate` (it will be renamed).
    pub misspelt_candidate: bool,
    /// The message carries `expect_*` actions (forbidden for watchers).
    pub writes_into_receiver: bool,
}

impl<'a> ClientMessage<'a> {
    /// The routing view of a relayable message; `None` for `init` and
    /// `ice_servers`, which are for the server.
    pub fn relay(&self) -> Option<Relay<'_>> {
        let (kind, route) = match self {
            ClientMessage::Init(_) | ClientMessage::IceServers | ClientMessage::CloseRoom => {
                return None
            }
            ClientMessage::Offer(m) => (RelayKind::Offer, &m.route),
            ClientMessage::Answer(m) => (RelayKind::Answer, &m.route),
            ClientMessage::IceCandidate(m) => (RelayKind::IceCandidate, &m.route),
            ClientMessage::Configure(m) => (RelayKind::Configure, &m.route),
            ClientMessage::Error(m) => (RelayKind::Error, &m.route),
        };
        let misspelt_candidate = matches!(
            self,
            ClientMessage::IceCandidate(IceCandidate {
                candidate: None,
                candiate: Some(_),
                ..
            })
        );
        let writes_into_receiver = match self {
            ClientMessage::Configure(c) => c.actions.iter().any(Action::writes_into_receiver),
            _ => false,
        };
        Some(Relay {
            kind,
            to: route.to.as_deref(),
            has_from: route.from.0,
            misspelt_candidate,
            writes_into_receiver,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    #[test]
    fn clients_write_what_the_server_reads() {
        let resume = ClientMessage::Init(Init {
            resume: Some("Zm9vYmFyYmF6cXV4".into()),
            ..Init::default()
        });
        assert_eq!(
            resume.to_json(),
            r#"{"type":"init","resume":"Zm9vYmFyYmF6cXV4"}"#
        );
        assert_eq!(
            ClientMessage::Init(Init::default()).to_json(),
            r#"{"type":"init"}"#
        );
        let refusal = ClientMessage::Error(RelayedError::to(
            "p1",
            ErrorCode::RobotUnavailable,
            "the robot is \"down\"",
        ));
        assert_eq!(
            refusal.to_json(),
            r#"{"type":"error","code":"robot_unavailable","message":"the robot is \"down\"","to":"p1"}"#
        );
        for message in [resume, refusal] {
            assert_eq!(parse(&message.to_json()).unwrap(), message);
        }
    }

    #[test]
    fn every_message_reads_back_as_written() {
        for text in [
            r#"{"type":"offer","sdp":"v=0\r\n","to":"w4tch3rZ"}"#,
            r#"{"type":"answer","sdp":"v=0\r\n"}"#,
            r#"{"type":"ice_candidate","candidate":"candidate:1","sdp_mid":"0","sdp_mline_index":0}"#,
            r#"{"type":"ice_candidate","candiate":"candidate:1"}"#,
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"s"},{"type":"add_video_track","stream_id":"s","id":"s/v","src":"ros_image:/c"},{"type":"add_audio_track","stream_id":"s","id":"s/a","src":"local:"},{"type":"remove_stream","id":"s"},{"type":"expect_stream","id":"u"},{"type":"expect_video_track","stream_id":"u","id":"u/v","dest":"ros_image:/in"}],"to":"abc"}"#,
            r#"{"type":"error","code":"not_allowed"}"#,
            r#"{"type":"init","watch":"634w44TblL5Dbd9a"}"#,
            r#"{"type":"ice_servers"}"#,
        ] {
            let message = parse(text).unwrap();
            assert_eq!(message.to_json(), text);
        }
    }

    #[test]
    fn tracks_name_their_media() {
        let text = r#"{"type":"configure","actions":[{"type":"add_stream","id":"s"},{"type":"add_audio_track","stream_id":"s","id":"s/a","src":"local:"},{"type":"expect_video_track","stream_id":"u","id":"u/v","dest":"ros_image:/in"}]}"#;
        let ClientMessage::Configure(c) = parse(text).unwrap() else {
            panic!("not configure")
        };
        let uris: Vec<_> = c.actions.iter().map(Action::media_uri).collect();
        assert_eq!(uris, [None, Some("local:"), Some("ros_image:/in")]);
        let writes: Vec<_> = c.actions.iter().map(Action::writes_into_receiver).collect();
        assert_eq!(writes, [false, false, true]);
    }
}
