//! The admin API and the fleet feed with several instances over a real
//! Redis: every instance lists, kicks and closes every instance's rooms,
//! and every instance's event stream shows the whole fleet.

mod admin_support;
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
