//! Parsing and validation of a peer's text frame: the fast path first, serde
//! for everything else and for the wording of errors.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::client::ClientMessage;
use super::error::{ErrorCode, PeerError};
use super::fast;

/// The message types a peer may send.
pub const CLIENT_TYPES: [&str; 8] = [
    "init",
    "offer",
    "answer",
    "ice_candidate",
    "configure",
    "error",
    "ice_servers",
    "close_room",
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
    // differential tests in `fast`).
    if let Some(message) = fast::parse(text) {
        return Ok(message);
    }
    parse_with_serde(text)
}

/// [`parse`] without the fast path.
pub(super) fn parse_with_serde(text: &str) -> Result<ClientMessage<'_>, PeerError> {
    match serde_json::from_str::<ClientMessage<'_>>(text) {
        Ok(message) if is_object(text) => validate(message),
        // serde also reads an internally tagged enum from an array (tag
        // first, then the fields in order): `["init"]` must not create a room.
        Ok(_) => Err(not_an_object()),
        Err(err) => Err(classify(text, &err)),
    }
}

fn not_an_object() -> PeerError {
    PeerError::new(
        ErrorCode::BadMessage,
        "a message is a JSON object with a string `type`",
    )
}

/// Whether text that parsed as JSON is an object (JSON's whitespace only).
pub(super) fn is_object(text: &str) -> bool {
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

/// The least a message must be to be classified: an object with a string type.
#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

// Error path only: a second, lighter parse tells what kind of wrong it was.
fn classify(text: &str, err: &serde_json::Error) -> PeerError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            PeerError::new(ErrorCode::BadJson, format!("not valid JSON: {err}"))
        }
        Category::Data => match serde_json::from_str::<TypeOnly<'_>>(text) {
            Err(_) => not_an_object(),
            Ok(t) if CLIENT_TYPES.contains(&t.kind.as_ref()) => PeerError::new(
                ErrorCode::BadMessage,
                format!("invalid `{}` message: {}", t.kind, strip_position(err)),
            ),
            Ok(t) => PeerError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type `{}`; expected one of {}",
                    truncate(&t.kind, 64),
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

/// A `T` that must be written as a JSON object. serde reads structs and
/// internally tagged enums from arrays as well; the protocol does not.
pub(super) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// A JSON array of objects (`configure`'s `actions`).
pub(super) fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct SeqVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of JSON objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
            while let Some(Object(item)) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(SeqVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::super::{Init, InitRequest, RelayKind, Role};
    use super::*;

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
    fn array_form_actions_are_refused() {
        // Found in the open-internet review (issue 11): serde reads an
        // internally tagged enum from an array, so these passed validation
        // and were relayed to the host.
        for text in [
            r#"{"type":"configure","actions":[["add_stream","x"]]}"#,
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"s"},["add_video_track","s","s/v","ros_image:/secret"]]}"#,
            r#"{"type":"configure","actions":[["expect_stream","up"]],"to":"w4tch3rZ"}"#,
            r#"{"type":"configure","actions":[[]]}"#,
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.code, ErrorCode::BadMessage, "{text}");
            assert!(err.message.contains("object"), "{}", err.message);
        }
        // As docs/PROTOCOL.md quotes it.
        assert_eq!(
            parse(r#"{"type":"configure","actions":[["add_stream","s"]]}"#)
                .unwrap_err()
                .message,
            "invalid `configure` message: invalid type: sequence, expected a JSON object"
        );
        // The object form stays accepted, in both paths (`\u0073` sends
        // this one through serde).
        for text in [
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"x"}]}"#,
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"\u0073"}]}"#,
        ] {
            assert!(parse(text).is_ok(), "{text}");
            assert!(parse_with_serde(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn unknown_type_names_are_truncated() {
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        let err = parse(&long).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert!(err.message.len() < 300);
    }
}
