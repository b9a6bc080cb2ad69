//! Token mode (`--auth token`) through real sockets: the server in this
//! process on port 0, real WebSocket clients. Refusals (codes and HTTP
//! statuses), named rooms (take-over 4000, restarts), expiry of a live
//! session (4001) and revocation (4002), rooms in memory; the Redis side
//! (several instances, restarts) is in `auth_redis.rs`.

mod auth_support;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_support::{claims, config, host, host_token, mint, signed, viewer, watch_token};
use common::{memory_registry, Client, Ended, TestServer, WAIT};
use serde_json::json;
use signal_server::auth::{
    unix_now, Auth, Claims, Grant, KeyId, KeyRing, RevocationTarget, RoomName, Subject,
};
use signal_server::config::Config;

async fn start() -> (TestServer, Arc<Auth>) {
    start_with(config()).await
}

async fn start_with(config: Config) -> (TestServer, Arc<Auth>) {
    let auth = Auth::new(&config.auth);
    let (registry, metrics) = memory_registry(&config);
    let server = TestServer::start_with_auth(config, registry, metrics, Arc::clone(&auth)).await;
    (server, auth)
}

#[tokio::test]
async fn token_mode_refuses_init_without_a_good_token_with_the_code_saying_why() {
    let (server, _) = start().await;
    let mut c = server.connect().await;
    let other = KeyRing::from_secret(b"another-secret-another-secret-another!")
        .unwrap()
        .sign(claims(
            "robot-7",
            &[Grant::Host],
            unix_now(),
            unix_now() + 60,
        ))
        .unwrap()
        .token;
    let good = host_token("robot-7");
    let (head, _) = good.rsplit_once('.').unwrap();
    let now = unix_now();
    let cases = [
        (json!({"type":"init"}), "unauthorized", "needs a token"),
        (
            json!({"type":"init","watch":"634w44TblL5Dbd9a"}),
            "unauthorized",
            "signed token",
        ),
        (
            json!({"type":"init","token":"hello"}),
            "unauthorized",
            "not a valid JWT",
        ),
        (
            json!({"type":"init","token":other}),
            "unauthorized",
            "signature",
        ),
        (
            json!({"type":"init","token":format!("{head}.")}),
            "unauthorized",
            "not signed",
        ),
        (
            json!({"type":"init","token":signed(claims("robot-7", &[Grant::Host], now - 60, now - 1))}),
            "token_expired",
            "expired",
        ),
        (
            json!({"type":"init","token":signed(claims("robot-7", &[Grant::Host], now + 600, now + 900))}),
            "unauthorized",
            "not valid yet",
        ),
        (
            json!({"type":"init","token":signed(Claims { room: None, ..claims("robot-7", &[Grant::Operator], now, now + 60) })}),
            "forbidden",
            "operator",
        ),
        (
            json!({"type":"init","token":good,"resume":"634w44TblL5Dbd9a"}),
            "bad_message",
            "no `join`",
        ),
    ];
    for (init, code, words) in cases {
        c.send_json(init.clone()).await;
        let e = c.expect_error(code).await;
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{init}: {e}");
        assert!(
            !message.contains(&good[..20]),
            "the token is never echoed: {e}"
        );
    }
    // The socket stayed open: a good token still works on it.
    c.send_json(json!({"type":"init","token":good})).await;
    let init = c.recv_type("init").await;
    assert_eq!(init["role"], "host");
    server.stop().await;
}

