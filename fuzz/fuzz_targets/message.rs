//! Everything a peer's text frame reaches before it is relayed: parsing and
//! validation (`protocol::parse`), the routing view (`ClientMessage::relay`,
//! i.e. `to` and `from`), and the rewrite of the relayed text
//! (`protocol::with_from`), on the guest path (with a peer id) and on the host
//! path (without).
//!
//! Input layout: the first byte gives the length (mod 24) of the peer id that
//! follows; the rest is the frame's text (a WebSocket text frame is UTF-8, so
//! other input is skipped).
//!
//! Invariants, each an `assert!` (a failure is a crash):
//! - nothing panics;
//! - an error has one of the parse-time codes and renders as a JSON error
//!   message with that code, and its human message is bounded;
//! - an accepted frame is a JSON object whose `type` is the accepted variant;
//!   `relay()` agrees with the text about `type`, `to`, `from` and the
//!   `candiate` spelling; an accepted `configure` has an array of actions,
//!   each a JSON object (serde would read one from an array too);
//! - `with_from(text, Some(id))` is a JSON object with exactly one `from`,
//!   equal to `id`, and every other field of the input with its value (the
//!   misspelt `candiate` renamed `candidate`); `parse` accepts it again with
//!   the same type and `to`;
//! - on the host path the output has no `from` at all and keeps every other
//!   field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use signal_server::protocol::{self, ClientMessage, ErrorCode, RelayKind};

/// A JSON object's top-level members in order, duplicates kept (a `Map`
/// would hide a second `from`).
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Pairs {
    fn parse(text: &str) -> Option<Pairs> {
        serde_json::from_str(text).ok()
    }

    fn count(&self, key: &str) -> usize {
        self.0.iter().filter(|(k, _)| k == key).count()
    }

    /// What a JSON receiver (a browser's `JSON.parse`, serde_json) sees: the
    /// last value of a repeated key wins.
    fn semantic(&self) -> Map<String, Value> {
        let mut map = Map::new();
        for (k, v) in &self.0 {
            map.insert(k.clone(), v.clone());
        }
        map
    }
}

fn without(mut map: Map<String, Value>, key: &str) -> Map<String, Value> {
    map.shift_remove(key);
    map
}

fn check_error(text: &str, err: &protocol::PeerError) {
    assert!(
        matches!(
            err.code,
            ErrorCode::BadJson | ErrorCode::BadMessage | ErrorCode::UnknownType
        ),
        "parse-time error with code {:?} for {text:?}",
        err.code
    );
    let rendered = protocol::error_json(err);
    let v: Value = serde_json::from_str(&rendered).expect("error_json is JSON");
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], err.code.as_str());
    assert!(
        err.message.len() <= text.len() + 600,
        "error message longer than the input allows: {} bytes",
        err.message.len()
    );
}

