//! The query string of a WebSocket upgrade (`/webrtc?join=T`, `?watch=T`,
//! `?token=JWT`), as
//! the server reads it before the upgrade: axum's `Query` extractor into
//! `server::TokenQuery`, `TokenQuery::attach`, then `token::is_token_shaped`
//! (the check made before the registry is asked).
//!
//! Input layout: the first 12 bytes (when there are that many) make a token
//! the server could have issued; the rest is a raw query string.
//!
//! Invariants:
//! - nothing panics;
//! - an accepted query names at most one of `join`/`watch`/`token`, each at
//!   most once, and `attach` returns exactly the percent-decoded value the
//!   query gave for it (compared with an independent `form_urlencoded`
//!   decoding);
//! - a value that passes `is_token_shaped` is 16 characters of the base64url
//!   alphabet;
//! - a real token, percent-encoded into `?join=`/`?watch=` beside arbitrary
//!   other parameters, comes back unchanged with its role and is token-shaped.
#![no_main]

use axum::extract::Query;
use axum::http::Uri;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use signal_server::protocol::Role;
use signal_server::server::TokenQuery;
use signal_server::session::QueryToken;
use signal_server::token;

/// What the server decides for the query `q`: `None` when the request is
/// refused before the token is looked at (HTTP 400), else the attach request
/// as (the parameter it came from, its value).
fn decide(q: &str) -> Option<Option<(&'static str, String)>> {
    let uri = Uri::try_from(format!("/webrtc?{q}")).ok()?;
    let Query(query) = Query::<TokenQuery>::try_from_uri(&uri).ok()?;
    let attach = query.attach().ok()?;
    Some(attach.map(|a| match a {
        QueryToken::Open(Role::Join, t) => ("join", t),
        QueryToken::Open(_, t) => ("watch", t),
        QueryToken::Signed(t) => ("token", t),
    }))
}

fn check_raw(q: &str) {
    let Ok(uri) = Uri::try_from(format!("/webrtc?{q}")) else {
        return;
    };
    let raw = uri.query().unwrap_or_default();
    let Some(decision) = decide(q) else {
        return;
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let given: Vec<(&'static str, &String)> = ["join", "watch", "token"]
        .into_iter()
        .flat_map(|key| {
            pairs
                .iter()
                .filter(move |(k, _)| k == key)
                .map(move |(_, v)| (key, v))
        })
        .collect();
    assert!(given.len() <= 1, "accepted more than one token: {raw:?}");
    let expected = given.first().map(|(k, v)| (*k, (*v).clone()));
    assert_eq!(decision, expected, "query {raw:?}");
    if let Some((key, t)) = &decision {
        if *key != "token" && token::is_token_shaped(t) {
            assert_eq!(t.len(), token::TOKEN_LEN);
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
}

fn check_issued(bytes: &[u8; 12], other: &str) {
    let t = URL_SAFE_NO_PAD.encode(bytes);
    assert!(token::is_token_shaped(&t), "{t}");
    // Other parameters, with `join`/`watch`/`token` themselves taken out.
    let others: String = form_urlencoded::parse(other.as_bytes())
        .filter(|(k, _)| k != "join" && k != "watch" && k != "token")
        .fold(
            form_urlencoded::Serializer::new(String::new()),
            |mut s, (k, v)| {
                s.append_pair(&k, &v);
                s
            },
        )
        .finish();
    for key in ["join", "watch"] {
        let mine = form_urlencoded::Serializer::new(String::new())
            .append_pair(key, &t)
            .finish();
        for q in [format!("{mine}&{others}"), format!("{others}&{mine}")] {
            if Uri::try_from(format!("/webrtc?{q}")).is_err() {
                continue;
            }
            assert_eq!(decide(&q), Some(Some((key, t.clone()))), "query {q:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (issued, rest) = if data.len() >= 12 {
        let (a, b) = data.split_at(12);
        (a.try_into().ok(), b)
    } else {
        (None, data)
    };
    let q = String::from_utf8_lossy(rest);
    check_raw(&q);
    check_raw(&String::from_utf8_lossy(data));
    if let Some(bytes) = issued {
        check_issued(bytes, &q);
    }
});