#[tokio::test]
async fn a_query_string_token_is_refused_before_the_upgrade_with_401_403_or_404() {
    let (server, _) = start().await;
    let now = unix_now();
    let expired = signed(claims("robot-7", &[Grant::Watch], now - 60, now - 1));
    let fleet = signed(Claims {
        room: None,
        ..claims("robot-7", &[Grant::Operator], now, now + 60)
    });
    let watch = watch_token("robot-7", "alice");
    let cases = [
        ("/webrtc?watch=634w44TblL5Dbd9a".to_string(), 401),
        ("/webrtc?token=not-a-token".to_string(), 401),
        (format!("/webrtc?token={}x", &watch[..watch.len() - 1]), 401),
        (format!("/webrtc?token={expired}"), 401),
        (format!("/webrtc?token={fleet}"), 403),
        // A good token for a room that is not open: as for `?watch=`.
        (format!("/webrtc?token={watch}"), 404),
        (format!("/webrtc?token={watch}&watch=634w44TblL5Dbd9a"), 400),
    ];
    for (path, status) in &cases {
        assert_eq!(
            server.upgrade_status(server.url(path)).await,
            Some(*status),
            "{path}"
        );
    }
    assert_eq!(
        server
            .metric("signal_upgrades_rejected_total{reason=\"unauthorized\"}")
            .await,
        5.0
    );
    assert_eq!(
        server
            .metric("signal_upgrades_rejected_total{reason=\"unknown_token\"}")
            .await,
        1.0
    );
    let (status, _, body) = server.get(&format!("/webrtc?token={expired}")).await;
    assert_eq!(status, 426, "a plain GET is not an upgrade: {body}");
    let (_h, _) = host(&server, &host_token("robot-7")).await;
    assert_eq!(
        server
            .upgrade_status(server.url(&format!("/webrtc?token={watch}")))
            .await,
        None,
        "accepted once the room is open"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_host_token_opens_its_named_room_and_viewer_tokens_enter_it() {
    let (server, _) = start().await;
    let (mut h, init) = host(&server, &host_token("robot-7")).await;
    assert_eq!(init["role"], "host");
    assert_eq!(init["room"], "robot-7");
    assert!(init["expires"].as_u64().unwrap() > unix_now());
    for field in ["join", "watch", "resume"] {
        assert!(
            init.get(field).is_none(),
            "no room tokens given out: {init}"
        );
    }
    // A watcher by query string (webrtc_ros.js), a guest by init.
    let (mut w, winit) = viewer(&server, &watch_token("robot-7", "alice")).await;
    assert_eq!(
        (&winit["role"], &winit["room"]),
        (&json!("watch"), &json!("robot-7"))
    );
    let wid = winit["peer"].as_str().unwrap().to_string();
    assert_eq!(
        h.recv().await,
        json!({"type":"peer_joined","peer":wid,"role":"watch"})
    );
    let mut g = server.connect().await;
    let join = mint("robot-7", &[Grant::Join], "bob", Duration::from_secs(60));
    g.send_json(json!({"type":"init","token":join})).await;
    let ginit = g.recv_type("init").await;
    assert_eq!(ginit["role"], "join");
    assert_eq!(h.recv_type("peer_joined").await["role"], "join");
    // A watch token gives a watcher: it may not ask for media to go in.
    w.send_json(json!({"type":"configure","actions":[{"type":"expect_stream","id":"s"}]}))
        .await;
    w.expect_error("forbidden").await;
    w.send_json(json!({"type":"offer","sdp":"v=0"})).await;
    assert_eq!(h.recv_type("offer").await["from"], wid.as_str());
    h.send_json(json!({"type":"answer","sdp":"v=1","to":wid}))
        .await;
    assert_eq!(w.recv_type("answer").await["sdp"], "v=1");
    // Another room's viewer token finds nothing; the host is not disturbed.
    assert_eq!(
        server
            .upgrade_status(server.url(&format!(
                "/webrtc?token={}",
                watch_token("robot-8", "alice")
            )))
            .await,
        Some(404)
    );
    h.expect_silence(Duration::from_millis(100)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_host_for_the_same_name_replaces_the_first_which_is_closed_4000() {
    let (server, _) = start().await;
    let token = host_token("robot-7");
    let (mut first, init1) = host(&server, &token).await;
    let (mut w, _) = viewer(&server, &watch_token("robot-7", "alice")).await;
    first.recv_type("peer_joined").await;
    let (mut second, init2) = host(&server, &host_token("robot-7")).await;
    assert_eq!(
        init2["peer"], init1["peer"],
        "the same room, the same host id"
    );
    assert_eq!(second.recv_type("peer_joined").await["role"], "watch");
    assert_eq!(w.recv().await, json!({"type":"host_joined"}));
    match first.ended().await {
        Ended::Close(code, reason) => {
            assert_eq!(code, 4000, "{reason}");
            assert!(reason.contains("replaced"), "{reason}");
        }
        other => panic!("the replaced host: {other:?}"),
    }
    w.send_json(json!({"type":"answer","sdp":"x"})).await;
    assert_eq!(second.recv_type("answer").await["sdp"], "x");
    server.stop().await;
}

#[tokio::test]
async fn a_named_room_survives_a_server_restart_and_links_made_before_work_again() {
    let (server, _) = start().await;
    let host_t = host_token("robot-7");
    let watch_t = watch_token("robot-7", "alice");
    let (h, _) = host(&server, &host_t).await;
    let (_w, _) = viewer(&server, &watch_t).await;
    drop(h);
    server.stop().await;

    // A new server (rooms in memory: all lost), the same keys.
    let (server, _) = start().await;
    assert_eq!(
        server
            .upgrade_status(server.url(&format!("/webrtc?token={watch_t}")))
            .await,
        Some(404),
        "no host yet"
    );
    let (mut h, init) = host(&server, &host_t).await;
    assert_eq!(init["room"], "robot-7");
    let (mut w, winit) = viewer(&server, &watch_t).await;
    assert_eq!(winit["room"], "robot-7");
    assert_eq!(h.recv_type("peer_joined").await["peer"], winit["peer"]);
    h.send_json(json!({"type":"offer","sdp":"v=0"})).await;
    assert_eq!(w.recv_type("offer").await["sdp"], "v=0");
    server.stop().await;
}

#[tokio::test]
async fn a_named_room_that_closed_opens_again_under_its_name() {
    let config = Config {
        host_grace: Duration::from_millis(300),
        ..config()
    };
    let (server, _) = start_with(config).await;
    let host_t = host_token("robot-7");
    let watch_t = watch_token("robot-7", "alice");
    let (h, _) = host(&server, &host_t).await;
    let (mut w, _) = viewer(&server, &watch_t).await;
    h.close().await;
    w.recv_type("host_left").await;
    w.recv_type("room_closed").await;
    server.wait_metric("signal_rooms", 0.0).await;
    let (mut h, _) = host(&server, &host_t).await;
    let (_w, winit) = viewer(&server, &watch_t).await;
    assert_eq!(h.recv_type("peer_joined").await["peer"], winit["peer"]);
    server.stop().await;
}

#[tokio::test]
async fn a_live_session_ends_when_its_token_expires_told_token_expired_then_closed_4001() {
    let (server, _) = start().await;
    let (mut h, _) = host(&server, &host_token("robot-7")).await;
    let now = unix_now();
    let exp = now + 2;
    let short = signed(claims("robot-7", &[Grant::Watch], now, exp));
    let (mut w, init) = viewer(&server, &short).await;
    assert_eq!(init["expires"], exp);
    h.recv_type("peer_joined").await;
    let e = w.expect_error("token_expired").await;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
    w.expect_close(4001).await;
    let late = at - exp as f64;
    assert!(
        (0.0..1.5).contains(&late),
        "told {late:.2} s after exp (must be at or after it, and soon)"
    );
    assert_eq!(h.recv_type("peer_left").await["peer"], init["peer"]);
    // A host's session ends the same way (the room then waits for it).
    let now = unix_now();
    let (mut h2, _) = host(
        &server,
        &signed(claims("robot-8", &[Grant::Host], now, now + 2)),
    )
    .await;
    h2.expect_error("token_expired").await;
    h2.expect_close(4001).await;
    server.stop().await;
}

#[tokio::test]
async fn revoking_by_jti_subject_or_room_ends_the_live_sessions_it_covers_with_4002() {
    let (server, auth) = start().await;
    let (mut h, _) = host(&server, &host_token("robot-7")).await;
    let alice = watch_token("robot-7", "alice");
    let carol = watch_token("robot-7", "carol");
    let (mut a, _) = viewer(&server, &alice).await;
    let (mut b, _) = viewer(&server, &watch_token("robot-7", "bob")).await;
    let (mut c, _) = viewer(&server, &carol).await;
    for _ in 0..3 {
        h.recv_type("peer_joined").await;
    }
    let jti = auth.check(&alice).unwrap().jti;
    let cases: [(&mut Client, RevocationTarget); 2] = [
        (&mut a, RevocationTarget::Token { jti, exp: None }),
        (
            &mut b,
            RevocationTarget::Subject {
                sub: Subject::new("bob").unwrap(),
                issued_before: unix_now() + 1,
            },
        ),
    ];
    for (client, target) in cases {
        let t0 = Instant::now();
        auth.revoke(target).await.expect("revoke");
        let e = client.expect_error("unauthorized").await;
        assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
        client.expect_close(4002).await;
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
    c.expect_silence(Duration::from_millis(100)).await;
    // Refused from now on, at connect too.
    assert_eq!(
        server
            .upgrade_status(server.url(&format!("/webrtc?token={alice}")))
            .await,
        Some(401)
    );
    // Every token for the room issued before now, the host's included.
    let t0 = Instant::now();
    auth.revoke(RevocationTarget::Room {
        room: RoomName::new("robot-7").unwrap(),
        issued_before: unix_now() + 1,
    })
    .await
    .unwrap();
    // (It may hear first that its host, revoked too, has left.)
    assert_eq!(c.skip_to("error").await["code"], "unauthorized");
    c.expect_close(4002).await;
    assert_eq!(h.skip_to("error").await["code"], "unauthorized");
    h.expect_close(4002).await;
    assert!(t0.elapsed() < WAIT);
    server.stop().await;
}

#[tokio::test]
async fn open_mode_ignores_a_token_in_init_and_on_the_query_string() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.send_json(json!({"type":"init","token":host_token("robot-7")}))
        .await;
    let init = c.recv_type("init").await;
    assert!(
        init["join"].is_string() && init.get("room").is_none(),
        "{init}"
    );
    // As before token mode existed: a `token` of another type, and
    // `?token=`, are ignored.
    let mut c = server.connect().await;
    c.send_json(json!({"type":"init","token":{"a":[1]}})).await;
    assert_eq!(c.recv_type("init").await["role"], "host");
    let mut q = server
        .connect_to(&format!("/webrtc?token={}", watch_token("robot-7", "a")))
        .await;
    q.send_json(json!({"type":"init"})).await;
    assert_eq!(q.recv_type("init").await["role"], "host");
    server.stop().await;
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A compact JWT with this header and payload, HMAC-SHA256-signed by hand.
fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
    use base64::Engine as _;
    let input = format!("{}.{}", b64(header), b64(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

#[tokio::test]
async fn hostile_tokens_are_refused_on_the_upgrade_and_in_init_without_disturbing_a_room() {
    let (server, _) = start().await;
    let (mut h, _) = host(&server, &host_token("robot-7")).await;
    let now = unix_now();
    let watch = claims("robot-7", &[Grant::Watch], now, now + 600);
    let body = serde_json::to_string(&watch).unwrap();
    let good = signed(watch.clone());
    let mut parts = good.split('.');
    let (head, sig) = (parts.next().unwrap(), parts.nth(1).unwrap());
    let as_host = serde_json::to_string(&Claims {
        grants: signal_server::auth::Grants::new([Grant::Host]).unwrap(),
        ..watch.clone()
    })
    .unwrap();
    let other_kid = {
        let mut b = KeyRing::builder();
        b.add_secret(Some(KeyId::new("k9").unwrap()), auth_support::SECRET)
            .unwrap();
        b.build().unwrap().sign(watch.clone()).unwrap().token
    };
    let hostile = [
        (
            "unsigned, alg none",
            format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&body)),
        ),
        (
            "alg none with a signature",
            format!("{}.{}.{sig}", b64(r#"{"alg":"none"}"#), b64(&body)),
        ),
        (
            "another algorithm",
            forge(
                r#"{"alg":"HS512","typ":"JWT"}"#,
                &body,
                auth_support::SECRET,
            ),
        ),
        (
            "a tampered payload (watch made host)",
            format!("{head}.{}.{sig}", b64(&as_host)),
        ),
        ("an unknown key id", other_kid),
        ("over 4 KiB", format!("{good}{}", "A".repeat(5000))),
        (
            "expired by a second",
            signed(Claims {
                iat: now - 60,
                nbf: now - 60,
                exp: now - 1,
                ..watch.clone()
            }),
        ),
        (
            "valid from a minute on",
            signed(Claims {
                iat: now + 60,
                nbf: now + 60,
                exp: now + 600,
                ..watch.clone()
            }),
        ),
    ];
    for (what, token) in &hostile {
        assert_eq!(
            server
                .upgrade_status(server.url(&format!("/webrtc?token={token}")))
                .await,
            Some(401),
            "{what}"
        );
        let mut c = server.connect().await;
        c.send_json(json!({"type":"init","token":token})).await;
        let e = c.recv_type("error").await;
        let want = if what.starts_with("expired") {
            "token_expired"
        } else {
            "unauthorized"
        };
        assert_eq!(e["code"], want, "{what}: {e}");
    }
    // Hand-signed with the right key, it is good: the forgeries failed for
    // what they are.
    let (_w, winit) = viewer(
        &server,
        &forge(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &body,
            auth_support::SECRET,
        ),
    )
    .await;
    assert_eq!(h.recv_type("peer_joined").await["peer"], winit["peer"]);
    h.expect_silence(Duration::from_millis(100)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_key_keeps_old_tokens_valid_until_it_is_removed() {
    let old_key = b"the-old-key-the-old-key-the-old-key!!".as_slice();
    let new_key = b"the-new-key-the-new-key-the-new-key!!".as_slice();
    let ring_of = |keys: &[(&str, &[u8])]| {
        let mut b = KeyRing::builder();
        for (kid, secret) in keys {
            b.add_secret(Some(KeyId::new(*kid).unwrap()), secret)
                .unwrap();
        }
        Arc::new(b.build().unwrap())
    };
    let now = unix_now();
    let host_claims = claims("robot-7", &[Grant::Host], now, now + 600);
    let by_old = ring_of(&[("k1", old_key)])
        .sign(host_claims.clone())
        .unwrap()
        .token;
    let by_new = ring_of(&[("k2", new_key)]).sign(host_claims).unwrap().token;
    let serve = |keys: Arc<KeyRing>| Config {
        auth: signal_server::auth::AuthConfig::Token(keys),
        ..Config::default()
    };
    // Both keys: both tokens.
    let (server, _) = start_with(serve(ring_of(&[("k2", new_key), ("k1", old_key)]))).await;
    for token in [&by_old, &by_new] {
        let (_h, init) = host(&server, token).await;
        assert_eq!(init["room"], "robot-7");
    }
    server.stop().await;
    // The old key removed: its tokens are refused, the new ones still work.
    let (server, _) = start_with(serve(ring_of(&[("k2", new_key)]))).await;
    let mut c = server.connect().await;
    c.send_json(json!({"type":"init","token":by_old})).await;
    let e = c.expect_error("unauthorized").await;
    assert!(e["message"].as_str().unwrap().contains("key"), "{e}");
    let (_h, init) = host(&server, &by_new).await;
    assert_eq!(init["role"], "host");
    server.stop().await;
}

#[tokio::test]
async fn the_binary_in_token_mode_starts_and_serves_what_token_create_mints() {
    let secret = std::str::from_utf8(auth_support::SECRET).unwrap();
    let server = common::binary()
        .args(["--auth", "token"])
        .env("SIGNAL_SERVER_AUTH_SECRET", secret)
        .start()
        .await
        .expect("token mode starts");
    let minted = std::process::Command::new(common::BIN)
        .args(["token", "create", "--room", "robot-7", "--grant", "host"])
        .env("SIGNAL_SERVER_AUTH_SECRET", secret)
        .output()
        .expect("token create");
    assert!(minted.status.success());
    let stdout = String::from_utf8(minted.stdout).unwrap();
    let token = stdout.lines().next().expect("the token line");
    let mut c = server.connect().await;
    c.send_json(json!({"type":"init"})).await;
    c.expect_error("unauthorized").await;
    c.send_json(json!({"type":"init","token":token})).await;
    let init = c.recv_type("init").await;
    assert_eq!(
        (&init["role"], &init["room"]),
        (&json!("host"), &json!("robot-7"))
    );
    assert!(
        !server.log_text().contains(secret),
        "the secret is never logged"
    );
}
