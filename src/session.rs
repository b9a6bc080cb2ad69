//! One WebSocket connection, from upgrade to teardown.
//!
//! Every connection has the same shape: one task reads frames and acts on
//! them, and, in the same `select!`, drains the connection's bounded outbox
//! (its [`PeerLink`]) into the socket, feeding a batch and flushing once
//! (`Writer`); teardown
//! is one `select!` over the reasons a connection ends. Errors are classified
//! by who caused them: a peer's bad message is answered and the socket stays
//! open; a transport error, a kick or a limit ends the connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
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
/// Frames handled per wake-up before the select looks at its other branches.
const READ_BATCH: usize = 32;
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
///
/// The returned future is most of what an idle connection costs, so it is
/// kept small: the socket is split and its writer spawned before the future
/// is made, and the future is assembled with combinators rather than an
/// `async` wrapper (which would keep its own copy of everything it moves into
/// the future it awaits).
pub fn run<R: Registry>(
    socket: WebSocket,
    shared: Shared<R>,
    remote: SocketAddr,
    attach: Option<(Role, String)>,
) -> impl Future<Output = ()> + Send + 'static {
    let span = info_span!(
        "conn",
        %remote,
        peer = tracing::field::Empty,
        room = tracing::field::Empty,
        role = tracing::field::Empty,
    );
    span.in_scope(|| debug!("connected"));
    shared.metrics.connection_opened();
    let metrics = shared.metrics.clone();
    let (link, outbox) = PeerLink::new(shared.config.outbox_capacity);
    let (sink, stream) = socket.split();
    let writer = Writer::new(sink, outbox);
    Session::new(shared, link)
        .run(stream, writer, attach)
        .map(move |end| {
            metrics.connection_closed();
            info!(reason = end.describe(), "disconnected");
        })
        .instrument(span)
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The peer closed the connection or it dropped.
    PeerClosed,
    /// The transport failed.
    Transport(String),
    /// The writer finished (a write failed, or it wrote a close frame queued
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
    link: PeerLink,
    member: Option<R::Member>,
    limiter: RateLimiter,
}

impl<R: Registry> Session<R> {
    fn new(shared: Shared<R>, link: PeerLink) -> Self {
        let limiter = RateLimiter::new(shared.config.rate_per_sec, shared.config.rate_burst);
        Session {
            shared,
            link,
            member: None,
            limiter,
        }
    }

