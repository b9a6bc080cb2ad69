//! One WebSocket connection, from upgrade to teardown.
//!
//! Every connection has the same shape: this task reads frames and acts on
//! them; a writer task drains the connection's bounded outbox (its
//! [`PeerLink`]) into the socket, feeding a batch and flushing once; teardown
//! is one `select!` over the reasons a connection ends. Errors are classified
//! by who caused them: a peer's bad message is answered and the socket stays
//! open; a transport error, a kick or a limit ends the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{
    self, ClientMessage, ErrorCode, InitReply, InitRequest, PeerError, Role, ServerMessage,
};
use crate::rooms::{Kick, Member, Outgoing, PeerLink, Registry, Welcome};

/// Messages written per flush: bounds the time the writer spends before
/// pushing bytes out, while batching bursts into few system calls.
const WRITE_BATCH: usize = 64;
/// How long teardown waits for a close frame to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// WebSocket close codes the server uses.
pub mod close {
    /// Normal closure (the room ended).
    pub const NORMAL: u16 = 1000;
    /// Going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation (idle, ping timeout, persistent flooding).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Protocol error at the WebSocket layer.
    pub const PROTOCOL: u16 = 1002;
}

/// What every session shares.
pub struct Shared<R> {
    /// The room registry.
    pub registry: R,
    /// Limits and timeouts.
    pub config: Arc<Config>,
    /// Counters.
    pub metrics: Metrics,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl<R: Clone> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared {
            registry: self.registry.clone(),
            config: Arc::clone(&self.config),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// Runs one connection to its end. `attach` is a query-string token
/// (`?join=` / `?watch=`) to enter with before reading anything.
pub async fn run<R: Registry>(
    socket: WebSocket,
    shared: Shared<R>,
    remote: SocketAddr,
    attach: Option<(Role, String)>,
) {
    let span = info_span!(
        "conn",
        %remote,
        peer = tracing::field::Empty,
        room = tracing::field::Empty,
        role = tracing::field::Empty,
    );
    async move {
        debug!("connected");
        shared.metrics.connection_opened();
        let end = Session::new(socket, shared.clone()).run(attach).await;
        shared.metrics.connection_closed();
        info!(reason = end.describe(), "disconnected");
    }
    .instrument(span)
    .await
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The peer closed the connection or it dropped.
    PeerClosed,
    /// The transport failed.
    Transport(String),
    /// The writer task ended (a write failed, or it wrote a close frame queued
    /// by the registry).
    WriterDone,
    /// The registry cut the peer off.
    Kicked(Option<Kick>),
    /// The server closes the connection with this code.
    Close(u16, &'static str),
}

impl End {
    fn describe(&self) -> String {
        match self {
            End::PeerClosed => "closed by peer".into(),
            End::Transport(e) => format!("transport error: {e}"),
            End::WriterDone => "writer finished".into(),
            End::Kicked(Some(Kick::SlowConsumer)) => "dropped: not reading (outbox full)".into(),
            End::Kicked(Some(Kick::Replaced)) => "replaced by a resumed host".into(),
            End::Kicked(None) => "kicked".into(),
            End::Close(code, reason) => format!("closed by server: {code} {reason}"),
        }
    }
}

struct Session<R: Registry> {
    shared: Shared<R>,
    socket: Option<WebSocket>,
    link: PeerLink,
    outbox: Option<mpsc::Receiver<Outgoing>>,
    member: Option<R::Member>,
    limiter: RateLimiter,
}

impl<R: Registry> Session<R> {
    fn new(socket: WebSocket, shared: Shared<R>) -> Self {
        let (link, outbox) = PeerLink::new(shared.config.outbox_capacity);
        let limiter = RateLimiter::new(shared.config.rate_per_sec, shared.config.rate_burst);
        Session {
            shared,
            socket: Some(socket),
            link,
            outbox: Some(outbox),
            member: None,
            limiter,
        }
    }

    async fn run(mut self, attach: Option<(Role, String)>) -> End {
        let (Some(socket), Some(outbox)) = (self.socket.take(), self.outbox.take()) else {
            return End::WriterDone;
        };
        let (sink, mut stream) = socket.split();
        let mut writer = tokio::spawn(write_loop(sink, outbox));
        let config = Arc::clone(&self.shared.config);
        let shutdown = self.shared.shutdown.clone();

        if let Some((role, token)) = attach {
            self.enter(InitRequest::Attach(role, &token)).await;
        }

        let idle = tokio::time::sleep(config.idle_timeout);
        tokio::pin!(idle);
        let start = tokio::time::Instant::now() + config.ping_interval;
        let mut ping = tokio::time::interval_at(start, config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard_since_ping = true;
        let mut peer_closing = false;
        let link = self.link.clone();

        let end = loop {
            tokio::select! {
                biased;
                _ = link.kicked() => break End::Kicked(link.kick_reason()),
                _ = shutdown.cancelled() => break End::Close(close::GOING_AWAY, "server shutting down"),
                _ = &mut writer => break End::WriterDone,
                frame = stream.next() => {
                    let message = match frame {
                        None => break End::PeerClosed,
                        Some(Ok(message)) => message,
                        Some(Err(err)) => break self.on_transport_error(err),
                    };
                    heard_since_ping = true;
                    match message {
                        Message::Text(text) => {
                            if let Some(end) = self.on_text(text).await {
                                break end;
                            }
                        }
                        Message::Binary(_) => match self.admit() {
                            Ok(true) => self.reply_error(&PeerError::new(
                                ErrorCode::UnsupportedFrame,
                                "binary frames are not supported: send JSON text",
                            )),
                            Ok(false) => {}
                            Err(end) => break end,
                        },
                        // Keep reading after a close frame so the library can
                        // send its reply; the stream then ends.
                        Message::Close(_) => peer_closing = true,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                _ = ping.tick(), if !peer_closing => {
                    if !heard_since_ping {
                        break End::Close(close::POLICY, "ping timeout");
                    }
                    heard_since_ping = false;
                    self.link.send(Outgoing::Ping);
                }
                _ = &mut idle, if self.member.is_none() => {
                    break End::Close(close::POLICY, "not in a room");
                }
            }
        };

        if let Some(member) = self.member.take() {
            member.leave().await;
        }
        match &end {
            End::Close(code, reason) => {
                self.link.send(Outgoing::Close(*code, reason));
                drop(self.link);
                if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
                    .await
                    .is_err()
                {
                    writer.abort();
                }
            }
            // The peer is gone or not reading: nothing more can reach it.
            _ => writer.abort(),
        }
        end
    }

    /// Counts a data frame against the rate limit: `Ok(true)` to handle it,
    /// `Ok(false)` if it was dropped (the first drop of a run is answered with
    /// `rate_limited`), `Err` to end the connection.
    fn admit(&mut self) -> Result<bool, End> {
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => Ok(true),
            Verdict::Drop { first: true } => {
                self.reply_error(&PeerError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many messages (limit {} per second, burst {}); messages are being dropped",
                        self.shared.config.rate_per_sec, self.shared.config.rate_burst
                    ),
                ));
                Ok(false)
            }
            Verdict::Drop { first: false } => {
                self.shared.metrics.error(ErrorCode::RateLimited);
                Ok(false)
            }
            Verdict::Close => Err(End::Close(close::POLICY, "rate limit exceeded")),
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Option<End> {
        match self.admit() {
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
            match init.request() {
                Ok(request) => self.enter(request).await,
                Err(err) => self.reply_error(&err),
            }
            return None;
        }
        if let Err(err) = self.relay(&message, &text).await {
            self.reply_error(&err);
        }
        None
    }

    async fn enter(&mut self, request: InitRequest<'_>) {
        if self.member.is_some() {
            self.reply_error(&PeerError::new(
                ErrorCode::AlreadyInRoom,
                "this connection is already in a room; open another to enter a second one",
            ));
            return;
        }
        if let InitRequest::Attach(_, t) | InitRequest::Resume(t) = request {
            if !crate::token::is_token_shaped(t) {
                self.reply_error(&PeerError::new(
                    ErrorCode::RoomNotFound,
                    "no open room has this token (it is wrong, or the room has closed)",
                ));
                return;
            }
        }
        let ice_servers = &self.shared.config.ice_servers;
        let welcome = |w: &Welcome| {
            ServerMessage::Init(InitReply {
                join: w.join.as_deref(),
                watch: w.watch.as_deref(),
                resume: w.resume.as_deref(),
                peer: &w.peer,
                role: w.role,
                ice_servers,
            })
            .to_json()
        };
        match self
            .shared
            .registry
            .enter(request, self.link.clone(), welcome)
            .await
        {
            Ok(member) => {
                let span = tracing::Span::current();
                span.record("peer", member.peer_id());
                span.record("room", member.room());
                span.record("role", member.role().as_str());
                let how = match request {
                    InitRequest::Create => "created room",
                    InitRequest::Attach(..) => "attached",
                    InitRequest::Resume(_) => "resumed room",
                };
                info!("{how}");
                self.member = Some(member);
            }
            Err(err) => self.reply_error(&err),
        }
    }

    async fn relay(
        &mut self,
        message: &ClientMessage<'_>,
        text: &Utf8Bytes,
    ) -> Result<(), PeerError> {
        let Some(member) = &self.member else {
            return Err(PeerError::new(
                ErrorCode::NotInRoom,
                "send {\"type\":\"init\"} to create or enter a room first",
            ));
        };
        let Some(relay) = message.relay() else {
            return Ok(());
        };
        let role = member.role();
        if role == Role::Watch && relay.writes_into_receiver {
            return Err(PeerError::new(
                ErrorCode::Forbidden,
                "a watcher may not send expect_* actions",
            ));
        }
        let out = if role == Role::Host {
            if relay.has_from || relay.misspelt_candidate {
                Utf8Bytes::from(protocol::with_from(text.as_str(), None, &relay))
            } else {
                text.clone()
            }
        } else {
            Utf8Bytes::from(protocol::with_from(
                text.as_str(),
                Some(member.peer_id()),
                &relay,
            ))
        };
        let to = if role == Role::Host { relay.to } else { None };
        member.relay(relay.kind, to, out).await
    }

    fn on_transport_error(&mut self, err: axum::Error) -> End {
        use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
        let text = err.to_string();
        match err.into_inner().downcast::<WsError>() {
            Ok(ws) => match *ws {
                WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                    self.reply_error(&PeerError::new(
                        ErrorCode::TooLarge,
                        format!("message of {size} bytes is over the limit of {max_size} bytes"),
                    ));
                    End::Close(close::TOO_BIG, "message too big")
                }
                WsError::Capacity(_) => End::Close(close::TOO_BIG, "frame too big"),
                WsError::Protocol(_) | WsError::Utf8(_) => {
                    End::Close(close::PROTOCOL, "websocket protocol error")
                }
                WsError::ConnectionClosed | WsError::AlreadyClosed => End::PeerClosed,
                other => End::Transport(other.to_string()),
            },
            Err(_) => End::Transport(text),
        }
    }

    fn reply_error(&self, err: &PeerError) {
        self.shared.metrics.error(err.code);
        debug!(code = %err.code, "error reply: {}", err.message);
        self.link.send_text(protocol::error_json(err));
    }
}

async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut outbox: mpsc::Receiver<Outgoing>) {
    while let Some(first) = outbox.recv().await {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            let frame = match out {
                Outgoing::Text(text) => Message::Text(text),
                Outgoing::Ping => Message::Ping(Default::default()),
                Outgoing::Close(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.close().await;
                    return;
                }
            };
            if sink.feed(frame).await.is_err() {
                return;
            }
            written += 1;
            if written < WRITE_BATCH {
                next = outbox.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// What the rate limiter says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: drop it. `first` marks the first drop of a run, the one
    /// that gets an error reply.
    Drop {
        /// First drop since the last allowed message.
        first: bool,
    },
    /// Over the limit for too long: close the connection.
    Close,
}

/// A token bucket: `burst` messages at once, refilled at `rate` per second.
/// More than a second's worth of messages (`rate`, at least 10) dropped in a
/// row means the peer ignores `rate_limited`, and the connection is closed.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    dropped_in_a_row: u32,
    max_drops: u32,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: None,
            dropped_in_a_row: 0,
            max_drops: rate_per_sec.max(10),
        }
    }

    /// Takes one token if there is one.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.dropped_in_a_row = 0;
            return Verdict::Allow;
        }
        self.dropped_in_a_row += 1;
        if self.dropped_in_a_row > self.max_drops {
            Verdict::Close
        } else {
            Verdict::Drop {
                first: self.dropped_in_a_row == 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_drops_then_closes() {
        let mut rl = RateLimiter::new(100, 500);
        let t = Instant::now();
        for _ in 0..500 {
            assert_eq!(rl.check(t), Verdict::Allow);
        }
        assert_eq!(rl.check(t), Verdict::Drop { first: true });
        for _ in 1..100 {
            assert_eq!(rl.check(t), Verdict::Drop { first: false });
        }
        assert_eq!(rl.check(t), Verdict::Close);
    }

    #[test]
    fn the_bucket_refills_at_the_sustained_rate() {
        let mut rl = RateLimiter::new(100, 500);
        let mut t = Instant::now();
        for _ in 0..500 {
            rl.check(t);
        }
        // 100 per second sustained: one message every 10 ms always passes.
        for _ in 0..1000 {
            t += Duration::from_millis(10);
            assert_eq!(rl.check(t), Verdict::Allow);
        }
        // After a drop, an allowed message resets the run.
        assert_eq!(rl.check(t), Verdict::Drop { first: true });
        t += Duration::from_millis(10);
        assert_eq!(rl.check(t), Verdict::Allow);
        assert_eq!(rl.check(t), Verdict::Drop { first: true });
    }
}
