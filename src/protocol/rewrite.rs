//! Rewriting a relayed message's text, in both directions, without
//! re-serialising it in the common case.
//!
//! - The server gives every message a peer sends the host a `from` (the
//!   sender's peer id), and normalises the `candiate` spelling
//!   ([`with_from`]: the hot path).
//! - A host passing such a message on (the bridge, to webrtc_ros) takes the
//!   `from` off again ([`without_from`]), and addresses its own messages to
//!   one peer with `to` ([`with_to`]).
//!
//! The common cases are splices on the text, so every field the sender wrote
//! stays byte for byte; unusual input goes through a `serde_json` object
//! (field order kept, numbers kept exactly).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::client::Relay;

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
        if let Some(out) = splice_first(text, "from", from) {
            return out;
        }
    }
    rewrite(text, from, relay)
}

fn rewrite(text: &str, from: Option<&str>, relay: &Relay<'_>) -> String {
    let Some(mut map) = object(text) else {
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
            map.insert("from".to_string(), Value::from(from));
        }
        None => {
            map.shift_remove("from");
        }
    }
    Value::Object(map).to_string()
}

/// `text` with `"key":"value",` spliced in after its opening brace (the
/// caller knows `key` is not in it yet, and that it has other fields).
#[inline]
fn splice_first(text: &str, key: &str, value: &str) -> Option<String> {
    let brace = text.find('{')?;
    let rest = &text[brace + 1..];
    let mut out = String::with_capacity(text.len() + key.len() + value.len() + 6);
    out.push_str("{\"");
    out.push_str(key);
    out.push_str("\":");
    push_json_string(&mut out, value);
    out.push(',');
    out.push_str(rest);
    Some(out)
}

fn push_json_string(out: &mut String, s: &str) {
    // Peer ids are base64url, but stay correct for anything.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// `text` (a message the server relayed from peer `from`) without its `from`
/// field, as the host's own backend should see it.
pub fn without_from<'t>(text: &'t str, from: &str) -> Cow<'t, str> {
    let trimmed = text.trim_start();
    let mut prefix = String::with_capacity(from.len() + 12);
    prefix.push_str("{\"from\":");
    push_json_string(&mut prefix, from);
    prefix.push(',');
    if let Some(rest) = trimmed.strip_prefix(&prefix) {
        if !rest.contains("\"from\"") {
            let mut out = String::with_capacity(rest.len() + 1);
            out.push('{');
            out.push_str(rest);
            return Cow::Owned(out);
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

/// A host's message (already validated as `relay`) addressed to peer `to`:
/// any `to` or `from` it had is replaced. `None` if `text` is not a JSON
/// object after all (a message for one peer is never sent to all).
pub fn with_to(text: &str, to: &str, relay: &Relay<'_>) -> Option<String> {
    if relay.to.is_none() && !relay.has_from {
        if let Some(out) = splice_first(text, "to", to) {
            return Some(out);
        }
    }
    let mut map = object(text)?;
    map.shift_remove("from");
    map.insert("to".into(), Value::from(to));
    Some(Value::Object(map).to_string())
}

fn object(text: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Map<String, Value>>(text).ok()
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use serde_json::json;

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
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
        let out = value(&with_from(text, Some("p"), &relay));
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
    fn strips_the_spliced_from_without_reserialising() {
        let text = r#"{"from":"AbCdEf12","type":"answer","sdp":"v=0\r\n","x":{"b":1,"a":2}}"#;
        let out = without_from(text, "AbCdEf12");
        assert_eq!(
            out,
            r#"{"type":"answer","sdp":"v=0\r\n","x":{"b":1,"a":2}}"#
        );
    }

    #[test]
    fn strips_a_from_anywhere_else() {
        let text = r#"{"type":"offer","sdp":"s","from":"AbCdEf12"}"#;
        assert_eq!(
            without_from(text, "AbCdEf12"),
            r#"{"type":"offer","sdp":"s"}"#
        );
        // A peer's own `from` inside a spliced message cannot survive either.
        let text = r#"{"from":"AbCdEf12","type":"offer","sdp":"s","from":"forged"}"#;
        assert_eq!(
            value(&without_from(text, "AbCdEf12")),
            json!({"type":"offer","sdp":"s"})
        );
        // A different sender than expected: still removed.
        let text = r#"{"from":"zzzzzzzz","type":"offer","sdp":"s"}"#;
        assert_eq!(
            without_from(text, "AbCdEf12"),
            r#"{"type":"offer","sdp":"s"}"#
        );
    }

    fn addressed(text: &str, to: &str) -> Option<String> {
        let msg = parse(text).unwrap();
        with_to(text, to, &msg.relay().unwrap())
    }

    #[test]
    fn a_hosts_message_gets_its_addressee() {
        assert_eq!(
            addressed(r#"{"type":"offer","sdp":"v=0\r\n"}"#, "AbCdEf12").unwrap(),
            r#"{"to":"AbCdEf12","type":"offer","sdp":"v=0\r\n"}"#
        );
        let ice = r#"{"type":"ice_candidate","sdp_mid":"video","sdp_mline_index":0,"candidate":"candidate:1 1 UDP 1 198.51.100.1 5000 typ host"}"#;
        let out = value(&addressed(ice, "p1").unwrap());
        assert_eq!(out["to"], "p1");
        assert_eq!(
            out["candidate"],
            "candidate:1 1 UDP 1 198.51.100.1 5000 typ host"
        );
        // An addressee or sender already written is replaced.
        assert_eq!(
            addressed(
                r#"{"type":"offer","sdp":"s","to":"other","from":"x"}"#,
                "p1"
            )
            .unwrap(),
            r#"{"type":"offer","sdp":"s","to":"p1"}"#
        );
    }
}
