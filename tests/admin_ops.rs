//! The admin API's operations through real sockets: list rooms and peers,
//! kick, close, watch links, revocations, operator tokens, and the fleet's
//! live events; rooms in memory, in open mode and in token mode.

mod admin_support;
mod common;

use std::sync::Arc;
use std::time::Duration;

use admin_support::{admin, admin_config, request, Events, KEY};
use common::{attach, memory_registry, room, Client, TestServer};
use serde_json::{json, Value};
use signal_server::auth::{
    Auth, AuthConfig, Claims, Grant, Grants, KeyRing, RoomName, Subject, TokenId, TokenRequest,
};
use signal_server::config::Config;

const SECRET: &[u8] = b"admin-test-secret-admin-test-secret!";

fn ring() -> Arc<KeyRing> {
    Arc::new(KeyRing::from_secret(SECRET).expect("key"))
}

fn mint(room: Option<&str>, grants: &[Grant], sub: &str) -> String {
    ring()
        .mint(&TokenRequest {
            sub: Subject::new(sub).unwrap(),
            room: room.map(|r| RoomName::new(r).unwrap()),
            grants: Grants::new(grants.iter().copied()).unwrap(),
            ttl: Duration::from_secs(600),
        })
        .expect("mint")
        .token
}

/// A server in token mode with the admin API on.
async fn token_server() -> TestServer {
    let config = Config {
        auth: AuthConfig::Token(ring()),
        ..admin_config()
    };
    let auth = Auth::new(&config.auth);
    let (registry, metrics) = memory_registry(&config);
    TestServer::start_with_auth(config, registry, metrics, auth).await
}

/// A robot hosting the named room `name`.
async fn robot(server: &TestServer, name: &str) -> Client {
    let mut c = server.connect().await;
    c.send_json(json!({"type":"init","token": mint(Some(name), &[Grant::Host], name)}))
        .await;
    let init = c.recv_type("init").await;
    assert_eq!(init["role"], "host", "{init}");
    c
}

fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

fn rooms(v: &Value) -> &Vec<Value> {
    v["rooms"].as_array().expect("rooms array")
}

#[tokio::test]
async fn the_rooms_are_listed_with_their_host_state_and_peers_by_role() {
    let server = admin_support::admin_server().await;
    let empty = admin(server.addr, "GET", "/api/v1/rooms", None).await;
    assert_eq!(empty.status, 200, "{empty:?}");
    assert_eq!(empty.json(), json!({"rooms": []}));

    let mut r = room(&server).await;
    let (_g, gid) = attach(&server, &mut r, "join").await;
    let (_w, wid) = attach(&server, &mut r, "watch").await;
    let list = admin(server.addr, "GET", "/api/v1/rooms", None)
        .await
        .json();
    let listed = rooms(&list);
    assert_eq!(listed.len(), 1, "{list}");
    let one = &listed[0];
    assert_eq!(one["named"], false);
    assert_eq!(one["host_connected"], true);
    let label = one["room"].as_str().unwrap().to_string();
    let mut peers: Vec<(String, String)> = one["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    peers.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(peers, vec![(gid, "join".into()), (wid, "watch".into())]);

    let shown = admin(server.addr, "GET", &format!("/api/v1/rooms/{label}"), None).await;
    assert_eq!(shown.status, 200);
    assert_eq!(&shown.json(), one);
    let missing = admin(server.addr, "GET", "/api/v1/rooms/nosuchroom", None).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (404, "not_found")
    );
    server.stop().await;
}

