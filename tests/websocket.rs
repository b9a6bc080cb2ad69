//! The WebSocket layer (src/ws/) through real sockets: the upgrade
//! handshake and its refusals, control frames, fragmentation, the close
//! handshake, and the close codes of framing errors, judged as early as
//! their bytes allow. Raw frames are written where a client
//! library would refuse to (unmasked frames, invalid UTF-8).

mod common;

use std::time::Duration;

use common::{room, TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade request for `/webrtc`, with extra header lines.
fn upgrade_request(server: &TestServer, extra: &str) -> String {
    format!(
        "GET /webrtc HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n",
        server.addr
    )
}

/// Sends `request` (and anything after it in the same write) on a raw socket
/// and returns the socket and the response head.
async fn raw_upgrade(server: &TestServer, bytes: &[u8]) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read");
        assert_eq!(n, 1, "connection closed in the response head");
        head.push(byte[0]);
    }
    (tcp, String::from_utf8_lossy(&head).into_owned())
}

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9, 8, 7, 6];
    assert!(payload.len() < 126);
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The next server frame on a raw socket: (first byte, payload). Server
/// frames are unmasked and, here, short.
async fn server_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .expect("read");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            tcp.read_exact(&mut l).await.expect("length");
            usize::from(u16::from_be_bytes(l))
        }
        127 => panic!("unexpectedly long frame"),
        n => usize::from(n),
    };
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).await.expect("payload");
    (head[0], payload)
}