fn check_message(text: &str, id: &str) {
    let msg = match protocol::parse(text) {
        Ok(m) => m,
        Err(err) => return check_error(text, &err),
    };
    let pairs = Pairs::parse(text)
        .unwrap_or_else(|| panic!("parse accepted a frame that is not a JSON object: {text:?}"));
    assert_eq!(
        pairs.count("type"),
        1,
        "accepted with a repeated `type`: {text:?}"
    );
    let input = pairs.semantic();
    let kind = input.get("type").and_then(Value::as_str);

    let Some(relay) = msg.relay() else {
        // Only the messages for the server itself are not relayed.
        match &msg {
            ClientMessage::Init(init) => {
                assert_eq!(kind, Some("init"), "{text:?}");
                assert!(init.request().is_ok(), "accepted an invalid init: {text:?}");
            }
            ClientMessage::IceServers => assert_eq!(kind, Some("ice_servers"), "{text:?}"),
            ClientMessage::CloseRoom => assert_eq!(kind, Some("close_room"), "{text:?}"),
            _ => panic!("a relayable message without a routing view: {text:?}"),
        }
        return;
    };
    assert!(!matches!(
        msg,
        ClientMessage::Init(_) | ClientMessage::IceServers | ClientMessage::CloseRoom
    ));
    assert_eq!(
        kind,
        Some(relay.kind.as_str()),
        "relay kind vs text: {text:?}"
    );

    if relay.kind == RelayKind::Configure {
        let actions = input
            .get("actions")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("configure accepted without an actions array: {text:?}"));
        assert!(
            actions.iter().all(Value::is_object),
            "accepted an action that is not a JSON object: {text:?}"
        );
    }

    // `to`: what the server routes by is what the receiver reads.
    let to_in_text = input.get("to").and_then(Value::as_str);
    assert!(pairs.count("to") <= 1, "accepted a repeated `to`: {text:?}");
    assert_eq!(relay.to, to_in_text, "relay.to vs text: {text:?}");
    if let Some(v) = input.get("to") {
        assert!(
            v.is_string() || v.is_null(),
            "accepted a non-string `to`: {text:?}"
        );
    }
    // `from`: only the server writes it.
    assert_eq!(
        relay.has_from,
        pairs.count("from") > 0,
        "has_from: {text:?}"
    );
    if relay.kind == RelayKind::IceCandidate {
        // `"candidate": null` reads as absent, like serde's `Option`.
        let has_candidate = input.get("candidate").is_some_and(|v| !v.is_null());
        let has_candiate = input.get("candiate").is_some_and(|v| !v.is_null());
        assert!(
            has_candidate || has_candiate,
            "ice_candidate without a candidate: {text:?}"
        );
        assert_eq!(
            relay.misspelt_candidate,
            !has_candidate && has_candiate,
            "misspelt_candidate: {text:?}"
        );
    } else {
        assert!(!relay.misspelt_candidate);
    }

    // What every receiver must see besides `from`.
    let mut expected = without(input.clone(), "from");
    if relay.misspelt_candidate {
        if let Some(v) = expected.shift_remove("candiate") {
            // A `"candidate": null` beside it is replaced by the real one.
            expected.insert("candidate".to_string(), v);
        }
    }

    // Guest path: `from` added.
    let out = protocol::with_from(text, Some(id), &relay);
    let out_pairs = Pairs::parse(&out)
        .unwrap_or_else(|| panic!("with_from output is not a JSON object: {out:?} from {text:?}"));
    assert_eq!(
        out_pairs.count("from"),
        1,
        "with_from output has not exactly one `from`: {out:?} from {text:?}"
    );
    let out_map = out_pairs.semantic();
    assert_eq!(out_map.get("from"), Some(&Value::from(id)), "{out:?}");
    assert_eq!(
        without(out_map, "from"),
        expected,
        "with_from changed, lost or added a field: {out:?} from {text:?}"
    );
    let again = protocol::parse(&out)
        .unwrap_or_else(|e| panic!("the relayed text no longer parses ({e}): {out:?}"));
    let again = again.relay().expect("still a relayed message");
    assert_eq!(again.kind, relay.kind);
    assert_eq!(again.to, relay.to);
    assert!(again.has_from);
    assert!(!again.misspelt_candidate);

    // Host path, as session.rs does it: rewritten only when needed.
    let host_out = if relay.has_from || relay.misspelt_candidate {
        protocol::with_from(text, None, &relay)
    } else {
        text.to_string()
    };
    let host_pairs = Pairs::parse(&host_out)
        .unwrap_or_else(|| panic!("host-path output is not a JSON object: {host_out:?}"));
    assert_eq!(
        host_pairs.count("from"),
        0,
        "host-path output keeps a `from`: {host_out:?}"
    );
    assert_eq!(
        host_pairs.semantic(),
        expected,
        "host path changed, lost or added a field: {host_out:?} from {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 24).min(rest.len());
    let (id, text) = rest.split_at(n);
    let id = String::from_utf8_lossy(id);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    check_message(text, &id);
});