#[tokio::test]
async fn kicking_a_peer_closes_it_4003_and_its_host_hears_it_left() {
    let server = admin_support::admin_server().await;
    let mut r = room(&server).await;
    let (mut g, gid) = attach(&server, &mut r, "join").await;
    let list = admin(server.addr, "GET", "/api/v1/rooms", None)
        .await
        .json();
    let label = rooms(&list)[0]["room"].as_str().unwrap().to_string();

    let path = format!("/api/v1/rooms/{label}/peers/{gid}");
    let kicked = admin(server.addr, "DELETE", &path, None).await;
    assert_eq!(kicked.status, 204, "{kicked:?}");
    assert!(kicked.body.is_empty());
    g.expect_close(4003).await;
    let left = r.host.recv_type("peer_left").await;
    assert_eq!(left["peer"], gid.as_str());
    let again = admin(server.addr, "DELETE", &path, None).await;
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (404, "not_found")
    );
    let other = admin(
        server.addr,
        "DELETE",
        &format!("/api/v1/rooms/nosuch/peers/{gid}"),
        None,
    )
    .await;
    assert_eq!(other.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn closing_a_room_tells_its_peers_and_the_room_is_gone() {
    let server = admin_support::admin_server().await;
    let mut r = room(&server).await;
    let (mut w, _) = attach(&server, &mut r, "watch").await;
    let list = admin(server.addr, "GET", "/api/v1/rooms", None)
        .await
        .json();
    let label = rooms(&list)[0]["room"].as_str().unwrap().to_string();

    let path = format!("/api/v1/rooms/{label}");
    let closed = admin(server.addr, "DELETE", &path, None).await;
    assert_eq!(closed.status, 204, "{closed:?}");
    w.recv_type("room_closed").await;
    r.host.recv_type("room_closed").await;
    let after = admin(server.addr, "GET", "/api/v1/rooms", None)
        .await
        .json();
    assert_eq!(rooms(&after).len(), 0, "{after}");
    assert_eq!(admin(server.addr, "GET", &path, None).await.status, 404);
    assert_eq!(admin(server.addr, "DELETE", &path, None).await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn in_open_mode_watch_links_and_revocations_say_they_need_token_mode() {
    let server = admin_support::admin_server().await;
    let link = admin(
        server.addr,
        "POST",
        "/api/v1/rooms/robot-7/watch-links",
        None,
    )
    .await;
    assert_eq!(
        (link.status, link.error_code().as_str()),
        (409, "not_configured")
    );
    let body = r#"{"kind":"subject","sub":"alice"}"#;
    let rev = admin(server.addr, "POST", "/api/v1/revocations", Some(body)).await;
    assert_eq!(
        (rev.status, rev.error_code().as_str()),
        (409, "not_configured")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_minted_watch_link_admits_a_viewer_to_the_named_room_and_revoking_it_ends_that_viewer() {
    let server = token_server().await;
    let mut host = robot(&server, "robot-7").await;
    let list = admin(server.addr, "GET", "/api/v1/rooms", None)
        .await
        .json();
    assert_eq!(rooms(&list)[0]["room"], "robot-7", "{list}");
    assert_eq!(rooms(&list)[0]["named"], true);

    let minted = admin(
        server.addr,
        "POST",
        "/api/v1/rooms/robot-7/watch-links",
        Some(r#"{"ttl_secs":60,"sub":"visitor"}"#),
    )
    .await;
    assert_eq!(minted.status, 201, "{minted:?}");
    let link = minted.json();
    let token = link["token"].as_str().unwrap();
    assert_eq!(link["path"], format!("/?token={token}"));
    assert_eq!(link["room"], "robot-7");
    let claims: Claims = ring().verify(token).expect("a valid token");
    assert_eq!(claims.sub.as_str(), "visitor");
    assert!(claims.grants.contains(Grant::Watch) && !claims.grants.contains(Grant::Join));
    assert_eq!(claims.exp - claims.iat, 60);
    assert_eq!(link["jti"], claims.jti.as_str());
    assert_eq!(link["expires_at"], claims.exp);

    let mut viewer = server.connect_to(&format!("/webrtc?token={token}")).await;
    let init = viewer.recv_type("init").await;
    assert_eq!(init["role"], "watch", "{init}");
    host.recv_type("peer_joined").await;
    let shown = admin(server.addr, "GET", "/api/v1/rooms/robot-7", None)
        .await
        .json();
    assert_eq!(shown["peers"][0]["role"], "watch", "{shown}");

    let body = json!({"kind":"token","jti": claims.jti.as_str(), "exp": claims.exp}).to_string();
    let rev = admin(server.addr, "POST", "/api/v1/revocations", Some(&body)).await;
    assert_eq!(rev.status, 201, "{rev:?}");
    let stored = rev.json();
    assert_eq!(
        (stored["kind"].as_str(), stored["jti"].as_str()),
        (Some("token"), Some(claims.jti.as_str()))
    );
    assert_eq!(stored["expires_at"], claims.exp);
    viewer.expect_close(4002).await;
    // The revoked link no longer opens the room.
    let again = server
        .upgrade_status(server.url(&format!("/webrtc?token={token}")))
        .await;
    assert_eq!(again, Some(401));
    server.stop().await;
}

#[tokio::test]
async fn revoking_a_subject_or_a_room_ends_the_sessions_their_tokens_opened() {
    let server = token_server().await;
    let _host = robot(&server, "robot-8").await;
    let by_alice = mint(Some("robot-8"), &[Grant::Watch], "alice");
    let by_bob = mint(Some("robot-8"), &[Grant::Watch], "bob");
    let mut alice = server
        .connect_to(&format!("/webrtc?token={by_alice}"))
        .await;
    alice.recv_type("init").await;
    let mut bob = server.connect_to(&format!("/webrtc?token={by_bob}")).await;
    bob.recv_type("init").await;

    let rev = admin(
        server.addr,
        "POST",
        "/api/v1/revocations",
        Some(r#"{"kind":"subject","sub":"alice"}"#),
    )
    .await;
    assert_eq!(rev.status, 201, "{rev:?}");
    assert_eq!(rev.json()["sub"], "alice");
    alice.expect_close(4002).await;
    assert!(
        bob.ended_within(Duration::from_millis(300)).await.is_none(),
        "bob is not alice"
    );

    let rev = admin(
        server.addr,
        "POST",
        "/api/v1/revocations",
        Some(r#"{"kind":"room","room":"robot-8"}"#),
    )
    .await;
    assert_eq!(rev.status, 201, "{rev:?}");
    bob.expect_close(4002).await;
    server.stop().await;
}

#[tokio::test]
async fn an_operator_token_reads_the_fleet_and_mints_links_but_only_the_key_kicks_closes_or_revokes(
) {
    let server = token_server().await;
    let _a = robot(&server, "robot-a").await;
    let _b = robot(&server, "robot-b").await;
    let fleet_op = bearer(&mint(None, &[Grant::Operator], "ops"));
    let room_op = bearer(&mint(Some("robot-a"), &[Grant::Operator], "ops-a"));
    let watcher = bearer(&mint(Some("robot-a"), &[Grant::Watch], "w"));

    let all = request(
        server.addr,
        "GET",
        "/api/v1/rooms",
        &[("Authorization", &fleet_op)],
        None,
    )
    .await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(rooms(&all.json()).len(), 2);
    let one = request(
        server.addr,
        "GET",
        "/api/v1/rooms",
        &[("Authorization", &room_op)],
        None,
    )
    .await;
    let one = one.json();
    assert_eq!(
        rooms(&one).len(),
        1,
        "a room operator sees its room only: {one}"
    );
    assert_eq!(rooms(&one)[0]["room"], "robot-a");
    let hidden = request(
        server.addr,
        "GET",
        "/api/v1/rooms/robot-b",
        &[("Authorization", &room_op)],
        None,
    )
    .await;
    assert_eq!(hidden.status, 404);
    let link = request(
        server.addr,
        "POST",
        "/api/v1/rooms/robot-a/watch-links",
        &[("Authorization", &room_op)],
        None,
    )
    .await;
    assert_eq!(link.status, 201, "{link:?}");
    let claims = ring()
        .verify(link.json()["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.sub.as_str(),
        "ops-a",
        "the link is the operator's by default"
    );
    let other = request(
        server.addr,
        "POST",
        "/api/v1/rooms/robot-b/watch-links",
        &[("Authorization", &room_op)],
        None,
    )
    .await;
    assert_eq!(other.status, 404);

    for (method, path, body) in [
        ("DELETE", "/api/v1/rooms/robot-a", None),
        ("DELETE", "/api/v1/rooms/robot-a/peers/abcdefgh", None),
        (
            "POST",
            "/api/v1/revocations",
            Some(r#"{"kind":"subject","sub":"x"}"#),
        ),
    ] {
        let r = request(
            server.addr,
            method,
            path,
            &[("Authorization", &fleet_op)],
            body,
        )
        .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    let r = request(
        server.addr,
        "GET",
        "/api/v1/rooms",
        &[("Authorization", &watcher)],
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "forbidden"),
        "a watch token is no operator"
    );

    // The page: an operator token opens it, a watch token does not.
    let op_token = &fleet_op["Bearer ".len()..];
    assert_eq!(
        request(
            server.addr,
            "GET",
            &format!("/fleet?access_token={op_token}"),
            &[],
            None
        )
        .await
        .status,
        200
    );
    let w_token = &watcher["Bearer ".len()..];
    assert_eq!(
        request(
            server.addr,
            "GET",
            &format!("/fleet?access_token={w_token}"),
            &[],
            None
        )
        .await
        .status,
        401
    );

    // A revoked operator is refused from then on.
    let body = r#"{"kind":"subject","sub":"ops"}"#;
    assert_eq!(
        admin(server.addr, "POST", "/api/v1/revocations", Some(body))
            .await
            .status,
        201
    );
    let r = request(
        server.addr,
        "GET",
        "/api/v1/rooms",
        &[("Authorization", &fleet_op)],
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthorized"),
        "{r:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_expired_or_forged_operator_token_is_401() {
    let server = token_server().await;
    let mut c = Claims {
        sub: Subject::new("ops").unwrap(),
        room: None,
        grants: Grants::new([Grant::Operator]).unwrap(),
        iat: signal_server::auth::unix_now() - 100,
        nbf: signal_server::auth::unix_now() - 100,
        exp: signal_server::auth::unix_now() - 1,
        jti: TokenId::new("op-expired").unwrap(),
    };
    let expired = ring().sign(c.clone()).unwrap().token;
    c.exp += 1000;
    let other = KeyRing::from_secret(b"another-secret-another-secret-another!").unwrap();
    let forged = other.sign(c).unwrap().token;
    for t in [expired, forged] {
        let r = request(
            server.addr,
            "GET",
            "/api/v1/fleet",
            &[("Authorization", &bearer(&t))],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "unauthorized"),
            "{r:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_fleet_stream_shows_a_robot_online_its_viewers_then_offline_with_its_last_seen_time() {
    let server = token_server().await;
    let mut events = Events::open(
        server.addr,
        &format!("/api/v1/events?access_token={KEY}"),
        &[],
    )
    .await;
    let first = events.fleet().await;
    assert_eq!(first["robots"], json!([]), "{first}");

    let mut host = robot(&server, "robot-9").await;
    let up = events
        .fleet_until(|v| v["robots"][0]["online"] == true)
        .await;
    let r = &up["robots"][0];
    assert_eq!(
        (r["room"].as_str(), r["named"].as_bool()),
        (Some("robot-9"), Some(true))
    );
    assert!(r["online_since"].as_u64().is_some());
    assert_eq!(r["viewers"], json!({"join": 0, "watch": 0}));

    let token = mint(Some("robot-9"), &[Grant::Watch], "v");
    let mut viewer = server.connect_to(&format!("/webrtc?token={token}")).await;
    viewer.recv_type("init").await;
    host.recv_type("peer_joined").await;
    events
        .fleet_until(|v| v["robots"][0]["viewers"]["watch"] == 1)
        .await;

    drop(host);
    let down = events
        .fleet_until(|v| v["robots"][0]["online"] == false)
        .await;
    let r = &down["robots"][0];
    assert_eq!(r["online_since"], Value::Null);
    assert!(r["last_seen"].as_u64().unwrap() >= up["robots"][0]["online_since"].as_u64().unwrap());

    // The same view, polled.
    let now = admin(server.addr, "GET", "/api/v1/fleet", None).await;
    assert_eq!(now.status, 200);
    assert_eq!(now.json()["robots"][0]["online"], false);
    server.stop().await;
}
