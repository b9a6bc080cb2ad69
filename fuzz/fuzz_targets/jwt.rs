//! Access tokens as the server checks them: `KeyRing::verify_at` on bytes a
//! peer sends (`?token=`, `"token"` in `init`), with one HS256 key.
//!
//! Input layout: the first byte picks the mode.
//! - even: the rest is the token itself, any bytes (mostly refused early);
//! - odd: the rest is `HEADER \0 PAYLOAD`, two JSON texts made into a token
//!   signed with the key, so the fuzzer reaches the claims parsing that only
//!   a key holder can reach.
//!
//! Invariants:
//! - nothing panics;
//! - an accepted token is at most `MAX_TOKEN_LEN` bytes, its signature is the
//!   HMAC-SHA256 of its signing input under the key (computed here, apart
//!   from `jsonwebtoken`), and its header's `alg` is `HS256`;
//! - accepted claims are consistent: `iat < exp`, `nbf < exp`, now before
//!   `exp`, a room where a grant needs one, and they say what the payload
//!   says (an independent `serde_json` reading of it);
//! - every refusal maps onto `unauthorized`, `token_expired` or `forbidden`.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use signal_server::auth::{KeyRing, MAX_TOKEN_LEN};
use std::sync::OnceLock;

const SECRET: &[u8] = b"fuzzing-secret-of-32-bytes-or-more";
const NOW: u64 = 1_767_225_600;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::from_secret(SECRET).expect("key"))
}

fn mac(input: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    ring::hmac::sign(&key, input).as_ref().to_vec()
}

fn check(token: &str) {
    match ring().verify_at(token, NOW) {
        Err(e) => {
            assert!(
                matches!(e.code(), "unauthorized" | "token_expired" | "forbidden"),
                "{e:?}"
            );
            assert!(matches!(e.http_status(), 401 | 403));
        }
        Ok(claims) => {
            assert!(token.len() <= MAX_TOKEN_LEN);
            let (input, sig) = token.rsplit_once('.').expect("three parts");
            assert_eq!(
                URL_SAFE_NO_PAD.decode(sig).expect("base64url signature"),
                mac(input.as_bytes()),
                "accepted a token not signed with the key: {token:?}"
            );
            // `input` is the signing input, `HEADER.PAYLOAD`: the signature is off.
            let (header, payload) = input.split_once('.').expect("three parts");
            assert!(!payload.contains('.'), "a fourth part: {token:?}");
            let header: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("header")).expect("header JSON");
            assert_eq!(header["alg"], "HS256", "{header}");
            assert!(claims.iat < claims.exp && claims.nbf < claims.exp);
            assert!(NOW < claims.exp);
            assert!(claims.room.is_some() || !claims.grants.need_room());
            // serde_json skips the strings of claims it does not know without
            // checking their UTF-8 (a signed token may carry such bytes in a claim
            // the server ignores); the claims it reads are checked. Read the
            // payload lossily so that only the ignored strings differ.
            let payload = URL_SAFE_NO_PAD.decode(payload).expect("payload");
            let payload: serde_json::Value =
                serde_json::from_str(&String::from_utf8_lossy(&payload)).expect("payload JSON");
            for (name, value) in serde_json::to_value(&claims).expect("claims").as_object().expect("object") {
                if name == "grants" {
                    continue; // duplicates and order may differ
                }
                assert_eq!(&payload[name], value, "claim {name}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check(&String::from_utf8_lossy(rest));
    } else {
        let (header, payload) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac(input.as_bytes())));
        check(&token);
    }
});