/// Reads frames until a close frame and returns its code.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    loop {
        let (first, payload) = server_frame(tcp).await;
        if first == 0x88 {
            assert!(payload.len() >= 2, "close frame without a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn the_handshake_answers_with_the_accept_key_and_frames_sent_with_it_are_read() {
    let server = TestServer::start().await;
    // The first frame arrives in the same packet as the request: the server
    // must not lose the bytes its HTTP parser read ahead.
    let mut bytes = upgrade_request(
        &server,
        &format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"),
    )
    .into_bytes();
    bytes.extend(client_frame(0x81, br#"{"type":"init"}"#));
    let (mut tcp, head) = raw_upgrade(&server, &bytes).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "RFC 6455's example key gives RFC 6455's example answer: {head}"
    );
    let (first, payload) = server_frame(&mut tcp).await;
    assert_eq!(first, 0x81, "a final text frame");
    let init: Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(init["type"], "init");
    assert_eq!(init["role"], "host");
    server.stop().await;
}

#[tokio::test]
async fn bad_upgrades_are_refused_with_the_right_status() {
    let server = TestServer::start().await;
    let (_, head) = raw_upgrade(
        &server,
        upgrade_request(
            &server,
            &format!("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n"),
        )
        .as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
    let (_, head) = raw_upgrade(
        &server,
        upgrade_request(&server, "Sec-WebSocket-Version: 13\r\n").as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn pings_are_answered_and_fragments_are_assembled() {
    let server = TestServer::start().await;
    let mut r = room(&server).await;
    let mut viewer = server.connect().await;
    viewer
        .send(&format!(r#"{{"type":"init","watch":"{}"}}"#, r.watch))
        .await;
    viewer.recv_type("init").await;
    r.host.recv_type("peer_joined").await;

    viewer
        .ws
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WAIT, viewer.ws.next())
        .await
        .expect("pong in time");
    match pong {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }

    // A message in three fragments arrives whole.
    let parts: [&[u8]; 3] = [
        br#"{"type":"offer","#,
        br#""sdp":"v=0 "#,
        br#"fragmented"}"#,
    ];
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(part.to_vec(), opcode, i == parts.len() - 1);
        viewer
            .ws
            .send(Message::Frame(frame))
            .await
            .expect("fragment");
    }
    let offer = r.host.recv_type("offer").await;
    assert_eq!(offer["sdp"], "v=0 fragmented");
    server.stop().await;
}

#[tokio::test]
async fn a_close_from_the_peer_is_answered_with_its_code() {
    let server = TestServer::start().await;
    let bytes = upgrade_request(
        &server,
        &format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"),
    );
    let (mut tcp, _) = raw_upgrade(&server, bytes.as_bytes()).await;
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    tcp.write_all(&client_frame(0x88, &close))
        .await
        .expect("close");
    assert_eq!(close_code(&mut tcp).await, 4001);
    // Then the server hangs up.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the server hangs up")
        .expect("a clean end, not a reset");
    assert_eq!(n, 0);
    server.stop().await;
}

#[tokio::test]
async fn framing_errors_close_with_their_codes_and_leave_other_rooms_alone() {
    let server = TestServer::start().await;
    let mut bystander = room(&server).await;
    let upgrade = upgrade_request(
        &server,
        &format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"),
    );
    let unmasked = {
        let mut f = vec![0x81, 2];
        f.extend_from_slice(b"hi");
        f
    };
    let cases: [(&str, Vec<u8>, u16); 5] = [
        (
            "invalid UTF-8",
            client_frame(0x81, &[b'"', 0xc3, 0x28, b'"']),
            1007,
        ),
        ("unmasked frame", unmasked, 1002),
        ("reserved bit", client_frame(0xc1, b"{}"), 1002),
        ("reserved opcode", client_frame(0x83, b"{}"), 1002),
        ("fragmented ping", client_frame(0x09, b"x"), 1002),
    ];
    for (what, frame, code) in cases {
        let (mut tcp, _) = raw_upgrade(&server, upgrade.as_bytes()).await;
        tcp.write_all(&frame).await.expect("frame");
        assert_eq!(close_code(&mut tcp).await, code, "{what}");
    }
    // The room next door noticed nothing.
    let mut viewer = server.connect().await;
    viewer
        .send(&format!(
            r#"{{"type":"init","watch":"{}"}}"#,
            bystander.watch
        ))
        .await;
    viewer.recv_type("init").await;
    bystander.host.recv_type("peer_joined").await;
    viewer.send(r#"{"type":"answer","sdp":"v=0"}"#).await;
    assert_eq!(bystander.host.recv_type("answer").await["sdp"], "v=0");
    bystander
        .host
        .expect_silence(Duration::from_millis(100))
        .await;
    server.stop().await;
}

/// The response head to `request`, sent as is.
async fn response_head(server: &TestServer, request: &str) -> String {
    let (_, head) = raw_upgrade(server, request.as_bytes()).await;
    head
}

#[tokio::test]
async fn malformed_handshakes_are_refused_with_400_and_never_upgraded() {
    let server = TestServer::start().await;
    let host = server.addr;
    let ok_key = format!("Sec-WebSocket-Key: {KEY}\r\n");
    let cases = [
        (
            "a key that is not base64",
            format!("GET /webrtc HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not*base64*at*all*!!!!!\r\n\r\n"),
        ),
        (
            "a key of 15 bytes",
            format!("GET /webrtc HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n\r\n"),
        ),
        (
            "two keys",
            format!("GET /webrtc HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{ok_key}{ok_key}\r\n"),
        ),
        (
            "no Host",
            format!("GET /webrtc HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{ok_key}\r\n"),
        ),
        (
            "HEAD",
            format!("HEAD /webrtc HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{ok_key}\r\n"),
        ),
        (
            "HEAD on /",
            format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{ok_key}\r\n"),
        ),
    ];
    for (what, request) in &cases {
        let head = response_head(&server, request).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{what}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("sec-websocket-accept"),
            "{what}: {head}"
        );
    }
    let refused = server
        .metric("signal_upgrades_rejected_total{reason=\"bad_handshake\"}")
        .await;
    assert_eq!(refused, cases.len() as f64);
    // A plain HEAD of the page is still a page.
    let head = response_head(&server, &format!("HEAD / HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    server.stop().await;
}

/// An upgraded raw socket with a room's host on it (so that the connection
/// is not closed as idle meanwhile).
async fn raw_host(server: &TestServer) -> TcpStream {
    let mut bytes = upgrade_request(
        server,
        &format!("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"),
    )
    .into_bytes();
    bytes.extend(client_frame(0x81, br#"{"type":"init"}"#));
    let (mut tcp, head) = raw_upgrade(server, &bytes).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (first, _) = server_frame(&mut tcp).await;
    assert_eq!(first, 0x81, "the init reply");
    tcp
}

#[tokio::test]
async fn a_control_frame_or_length_that_cannot_be_is_refused_from_its_header_with_1002() {
    let server = TestServer::start().await;
    // A ping announcing 126 bytes (a 16-bit length): only its first two
    // bytes are sent, and the server closes 1002 without waiting for more.
    let mut tcp = raw_host(&server).await;
    tcp.write_all(&[0x89, 0x80 | 126]).await.expect("header");
    assert_eq!(close_code(&mut tcp).await, 1002);
    // A close frame announcing 126 bytes, likewise.
    let mut tcp = raw_host(&server).await;
    tcp.write_all(&[0x88, 0x80 | 126]).await.expect("header");
    assert_eq!(close_code(&mut tcp).await, 1002);
    // A 64-bit length with its top bit set: a protocol error (1002), not a
    // message too big (1009), from the ten bytes of the header.
    let mut tcp = raw_host(&server).await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63 | 16).to_be_bytes());
    tcp.write_all(&header).await.expect("header");
    assert_eq!(close_code(&mut tcp).await, 1002);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_middle_fragment_is_closed_1007_before_the_last_fragment() {
    let server = TestServer::start().await;
    let mut tcp = raw_host(&server).await;
    // The first fragment ends inside "€" (E2 82 AC), the second breaks it;
    // the last is never sent.
    tcp.write_all(&client_frame(0x01, b"{\"type\":\"offer\",\"sdp\":\"\xe2"))
        .await
        .expect("first fragment");
    tcp.write_all(&client_frame(0x00, b"\x82\x28 more\""))
        .await
        .expect("middle fragment");
    assert_eq!(close_code(&mut tcp).await, 1007);
    // Within one frame too: its first bytes, with the bad one, arrive; the
    // rest of it never does.
    let mut tcp = raw_host(&server).await;
    let frame = client_frame(0x81, &[b'x'; 100]);
    let mut partial = frame[..2 + 4 + 10].to_vec();
    partial[2 + 4 + 5] ^= 0xff; // an 0x87-ish byte: not UTF-8 there
    tcp.write_all(&partial).await.expect("part of a frame");
    assert_eq!(close_code(&mut tcp).await, 1007);
    server.stop().await;
}
