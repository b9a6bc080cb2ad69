//! The reading half of a connection: a batch of messages already read,
//! handled without a turn of the session's `select!` each, within the rate
//! limits; and what a peer's messages, pings and read errors lead to.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

use super::rate::{Refused, Verdict};
use super::{close, Conn, End, Session, Socket};
use crate::metrics::{RateLimit, SenderClosed};
use crate::protocol::{self, ClientMessage, ErrorCode, PeerError, Role};
use crate::rooms::{Member, Registry};
use crate::ws::{Incoming, ReadError, Utf8Bytes};

/// Messages, and bytes of messages, handled in one turn before the task
/// yields to the others on its thread: a host relaying a burst of large
/// messages must let its viewers' tasks write them out before it reads on.
const READ_BATCH: usize = 32;
const READ_BATCH_BYTES: usize = 64 * 1024;

impl<R: Registry> Session<R> {
    /// Handles `read`, then the messages already read after it, up to a
    /// batch ([`READ_BATCH`] messages or [`READ_BATCH_BYTES`]); `Some` when
    /// the connection ends.
    pub(super) async fn read_batch<S: Socket>(
        &mut self,
        conn: &mut Conn<S>,
        mut read: Result<Incoming, ReadError>,
    ) -> Option<End> {
        self.now = Instant::now();
        let mut budget = READ_BATCH;
        let mut bytes = 0;
        loop {
            let message = match read {
                Ok(message) => message,
                Err(err) => return Some(self.on_read_error(err)),
            };
            self.heard = true;
            match message {
                Incoming::Text(text) => {
                    bytes += text.len();
                    if let Some(end) = self.on_text(text).await {
                        return Some(end);
                    }
                }
                Incoming::Binary => match self.admit(0) {
                    Ok(true) => self.reply_error(&PeerError::new(
                        ErrorCode::UnsupportedFrame,
                        "binary frames are not supported: send JSON text",
                    )),
                    Ok(false) => {}
                    Err(end) => return Some(end),
                },
                Incoming::Ping(payload) => match self.admit(payload.len()) {
                    Ok(true) => {
                        conn.out.writer.pong(payload);
                        conn.out.queued_control();
                    }
                    Ok(false) => {}
                    Err(end) => return Some(end),
                },
                Incoming::Pong => {}
                Incoming::Close(code) => {
                    // Answer with the peer's code (RFC 6455 §5.5.1); one it
                    // may not send is answered with 1002.
                    let code = match code {
                        None => close::NORMAL,
                        Some(c) if close::valid_from_peer(c) => c,
                        Some(_) => close::PROTOCOL,
                    };
                    return Some(End::PeerClosing(code));
                }
            }
            budget -= 1;
            if budget == 0 || bytes >= READ_BATCH_BYTES {
                tokio::task::yield_now().await;
                return None;
            }
            match poll_fn(|cx| Poll::Ready(conn.poll_read(cx))).await {
                Poll::Ready(next) => read = next,
                Poll::Pending => return None,
            }
        }
    }

    /// Counts a frame of `bytes` against the rate limits: `Ok(true)` to
    /// handle it, `Ok(false)` if it was dropped (the first drop of a run is
    /// answered with `rate_limited`), `Err` to end the connection. A host's
    /// bytes are not limited (its messages reach only its own room).
    fn admit(&mut self, bytes: usize) -> Result<bool, End> {
        let host = self.member.as_ref().is_some_and(|m| m.role() == Role::Host);
        let bytes = if host { 0 } else { bytes };
        match self
            .limiter
            .check_bytes(&self.shared.pressure.rates, self.now, bytes)
        {
            Verdict::Allow => Ok(true),
            Verdict::Drop { first, limit } => {
                self.shared.metrics.rate_limited(limit);
                if !first {
                    self.shared.metrics.error(ErrorCode::RateLimited);
                    return Ok(false);
                }
                let config = &self.shared.config;
                let message = match limit {
                    RateLimit::Messages => format!(
                        "too many messages (limit {} per second, burst {}); messages are being dropped",
                        config.rate_per_sec, config.rate_burst
                    ),
                    RateLimit::Bytes => format!(
                        "too many bytes (limit {} per second, burst {}); messages are being dropped",
                        config.rate_bytes_per_sec,
                        config.rate_bytes_burst.max(config.max_message_size)
                    ),
                };
                self.reply_error(&PeerError::new(ErrorCode::RateLimited, message));
                Ok(false)
            }
            Verdict::Close => {
                self.shared.metrics.sender_closed(SenderClosed::RateLimit);
                Err(End::Close(close::POLICY, "rate limit exceeded"))
            }
        }
    }

    /// A message the host's queue refused (`host_busy`): the first of a run
    /// is answered, and a sender that goes on is closed 1008.
    fn refused(&mut self, err: &PeerError) -> Option<End> {
        let limit = self.shared.config.host_busy_limit;
        match self.limiter.refuse(limit) {
            Refused::First => self.reply_error(err),
            Refused::Again => self.shared.metrics.error(err.code),
            Refused::Close => {
                self.shared.metrics.sender_closed(SenderClosed::HostBusy);
                return Some(End::Close(
                    close::POLICY,
                    "host busy: too many refused messages",
                ));
            }
        }
        None
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Option<End> {
        match self.admit(text.len()) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(end) => return Some(end),
        }
        let message = match protocol::parse(text.as_str()) {
            Ok(message) => message,
            Err(err) => {
                self.reply_error(&err);
                return None;
            }
        };
        if let ClientMessage::Init(init) = &message {
            if self.shared.auth.is_token_mode() {
                Box::pin(self.enter_init_signed(init)).await;
                return None;
            }
            match init.request() {
                Ok(request) => {
                    Box::pin(self.enter(request, None)).await;
                }
                Err(err) => self.reply_error(&err),
            }
            return None;
        }
        if let ClientMessage::IceServers = message {
            self.send_ice_servers();
            return None;
        }
        if let ClientMessage::CloseRoom = message {
            Box::pin(self.close_room()).await;
            return None;
        }
        if let Err(err) = self.relay(&message, &text).await {
            if err.code == ErrorCode::HostBusy {
                return self.refused(&err);
            }
            self.reply_error(&err);
        }
        None
    }

    fn on_read_error(&mut self, err: ReadError) -> End {
        match err {
            ReadError::Eof => End::PeerClosed,
            ReadError::Io(e) => End::Transport(e.to_string()),
            ReadError::TooBig { size, max } => {
                self.reply_error(&PeerError::new(
                    ErrorCode::TooLarge,
                    format!("message of {size} bytes is over the limit of {max} bytes"),
                ));
                End::Close(close::TOO_BIG, "message too big")
            }
            ReadError::Protocol(why) => End::Close(close::PROTOCOL, why),
            ReadError::InvalidUtf8 => End::Close(close::INVALID_DATA, "text is not UTF-8"),
        }
    }
}
