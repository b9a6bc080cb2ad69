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
    /// A guest's or watcher's message was not delivered: the host is not
    /// reading fast enough and the sender's share of its queue is full.
    HostBusy,
    /// Too many peers have entered this room recently; try again shortly.
    TooManyJoins,
}

impl ErrorCode {
    /// Every code, for metrics and documentation.
    pub const ALL: [ErrorCode; 16] = [
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
        ErrorCode::HostBusy,
        ErrorCode::TooManyJoins,
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
            ErrorCode::HostBusy => "host_busy",
            ErrorCode::TooManyJoins => "too_many_joins",
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
    // The common case, a well-formed message, is recognised by a single pass
    // over the text; anything it does not positively accept (errors, but
    // also rarities such as escaped keys, floats, duplicate keys) goes
    // through serde, which decides and words the error. The fast path only
    // ever accepts what serde accepts, with an equal result (see the
    // differential tests below).
    if let Some(message) = fast::parse(text) {
        return Ok(message);
    }
    parse_with_serde(text)
}

/// [`parse`] without the fast path.
fn parse_with_serde(text: &str) -> Result<ClientMessage<'_>, PeerError> {
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

/// The fast path of [`parse`]: one pass over the text, no intermediate
/// buffering. Returns `None` whenever it is not certain that serde would
/// accept the text with this very result; the caller then asks serde.
mod fast {
    use std::borrow::Cow;

    use super::{
        Action, ClientMessage, Configure, IceCandidate, Init, Present, RelayedError, Route, Sdp,
    };

    /// Keys per object beyond which the fast path gives up.
    const MAX_KEYS: usize = 24;
    /// Nesting beyond which the fast path gives up (serde_json stops at 128).
    const MAX_DEPTH: usize = 64;

    /// A value as far as validation needs it.
    enum Val<'a> {
        Null,
        Str(Cow<'a, str>),
        /// A non-negative integer written with digits only.
        UInt(u64),
        /// Any other valid JSON value (starting at this offset).
        Other(usize),
    }

    struct Scanner<'a> {
        s: &'a str,
        b: &'a [u8],
        i: usize,
    }

