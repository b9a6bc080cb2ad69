//! At start, one look at the `--robot` URL: is it a signal-server rather
//! than webrtc_ros? The server's default port (9090) is webrtc_ros's too,
//! so with both on one machine the bridge would otherwise host a room on
//! the server and then talk to that same server as if it were the robot.
//!
//! The look is `GET /healthz` over plain HTTP (or TLS for `wss://`), not a
//! WebSocket: webrtc_ros (and a stand-in) sees a request it answers 404 or
//! refuses, and no peer connection is made. A signal-server answers its
//! health JSON (`"service": "signal-server"`, or, from versions before that
//! field, `rooms` and `http_connections`). Anything else, including no
//! answer at all (webrtc_ros not started yet), is not a signal-server.
//! Every robot connection also checks the upgrade's `Server` header
//! ([`super::websocket::connect_robot`]).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::Connector;

/// The most of the answer read.
const MAX_ANSWER: usize = 16 * 1024;

/// What gave a signal-server away at `url`, if it is one; `None` when it is
/// not, or cannot be told within `timeout`.
pub async fn signal_server_at(
    url: &str,
    connector: &Connector,
    timeout: Duration,
) -> Option<&'static str> {
    let uri: Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let tls = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let answer = tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect((host, port)).await.ok()?;
        match (tls, connector) {
            (false, _) => get_healthz(tcp, host).await,
            (true, Connector::Rustls(config)) => {
                let name = ServerName::try_from(host.to_string()).ok()?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .ok()?;
                get_healthz(stream, host).await
            }
            (true, _) => None,
        }
    })
    .await
    .ok()??;
    looks_like_signal_server(&answer)
}

async fn get_healthz<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, host: &str) -> Option<String> {
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: signal-server-bridge/{}\r\n\
         Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < MAX_ANSWER {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Whether an HTTP answer to `GET /healthz` is a signal-server's.
fn looks_like_signal_server(answer: &str) -> Option<&'static str> {
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.1 503") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(body.get(body.find('{')?..)?.trim()).ok()?;
    if json["service"] == "signal-server" {
        return Some("its /healthz says \"service\": \"signal-server\"");
    }
    (json.get("rooms").is_some() && json.get("http_connections").is_some())
        .then_some("its /healthz answers with signal-server's rooms and http_connections")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_servers_health_answer_is_recognised_and_others_are_not() {
        let ours = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n\
                    {\"status\":\"ok\",\"service\":\"signal-server\",\"rooms\":0}";
        assert!(looks_like_signal_server(ours).is_some());
        let older = "HTTP/1.1 503 Service Unavailable\r\n\r\n\
                     {\"status\":\"degraded\",\"connections\":1,\"rooms\":0,\"http_connections\":1}";
        assert!(looks_like_signal_server(older).is_some());
        // webrtc_ros's web server, a WebSocket-only server, nothing.
        assert!(looks_like_signal_server("HTTP/1.1 404 Not Found\r\n\r\nNot Found").is_none());
        assert!(
            looks_like_signal_server("HTTP/1.1 426 Upgrade Required\r\n\r\nWebSocket only")
                .is_none()
        );
        assert!(looks_like_signal_server("HTTP/1.1 200 OK\r\n\r\n{\"status\":\"ok\"}").is_none());
        assert!(looks_like_signal_server("").is_none());
    }
}
