//! The admin API (`/api/v1/`) and the fleet page's gate, through real
//! sockets: refusals without the key, the document, and every endpoint.

mod admin_support;
mod common;

use admin_support::{admin, admin_server, request, Events, KEY};
use common::TestServer;

/// Every documented operation, as (method, path with sample parameters).
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/api/v1/rooms"),
    ("GET", "/api/v1/rooms/robot-7"),
    ("DELETE", "/api/v1/rooms/robot-7"),
    ("DELETE", "/api/v1/rooms/robot-7/peers/abcdefgh"),
    ("POST", "/api/v1/rooms/robot-7/watch-links"),
    ("POST", "/api/v1/revocations"),
    ("GET", "/api/v1/fleet"),
    ("GET", "/api/v1/events"),
];

#[tokio::test]
async fn without_an_admin_key_configured_the_api_is_not_there_and_the_fleet_page_is_refused() {
    let server = TestServer::start().await;
    for (method, path) in ENDPOINTS.iter().chain(&[("GET", "/api/v1/openapi.json")]) {
        let bearer = format!("Bearer {KEY}");
        let r = request(
            server.addr,
            method,
            path,
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(r.status, 404, "{method} {path}: {r:?}");
        assert_eq!(r.error_code(), "not_found");
    }
    let r = request(server.addr, "GET", "/fleet", &[], None).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = request(
        server.addr,
        "GET",
        &format!("/fleet?access_token={KEY}"),
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.status, 401,
        "a key the server does not have opens nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_endpoint_refuses_a_missing_or_wrong_key_with_401_and_a_json_error() {
    let server = admin_server().await;
    let wrong = format!("Bearer {KEY}x");
    let short = format!("Bearer {}", &KEY[..KEY.len() - 1]);
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("Authorization", &wrong)],
        &[("Authorization", &short)],
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        &[("Authorization", "Bearer a.b.c")],
    ];
    for (method, path) in ENDPOINTS {
        for headers in cases {
            let body = (*method == "POST").then_some(r#"{"kind":"token","jti":"x"}"#);
            let r = request(server.addr, method, path, headers, body).await;
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {r:?}");
            assert_eq!(r.error_code(), "unauthorized", "{r:?}");
            assert!(r
                .header("www-authenticate")
                .is_some_and(|h| h.starts_with("bearer")));
            assert!(r
                .header("content-type")
                .is_some_and(|h| h.contains("application/json")));
        }
    }
    // The key in the query works only where the document says it is read
    // (and everywhere the header is missing); a wrong one is refused too.
    let r = request(
        server.addr,
        "GET",
        "/api/v1/fleet?access_token=nope",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served_as_kept_in_the_repository() {
    let server = admin_server().await;
    let r = request(server.addr, "GET", "/api/v1/openapi.json", &[], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .header("content-type")
        .is_some_and(|h| h.starts_with("application/json")));
    let served = r.json();
    let kept: serde_json::Value =
        serde_json::from_str(include_str!("../docs/openapi.json")).expect("docs/openapi.json");
    assert_eq!(served, kept);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.0"));
    server.stop().await;
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_server_answers() {
    let server = admin_server().await;
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../docs/openapi.json")).expect("docs/openapi.json");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                let sample = path
                    .replace("{room}", "robot-7")
                    .replace("{peer}", "abcdefgh");
                documented.push((method.to_ascii_uppercase(), sample));
            }
        }
    }
    let mut listed: Vec<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .chain([("GET".into(), "/api/v1/openapi.json".into())])
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(
        documented, listed,
        "the document and this test's list differ"
    );
    // Each documented route is routed (not the 404 of unknown paths), and an
    // undocumented method on it is 405.
    for (method, path) in &documented {
        if path.ends_with("/events") {
            continue; // a stream: its own test
        }
        let body = (method == "POST").then_some("{}");
        let r = admin(server.addr, method, path, body).await;
        let unknown = r.status == 404 && r.body.contains("no such endpoint");
        assert!(!unknown, "{method} {path}: {r:?}");
    }
    let r = admin(server.addr, "PUT", "/api/v1/rooms", Some("{}")).await;
    assert_eq!(r.status, 405, "{r:?}");
    let r = admin(server.addr, "GET", "/api/v1/no-such-thing", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    server.stop().await;
}

#[tokio::test]
async fn malformed_names_and_bodies_are_400_and_oversized_bodies_413() {
    let server = admin_server().await;
    for path in [
        "/api/v1/rooms/robot%207",
        "/api/v1/rooms/%C3%A9",
        "/api/v1/rooms/robot-7/peers/a%2Fb",
    ] {
        let r = admin(server.addr, "DELETE", path, None).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "bad_request"),
            "{path}"
        );
    }
    let long = format!("/api/v1/rooms/{}", "a".repeat(65));
    assert_eq!(admin(server.addr, "GET", &long, None).await.status, 400);
    for body in [
        "",
        "nope",
        "[]",
        r#"{"kind":"everything"}"#,
        r#"{"kind":"token"}"#,
        r#"{"kind":"token","jti":"has space"}"#,
        r#"{"kind":"token","jti":"x","extra":1}"#,
        r#"{"kind":"subject","sub":"alice","issued_before":-1}"#,
        r#"{"kind":"room","room":"-leading-dash"}"#,
    ] {
        let r = admin(server.addr, "POST", "/api/v1/revocations", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.error_code(), "bad_request");
    }
    for body in [
        r#"{"ttl_secs":0}"#,
        r#"{"ttl_secs":3601}"#,
        r#"{"ttl_secs":"60"}"#,
        r#"{"colour":"red"}"#,
        "[null, null]",
        "[300]",
    ] {
        let r = admin(
            server.addr,
            "POST",
            "/api/v1/rooms/robot-7/watch-links",
            Some(body),
        )
        .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }
    let huge = format!(r#"{{"kind":"token","jti":"{}"}}"#, "a".repeat(20_000));
    let r = admin(server.addr, "POST", "/api/v1/revocations", Some(&huge)).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error_code(), "bad_request");
    server.stop().await;
}

#[tokio::test]
async fn the_fleet_page_opens_only_with_the_admin_key() {
    let server = admin_server().await;
    let r = request(server.addr, "GET", "/fleet", &[], None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.body.contains("access_token"),
        "the refusal says what to do"
    );
    assert!(!r.body.contains("fleet.js"), "no page without a key");
    let r = request(
        server.addr,
        "GET",
        "/fleet?access_token=wrong-key-0123456789",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = request(
        server.addr,
        "GET",
        &format!("/fleet?access_token={KEY}"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("fleet.js"), "{}", r.body);
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let bearer = format!("Bearer {KEY}");
    let r = request(
        server.addr,
        "GET",
        "/fleet",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_event_stream_opens_with_the_key_in_the_query_and_starts_with_the_fleet() {
    let server = admin_server().await;
    let mut events = Events::open(
        server.addr,
        &format!("/api/v1/events?access_token={KEY}"),
        &[],
    )
    .await;
    assert!(
        events.head.contains("cache-control: no-store"),
        "{}",
        events.head
    );
    let first = events.fleet().await;
    assert!(first["robots"].is_array(), "{first}");
    server.stop().await;
}
