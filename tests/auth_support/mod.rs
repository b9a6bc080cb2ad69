//! Tokens for the token-mode tests: one HS256 key, tokens minted or signed
//! as given, and a host or viewer entering a named room.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use signal_server::auth::{
    AuthConfig, Claims, Grant, Grants, KeyRing, RoomName, Subject, TokenId, TokenRequest,
};
use signal_server::config::Config;
use testkit::{Client, Endpoint};

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!!";

pub fn ring() -> Arc<KeyRing> {
    Arc::new(KeyRing::from_secret(SECRET).expect("key"))
}

pub fn config() -> Config {
    Config {
        auth: AuthConfig::Token(ring()),
        ..Config::default()
    }
}

pub fn mint(room: &str, grants: &[Grant], sub: &str, ttl: Duration) -> String {
    ring()
        .mint(&TokenRequest {
            sub: Subject::new(sub).unwrap(),
            room: Some(RoomName::new(room).unwrap()),
            grants: Grants::new(grants.iter().copied()).unwrap(),
            ttl,
        })
        .expect("mint")
        .token
}

pub fn host_token(room: &str) -> String {
    mint(room, &[Grant::Host], room, Duration::from_secs(3600))
}

pub fn watch_token(room: &str, sub: &str) -> String {
    mint(room, &[Grant::Watch], sub, Duration::from_secs(3600))
}

/// A token signed as given (for expired or odd ones).
pub fn signed(claims: Claims) -> String {
    ring().sign(claims).expect("sign").token
}

pub fn claims(room: &str, grants: &[Grant], iat: u64, exp: u64) -> Claims {
    Claims {
        sub: Subject::new("alice").unwrap(),
        room: Some(RoomName::new(room).unwrap()),
        grants: Grants::new(grants.iter().copied()).unwrap(),
        iat,
        nbf: iat,
        exp,
        jti: TokenId::new(signal_server::token::new_token().into_string()).unwrap(),
    }
}

/// A host for a named room (`{"type":"init","token":...}`), with its
/// `init` reply.
pub async fn host(server: &impl Endpoint, token: &str) -> (Client, Value) {
    let mut c = Client::connect(&server.url_to("/webrtc")).await;
    c.send_json(json!({"type":"init","token":token})).await;
    let init = c.recv_type("init").await;
    (c, init)
}

/// A viewer entering with `?token=`, with its `init` reply.
pub async fn viewer(server: &impl Endpoint, token: &str) -> (Client, Value) {
    let mut c = Client::connect(&server.url_to(&format!("/webrtc?token={token}"))).await;
    let init = c.recv_type("init").await;
    (c, init)
}
