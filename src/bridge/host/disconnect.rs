//! Why a connection to the server ended.

use std::fmt;
use std::time::Duration;

use crate::protocol::ErrorCode;

/// Why a connection to the server ended (the bridge then reconnects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The connection closed without a close frame.
    Closed,
    /// Reading failed.
    Transport(String),
    /// The server closed the connection.
    ClosedByServer {
        /// The close code, if the frame had one.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
    /// Writing failed.
    WriteFailed,
    /// The server did not answer `init` within the connect timeout.
    NoInitReply(Duration),
    /// Nothing came from the server for three keepalive intervals.
    Silent(Duration),
    /// The server did not read what the bridge sent (its outbox is full).
    Stuck,
    /// The server answered `init` with an error.
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server made the bridge something else than the room's host.
    NotHost,
    /// The server's answer to `init` cannot be read.
    BadInitReply(String),
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::Closed => f.write_str("connection closed"),
            Disconnect::Transport(e) => f.write_str(e),
            Disconnect::ClosedByServer { code: None, .. } => f.write_str("closed by the server"),
            Disconnect::ClosedByServer {
                code: Some(code),
                reason,
            } => write!(f, "closed by the server ({code} {reason})"),
            Disconnect::WriteFailed => f.write_str("writing to the server failed"),
            Disconnect::NoInitReply(t) => write!(f, "no init reply within {t:?}"),
            Disconnect::Silent(t) => write!(f, "nothing heard from the server for {t:?}"),
            Disconnect::Stuck => f.write_str("the server is not reading (outbox full)"),
            Disconnect::Refused { code, message } => {
                write!(
                    f,
                    "the server refused the bridge's init: {code} ({message})"
                )
            }
            Disconnect::NotHost => f.write_str("the server did not make the bridge a host"),
            Disconnect::BadInitReply(e) => write!(f, "unexpected init reply: {e}"),
        }
    }
}
