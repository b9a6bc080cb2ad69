//! `docs/WEBHOOKS.md` against the real thing: its Python and Node receiver
//! code, run as written on a real delivery; its example request, checked
//! with the tests' own HMAC; its example bodies, compared field by field with
//! what the server sends.

mod webhooks_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use signal_server::protocol::Role;
use signal_server::webhooks::{EndReason, Event, LeaveReason, Revocation, RoomRef};
use webhooks_support::*;

const DOC: &str = include_str!("../docs/WEBHOOKS.md");

/// The fenced block that follows `<!-- marker -->` in the doc.
fn block_after(marker: &str) -> &'static str {
    let tag = format!("<!-- {marker} -->");
    let at = DOC
        .find(&tag)
        .unwrap_or_else(|| panic!("no {tag} in docs/WEBHOOKS.md"));
    let rest = &DOC[at + tag.len()..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[open..];
    let start = body.find('\n').unwrap() + 1;
    let end = body[start..].find("\n```").expect("a closed block") + start;
    &body[start..end]
}

/// One real delivery, and the secret it was signed with.
async fn a_real_delivery() -> (Hit, String) {
    let receiver = Receiver::start(always(Reply::Status(200))).await;
    let (secret, _) = secret(21);
    let (hooks, delivery, _) = start(options(vec![receiver.url("/")], &[&secret]));
    hooks.emit(Event::peer_joined(
        RoomRef::named("Qx3k9QaB", "robot-7"),
        "k3J9sPqa",
        Role::Watch,
    ));
    let hits = receiver.wait_for("a delivery", |h| !h.is_empty()).await;
    delivery.shutdown().await;
    (hits[0].clone(), secret)
}

