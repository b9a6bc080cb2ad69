//! The admin API and the fleet feed with several instances over a real
//! Redis: every instance lists, kicks and closes every instance's rooms,
//! and every instance's event stream shows the whole fleet.

mod admin_support;
mod auth_support;
mod common;
mod redis_support;

use admin_support::{admin, admin_config, Events, KEY};
use common::{attach, room};
use redis_support::{quick_options, Instance, RedisServer};

#[tokio::test]
async fn every_instance_lists_kicks_and_closes_the_rooms_of_every_instance() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), admin_config()).await;
    let b = Instance::start(quick_options(&redis.url()), admin_config()).await;
    let mut events = Events::open(b.addr, &format!("/api/v1/events?access_token={KEY}"), &[]).await;
    events.fleet().await;

    // A room hosted on A, a guest on B and a watcher on A.
    let mut r = room(&a).await;
    let (mut guest, gid) = attach(&b, &mut r, "join").await;
    let (mut watcher, _) = attach(&a, &mut r, "watch").await;

    for inst in [&a, &b] {
        let list = admin(inst.addr, "GET", "/api/v1/rooms", None).await.json();
        let rooms = list["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), 1, "{list}");
        assert_eq!(rooms[0]["host_connected"], true);
        assert_eq!(rooms[0]["peers"].as_array().unwrap().len(), 2, "{list}");
    }
    // B's stream sees A's room and its viewers.
    let seen = events
        .fleet_until(|v| v["robots"][0]["viewers"] == serde_json::json!({"join":1,"watch":1}))
        .await;
    assert_eq!(seen["robots"][0]["online"], true);
    let label = seen["robots"][0]["room"].as_str().unwrap().to_string();

    // A kicks B's guest.
    let kicked = admin(
        a.addr,
        "DELETE",
        &format!("/api/v1/rooms/{label}/peers/{gid}"),
        None,
    )
    .await;
    assert_eq!(kicked.status, 204, "{kicked:?}");
    guest.expect_close(4003).await;
    assert_eq!(r.host.recv_type("peer_left").await["peer"], gid.as_str());

    // B closes A's room.
    let closed = admin(b.addr, "DELETE", &format!("/api/v1/rooms/{label}"), None).await;
    assert_eq!(closed.status, 204, "{closed:?}");
    watcher.recv_type("room_closed").await;
    r.host.recv_type("room_closed").await;
    events
        .fleet_until(|v| v["robots"] == serde_json::json!([]))
        .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_named_robot_room_is_listed_closed_and_kicked_by_its_name_from_another_instance() {
    let redis = RedisServer::start().await;
    let token_mode = || signal_server::config::Config {
        admin_key: admin_config().admin_key,
        ..auth_support::config()
    };
    let a = Instance::start(quick_options(&redis.url()), token_mode()).await;
    let b = Instance::start(quick_options(&redis.url()), token_mode()).await;
    // robot-7 hosted on A, a watcher on A.
    let (mut robot, _) = auth_support::host(&a, &auth_support::host_token("robot-7")).await;
    let (mut watcher, init) =
        auth_support::viewer(&a, &auth_support::watch_token("robot-7", "alice")).await;
    let wid = init["peer"].as_str().unwrap().to_string();
    robot.recv_type("peer_joined").await;

    // B lists it under its name.
    let list = admin(b.addr, "GET", "/api/v1/rooms", None).await.json();
    let rooms = list["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1, "{list}");
    assert_eq!(rooms[0]["room"], "robot-7", "{list}");
    assert_eq!(rooms[0]["named"], true, "{list}");

    // B kicks A's watcher, then closes the room, by the name.
    let kicked = admin(
        b.addr,
        "DELETE",
        &format!("/api/v1/rooms/robot-7/peers/{wid}"),
        None,
    )
    .await;
    assert_eq!(kicked.status, 204, "{kicked:?}");
    watcher.expect_close(4003).await;
    let closed = admin(b.addr, "DELETE", "/api/v1/rooms/robot-7", None).await;
    assert_eq!(closed.status, 204, "{closed:?}");
    robot.skip_to("room_closed").await;
    a.stop().await;
    b.stop().await;
}
