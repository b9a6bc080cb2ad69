//! Rewriting messages between the signalling server and webrtc_ros. Pure, no
//! I/O.
//!
//! The server adds `"from":P` (as the first field) to every message a peer
//! sends the host; webrtc_ros must not see it. webrtc_ros's messages must go
//! back to that peer only, so the bridge adds `"to":P`. Both common cases are
//! splices on the text; only unusual input goes through a `serde_json` object
//! (field order kept).

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::protocol::{self, ClientMessage};

/// `text` (a message the server relayed from peer `from`) without its `from`
/// field, as webrtc_ros should see it.
pub fn strip_from<'t>(text: &'t str, from: &str) -> Cow<'t, str> {
    let trimmed = text.trim_start();
    if let Ok(quoted) = serde_json::to_string(from) {
        let prefix = format!("{{\"from\":{quoted},");
        if let Some(rest) = trimmed.strip_prefix(&prefix) {
            if !rest.contains("\"from\"") {
                let mut out = String::with_capacity(rest.len() + 1);
                out.push('{');
                out.push_str(rest);
                return Cow::Owned(out);
            }
        }
    }
    match object(text) {
        Some(mut map) => {
            map.shift_remove("from");
            Cow::Owned(Value::Object(map).to_string())
        }
        None => Cow::Borrowed(text),
    }
}

/// A viewer's first `configure` for a new robot connection: without `from`,
/// and without `remove_stream` actions (a new webrtc_ros connection has no
/// streams to remove; a viewer retrying after a failure sends them for the
/// connection that is gone).
pub fn first_configure(text: &str) -> String {
    let Some(mut map) = object(text) else {
        return text.to_string();
    };
    map.shift_remove("from");
    if let Some(Value::Array(actions)) = map.get_mut("actions") {
        actions.retain(|a| a.get("type").and_then(Value::as_str) != Some("remove_stream"));
    }
    Value::Object(map).to_string()
}

/// Why a message from webrtc_ros is not relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrelayable(pub String);

/// A message from webrtc_ros, addressed to peer `to`. The text is checked
/// against the protocol first: something the server would refuse (and could
/// only answer with an error that names no peer) is dropped here, as is an
/// `init` (the robot must never steer the bridge's room).
pub fn to_peer(text: &str, to: &str) -> Result<String, Unrelayable> {
    let message = protocol::parse(text).map_err(|e| Unrelayable(e.to_string()))?;
    if let ClientMessage::Init(_) = message {
        return Err(Unrelayable("webrtc_ros sent `init`".into()));
    }
    let Some(relay) = message.relay() else {
        return Err(Unrelayable("not a relayable message".into()));
    };
    if relay.to.is_none() && !relay.has_from {
        if let Some(brace) = text.find('{') {
            let rest = &text[brace + 1..];
            let mut out = String::with_capacity(text.len() + to.len() + 10);
            out.push_str("{\"to\":");
            out.push_str(&json_string(to));
            out.push(',');
            out.push_str(rest);
            return Ok(out);
        }
    }
    let mut map = object(text).ok_or_else(|| Unrelayable("not a JSON object".into()))?;
    map.shift_remove("from");
    map.insert("to".into(), Value::from(to));
    Ok(Value::Object(map).to_string())
}

/// An error for peer `to`: `{"type":"error","code":C,"message":M,"to":P}`.
pub fn error_to(to: &str, code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message, "to": to}).to_string()
}

fn object(text: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Map<String, Value>>(text).ok()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn strips_the_spliced_from_without_reserialising() {
        let text = r#"{"from":"AbCdEf12","type":"answer","sdp":"v=0\r\n","x":{"b":1,"a":2}}"#;
        let out = strip_from(text, "AbCdEf12");
        assert_eq!(
            out,
            r#"{"type":"answer","sdp":"v=0\r\n","x":{"b":1,"a":2}}"#
        );
    }

    #[test]
    fn strips_a_from_anywhere_else() {
        let text = r#"{"type":"offer","sdp":"s","from":"AbCdEf12"}"#;
        assert_eq!(
            strip_from(text, "AbCdEf12"),
            r#"{"type":"offer","sdp":"s"}"#
        );
        // A peer's own `from` inside a spliced message cannot survive either.
        let text = r#"{"from":"AbCdEf12","type":"offer","sdp":"s","from":"forged"}"#;
        assert_eq!(
            value(&strip_from(text, "AbCdEf12")),
            json!({"type":"offer","sdp":"s"})
        );
        // A different sender than expected: still removed.
        let text = r#"{"from":"zzzzzzzz","type":"offer","sdp":"s"}"#;
        assert_eq!(
            strip_from(text, "AbCdEf12"),
            r#"{"type":"offer","sdp":"s"}"#
        );
    }

    #[test]
    fn a_first_configure_drops_remove_stream() {
        let text = r#"{"from":"p","type":"configure","actions":[{"type":"remove_stream","id":"old"},{"type":"add_stream","id":"new"},{"type":"add_video_track","stream_id":"new","id":"new/v","src":"ros_image:/c"}]}"#;
        assert_eq!(
            first_configure(text),
            r#"{"type":"configure","actions":[{"type":"add_stream","id":"new"},{"type":"add_video_track","stream_id":"new","id":"new/v","src":"ros_image:/c"}]}"#
        );
    }

    #[test]
    fn robot_messages_get_their_addressee() {
        let text = r#"{"type":"offer","sdp":"v=0\r\n"}"#;
        assert_eq!(
            to_peer(text, "AbCdEf12").unwrap(),
            r#"{"to":"AbCdEf12","type":"offer","sdp":"v=0\r\n"}"#
        );
        let ice = r#"{"type":"ice_candidate","sdp_mid":"video","sdp_mline_index":0,"candidate":"candidate:1 1 UDP 1 198.51.100.1 5000 typ host"}"#;
        let out = value(&to_peer(ice, "p1").unwrap());
        assert_eq!(out["to"], "p1");
        assert_eq!(
            out["candidate"],
            "candidate:1 1 UDP 1 198.51.100.1 5000 typ host"
        );
        // An addressee or sender the robot wrote is replaced.
        let text = r#"{"type":"offer","sdp":"s","to":"other","from":"x"}"#;
        assert_eq!(
            to_peer(text, "p1").unwrap(),
            r#"{"type":"offer","sdp":"s","to":"p1"}"#
        );
    }

    #[test]
    fn robot_messages_the_server_would_refuse_are_dropped() {
        assert!(to_peer("not json", "p").is_err());
        assert!(to_peer(r#"{"type":"offer"}"#, "p").is_err());
        assert!(to_peer(r#"{"type":"mystery"}"#, "p").is_err());
        assert!(to_peer(r#"{"type":"init"}"#, "p").is_err());
        assert!(to_peer(r#"{"type":"init","resume":"x"}"#, "p").is_err());
    }

    #[test]
    fn errors_name_their_peer() {
        let e = error_to("p1", "robot_unavailable", "the robot is \"down\"");
        assert_eq!(
            e,
            r#"{"type":"error","code":"robot_unavailable","message":"the robot is \"down\"","to":"p1"}"#
        );
        assert!(protocol::parse(&e).is_ok());
    }
}
