//! Token mode with rooms shared through a real Redis (several instances in
//! this process, a `redis-server` of the test's own): named rooms found by
//! name from every instance and kept across an instance's restart, a
//! second host elsewhere replacing the first (4000), and revocations made
//! on one instance ending sessions on another within a second, kept in
//! Redis across a restart.

mod auth_support;
mod common;
mod redis_support;

use std::time::{Duration, Instant};

use auth_support::{config, host, host_token, viewer, watch_token};
use common::{Ended, WAIT};
use redis_support::{quick_options, Instance, RedisServer};
use serde_json::json;
use signal_server::auth::{unix_now, RevocationTarget, RoomName, Subject};

#[tokio::test]
async fn a_named_room_is_found_by_name_on_every_instance_and_a_host_elsewhere_replaces_it_4000() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let (mut first, init) = host(&a, &host_token("robot-7")).await;
    assert_eq!(init["room"], "robot-7");
    let (mut w, winit) = viewer(&b, &watch_token("robot-7", "alice")).await;
    assert_eq!(winit["room"], "robot-7");
    assert_eq!(first.recv_type("peer_joined").await["peer"], winit["peer"]);
    w.send_json(json!({"type":"offer","sdp":"v=0"})).await;
    assert_eq!(first.recv_type("offer").await["from"], winit["peer"]);

    // A second host for the name, on the other instance.
    let (mut second, init2) = host(&b, &host_token("robot-7")).await;
    assert_eq!(init2["peer"], init["peer"]);
    assert_eq!(second.recv_type("peer_joined").await["peer"], winit["peer"]);
    assert_eq!(w.recv().await, json!({"type":"host_joined"}));
    match first.ended().await {
        Ended::Close(code, reason) => assert_eq!(code, 4000, "{reason}"),
        other => panic!("the replaced host: {other:?}"),
    }
    w.send_json(json!({"type":"answer","sdp":"x"})).await;
    assert_eq!(second.recv_type("answer").await["sdp"], "x");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_named_room_survives_a_restart_of_its_hosts_instance_and_old_links_work() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let host_t = host_token("robot-7");
    let watch_t = watch_token("robot-7", "alice");
    let (h, _) = host(&a, &host_t).await;
    let (mut w, _) = viewer(&b, &watch_t).await;
    drop(h);
    a.stop().await;
    w.recv_type("host_left").await;

    // The host's instance comes back; so does the host, with its token.
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let (mut h, _) = host(&a, &host_t).await;
    assert_eq!(w.recv().await, json!({"type":"host_joined"}));
    assert_eq!(h.recv_type("peer_joined").await["role"], "watch");
    // A link made before the restart enters, on either instance.
    for inst in [&a, &b] {
        let (mut v, vinit) = viewer(inst, &watch_t).await;
        assert_eq!(h.recv_type("peer_joined").await["peer"], vinit["peer"]);
        h.send_json(json!({"type":"offer","sdp":"v=0","to":vinit["peer"]}))
            .await;
        assert_eq!(v.recv_type("offer").await["sdp"], "v=0");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn revocations_on_one_instance_end_sessions_on_another_within_a_second_and_survive_a_restart()
{
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let (mut h, _) = host(&a, &host_token("robot-7")).await;
    let alice = watch_token("robot-7", "alice");
    let bob = watch_token("robot-7", "bob");
    let carol = watch_token("robot-7", "carol");
    let (mut va, _) = viewer(&b, &alice).await;
    let (mut vb, _) = viewer(&b, &bob).await;
    let (mut vc, _) = viewer(&b, &carol).await;
    for _ in 0..3 {
        h.recv_type("peer_joined").await;
    }
    let jti = a.auth.check(&alice).unwrap().jti;
    let targets = [
        RevocationTarget::Token { jti, exp: None },
        RevocationTarget::Subject {
            sub: Subject::new("bob").unwrap(),
            issued_before: unix_now() + 1,
        },
    ];
    for (client, target) in [&mut va, &mut vb].into_iter().zip(targets) {
        let t0 = Instant::now();
        a.auth.revoke(target).await.expect("revoke");
        let e = client.expect_error("unauthorized").await;
        assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
        client.expect_close(4002).await;
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "ended {took:?} after revoking"
        );
    }
    vc.expect_silence(Duration::from_millis(100)).await;

    // The room's tokens issued before now: carol's (on b), and the host's
    // (on a, where it was revoked).
    let t0 = Instant::now();
    let issued_before = unix_now() + 1;
    a.auth
        .revoke(RevocationTarget::Room {
            room: RoomName::new("robot-7").unwrap(),
            issued_before,
        })
        .await
        .unwrap();
    assert_eq!(vc.skip_to("error").await["code"], "unauthorized");
    vc.expect_close(4002).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(h.skip_to("error").await["code"], "unauthorized");
    h.expect_close(4002).await;

    // A restarted instance knows them all from Redis.
    b.stop().await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let deadline = Instant::now() + WAIT;
    while b.auth.revocations().len() < 3 {
        assert!(Instant::now() < deadline, "revocations not loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for token in [&alice, &bob, &carol] {
        assert_eq!(
            b.upgrade_status(&format!("/webrtc?token={token}")).await,
            Some(401)
        );
    }
    // Tokens minted afterwards (from `issued_before` on) are valid again.
    while unix_now() < issued_before {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_h, _) = host(&b, &host_token("robot-7")).await;
    let (_v, vinit) = viewer(&b, &watch_token("robot-7", "alice")).await;
    assert_eq!(vinit["role"], "watch");
    // The keys are in Redis, with an expiry.
    let keys = redis.command(&["KEYS", "*rev:*"]).await;
    for key in ["rev:jti:", "rev:sub:bob", "rev:room:robot-7"] {
        assert!(keys.contains(key), "{key} in {keys}");
    }
    a.stop().await;
    b.stop().await;
}
