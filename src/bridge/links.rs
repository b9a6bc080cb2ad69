//! The links a robot owner shares: the viewer page with the room's `watch`
//! or `join` token.

use super::error::{BridgeError, UrlError};
use super::websocket::{check_url, parse_url};
use serde::Serialize;

/// The links of the bridge's room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomLinks {
    /// The page link for viewers (receive only).
    pub watch_url: String,
    /// The page link for full peers.
    pub join_url: String,
    /// The watch token.
    pub watch: String,
    /// The join token.
    pub join: String,
    /// Whether this is the room the bridge had before (same links).
    pub resumed: bool,
    /// With `--token` (the server in token mode): the room's name. The
    /// links and tokens are then empty: viewers need a watch token for the
    /// name (`signal-server token create --room NAME --grant watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// Builds the page links of a room.
#[derive(Debug, Clone)]
pub struct Links {
    base: String,
    server_param: Option<String>,
}

impl Links {
    /// Links to `page_url` (which then also names the server), or by default
    /// to the page the server at `server` serves.
    pub fn new(server: &str, page_url: Option<&str>) -> Result<Self, BridgeError> {
        let Some(page) = page_url else {
            return Ok(Links {
                base: page_base(server)?,
                server_param: None,
            });
        };
        let uri = parse_url("--page-url", page)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(BridgeError::bad_url(
                "--page-url",
                page,
                UrlError::Scheme("http:// or https://"),
            ));
        }
        Ok(Links {
            base: page.to_string(),
            server_param: Some(percent_encode(server)),
        })
    }

    /// The page link giving `token` as `kind` (`watch` or `join`).
    pub fn link(&self, kind: &str, token: &str) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        let mut out = format!("{}{sep}{kind}={token}", self.base);
        if let Some(server) = &self.server_param {
            out.push_str("&server=");
            out.push_str(server);
        }
        out
    }

    /// The links of a room with these tokens.
    pub fn room(&self, join: &str, watch: &str, resumed: bool) -> RoomLinks {
        RoomLinks {
            watch_url: self.link("watch", watch),
            join_url: self.link("join", join),
            watch: watch.to_string(),
            join: join.to_string(),
            resumed,
            room: None,
        }
    }

    /// A named room's (token mode): no links of the bridge's making.
    pub fn named(&self, room: &str, resumed: bool) -> RoomLinks {
        RoomLinks {
            watch_url: String::new(),
            join_url: String::new(),
            watch: String::new(),
            join: String::new(),
            resumed,
            room: Some(room.to_string()),
        }
    }
}

/// The page the server serves, from its WebSocket URL: `wss://host/webrtc`
/// gives `https://host/`, `ws://host:8080/signal/webrtc` gives
/// `http://host:8080/signal/`.
fn page_base(server: &str) -> Result<String, BridgeError> {
    let uri = check_url("--server", server)?;
    let scheme = if uri.scheme_str() == Some("wss") {
        "https"
    } else {
        "http"
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    // No credentials in a link meant for sharing.
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let path = uri.path();
    let path = path.strip_suffix("webrtc").unwrap_or(path);
    let path = if path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    };
    Ok(format!("{scheme}://{authority}{path}"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_come_from_the_server_url() {
        assert_eq!(
            page_base("wss://signal.example.com/webrtc").unwrap(),
            "https://signal.example.com/"
        );
        assert_eq!(
            page_base("wss://signal.example.com").unwrap(),
            "https://signal.example.com/"
        );
        assert_eq!(
            page_base("wss://signal.example.com/").unwrap(),
            "https://signal.example.com/"
        );
        assert_eq!(
            page_base("ws://127.0.0.1:9099/webrtc").unwrap(),
            "http://127.0.0.1:9099/"
        );
        assert_eq!(
            page_base("ws://robots.example:8080/signal/webrtc").unwrap(),
            "http://robots.example:8080/signal/"
        );
        assert_eq!(
            page_base("wss://user:pw@signal.example.com/webrtc").unwrap(),
            "https://signal.example.com/"
        );
        assert!(page_base("https://signal.example.com/").is_err());
        assert!(page_base("signal.example.com").is_err());
        let links = Links::new("wss://signal.example.com/webrtc", None).unwrap();
        let room = links.room("54ICxFae_Ip7TJE2", "634w44TblL5Dbd9a", false);
        assert_eq!(
            room.watch_url,
            "https://signal.example.com/?watch=634w44TblL5Dbd9a"
        );
        assert_eq!(
            room.join_url,
            "https://signal.example.com/?join=54ICxFae_Ip7TJE2"
        );
    }

    #[test]
    fn a_page_url_carries_the_server() {
        let links = Links::new(
            "wss://signal.example.com/webrtc",
            Some("https://robots.example.org/view.html"),
        )
        .unwrap();
        assert_eq!(
            links.link("watch", "634w44TblL5Dbd9a"),
            "https://robots.example.org/view.html?watch=634w44TblL5Dbd9a&server=wss%3A%2F%2Fsignal.example.com%2Fwebrtc"
        );
        let err = Links::new("wss://s.example/webrtc", Some("ftp://x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bridge: --page-url must start with http:// or https://, not \"ftp://x\""
        );
    }
}
