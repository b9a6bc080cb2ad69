//! Several instances sharing rooms through a real Redis: relay, presence,
//! resume across instances, instance crashes, and Redis going away and coming
//! back. Each test starts its own `redis-server` on a free loopback port; a
//! missing `redis-server` fails them (`scripts/install-test-deps.sh`
//! installs it).

mod common;
mod redis_support;

use std::time::{Duration, Instant};

use common::{attach, room, Room};
use redis_support::{quick_options, Instance, RedisServer};
use serde_json::json;
use signal_server::config::Config;

const SDP: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

fn config() -> Config {
    Config::default()
}

fn quick_grace() -> Config {
    Config {
        host_grace: Duration::from_millis(800),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_host_on_a_and_viewers_on_b_and_c_complete_an_exchange() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let c = Instance::start(quick_options(&redis.url()), config()).await;

    let mut r = room(&a).await;
    let (mut guest, gid) = attach(&b, &mut r, "join").await;
    let (mut watcher, wid) = attach(&c, &mut r, "watch").await;
    // A peer on the host's own instance too.
    let (mut local, lid) = attach(&a, &mut r, "watch").await;

    // The webrtc_ros exchange, viewer first: configure, then offer/answer/ice.
    let configure = json!({"type":"configure","actions":[
        {"type":"add_stream","id":"webrtc_ros-stream-123"},
        {"type":"add_video_track","stream_id":"webrtc_ros-stream-123",
         "id":"webrtc_ros-stream-123/subscribed_video","src":"ros_image:/camera/image_raw"}]});
    watcher.send_json(configure.clone()).await;
    let got = r.host.recv().await;
    let mut want = configure.clone();
    want["from"] = json!(wid);
    assert_eq!(got, want);

    let offer = json!({"type":"offer","sdp":SDP,"to":wid});
    r.host.send_json(offer.clone()).await;
    assert_eq!(watcher.recv().await, offer);
    let answer = r#"{ "type" : "answer", "sdp":"v=0\r\n\u00e9", "z":1.50 }"#;
    watcher.send(answer).await;
    assert_eq!(
        r.host.recv_text().await,
        format!(r#"{{"from":"{wid}", "type" : "answer", "sdp":"v=0\r\n\u00e9", "z":1.50 }}"#)
    );
    let ice = json!({"type":"ice_candidate","sdp_mid":"video","sdp_mline_index":0,
        "candidate":"candidate:842163049 1 udp 1677729535 198.51.100.7 46154 typ srflx","to":wid});
    r.host.send_json(ice.clone()).await;
    assert_eq!(watcher.recv().await, ice);
    watcher
        .send_json(json!({"type":"ice_candidate","sdp_mid":"0","sdp_mline_index":0,"candiate":"candidate:9"}))
        .await;
    let got = r.host.recv().await;
    assert_eq!(got["candidate"], "candidate:9");
    assert_eq!(got["from"], wid.as_str());

    // `to` reaches exactly one peer, wherever it is.
    for (peer, id) in [(&mut guest, &gid), (&mut local, &lid)] {
        r.host
            .send_json(json!({"type":"offer","sdp":format!("for-{id}"),"to":id}))
            .await;
        assert_eq!(peer.recv().await["sdp"], format!("for-{id}"));
    }
    // A broadcast reaches every peer on every instance.
    r.host
        .send_json(json!({"type":"configure","actions":[]}))
        .await;
    for peer in [&mut guest, &mut watcher, &mut local] {
        assert_eq!(peer.recv().await["type"], "configure");
    }
    for peer in [&mut guest, &mut watcher, &mut local] {
        peer.expect_silence(Duration::from_millis(150)).await;
    }
    // A `to` naming no peer of the room.
    r.host
        .send_json(json!({"type":"offer","sdp":"x","to":"nobody00"}))
        .await;
    r.host.expect_error("peer_not_found").await;
    // A watcher still may not send expect_* (checked before the registry).
    watcher
        .send_json(json!({"type":"configure","actions":[{"type":"expect_stream","id":"s"}]}))
        .await;
    watcher.expect_error("forbidden").await;

    // Per-sender order, across instances, both ways.
    for i in 0..200 {
        guest
            .send_json(json!({"type":"ice_candidate","candidate":format!("g{i}")}))
            .await;
        watcher
            .send_json(json!({"type":"ice_candidate","candidate":format!("w{i}")}))
            .await;
        r.host
            .send_json(json!({"type":"ice_candidate","candidate":format!("h{i}"),"to":gid}))
            .await;
    }
    let (mut next_g, mut next_w) = (0, 0);
    for _ in 0..400 {
        let m = r.host.recv().await;
        let cand = m["candidate"].as_str().unwrap().to_string();
        if m["from"] == gid.as_str() {
            assert_eq!(cand, format!("g{next_g}"));
            next_g += 1;
        } else {
            assert_eq!(m["from"], wid.as_str());
            assert_eq!(cand, format!("w{next_w}"));
            next_w += 1;
        }
    }
    for i in 0..200 {
        assert_eq!(guest.recv().await["candidate"], format!("h{i}"));
    }

    // A second room shares nothing with the first.
    let mut r2 = room(&b).await;
    let (mut g2, g2id) = attach(&c, &mut r2, "join").await;
    r.host
        .send_json(json!({"type":"offer","sdp":"x","to":g2id}))
        .await;
    r.host.expect_error("peer_not_found").await;
    r2.host.send_json(json!({"type":"offer","sdp":"r2"})).await;
    assert_eq!(g2.recv().await["sdp"], "r2");
    for peer in [&mut guest, &mut watcher, &mut local] {
        peer.expect_silence(Duration::from_millis(150)).await;
    }
    g2.send(r#"{"type":"answer","sdp":"r2"}"#).await;
    assert_eq!(r2.host.recv().await["from"], g2id.as_str());
    r.host.expect_silence(Duration::from_millis(150)).await;

    // Relayed messages are counted where they are delivered.
    let (_, metrics) = c.get("/metrics").await;
    assert!(
        metrics.contains("signal_messages_relayed_total{type=\"offer\"}"),
        "{metrics}"
    );
    // The subscriptions outlived many keep-alive pings (every 100 ms here).
    for i in [&a, &b, &c] {
        assert_eq!(i.registry.subscription_losses(), 0);
        assert_eq!(i.wait_health(200).await["status"], "ok");
    }
    for i in [a, b, c] {
        i.stop().await;
    }
}

#[tokio::test]
async fn presence_is_reported_across_instances() {
    let redis = RedisServer::start().await;
    let cfg = Config {
        max_peers_per_room: 2,
        host_grace: Duration::from_secs(30),
        ..Config::default()
    };
    let a = Instance::start(quick_options(&redis.url()), cfg.clone()).await;
    let b = Instance::start(quick_options(&redis.url()), cfg.clone()).await;

    let mut r = room(&a).await;
    // A query-string attach on another instance (webrtc_ros.js style).
    let mut viewer = b.connect_to(&format!("/webrtc?watch={}", r.watch)).await;
    let vid = viewer.recv_type("init").await["peer"]
        .as_str()
        .unwrap()
        .to_string();
    let joined = r.host.recv_type("peer_joined").await;
    assert_eq!(
        joined,
        json!({"type":"peer_joined","peer":vid,"role":"watch"})
    );
    let (g, gid) = attach(&b, &mut r, "join").await;
    // The room is full, whichever instance is asked.
    for inst in [&a, &b] {
        let mut extra = inst.connect().await;
        extra.send_json(json!({"type":"init","join":r.join})).await;
        extra.expect_error("room_full").await;
    }
    // Unknown tokens are refused before the upgrade on every instance.
    assert_eq!(
        b.upgrade_status("/webrtc?watch=AAAAAAAAAAAAAAAA").await,
        Some(404)
    );
    assert_eq!(
        b.upgrade_status(&format!("/webrtc?join={}", r.watch)).await,
        Some(404)
    );
    // A guest leaving on B is reported to the host on A; watchers are not told.
    g.close().await;
    assert_eq!(
        r.host.recv_type("peer_left").await,
        json!({"type":"peer_left","peer":gid})
    );
    viewer.expect_silence(Duration::from_millis(150)).await;

    // The host leaving on A: guests on B get host_left, then host_absent.
    let Room {
        host, join, resume, ..
    } = r;
    drop(host);
    viewer.recv_type("host_left").await;
    viewer.send(r#"{"type":"answer","sdp":"s"}"#).await;
    viewer.expect_error("host_absent").await;
    // A guest entering while the host is away hears so at once.
    let mut late = a.connect().await;
    late.send_json(json!({"type":"init","join":join})).await;
    let late_id = late.recv_type("init").await["peer"]
        .as_str()
        .unwrap()
        .to_string();
    late.recv_type("host_left").await;
    // The host comes back on B.
    let mut host = b.connect().await;
    host.send_json(json!({"type":"init","resume":resume})).await;
    host.recv_type("init").await;
    let mut present = vec![
        host.recv_type("peer_joined").await["peer"]
            .as_str()
            .unwrap()
            .to_string(),
        host.recv_type("peer_joined").await["peer"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    present.sort();
    let mut want = vec![vid.clone(), late_id.clone()];
    want.sort();
    assert_eq!(present, want);
    viewer.recv_type("host_joined").await;
    late.recv_type("host_joined").await;
    late.send(r#"{"type":"answer","sdp":"back"}"#).await;
    assert_eq!(host.recv().await["from"], late_id.as_str());
    drop(late);
    assert_eq!(host.recv_type("peer_left").await["peer"], late_id.as_str());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_grace_period_ends_on_any_instance() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), quick_grace()).await;
    let b = Instance::start(quick_options(&redis.url()), quick_grace()).await;
    let mut r = room(&a).await;
    let (mut g, _) = attach(&b, &mut r, "join").await;
    let (join, watch, resume) = (r.join.clone(), r.watch.clone(), r.resume.clone());
    r.host.close().await;
    g.recv_type("host_left").await;
    // The instance that started the grace period goes away (cleanly): the
    // room still closes on time, swept by B.
    a.stop().await;
    g.recv_type("room_closed").await;
    g.expect_close(1000).await;
    for (k, t) in [("join", &join), ("watch", &watch), ("resume", &resume)] {
        let mut c = b.connect().await;
        c.send_json(json!({"type":"init", k: t})).await;
        c.expect_error("room_not_found").await;
    }
    assert_eq!(
        b.upgrade_status(&format!("/webrtc?join={join}")).await,
        Some(404)
    );
    b.stop().await;
}

#[tokio::test]
async fn a_crashed_instance_is_reported_left_within_the_bound() {
    let redis = RedisServer::start().await;
    let opts = quick_options(&redis.url());
    let bound = opts.death_bound();
    let a = Instance::start(opts.clone(), quick_grace()).await;
    let b = Instance::start(opts.clone(), quick_grace()).await;
    let c = Instance::start(opts.clone(), quick_grace()).await;

    // Viewers on B die with it: the host on A is told they left.
    let mut r = room(&a).await;
    let (g1, g1id) = attach(&b, &mut r, "join").await;
    let (w1, w1id) = attach(&b, &mut r, "watch").await;
    let (mut survivor, sid) = attach(&c, &mut r, "join").await;
    // A host on B dies too: its guests on A and C are told it left.
    let mut r2 = room(&b).await;
    let (mut ga, _) = attach(&a, &mut r2, "join").await;
    let (mut gc, _) = attach(&c, &mut r2, "watch").await;

    let t0 = Instant::now();
    b.crash().await;
    drop((g1, w1, r2));
    let mut gone = vec![
        r.host.recv_type("peer_left").await["peer"]
            .as_str()
            .unwrap()
            .to_string(),
        r.host.recv_type("peer_left").await["peer"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    let took = t0.elapsed();
    gone.sort();
    let mut want = vec![g1id, w1id];
    want.sort();
    assert_eq!(gone, want);
    ga.recv_type("host_left").await;
    gc.recv_type("host_left").await;
    let took_host = t0.elapsed();
    // Generous: the machine may be loaded; the bound itself is 3.1 s here.
    let slack = Duration::from_millis(1500);
    assert!(
        took < bound + slack && took_host < bound + slack,
        "reported after {took:?} / {took_host:?}; bound {bound:?}"
    );
    eprintln!("crash reported after {took:?} (peers) and {took_host:?} (host); bound {bound:?}");
    // The survivor is untouched, and the orphaned room closes after its grace.
    survivor
        .send(r#"{"type":"answer","sdp":"still here"}"#)
        .await;
    assert_eq!(r.host.recv().await["from"], sid.as_str());
    ga.recv_type("room_closed").await;
    gc.recv_type("room_closed").await;
    a.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn a_sigkilled_process_is_reported_left() {
    let redis = RedisServer::start().await;
    // B is the real binary with default timings (3 s heartbeat TTL); A
    // checks for dead instances every 100 ms.
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let mut b = common::binary()
        .env("REDIS_URL", redis.url())
        .env("RUST_LOG", "warn")
        .start()
        .await
        .expect("the binary becomes healthy");
    let mut r = room(&a).await;
    let (mut viewer, vid) = attach(&b, &mut r, "watch").await;
    // Its messages cross over, then SIGKILL.
    viewer.send(r#"{"type":"answer","sdp":"s"}"#).await;
    assert_eq!(r.host.recv().await["from"], vid.as_str());
    let t0 = Instant::now();
    b.kill9();
    let left = r.host.recv_type("peer_left").await;
    let took = t0.elapsed();
    assert_eq!(left["peer"], vid.as_str());
    // Default bound: heartbeat TTL 3 s + A's check interval, less the time
    // since B's last heartbeat.
    assert!(
        took < Duration::from_millis(4500),
        "reported after {took:?}"
    );
    eprintln!("SIGKILLed instance reported after {took:?}");
    a.stop().await;
}

#[tokio::test]
async fn the_servers_recover_when_redis_restarts() {
    let mut redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), config()).await;
    let b = Instance::start(quick_options(&redis.url()), config()).await;
    let h = a.wait_health(200).await;
    assert_eq!(h["status"], "ok");

    // A room spanning both instances, and one with a peer on the host's own.
    let mut r = room(&a).await;
    let (mut remote, rid) = attach(&b, &mut r, "join").await;
    let (mut local, lid) = attach(&a, &mut r, "join").await;
    let (local2, l2id) = attach(&a, &mut r, "watch").await;
    let (remote2, r2id) = attach(&b, &mut r, "watch").await;

    redis.kill();
    for inst in [&a, &b] {
        let h = inst.wait_health(503).await;
        assert_eq!(h["status"], "degraded", "{h}");
        assert_eq!(h["redis"], "unreachable", "{h}");
    }
    // New rooms are refused with a clear error.
    let mut refused = b.connect().await;
    refused.send(r#"{"type":"init"}"#).await;
    refused.expect_error("unavailable").await;
    let mut refused2 = a.connect().await;
    refused2
        .send_json(json!({"type":"init","join":r.join}))
        .await;
    refused2.expect_error("unavailable").await;
    // Peers on the same instance keep talking.
    local.send(r#"{"type":"answer","sdp":"local"}"#).await;
    let m = r.host.recv().await;
    assert_eq!(m["from"], lid.as_str(), "{m}");
    r.host
        .send_json(json!({"type":"offer","sdp":"to-local","to":lid}))
        .await;
    assert_eq!(local.recv().await["sdp"], "to-local");
    // Messages that need Redis are refused, not silently lost.
    r.host
        .send_json(json!({"type":"offer","sdp":"to-remote","to":rid}))
        .await;
    r.host.expect_error("unavailable").await;
    // Leaving while Redis is away: told at once on the same instance...
    drop(local2);
    assert_eq!(r.host.recv_type("peer_left").await["peer"], l2id.as_str());
    // ...and from another instance once Redis is back (below).
    drop(remote2);

    // Redis comes back, empty, on the same port.
    redis.restart().await;
    for inst in [&a, &b] {
        let h = inst.wait_health(200).await;
        assert_eq!(h["status"], "ok", "{h}");
    }
    // New rooms work again, across instances.
    let mut r2 = room(&b).await;
    let (mut g2, g2id) = attach(&a, &mut r2, "join").await;
    r2.host
        .send_json(json!({"type":"offer","sdp":"new","to":g2id}))
        .await;
    assert_eq!(g2.recv().await["sdp"], "new");
    // The old room was put back by its instances: messages cross instances
    // again. Each offer is judged by its own outcome (the guest gets it, or
    // the host gets an error), however long that takes, never by a silence.
    // Meanwhile the host hears that remote2 left (B could not record its
    // leave while Redis was away; it does at its re-sync).
    let deadline = Instant::now() + common::WAIT;
    let mut remote2_left = false;
    let mut attempt = 0;
    'offer: loop {
        attempt += 1;
        let sdp = format!("again {attempt}");
        r.host
            .send_json(json!({"type":"offer","sdp":sdp,"to":rid}))
            .await;
        loop {
            tokio::select! {
                m = remote.recv() => {
                    assert_eq!(m["sdp"], sdp.as_str(), "{m}");
                    break 'offer;
                }
                m = r.host.recv() => {
                    if m["type"] == "peer_left" && m["peer"] == r2id.as_str() && !remote2_left {
                        remote2_left = true;
                        continue; // this offer's outcome is still to come
                    }
                    assert_eq!((&m["type"], &m["code"]), (&json!("error"), &json!("unavailable")), "{m}");
                    assert!(Instant::now() < deadline, "the old room did not come back");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'offer;
                }
            }
        }
    }
    if !remote2_left {
        assert_eq!(r.host.recv_type("peer_left").await["peer"], r2id.as_str());
    }
    remote.send(r#"{"type":"answer","sdp":"back"}"#).await;
    assert_eq!(r.host.recv().await["from"], rid.as_str());
    let (late, late_id) = attach(&b, &mut r, "watch").await;
    drop(late);
    assert_eq!(
        r.host.recv_type("peer_left").await["peer"],
        late_id.as_str()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_instance_started_before_redis_waits_for_it() {
    let port = common::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    // Fails at once, saying so, if there is no redis-server to start below.
    redis_support::redis_server_binary();
    let a = Instance::start_unchecked(quick_options(&url), config()).await;
    let h = a.wait_health(503).await;
    assert_eq!(h["redis"], "unreachable");
    let mut c = a.connect().await;
    c.send(r#"{"type":"init"}"#).await;
    c.expect_error("unavailable").await;
    // Redis appears on that port: the instance becomes healthy by itself.
    let redis = RedisServer::start_on(port).await;
    a.wait_health(200).await;
    let mut r = room(&a).await;
    let (mut g, gid) = attach(&a, &mut r, "join").await;
    r.host
        .send_json(json!({"type":"offer","sdp":"s","to":gid}))
        .await;
    assert_eq!(g.recv().await["sdp"], "s");
    a.stop().await;
    drop(redis);
}

#[tokio::test]
async fn rediss_with_a_self_signed_certificate_needs_the_explicit_option() {
    let redis = RedisServer::start_tls().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    // Verified by default: a self-signed chain is refused.
    let strict = Instance::start_unchecked(quick_options(&url), config()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let h = strict.wait_health(503).await;
    assert_eq!(h["redis"], "unreachable");
    // With --redis-insecure-tls (here: the option it sets), or `#insecure`.
    let mut opts = quick_options(&url);
    opts.insecure_tls = true;
    let a = Instance::start(opts, config()).await;
    let b = Instance::start(quick_options(&format!("{url}#insecure")), config()).await;
    let mut r = room(&a).await;
    let (mut g, gid) = attach(&b, &mut r, "join").await;
    r.host
        .send_json(json!({"type":"offer","sdp":"over tls","to":gid}))
        .await;
    assert_eq!(g.recv().await["sdp"], "over tls");
    g.send(r#"{"type":"answer","sdp":"back"}"#).await;
    assert_eq!(r.host.recv().await["from"], gid.as_str());
    strict.wait_health(503).await;
    for i in [a, b, strict] {
        i.stop().await;
    }
}

#[tokio::test]
async fn a_clean_stop_leaves_nothing_behind() {
    let redis = RedisServer::start().await;
    let a = Instance::start(quick_options(&redis.url()), quick_grace()).await;
    let b = Instance::start(quick_options(&redis.url()), quick_grace()).await;
    let mut r = room(&a).await;
    let (g, _) = attach(&b, &mut r, "join").await;
    let (w, _) = attach(&a, &mut r, "watch").await;
    g.close().await;
    w.close().await;
    r.host.close().await;
    // After the grace period every key of the room is gone.
    let deadline = Instant::now() + common::WAIT;
    loop {
        let keys = redis.command(&["KEYS", "ss:room:*"]).await;
        let toks = redis.command(&["KEYS", "ss:tok:*"]).await;
        if keys.starts_with("*0") && toks.starts_with("*0") {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {keys} {toks}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
    // Stopped instances deregister.
    let inst = redis.command(&["SCARD", "ss:instances"]).await;
    assert_eq!(inst.trim(), ":0", "{inst}");
}