    impl<'a> Scanner<'a> {
        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
                self.i += 1;
            }
        }

        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn eat(&mut self, c: u8) -> Option<()> {
            self.ws();
            (self.peek()? == c).then(|| self.i += 1)
        }

        /// A string; the scanner is on its opening quote.
        /// Skips bytes that are neither a quote, a backslash nor a control
        /// character, eight at a time.
        fn skip_plain(&mut self) {
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let mut word = [0; 8];
                word.copy_from_slice(chunk);
                if may_end_string(u64::from_le_bytes(word)) {
                    break;
                }
                self.i += 8;
            }
        }

        fn string(&mut self) -> Option<Cow<'a, str>> {
            self.i += 1;
            let start = self.i;
            loop {
                self.skip_plain();
                let c = *self.b.get(self.i)?;
                match c {
                    b'"' => {
                        self.i += 1;
                        return Some(Cow::Borrowed(&self.s[start..self.i - 1]));
                    }
                    b'\\' => return self.escaped(start).map(Cow::Owned),
                    0..=0x1f => return None,
                    _ => self.i += 1,
                }
            }
        }

        /// The rest of a string that has escapes; `start` is its first byte.
        fn escaped(&mut self, start: usize) -> Option<String> {
            let mut out = String::with_capacity(self.i - start + 16);
            let mut run = start;
            loop {
                self.skip_plain();
                let c = *self.b.get(self.i)?;
                match c {
                    b'"' => {
                        out.push_str(&self.s[run..self.i]);
                        self.i += 1;
                        return Some(out);
                    }
                    b'\\' => {
                        out.push_str(&self.s[run..self.i]);
                        let e = *self.b.get(self.i + 1)?;
                        self.i += 2;
                        match e {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'u' => {
                                let hex = self.s.get(self.i..self.i + 4)?;
                                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                                    return None;
                                }
                                let code = u32::from_str_radix(hex, 16).ok()?;
                                // Surrogate pairs are left to serde.
                                out.push(char::from_u32(code)?);
                                self.i += 4;
                            }
                            _ => return None,
                        }
                        run = self.i;
                    }
                    0..=0x1f => return None,
                    _ => self.i += 1,
                }
            }
        }

        /// An object key without escapes, and the colon after it.
        fn key(&mut self) -> Option<&'a str> {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            match self.string()? {
                Cow::Borrowed(k) => {
                    self.eat(b':')?;
                    Some(k)
                }
                Cow::Owned(_) => None,
            }
        }

        /// An integer (the only numbers the fast path takes), small enough
        /// that serde_json reads it exactly.
        fn number(&mut self) -> Option<Val<'a>> {
            let negative = self.peek() == Some(b'-');
            if negative {
                self.i += 1;
            }
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let digits = &self.s[start..self.i];
            if digits.is_empty()
                || digits.len() > 18
                || (digits.len() > 1 && digits.starts_with('0'))
                || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
            {
                return None;
            }
            if negative {
                // `-0` is read as 0 by serde_json: not worth mimicking.
                return (digits != "0").then_some(Val::Other(start - 1));
            }
            digits.parse().ok().map(Val::UInt)
        }

        fn literal(&mut self, word: &str) -> Option<()> {
            self.s[self.i..]
                .starts_with(word)
                .then(|| self.i += word.len())
        }

        /// Any value; `depth` is the nesting of the object or array holding it.
        fn value(&mut self, depth: usize) -> Option<Val<'a>> {
            self.ws();
            let start = self.i;
            match self.peek()? {
                b'"' => self.string().map(Val::Str),
                b'n' => self.literal("null").map(|_| Val::Null),
                b't' => self.literal("true").map(|_| Val::Other(start)),
                b'f' => self.literal("false").map(|_| Val::Other(start)),
                b'-' | b'0'..=b'9' => self.number(),
                b'{' => {
                    self.skip_object(depth + 1)?;
                    Some(Val::Other(start))
                }
                b'[' => {
                    self.skip_array(depth + 1)?;
                    Some(Val::Other(start))
                }
                _ => None,
            }
        }

        fn skip_object(&mut self, depth: usize) -> Option<()> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.i += 1;
            self.ws();
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(());
            }
            loop {
                // Keys of nested values may have escapes: only valid JSON
                // matters here.
                self.ws();
                if self.peek()? != b'"' {
                    return None;
                }
                self.string()?;
                self.eat(b':')?;
                self.value(depth)?;
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        fn skip_array(&mut self, depth: usize) -> Option<()> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.i += 1;
            self.ws();
            if self.peek()? == b']' {
                self.i += 1;
                return Some(());
            }
            loop {
                self.value(depth)?;
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        /// The fields of an object (the scanner on its `{`), each key once.
        fn fields(&mut self, depth: usize) -> Option<Fields<'a>> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.eat(b'{')?;
            let mut fields = Fields(Vec::with_capacity(8));
            self.ws();
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(fields);
            }
            loop {
                let key = self.key()?;
                let value = self.value(depth)?;
                if fields.0.len() == MAX_KEYS || fields.0.iter().any(|(k, _)| *k == key) {
                    return None;
                }
                fields.0.push((key, value));
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return Some(fields);
                    }
                    _ => return None,
                }
            }
        }
    }

    /// Whether any of the eight bytes of `w` is a quote, a backslash or a
    /// control character (exact for "none"; the caller then checks byte by
    /// byte).
    fn may_end_string(w: u64) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
        let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        (quote | backslash | control) != 0
    }

    struct Fields<'a>(Vec<(&'a str, Val<'a>)>);

    impl<'a> Fields<'a> {
        fn take(&mut self, name: &str) -> Option<Val<'a>> {
            let i = self.0.iter().position(|(k, _)| *k == name)?;
            Some(self.0.swap_remove(i).1)
        }

        /// The tag: a string without escapes.
        fn tag(&mut self) -> Option<&'a str> {
            match self.take("type")? {
                Val::Str(Cow::Borrowed(t)) => Some(t),
                _ => None,
            }
        }

        /// An optional string: `Some(None)` when absent or null, `None` when
        /// of another type.
        fn opt_str(&mut self, name: &str) -> Option<Option<Cow<'a, str>>> {
            match self.take(name) {
                None | Some(Val::Null) => Some(None),
                Some(Val::Str(s)) => Some(Some(s)),
                Some(_) => None,
            }
        }

        fn req_str(&mut self, name: &str) -> Option<Cow<'a, str>> {
            match self.take(name)? {
                Val::Str(s) => Some(s),
                _ => None,
            }
        }

        fn route(&mut self) -> Option<Route<'a>> {
            let to = self.opt_str("to")?;
            let from = Present(self.take("from").is_some());
            Some(Route { to, from })
        }
    }

    pub(super) fn parse(text: &str) -> Option<ClientMessage<'_>> {
        let mut sc = Scanner {
            s: text,
            b: text.as_bytes(),
            i: 0,
        };
        let mut f = sc.fields(1)?;
        sc.ws();
        if sc.i != text.len() {
            return None;
        }
        let message = match f.tag()? {
            "init" => {
                let init = Init {
                    join: f.opt_str("join")?,
                    watch: f.opt_str("watch")?,
                    resume: f.opt_str("resume")?,
                };
                init.request().ok()?;
                ClientMessage::Init(init)
            }
            "offer" => ClientMessage::Offer(Sdp {
                sdp: f.req_str("sdp")?,
                route: f.route()?,
            }),
            "answer" => ClientMessage::Answer(Sdp {
                sdp: f.req_str("sdp")?,
                route: f.route()?,
            }),
            "ice_candidate" => {
                let candidate = f.opt_str("candidate")?;
                let candiate = f.opt_str("candiate")?;
                if candidate.is_none() && candiate.is_none() {
                    return None;
                }
                let sdp_mline_index = match f.take("sdp_mline_index") {
                    None | Some(Val::Null) => None,
                    Some(Val::UInt(n)) => Some(u32::try_from(n).ok()?),
                    Some(_) => return None,
                };
                ClientMessage::IceCandidate(IceCandidate {
                    candidate,
                    candiate,
                    sdp_mid: f.opt_str("sdp_mid")?,
                    sdp_mline_index,
                    route: f.route()?,
                })
            }
            "configure" => {
                let Val::Other(at) = f.take("actions")? else {
                    return None;
                };
                let actions = actions(text, at)?;
                ClientMessage::Configure(Configure {
                    actions,
                    route: f.route()?,
                })
            }
            "error" => ClientMessage::Error(RelayedError {
                code: f.req_str("code")?,
                message: f.opt_str("message")?,
                route: f.route()?,
            }),
            _ => return None,
        };
        Some(message)
    }

    /// The array of actions at byte `at` (already known to be valid JSON).
    fn actions(text: &str, at: usize) -> Option<Vec<Action<'_>>> {
        let mut sc = Scanner {
            s: text,
            b: text.as_bytes(),
            i: at,
        };
        sc.eat(b'[')?;
        let mut out = Vec::new();
        sc.ws();
        if sc.peek()? == b']' {
            return Some(out);
        }
        loop {
            let mut f = sc.fields(2)?;
            let action = match f.tag()? {
                "add_stream" => Action::AddStream {
                    id: f.req_str("id")?,
                },
                "remove_stream" => Action::RemoveStream {
                    id: f.req_str("id")?,
                },
                "add_video_track" => Action::AddVideoTrack {
                    stream_id: f.req_str("stream_id")?,
                    id: f.req_str("id")?,
                    src: f.req_str("src")?,
                },
                "add_audio_track" => Action::AddAudioTrack {
                    stream_id: f.req_str("stream_id")?,
                    id: f.req_str("id")?,
                    src: f.req_str("src")?,
                },
                "expect_stream" => Action::ExpectStream {
                    id: f.req_str("id")?,
                },
                "expect_video_track" => Action::ExpectVideoTrack {
                    stream_id: f.req_str("stream_id")?,
                    id: f.req_str("id")?,
                    dest: f.req_str("dest")?,
                },
                _ => return None,
            };
            out.push(action);
            sc.ws();
            match sc.peek()? {
                b',' => sc.i += 1,
                b']' => return Some(out),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn code(text: &str) -> ErrorCode {
        parse(text).expect_err(text).code
    }

    /// Whether the fast path accepted `text`; if it did, serde must accept
    /// it too, with an equal result.
    fn fast_agrees(text: &str) -> bool {
        match fast::parse(text) {
            Some(m) => {
                assert_eq!(Ok(m), parse_with_serde(text), "{text}");
                true
            }
            None => false,
        }
    }

    const CORPUS: [&str; 16] = [
        r#"{"type": "init"}"#,
        r#"{"type":"init","watch":"634w44TblL5Dbd9a"}"#,
        r#"{"type":"init","join":"54ICxFae_Ip7TJE2","to":5,"from":[1]}"#,
        r#"{"type":"init","resume":"q2Vx0lDnZ1aK8m3B","join":null}"#,
        r#"{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n","to":"w4tch3rZ"}"#,
        r#"{"type":"answer","sdp":"v=0\r\n","x-extra":{"a":[1,2,{"b":null}],"c":true,"d":false}}"#,
        r#" {"type":"answer","sdp":"s \u00e9\u0000\/\"\\\b\f\t","from":null} "#,
        r#"{"type":"ice_candidate","sdp_mid":"video","sdp_mline_index":0,"candidate":"candidate:842163049 1 udp 1677729535 198.51.100.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0","to":"w4tch3rZ"}"#,
        r#"{"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":4294967295,"candiate":"candidate:1 1 UDP 2122252543 198.51.100.2 50000 typ host"}"#,
        r#"{"type":"ice_candidate","sdp_mid":null,"sdp_mline_index":null,"candidate":"","n":-12}"#,
        r#"{"type":"configure","actions":[{"type":"add_stream","id":"webrtc_ros-stream-123"},{"type":"add_video_track","stream_id":"webrtc_ros-stream-123","id":"webrtc_ros-stream-123/subscribed_video","src":"ros_image:/camera/image_raw"}]}"#,
        r#"{"type":"configure","actions":[{"type":"remove_stream","id":"webrtc_ros-stream-123"}]}"#,
        r#"{"type":"configure","actions":[{"type":"add_audio_track","stream_id":"s","id":"s/audio","src":"local:","x":1}]}"#,
        r#"{"type":"configure","actions":[{"type":"expect_stream","id":"up"},{"type":"expect_video_track","stream_id":"up","id":"up/video","dest":"ros_image:/browser/image"}],"to":"abc"}"#,
        r#"{"type":"configure","actions":[]}"#,
        r#"{"type":"error","code":"not_allowed","message":"this robot does not share ros_image:/secret","to":"w4tch3rZ"}"#,
    ];

    #[test]
    fn the_fast_path_takes_the_protocol_examples() {
        for text in CORPUS {
            assert!(fast_agrees(text), "fast path declined {text}");
        }
    }

    #[test]
    fn the_fast_path_never_accepts_what_serde_refuses() {
        // Every deletion of one byte, and every replacement of one byte by
        // one that matters to JSON, of every example: whatever the fast path
        // accepts, serde accepts with an equal result.
        let swaps = b"\"\\{}[],:0123456789-+.eEntfalsru \t\x01/";
        let mut accepted = 0;
        let mut tried = 0;
        for text in CORPUS {
            let bytes = text.as_bytes();
            for i in 0..bytes.len() {
                let mut del = bytes.to_vec();
                del.remove(i);
                let mut variants = vec![del];
                for &c in swaps {
                    let mut v = bytes.to_vec();
                    v[i] = c;
                    variants.push(v);
                    let mut ins = bytes.to_vec();
                    ins.insert(i, c);
                    variants.push(ins);
                }
                for v in variants {
                    if let Ok(s) = String::from_utf8(v) {
                        tried += 1;
                        accepted += usize::from(fast_agrees(&s));
                    }
                }
            }
        }
        assert!(accepted > 1000 && tried > 50_000, "{accepted} of {tried}");
    }

    #[test]
    fn the_fast_path_leaves_rarities_to_serde() {
        for text in [
            r#"{"type":"offer","sdp":"s","sdp":"t"}"#,
            r#"{"type":"offer","type":"answer","sdp":"s"}"#,
            r#"{"\u0074ype":"offer","sdp":"s"}"#,
            r#"{"type":"offe\u0072","sdp":"s"}"#,
            r#"{"type":"offer","sdp":"s","n":1e400}"#,
            r#"{"type":"offer","sdp":"s","n":1.5}"#,
            r#"{"type":"offer","sdp":"\ud83d\ude00"}"#,
            r#"{"type":"ice_candidate","candidate":"c","sdp_mline_index":-0}"#,
            r#"{"type":"ice_candidate","candidate":"c","sdp_mline_index":4294967296}"#,
            r#"{"type":"configure","actions":[["add_stream","s"]]}"#,
            r#"["init"]"#,
            "{\"type\":\"init\"}\u{feff}",
        ] {
            assert!(fast::parse(text).is_none(), "{text}");
            // Whatever serde says stands.
            let _ = parse(text);
        }
        let deep = format!(
            r#"{{"type":"offer","sdp":"s","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(fast::parse(&deep).is_none());
        assert_eq!(parse(&deep).unwrap_err().code, ErrorCode::BadJson);
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