/// Runs `program` with the delivery in its environment; its output lines.
fn run_receiver_code(program: &str, args: &[&str], hit: &Hit, secret: &str) -> Vec<String> {
    let headers: BTreeMap<String, String> = hit
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let dir =
        std::env::temp_dir().join(format!("ss-webhook-docs-{}-{program}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_file = dir.join("body");
    std::fs::write(&body_file, &hit.body).unwrap();
    let package = if program == "node" { "nodejs" } else { program };
    let out = Command::new(testkit::require_tool(program, package))
        .args(args)
        .env("HOOK_HEADERS", serde_json::to_string(&headers).unwrap())
        .env("HOOK_BODY", &body_file)
        .env("HOOK_SECRET", secret)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{program} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

const PYTHON_DRIVER: &str = r#"
import os
headers = json.loads(os.environ["HOOK_HEADERS"])
body = open(os.environ["HOOK_BODY"], "rb").read()
secret = os.environ["HOOK_SECRET"]
print("verified", verify(secret, headers, body)["id"])
old = dict(headers)
old["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 600)
cases = [(secret, headers, body + b" "), (secret, headers, body.replace(b'"seq":1', b'"seq":2')),
         (secret, old, body), ("whsec_" + "A" * 44, headers, body)]
for s, h, b in cases:
    try:
        verify(s, h, b)
        print("accepted")
    except ValueError:
        print("refused")
"#;

const NODE_DRIVER: &str = r#"
const fs = require("node:fs");
const headers = JSON.parse(process.env.HOOK_HEADERS);
const body = fs.readFileSync(process.env.HOOK_BODY);
const secret = process.env.HOOK_SECRET;
console.log("verified", verify(secret, headers, body).id);
const old = { ...headers, "webhook-timestamp": String(Number(headers["webhook-timestamp"]) - 600) };
const cases = [[secret, headers, Buffer.concat([body, Buffer.from(" ")])],
  [secret, headers, Buffer.from(body.toString().replace('"seq":1', '"seq":2'))],
  [secret, old, body], ["whsec_" + "A".repeat(44), headers, body]];
for (const [s, h, b] of cases) {
  try { verify(s, h, b); console.log("accepted"); } catch { console.log("refused"); }
}
"#;

#[tokio::test]
async fn the_receiver_code_in_the_docs_verifies_a_real_delivery_and_refuses_tampered_ones() {
    let (hit, secret) = a_real_delivery().await;
    let id = hit.id();
    let expected: Vec<String> = std::iter::once(format!("verified {id}"))
        .chain(std::iter::repeat_n("refused".to_string(), 4))
        .collect();
    let python = format!("{}\n{PYTHON_DRIVER}", block_after("verify.py"));
    assert_eq!(
        run_receiver_code("python3", &["-c", &python], &hit, &secret),
        expected,
        "Python"
    );
    let node = format!("{}\n{NODE_DRIVER}", block_after("verify.js"));
    assert_eq!(
        run_receiver_code("node", &["-e", &node], &hit, &secret),
        expected,
        "Node"
    );
}

#[test]
fn the_example_request_in_the_docs_is_signed_with_the_documented_secret() {
    let request = block_after("example: request");
    let (head, body) = request
        .split_once("\n\n")
        .expect("headers, a blank line, a body");
    let mut headers = HeaderMap::new();
    for line in head.lines().skip(1) {
        let (name, value) = line.split_once(": ").expect("a header line");
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let secret = DOC
        .split('`')
        .find(|s| s.starts_with("whsec_MfKQ"))
        .expect("the documented example secret");
    let key = base64_key(secret);
    assert!(
        signature_matches(&headers, body.as_bytes(), &key),
        "the example does not verify"
    );
    assert!(!signature_matches(
        &headers,
        format!("{body} ").as_bytes(),
        &key
    ));
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v["id"].as_str(),
        headers.get("webhook-id").and_then(|h| h.to_str().ok())
    );
}

fn base64_key(secret: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap()
}

/// The shape of a JSON value: its keys (recursively) and the types of its
/// leaves, with the values themselves left out.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
    }
}

#[tokio::test]
async fn the_documented_examples_have_exactly_the_fields_a_real_delivery_has() {
    let receiver = Receiver::start(always(Reply::Status(200))).await;
    let (secret, _) = secret(22);
    let (hooks, delivery, _) = start(options(vec![receiver.url("/")], &[&secret]));
    let r = RoomRef::named("Qx3k9QaB", "robot-7");
    hooks.emit(Event::room_started(r.clone(), "h7Ls0QmZ"));
    hooks.emit(Event::peer_joined(r.clone(), "k3J9sPqa", Role::Watch));
    hooks.emit(Event::host_left(r.clone(), "h7Ls0QmZ", LeaveReason::Lost));
    hooks.emit(Event::host_joined(r.clone(), "h7Ls0QmZ"));
    hooks.emit(Event::peer_left(
        r.clone(),
        "k3J9sPqa",
        Role::Watch,
        LeaveReason::Left,
    ));
    hooks.emit(Event::room_ended(r, EndReason::Closed));
    hooks.emit(Event::token_revoked(Revocation::Room {
        room: "robot-7".into(),
        issued_before: SystemTime::now() - Duration::from_secs(1),
    }));
    let hits = receiver.wait_for("7 events", |h| h.len() == 7).await;
    delivery.shutdown().await;
    for hit in hits {
        let real = hit.json();
        let kind = real["type"].as_str().unwrap().to_string();
        let example: Value = serde_json::from_str(block_after(&format!("example: {kind}")))
            .unwrap_or_else(|e| panic!("the {kind} example is not JSON: {e}"));
        assert_eq!(example["type"], kind);
        assert_eq!(
            shape(&example),
            shape(&real),
            "{kind}: documented vs sent\n{example}\n{real}"
        );
        // The enum values shown are ones the server sends.
        assert_eq!(example.get("reason"), real.get("reason"), "{kind}.reason");
        assert_eq!(example["peer"]["role"], real["peer"]["role"], "{kind}");
    }
}
