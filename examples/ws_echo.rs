//! A WebSocket echo server on the project's own WebSocket layer
//! (`signal_server::ws`: its handshake checks, frame reader and writer),
//! for Autobahn|Testsuite (`scripts/autobahn.sh`).
//!
//! Text messages are echoed; binary messages are read and dropped, as the
//! server drops them (their content is never kept), so the binary echo
//! cases (1.2.*) are expected to fail: nothing comes back. Pings are
//! answered, close frames answered with the peer's code (or 1002 for one it
//! may not send), and framing errors closed with their code (1002, 1007,
//! 1009), as the server's sessions do. Messages are limited to the
//! server's default size (64 KiB).
//!
//! ```text
//! cargo run --example ws_echo -- 127.0.0.1:9001   # prints "listening on ADDR"
//! ```

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming as HttpBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use signal_server::config::DEFAULT_MAX_MESSAGE_SIZE;
use signal_server::ws::{self, close, Incoming, Reader, Writer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request: Request<HttpBody>| async move {
                Ok::<_, Infallible>(upgrade(request))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// The handshake: 101 and the echo on the upgraded connection, or 400.
fn upgrade(mut request: Request<HttpBody>) -> Response<Body> {
    let key = match ws::accept_key(&request) {
        Ok(key) => key,
        Err(why) => {
            let mut response = Response::new(Body::from(why.describe()));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            echo(TokioIo::new(upgraded)).await;
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, key);
    response
}

/// Echoes text messages until the connection closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let mut reader = Reader::new(DEFAULT_MAX_MESSAGE_SIZE);
    let mut writer = Writer::new();
    let we_close = loop {
        let next = poll_fn(|cx| reader.poll_next(cx, Pin::new(&mut io))).await;
        let closing = match next {
            Ok(Incoming::Text(text)) => {
                writer.text(text);
                None
            }
            // Its content is not kept: there is nothing to echo.
            Ok(Incoming::Binary | Incoming::Pong) => None,
            Ok(Incoming::Ping(payload)) => {
                writer.pong(payload);
                None
            }
            Ok(Incoming::Close(code)) => {
                let code = match code {
                    None => close::NORMAL,
                    Some(c) if close::valid_from_peer(c) => c,
                    Some(_) => close::PROTOCOL,
                };
                Some((code, false))
            }
            // A malformed close frame is still the peer's close: there is
            // no answer to wait for.
            Err(err) => match err.close_code() {
                Some(code) => Some((code, !reader.peer_closed())),
                None => return,
            },
        };
        if let Some((code, ours)) = closing {
            writer.close(code, "");
            break ours;
        }
        if poll_fn(|cx| writer.poll_flush(cx, Pin::new(&mut io)))
            .await
            .is_err()
        {
            return;
        }
    };
    // The close handshake: our close frame, then (if we started it) the
    // peer's answer, before the server closes the TCP connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if poll_fn(|cx| writer.poll_flush(cx, Pin::new(&mut io)))
            .await
            .is_err()
        {
            return;
        }
        if we_close {
            while let Ok(message) = poll_fn(|cx| reader.poll_next(cx, Pin::new(&mut io))).await {
                if let Incoming::Close(_) = message {
                    break;
                }
            }
        }
        let _ = io.shutdown().await;
    })
    .await;
}