    async fn run(
        mut self,
        mut stream: SplitStream<WebSocket>,
        mut writer: Writer,
        attach: Option<(Role, String)>,
    ) -> End {
        let config = Arc::clone(&self.shared.config);
        let shutdown = self.shared.shutdown.clone();

        if let Some((role, token)) = attach {
            // Boxed, like every entry: rare, and its future is large.
            Box::pin(self.enter(InitRequest::Attach(role, &token))).await;
        }

        let idle = tokio::time::sleep(config.idle_timeout);
        tokio::pin!(idle);
        let start = tokio::time::Instant::now() + config.ping_interval;
        let mut ping = tokio::time::interval_at(start, config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard_since_ping = true;
        let mut peer_closing = false;
        let link = self.link.clone();
        // Made once, not on every turn of the loop: each one registers with
        // a `Notify`, which costs a lock to enter and another to leave.
        let kicked = link.kicked();
        tokio::pin!(kicked);
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);

        let end = 'session: loop {
            tokio::select! {
                biased;
                _ = &mut kicked => break End::Kicked(link.kick_reason()),
                _ = &mut stopping => break End::Close(close::GOING_AWAY, "server shutting down"),
                () = std::future::poll_fn(|cx| writer.poll_write(cx)) => break End::WriterDone,
                frame = stream.next() => {
                    let mut frame = frame;
                    let mut budget = READ_BATCH;
                    // Frames that are already read are handled here, without
                    // a turn of the select each (bounded, to stay fair).
                    loop {
                        let message = match frame {
                            None => break 'session End::PeerClosed,
                            Some(Ok(message)) => message,
                            Some(Err(err)) => break 'session self.on_transport_error(err),
                        };
                        heard_since_ping = true;
                        match message {
                            Message::Text(text) => {
                                if let Some(end) = self.on_text(text).await {
                                    break 'session end;
                                }
                            }
                            Message::Binary(_) => match self.admit() {
                                Ok(true) => self.reply_error(&PeerError::new(
                                    ErrorCode::UnsupportedFrame,
                                    "binary frames are not supported: send JSON text",
                                )),
                                Ok(false) => {}
                                Err(end) => break 'session end,
                            },
                            // Keep reading after a close frame so the library
                            // can send its reply; the stream then ends.
                            Message::Close(_) => peer_closing = true,
                            Message::Ping(_) | Message::Pong(_) => {}
                        }
                        budget -= 1;
                        if budget == 0 {
                            break;
                        }
                        match next_if_ready(&mut stream).await {
                            Some(next) => frame = next,
                            None => break,
                        }
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
        // Otherwise the peer is gone or not reading: nothing more can reach
        // it, and what was queued is dropped with the writer.
        if let End::Close(code, reason) = &end {
            self.link.send(Outgoing::Close(*code, reason));
            drop(self.link);
            let close = std::future::poll_fn(|cx| writer.poll_write(cx));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
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
                Ok(request) => Box::pin(self.enter(request)).await,
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

/// The stream's next item if it is ready now; `None` if it is not (the task
/// is then woken when it is).
async fn next_if_ready<S: futures_util::Stream + Unpin>(stream: &mut S) -> Option<Option<S::Item>> {
    std::future::poll_fn(|cx| match stream.poll_next_unpin(cx) {
        std::task::Poll::Ready(item) => std::task::Poll::Ready(Some(item)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// The sending half of a connection, driven by the connection's own task (a
/// branch of its select): no second task per connection, and no wake-up of
/// one for each message.
struct Writer {
    sink: SplitSink<WebSocket, Message>,
    outbox: mpsc::Receiver<Outgoing>,
    /// Frames fed since the last completed flush.
    unflushed: bool,
    closing: Closing,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    No,
    /// A close frame is fed: flush it, then close the sink.
    Flush,
    Close,
}

impl Writer {
    fn new(sink: SplitSink<WebSocket, Message>, outbox: mpsc::Receiver<Outgoing>) -> Self {
        Writer {
            sink,
            outbox,
            unflushed: false,
            closing: Closing::No,
        }
    }

    /// Writes what the outbox holds, feeding up to [`WRITE_BATCH`] frames
    /// per flush. Pending while the connection is open (woken by the outbox
    /// or the socket); ready when no more can be written: a write failed,
    /// or the close frame was sent.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut fed = 0;
        loop {
            match self.closing {
                Closing::No => {}
                Closing::Flush => {
                    if ready!(self.sink.poll_flush_unpin(cx)).is_err() {
                        return Poll::Ready(());
                    }
                    self.closing = Closing::Close;
                    continue;
                }
                Closing::Close => {
                    let _ = ready!(self.sink.poll_close_unpin(cx));
                    return Poll::Ready(());
                }
            }
            if ready!(self.sink.poll_ready_unpin(cx)).is_err() {
                return Poll::Ready(());
            }
            let next = if fed < WRITE_BATCH {
                self.outbox.poll_recv(cx)
            } else {
                Poll::Pending
            };
            match next {
                Poll::Ready(Some(out)) => {
                    let frame = match out {
                        Outgoing::Text(text) => Message::Text(text),
                        Outgoing::Ping => Message::Ping(Default::default()),
                        Outgoing::Close(code, reason) => {
                            self.closing = Closing::Flush;
                            Message::Close(Some(CloseFrame {
                                code,
                                reason: Utf8Bytes::from_static(reason),
                            }))
                        }
                    };
                    if self.sink.start_send_unpin(frame).is_err() {
                        return Poll::Ready(());
                    }
                    self.unflushed = true;
                    fed += 1;
                    continue;
                }
                // Every link is gone (teardown): what was queued is written.
                Poll::Ready(None) => self.closing = Closing::Flush,
                Poll::Pending => {}
            }
            if self.unflushed {
                if ready!(self.sink.poll_flush_unpin(cx)).is_err() {
                    return Poll::Ready(());
                }
                self.unflushed = false;
            }
            if self.closing != Closing::No {
                continue;
            }
            if fed >= WRITE_BATCH {
                // A full batch is out; let the other branches run before the
                // next one.
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
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
    use crate::rooms::MemoryRegistry;

    /// The size of the future `run` returns, without making one.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(WebSocket, Shared<MemoryRegistry>, SocketAddr, Option<(Role, String)>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_connection_future_stays_small() {
        // Most of what an idle connection costs (docs/BENCHMARKS.md): it was
        // 3 KB before `run` was assembled from combinators.
        let size = future_size(run::<MemoryRegistry>);
        assert!(size <= 1536, "the per-connection future is {size} bytes");
    }

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
