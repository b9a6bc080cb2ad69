//! The opening handshake (RFC 6455 §4.2.1): which requests are WebSocket
//! upgrades this server accepts, and the `Sec-WebSocket-Accept` answer.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request};
use base64::Engine as _;

use super::derive_accept_key;

/// Why a request is not a WebSocket upgrade this server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotUpgrade {
    /// Not an upgrade request at all (a plain GET, or a HEAD).
    Plain,
    /// An upgrade request for a WebSocket version other than 13 (HTTP 426).
    Version,
    /// An upgrade request with a method other than GET (HTTP 400).
    Method,
    /// An upgrade request without a `Host` header, or with several (HTTP 400).
    Host,
    /// An upgrade request without `Sec-WebSocket-Key` (HTTP 400).
    NoKey,
    /// A `Sec-WebSocket-Key` that is not the base64 of 16 bytes (HTTP 400).
    BadKey,
    /// More than one `Sec-WebSocket-Key` (HTTP 400).
    DuplicateKey,
}

impl NotUpgrade {
    /// A sentence for the response body.
    pub fn describe(self) -> &'static str {
        match self {
            NotUpgrade::Plain => "not a WebSocket upgrade request\n",
            NotUpgrade::Version => "unsupported WebSocket version: this server speaks version 13\n",
            NotUpgrade::Method => "a WebSocket upgrade must be a GET request\n",
            NotUpgrade::Host => "a WebSocket upgrade needs exactly one Host header\n",
            NotUpgrade::NoKey => "WebSocket upgrade without Sec-WebSocket-Key\n",
            NotUpgrade::BadKey => "Sec-WebSocket-Key must be the base64 of 16 bytes\n",
            NotUpgrade::DuplicateKey => "more than one Sec-WebSocket-Key\n",
        }
    }
}

/// The `Sec-WebSocket-Accept` value if `request` is a WebSocket upgrade this
/// server accepts: HTTP/1.1 `GET` with `Connection: upgrade`, `Upgrade:
/// websocket`, version 13, one `Host`, and exactly one `Sec-WebSocket-Key`
/// that is the base64 of 16 bytes. A request that does not ask for an
/// upgrade at all (a `HEAD` included) is [`NotUpgrade::Plain`].
pub fn accept_key<B>(request: &Request<B>) -> Result<HeaderValue, NotUpgrade> {
    let headers = request.headers();
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(NotUpgrade::Plain);
    }
    if request.method() != Method::GET {
        return Err(NotUpgrade::Method);
    }
    if !header_has_token(headers, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(NotUpgrade::Version);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) if !host.is_empty() => {}
        _ => return Err(NotUpgrade::Host),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key,
        (None, _) => return Err(NotUpgrade::NoKey),
        (Some(_), Some(_)) => return Err(NotUpgrade::DuplicateKey),
    };
    // 16 bytes are 24 base64 characters: decoded on the stack.
    let mut nonce = [0u8; 18];
    match base64::engine::general_purpose::STANDARD.decode_slice(key.as_bytes(), &mut nonce) {
        Ok(16) => {}
        _ => return Err(NotUpgrade::BadKey),
    }
    // Base64 is always a valid header value.
    HeaderValue::try_from(derive_accept_key(key.as_bytes())).map_err(|_| NotUpgrade::BadKey)
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().method(method).uri("/webrtc");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    const UPGRADE: [(&str, &str); 3] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("host", "example.com"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        UPGRADE.iter().chain(extra).copied().collect()
    }

    #[test]
    fn upgrade_headers_are_checked() {
        assert_eq!(
            accept_key(&request(Method::GET, &[])),
            Err(NotUpgrade::Plain)
        );
        assert_eq!(
            accept_key(&request(
                Method::GET,
                &with(&[("sec-websocket-version", "8")])
            )),
            Err(NotUpgrade::Version)
        );
        let v13 = ("sec-websocket-version", "13");
        assert_eq!(
            accept_key(&request(Method::GET, &with(&[v13]))),
            Err(NotUpgrade::NoKey)
        );
        // The example of RFC 6455 §1.3.
        let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            accept_key(&request(Method::GET, &with(&[v13, key])))
                .as_ref()
                .map(|v| v.as_bytes()),
            Ok(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
    }

    #[test]
    fn a_malformed_request_is_not_upgraded() {
        let v13 = ("sec-websocket-version", "13");
        let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            accept_key(&request(Method::HEAD, &with(&[v13, key]))),
            Err(NotUpgrade::Method)
        );
        assert_eq!(
            accept_key(&request(Method::POST, &with(&[v13, key]))),
            Err(NotUpgrade::Method)
        );
        let no_host = [UPGRADE[0], UPGRADE[1], v13, key];
        assert_eq!(
            accept_key(&request(Method::GET, &no_host)),
            Err(NotUpgrade::Host)
        );
        assert_eq!(
            accept_key(&request(
                Method::GET,
                &with(&[v13, key, ("host", "b.example")])
            )),
            Err(NotUpgrade::Host)
        );
        assert_eq!(
            accept_key(&request(Method::GET, &with(&[v13, key, key]))),
            Err(NotUpgrade::DuplicateKey)
        );
        for bad in [
            "dGhlIHNhbXBsZSBub25jZQ",     // no padding
            "dGhlIHNhbXBsZSBub25jZQ==AA", // 17 bytes and more
            "dGhlIHNhbXBsZSBub25j",       // 15 bytes
            "not base64 at all!!!!!!!",
            "",
            "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert_eq!(
                accept_key(&request(
                    Method::GET,
                    &with(&[v13, ("sec-websocket-key", bad)])
                )),
                Err(NotUpgrade::BadKey),
                "{bad:?}"
            );
        }
    }
}
