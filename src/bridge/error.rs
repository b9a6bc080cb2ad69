//! Why the bridge cannot run: its options make no sense, or another host
//! took its room over. Everything else (a server or robot that cannot be
//! reached) is retried, never an error.

use std::fmt;
use std::path::PathBuf;

/// Why the bridge could not start.
#[derive(Debug)]
pub enum BridgeError {
    /// A URL option (`--server`, `--robot`, `--page-url`) is not a URL of
    /// the kind it must be.
    BadUrl {
        /// The option, e.g. `--server`.
        option: &'static str,
        /// The value given.
        url: String,
        /// What is wrong with it.
        why: UrlError,
    },
    /// An `--allow-src` pattern is not a valid glob.
    BadPattern(globset::Error),
    /// The directory of `--state-file` does not exist.
    NoStateDir(PathBuf),
    /// TLS could not be set up.
    Tls(rustls::Error),
    /// `--ice-endpoint` cannot be served at this address.
    IceEndpoint {
        /// The address given.
        addr: std::net::SocketAddr,
        /// Why not.
        why: String,
    },
    /// Another host (a second bridge on the same state file, say) took the
    /// room over: the server closed this one with 4000. The bridge stops
    /// rather than fight for the room.
    Replaced {
        /// The close reason the server gave.
        reason: String,
    },
    /// `--ca-file` cannot be read or holds no usable certificate.
    CaFile {
        /// The file given.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// The `--robot` URL answers like a signal-server, not webrtc_ros.
    RobotIsSignalServer {
        /// The URL given.
        url: String,
        /// What gave it away.
        evidence: &'static str,
    },
}

/// What is wrong with a URL option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// It does not parse as a URL.
    Unparsable(String),
    /// Its scheme is not one of these (for humans: `ws:// or wss://`).
    Scheme(&'static str),
    /// It names no host.
    NoHost,
}

impl BridgeError {
    /// `url`, given as `option`, is wrong: `why`.
    pub(super) fn bad_url(option: &'static str, url: &str, why: UrlError) -> Self {
        BridgeError::BadUrl {
            option,
            url: url.to_string(),
            why,
        }
    }
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bridge: ")?;
        match self {
            BridgeError::BadUrl { option, url, why } => match why {
                UrlError::Unparsable(e) => write!(f, "{option} {url:?} is not a URL: {e}"),
                UrlError::Scheme(schemes) => {
                    write!(f, "{option} must start with {schemes}, not {url:?}")
                }
                UrlError::NoHost => write!(f, "{option} {url:?} has no host"),
            },
            BridgeError::BadPattern(e) => write!(f, "--allow-src: {e}"),
            BridgeError::NoStateDir(path) => write!(
                f,
                "--state-file {}: its directory does not exist",
                path.display()
            ),
            BridgeError::Tls(e) => write!(f, "TLS setup failed: {e}"),
            BridgeError::IceEndpoint { addr, why } => write!(f, "--ice-endpoint {addr}: {why}"),
            BridgeError::Replaced { reason } => write!(
                f,
                "another host took this room over (server: 4000 {reason:?}): is a second \
                 bridge running with the same --state-file? Stopping this one rather than \
                 fighting for the room"
            ),
            BridgeError::CaFile { path, why } => write!(f, "--ca-file {}: {why}", path.display()),
            BridgeError::RobotIsSignalServer { url, evidence } => write!(
                f,
                "--robot {url} answers like a signal-server ({evidence}), not like webrtc_ros: \
                 the server's default port 9090 is also webrtc_ros's. With both on one machine, \
                 run the server on another port (signal-server --bind 0.0.0.0:8080, or PORT=8080) \
                 and give the bridge --server ws://127.0.0.1:8080/webrtc, or point --robot at \
                 webrtc_ros's own port"
            ),
        }
    }
}

impl std::error::Error for BridgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BridgeError::BadPattern(e) => Some(e),
            BridgeError::Tls(e) => Some(e),
            _ => None,
        }
    }
}
