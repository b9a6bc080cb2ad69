//! Wire protocol v1, free of I/O.
//!
//! Everything a peer's bytes reach before the relay lives here: parsing and
//! validation of inbound messages ([`parse`]), the server's own events
//! ([`ServerMessage`]), and the rewriting a relayed message may need
//! ([`with_from`]). The reference for users is `docs/PROTOCOL.md`; the tests at
//! the bottom pin the wire format with literal JSON.
//!
//! Inbound messages are deserialised into borrowed, typed values so that
//! validation is complete (a mistyped field is an error, not a surprise for the
//! robot), but they are relayed as the text the sender wrote: unknown fields are
//! kept and nothing is re-serialised on the hot path.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A peer's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the room (a robot's bridge, or a sharing browser). Receives every
    /// message of the room's other peers; addresses them with `to`.
    Host,
    /// Attached with the `join` token: a full peer.
    Join,
    /// Attached with the `watch` token: a receive-only viewer, which may not ask
    /// the host to take media in (`expect_*` actions).
    Watch,
}

impl Role {
    /// The wire name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Join => "join",
            Role::Watch => "watch",
        }
    }
}

/// Stable error codes, sent as `{"type":"error","code":...}`.
///
/// Codes are part of the protocol: clients switch on them, so a code is never
/// renamed. The `message` beside it is for humans and may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// Valid JSON, but not a message: not an object, no string `type`, or a
    /// field missing or of the wrong type.
    BadMessage,
    /// A `type` this server does not know.
    UnknownType,
    /// A relayed message from a socket that is not attached to a room.
    NotInRoom,
    /// `init` on a socket that is already attached to a room.
    AlreadyInRoom,
    /// The token or resume secret matches no open room.
    RoomNotFound,
    /// The host's `to` names no peer of its room.
    PeerNotFound,
    /// The room's host is disconnected (within its grace period); nothing was
    /// delivered.
    HostAbsent,
    /// The sender's role may not send this (a watcher's `expect_*` action).
    Forbidden,
    /// The room already has its maximum number of peers.
    RoomFull,
    /// Too many messages: this one was dropped.
    RateLimited,
    /// The message is larger than the server accepts; the socket is closed 1009.
    TooLarge,
    /// A binary frame; the protocol is text only.
    UnsupportedFrame,
    /// The server cannot take this request now (for example its shared room
    /// store is unreachable); try again later.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for metrics and documentation.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::RoomNotFound,
        ErrorCode::PeerNotFound,
        ErrorCode::HostAbsent,
        ErrorCode::Forbidden,
        ErrorCode::RoomFull,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedFrame,
        ErrorCode::Unavailable,
    ];

    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::AlreadyInRoom => "already_in_room",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::PeerNotFound => "peer_not_found",
            ErrorCode::HostAbsent => "host_absent",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The index of the code in [`ErrorCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error caused by a peer: recoverable, answered with an error
/// message, and the socket stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence for humans naming the problem.
    pub message: String,
}

impl PeerError {
    /// A new error with its code and human-readable message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PeerError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PeerError {}

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
#[derive(Debug, Deserialize, PartialEq)]
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
}

/// `{"type":"init"}` and its variants.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Init<'a> {
    /// Attach as a guest with this token.
    #[serde(default, borrow)]
    pub join: Option<Cow<'a, str>>,
    /// Attach as a watcher with this token.
    #[serde(default, borrow)]
    pub watch: Option<Cow<'a, str>>,
    /// Resume hosting the room this secret belongs to.
    #[serde(default, borrow)]
    pub resume: Option<Cow<'a, str>>,
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
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Route<'a> {
    /// From the host: the peer to deliver to (all guests and watchers when
    /// absent). Ignored on messages from guests and watchers.
    #[serde(default, borrow)]
    pub to: Option<Cow<'a, str>>,
    /// Written by the server only; a sender's own `from` is replaced.
    #[serde(default)]
    pub from: Present,
}

/// `offer` and `answer`.
#[derive(Debug, Deserialize, PartialEq)]
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
#[derive(Debug, Deserialize, PartialEq)]
pub struct IceCandidate<'a> {
    /// The candidate line (empty for end-of-candidates).
    #[serde(default, borrow)]
    pub candidate: Option<Cow<'a, str>>,
    /// The documented misspelling of `candidate`.
    #[serde(default, borrow)]
    pub candiate: Option<Cow<'a, str>>,
    /// The media stream identification tag.
    #[serde(default, borrow)]
    pub sdp_mid: Option<Cow<'a, str>>,
    /// The index of the m-line the candidate belongs to.
    #[serde(default)]
    pub sdp_mline_index: Option<u32>,
    /// Routing.
    #[serde(flatten, borrow)]
    pub route: Route<'a>,
}

/// `configure`.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Configure<'a> {
    /// What to do, in order.
    #[serde(borrow)]
    pub actions: Vec<Action<'a>>,
    /// Routing.
    #[serde(flatten, borrow)]
    pub route: Route<'a>,
}

/// `error`, sent by a peer.
#[derive(Debug, Deserialize, PartialEq)]
pub struct RelayedError<'a> {
    /// A snake_case code.
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    /// For humans.
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
    /// Routing.
    #[serde(flatten, borrow)]
    pub route: Route<'a>,
}

/// One action of a `configure` message.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action<'a> {
    /// Start a new stream.
    AddStream {
        /// Stream id.
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
    /// Remove a stream.
    RemoveStream {
        /// Stream id.
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
    /// Add a video track, taken from `src` (e.g. `ros_image:/camera/image_raw`).
    AddVideoTrack {
        /// The stream to add it to.
        #[serde(borrow)]
        stream_id: Cow<'a, str>,
        /// Track id.
        #[serde(borrow)]
        id: Cow<'a, str>,
        /// Where the media comes from.
        #[serde(borrow)]
        src: Cow<'a, str>,
    },
    /// Add an audio track, taken from `src`.
    AddAudioTrack {
        /// The stream to add it to.
        #[serde(borrow)]
        stream_id: Cow<'a, str>,
        /// Track id.
        #[serde(borrow)]
        id: Cow<'a, str>,
        /// Where the media comes from.
        #[serde(borrow)]
        src: Cow<'a, str>,
    },
    /// Expect a stream from the other side.
    ExpectStream {
        /// Stream id.
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
    /// Expect a video track and write it to `dest` (into the robot).
    ExpectVideoTrack {
        /// The stream it belongs to.
        #[serde(borrow)]
        stream_id: Cow<'a, str>,
        /// Track id.
        #[serde(borrow)]
        id: Cow<'a, str>,
        /// Where the received media goes.
        #[serde(borrow)]
        dest: Cow<'a, str>,
    },
}

impl Action<'_> {
    /// Whether the action makes the receiver take media in (`expect_*`), which a
    /// watcher may not ask for.
    pub fn writes_into_receiver(&self) -> bool {
        matches!(
            self,
            Action::ExpectStream { .. } | Action::ExpectVideoTrack { .. }
        )
    }

    /// The media URI the action reads from or writes to, if any.
    pub fn media_uri(&self) -> Option<&str> {
        match self {
            Action::AddVideoTrack { src, .. } | Action::AddAudioTrack { src, .. } => Some(src),
            Action::ExpectVideoTrack { dest, .. } => Some(dest),
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
    /// The routing view of a relayable message; `None` for `init`.
    pub fn relay(&self) -> Option<Relay<'_>> {
        let (kind, route) = match self {
            ClientMessage::Init(_) => return None,
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

/// The least a message must be to be classified: an object with a string type.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// The message types a peer may send.
pub const CLIENT_TYPES: [&str; 6] = [
    "init",
    "offer",
    "answer",
    "ice_candidate",
    "configure",
    "error",
];

/// Parses and validates one text frame.
///
/// The error names the problem with a stable code: `bad_json` for text that
/// is not JSON, `unknown_type` for a type this server does not know, and
/// `bad_message` for everything else that is not a valid message.
pub fn parse(text: &str) -> Result<ClientMessage<'_>, PeerError> {
    match serde_json::from_str::<ClientMessage<'_>>(text) {
        Ok(message) if is_object(text) => validate(message),
        // serde also reads an internally tagged enum from an array (tag
        // first, then the fields in order): `["init"]` must not create a room.
        Ok(_) => Err(PeerError::new(
            ErrorCode::BadMessage,
            "a message is a JSON object with a string `type`",
        )),
        Err(err) => Err(classify(text, &err)),
    }
}

/// Whether text that parsed as JSON is an object (JSON's whitespace only).
fn is_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

fn validate(message: ClientMessage<'_>) -> Result<ClientMessage<'_>, PeerError> {
    if let ClientMessage::IceCandidate(c) = &message {
        if c.candidate.is_none() && c.candiate.is_none() {
            return Err(PeerError::new(
                ErrorCode::BadMessage,
                "ice_candidate needs a string `candidate`",
            ));
        }
    }
    if let ClientMessage::Init(init) = &message {
        init.request()?;
    }
    Ok(message)
}

// Error path only: a second, lighter parse tells what kind of wrong it was.
fn classify(text: &str, err: &serde_json::Error) -> PeerError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            PeerError::new(ErrorCode::BadJson, format!("not valid JSON: {err}"))
        }
        Category::Data => match serde_json::from_str::<Envelope<'_>>(text) {
            Err(_) => PeerError::new(
                ErrorCode::BadMessage,
                "a message is a JSON object with a string `type`",
            ),
            Ok(env) if CLIENT_TYPES.contains(&env.kind.as_ref()) => PeerError::new(
                ErrorCode::BadMessage,
                format!("invalid `{}` message: {}", env.kind, strip_position(err)),
            ),
            Ok(env) => PeerError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type `{}`; expected one of {}",
                    truncate(&env.kind, 64),
                    CLIENT_TYPES.join(", ")
                ),
            ),
        },
    }
}

fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn truncate(s: &str, max_chars: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// The text to deliver for a message a peer sent, with `from` set to the
/// sender's peer id when given (messages to the host), and `candiate` renamed
/// to `candidate`.
///
/// The common case (no `from` in the input, correct spelling) splices
/// `"from":"<id>",` after the opening brace: no re-serialisation, and every
/// field the sender wrote stays byte for byte. Other cases go through a
/// `serde_json` object (field order kept).
pub fn with_from(text: &str, from: Option<&str>, relay: &Relay<'_>) -> String {
    if !relay.has_from && !relay.misspelt_candidate {
        let Some(from) = from else {
            return text.to_string();
        };
        if let Some(brace) = text.find('{') {
            let rest = &text[brace + 1..];
            let mut out = String::with_capacity(text.len() + from.len() + 10);
            out.push_str("{\"from\":");
            push_json_string(&mut out, from);
            out.push(',');
            out.push_str(rest);
            return out;
        }
    }
    rewrite(text, from, relay)
}

fn rewrite(text: &str, from: Option<&str>, relay: &Relay<'_>) -> String {
    let Ok(mut map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
    else {
        // Unreachable for text that passed `parse`; relaying it unchanged is
        // the least surprising fallback.
        return text.to_string();
    };
    if relay.misspelt_candidate {
        if let Some(v) = map.shift_remove("candiate") {
            map.insert("candidate".to_string(), v);
        }
    }
    match from {
        Some(from) => {
            map.insert("from".to_string(), serde_json::Value::from(from));
        }
        None => {
            map.shift_remove("from");
        }
    }
    serde_json::Value::Object(map).to_string()
}

fn push_json_string(out: &mut String, s: &str) {
    // Peer ids are base64url, but stay correct for anything.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// A message the server itself sends.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// The reply to `init` (and to a query-string attach).
    Init(InitReply<'a>),
    /// To the host: a peer attached.
    PeerJoined {
        /// The peer's id.
        peer: &'a str,
        /// The peer's role.
        role: Role,
    },
    /// To the host: a peer left.
    PeerLeft {
        /// The peer's id.
        peer: &'a str,
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
        message: &'a str,
    },
}

/// The body of an `init` reply.
#[derive(Debug, Serialize, PartialEq)]
pub struct InitReply<'a> {
    /// The room's join token (host only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<&'a str>,
    /// The room's watch token (host only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<&'a str>,
    /// The host's secret for resuming the room (host only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<&'a str>,
    /// The receiver's own peer id.
    pub peer: &'a str,
    /// The receiver's role.
    pub role: Role,
    /// ICE servers the operator configured (RTCIceServer objects), possibly
    /// empty.
    pub ice_servers: &'a serde_json::Value,
}

impl ServerMessage<'_> {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: they hold only strings, enums and
        // an already-valid JSON value.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }
}

/// An error message as JSON text.
pub fn error_json(err: &PeerError) -> String {
    ServerMessage::Error {
        code: err.code,
        message: &err.message,
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn code(text: &str) -> ErrorCode {
        parse(text).expect_err(text).code
    }

    #[test]
    fn parses_the_seed_init() {
        let m = parse(r#"{"type": "init"}"#).unwrap();
        assert_eq!(m, ClientMessage::Init(Init::default()));
        let ClientMessage::Init(init) = m else {
            unreachable!()
        };
        assert_eq!(init.request().unwrap(), InitRequest::Create);
    }

    #[test]
    fn parses_init_with_tokens() {
        let m = parse(r#"{"type":"init","watch":"634w44TblL5Dbd9a"}"#).unwrap();
        let ClientMessage::Init(init) = m else {
            panic!("not init")
        };
        assert_eq!(
            init.request().unwrap(),
            InitRequest::Attach(Role::Watch, "634w44TblL5Dbd9a")
        );
        assert_eq!(
            code(r#"{"type":"init","watch":"634w44TblL5Dbd9a","join":"54ICxFae_Ip7TJE2"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(code(r#"{"type":"init","join":5}"#), ErrorCode::BadMessage);
    }

    #[test]
    fn parses_webrtc_ros_messages() {
        let offer = parse(r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"}"#).unwrap();
        let r = offer.relay().unwrap();
        assert_eq!(r.kind, RelayKind::Offer);
        assert_eq!(r.to, None);

        let ice = parse(
            r#"{"type":"ice_candidate","sdp_mid":"video","sdp_mline_index":0,"candidate":"candidate:1 1 UDP 1 198.51.100.1 5000 typ host","to":"AbCdEf12"}"#,
        )
        .unwrap();
        let r = ice.relay().unwrap();
        assert_eq!(r.kind, RelayKind::IceCandidate);
        assert_eq!(r.to, Some("AbCdEf12"));
        assert!(!r.misspelt_candidate);

        let configure = parse(
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"webrtc_ros-stream-123"},{"type":"add_video_track","stream_id":"webrtc_ros-stream-123","id":"webrtc_ros-stream-123/subscribed_video","src":"ros_image:/camera/image_raw"}]}"#,
        )
        .unwrap();
        let ClientMessage::Configure(c) = &configure else {
            panic!("not configure")
        };
        assert_eq!(c.actions.len(), 2);
        assert_eq!(
            c.actions[1].media_uri(),
            Some("ros_image:/camera/image_raw")
        );
        assert!(!configure.relay().unwrap().writes_into_receiver);
    }

    #[test]
    fn peers_may_relay_errors() {
        let m = parse(
            r#"{"type":"error","code":"not_allowed","message":"src refused","to":"AbCdEf12"}"#,
        )
        .unwrap();
        let r = m.relay().unwrap();
        assert_eq!(r.kind, RelayKind::Error);
        assert_eq!(r.to, Some("AbCdEf12"));
        assert_eq!(
            code(r#"{"type":"error","message":"no code"}"#),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn expect_actions_are_flagged() {
        let m = parse(
            r#"{"type":"configure","actions":[{"type":"expect_stream","id":"s"},{"type":"expect_video_track","stream_id":"s","id":"t","dest":"ros_image:/cmd"}]}"#,
        )
        .unwrap();
        assert!(m.relay().unwrap().writes_into_receiver);
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(code("{not json"), ErrorCode::BadJson);
        assert_eq!(code(""), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadMessage);
        assert_eq!(code("\"init\""), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"sdp":"x"}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":"hello"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"offer"}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":"offer","sdp":42}"#), ErrorCode::BadMessage);
        assert_eq!(
            code(r#"{"type":"ice_candidate","sdp_mid":"0"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(r#"{"type":"ice_candidate","candidate":"c","sdp_mline_index":-1}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(code(r#"{"type":"configure"}"#), ErrorCode::BadMessage);
        assert_eq!(
            code(r#"{"type":"configure","actions":[{"type":"launch_missiles"}]}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(r#"{"type":"configure","actions":[{"type":"add_video_track","id":"t"}]}"#),
            ErrorCode::BadMessage
        );
        let err = parse(r#"{"type":"offer","sdp":42}"#).unwrap_err();
        assert!(err.message.contains("offer"), "{}", err.message);
        assert!(err.message.contains("sdp") || err.message.contains("string"));
    }

    #[test]
    fn unknown_type_names_are_truncated() {
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        let err = parse(&long).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert!(err.message.len() < 300);
    }

    #[test]
    fn splices_from_without_touching_other_fields() {
        let text = r#"{"type":"answer","sdp":"v=0\r\n","x-extra":{"a":[1,2]}}"#;
        let msg = parse(text).unwrap();
        let relay = msg.relay().unwrap();
        let out = with_from(text, Some("AbCdEf12"), &relay);
        assert_eq!(
            out,
            r#"{"from":"AbCdEf12","type":"answer","sdp":"v=0\r\n","x-extra":{"a":[1,2]}}"#
        );
        // Leading whitespace is allowed in JSON and kept out of the way.
        let text = " \n{\"type\":\"answer\",\"sdp\":\"s\"}";
        let msg = parse(text).unwrap();
        let relay = msg.relay().unwrap();
        let out: Value = serde_json::from_str(&with_from(text, Some("p"), &relay)).unwrap();
        assert_eq!(out, json!({"from":"p","type":"answer","sdp":"s"}));
    }

    #[test]
    fn a_forged_from_is_replaced() {
        let text = r#"{"type":"offer","sdp":"s","from":"forged"}"#;
        let msg = parse(text).unwrap();
        let relay = msg.relay().unwrap();
        assert!(relay.has_from);
        let out = with_from(text, Some("real1234"), &relay);
        assert_eq!(out, r#"{"type":"offer","sdp":"s","from":"real1234"}"#);
        let null = r#"{"type":"offer","sdp":"s","from":null}"#;
        let msg = parse(null).unwrap();
        let relay = msg.relay().unwrap();
        assert!(relay.has_from);
    }

    #[test]
    fn the_documented_misspelling_is_normalised() {
        let text = r#"{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candiate":"candidate:1"}"#;
        let msg = parse(text).unwrap();
        let relay = msg.relay().unwrap();
        assert!(relay.misspelt_candidate);
        let out = with_from(text, Some("AbCdEf12"), &relay);
        assert_eq!(
            out,
            r#"{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candidate":"candidate:1","from":"AbCdEf12"}"#
        );
        // From the host (no `from` to add) the rename still happens.
        let out = with_from(text, None, &relay);
        assert_eq!(
            out,
            r#"{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candidate":"candidate:1"}"#
        );
    }

    #[test]
    fn pins_server_messages() {
        let ice = json!([{"urls": "stun:stun.example.org:3478"}]);
        let host = ServerMessage::Init(InitReply {
            join: Some("54ICxFae_Ip7TJE2"),
            watch: Some("634w44TblL5Dbd9a"),
            resume: Some("Zm9vYmFyYmF6cXV4"),
            peer: "h0st1234",
            role: Role::Host,
            ice_servers: &ice,
        });
        assert_eq!(
            host.to_json(),
            r#"{"type":"init","join":"54ICxFae_Ip7TJE2","watch":"634w44TblL5Dbd9a","resume":"Zm9vYmFyYmF6cXV4","peer":"h0st1234","role":"host","ice_servers":[{"urls":"stun:stun.example.org:3478"}]}"#
        );
        let none = json!([]);
        let guest = ServerMessage::Init(InitReply {
            join: None,
            watch: None,
            resume: None,
            peer: "gUest123",
            role: Role::Watch,
            ice_servers: &none,
        });
        assert_eq!(
            guest.to_json(),
            r#"{"type":"init","peer":"gUest123","role":"watch","ice_servers":[]}"#
        );
        assert_eq!(
            ServerMessage::PeerJoined {
                peer: "gUest123",
                role: Role::Join
            }
            .to_json(),
            r#"{"type":"peer_joined","peer":"gUest123","role":"join"}"#
        );
        assert_eq!(
            ServerMessage::PeerLeft { peer: "gUest123" }.to_json(),
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
    fn every_error_code_has_its_wire_name() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            let wire = serde_json::to_value(c).unwrap();
            assert_eq!(wire, Value::from(c.as_str()));
        }
    }
}
