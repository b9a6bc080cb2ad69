//! One WebSocket connection, from upgrade to teardown.
//!
//! Every connection has the same shape: one task reads frames and acts on
//! them, and, in the same `select!`, drains the connection's bounded outbox
//! (its [`PeerLink`]) into the socket, encoding a batch and writing it with
//! one system call ([`Outbound`]); teardown is one `select!` over the reasons
//! a connection ends. Errors are classified by who caused them: a peer's bad
//! message is answered and the socket stays open; a transport error, a kick
//! or a limit ends the connection.
//!
//! Frames are read and written by [`crate::ws`], which holds buffers only
//! while they have bytes in them: an idle connection costs its task, its
//! outbox and its socket, nothing more.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{
    self, ClientMessage, ErrorCode, InitReply, InitRequest, PeerError, Role, ServerMessage,
};
use crate::rooms::{Kick, Member, Outgoing, PeerLink, Registry, Welcome};
use crate::ws::{self, close, Incoming, ReadError, Utf8Bytes};

/// Messages encoded per write: bounds the time the writer spends before
/// pushing bytes out, while batching bursts into few system calls.
const WRITE_BATCH: usize = 64;
/// Encoded bytes above which the writer stops taking messages from the
/// outbox until the socket has taken what it has: what a peer that does not
/// read can cost beyond its outbox.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Messages, and bytes of messages, handled in one turn before the task
/// yields to the others on its thread: a host relaying a burst of large
/// messages must let its viewers' tasks write them out before it reads on.
const READ_BATCH: usize = 32;
const READ_BATCH_BYTES: usize = 64 * 1024;
/// How long teardown waits for a close frame to be written and answered.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Per-client limits (room creations and attaches per minute).
    pub clients: crate::clients::Clients,
}

impl<R: Clone> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared {
            registry: self.registry.clone(),
            config: Arc::clone(&self.config),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            clients: self.clients.clone(),
        }
    }
}

/// Runs one connection to its end, on the upgraded connection `socket`. `attach` is a
/// query-string token (`?join=` / `?watch=`) to enter with before reading
/// anything.
///
/// The returned future is most of what an idle connection costs, so it is
/// kept small: it is assembled with combinators rather than an `async`
/// wrapper (which would keep its own copy of everything it moves into the
/// future it awaits).
pub fn run<R: Registry, S: Socket>(
    socket: S,
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
    let conn = Conn {
        reader: ws::Reader::new(shared.config.max_message_size),
        out: Outbound::new(outbox),
        io: socket,
    };
    Session::new(shared, link, remote.ip())
        .run(conn, attach)
        .map(move |end| {
            metrics.connection_closed();
            info!(reason = end.describe(), "disconnected");
        })
        .instrument(span)
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The connection dropped without a close frame.
    PeerClosed,
    /// The peer sent a close frame (answered with this code).
    PeerClosing(u16),
    /// The transport failed.
    Transport(String),
    /// The writer finished: a write failed, or it wrote a close frame queued
    /// by the registry.
    WriterDone,
    /// The registry cut the peer off.
    Kicked(Option<Kick>),
    /// The server closes the connection with this code.
    Close(u16, &'static str),
}

impl End {
    fn describe(&self) -> String {
        match self {
            End::PeerClosed => "connection dropped by peer".into(),
            End::PeerClosing(code) => format!("closed by peer ({code})"),
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
    /// When the batch of messages being handled was read (one clock read
    /// per batch, not per message, for the rate limiter).
    now: Instant,
    /// The client's address (what its per-client limits count under).
    client: std::net::IpAddr,
}

impl<R: Registry> Session<R> {
    fn new(shared: Shared<R>, link: PeerLink, client: std::net::IpAddr) -> Self {
        let limiter = RateLimiter::new(shared.config.rate_per_sec, shared.config.rate_burst);
        Session {
            shared,
            link,
            member: None,
            limiter,
            now: Instant::now(),
            client,
        }
    }

    async fn run<S: Socket>(mut self, mut conn: Conn<S>, attach: Option<(Role, String)>) -> End {
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
                event = poll_fn(|cx| conn.poll_event(cx)) => {
                    let Event::Read(mut read) = event else {
                        break End::WriterDone;
                    };
                    self.now = Instant::now();
                    let mut budget = READ_BATCH;
                    let mut bytes = 0;
                    // Messages that are already read are handled here,
                    // without a turn of the select each (bounded, to stay
                    // fair).
                    loop {
                        let message = match read {
                            Ok(message) => message,
                            Err(err) => break 'session self.on_read_error(err),
                        };
                        heard_since_ping = true;
                        match message {
                            Incoming::Text(text) => {
                                bytes += text.len();
                                if let Some(end) = self.on_text(text).await {
                                    break 'session end;
                                }
                            }
                            Incoming::Binary => match self.admit() {
                                Ok(true) => self.reply_error(&PeerError::new(
                                    ErrorCode::UnsupportedFrame,
                                    "binary frames are not supported: send JSON text",
                                )),
                                Ok(false) => {}
                                Err(end) => break 'session end,
                            },
                            Incoming::Ping(payload) => match self.admit() {
                                Ok(true) => conn.out.writer.pong(payload),
                                Ok(false) => {}
                                Err(end) => break 'session end,
                            },
                            Incoming::Pong => {}
                            Incoming::Close(code) => {
                                // Answer with the peer's code (RFC 6455 §5.5.1);
                                // one it may not send is answered with 1002.
                                let code = match code {
                                    None => close::NORMAL,
                                    Some(c) if close::valid_from_peer(c) => c,
                                    Some(_) => close::PROTOCOL,
                                };
                                break 'session End::PeerClosing(code);
                            }
                        }
                        budget -= 1;
                        if budget == 0 || bytes >= READ_BATCH_BYTES {
                            tokio::task::yield_now().await;
                            break;
                        }
                        match poll_fn(|cx| Poll::Ready(conn.poll_read(cx))).await {
                            Poll::Ready(next) => read = next,
                            Poll::Pending => break,
                        }
                    }
                }
                _ = ping.tick() => {
                    if !heard_since_ping {
                        break End::Close(close::POLICY, "ping timeout");
                    }
                    heard_since_ping = false;
                    conn.out.writer.ping();
                }
                _ = &mut idle, if self.member.is_none() => {
                    break End::Close(close::POLICY, "not in a room");
                }
            }
        };

        if let Some(member) = self.member.take() {
            member.leave().await;
        }
        // A close frame to send: after what is queued, then wait (briefly)
        // for the peer to answer or hang up, so that the socket is not reset
        // with the peer's last frames unread. Otherwise the peer is gone or
        // not reading: nothing more can reach it, and what was queued is
        // dropped.
        let close = match &end {
            End::Close(code, reason) => Some((*code, *reason)),
            End::PeerClosing(code) => Some((*code, "")),
            End::WriterDone if conn.out.sent_close => None,
            _ => return end,
        };
        drop(self.link);
        // Boxed: rare, and it would otherwise add its size to every idle
        // connection's future.
        let answered = !matches!(end, End::PeerClosing(_)) && !conn.reader.peer_closed();
        Box::pin(close_politely(close, conn, answered)).await;
        end
    }

    /// Counts a frame against the rate limit: `Ok(true)` to handle it,
    /// `Ok(false)` if it was dropped (the first drop of a run is answered with
    /// `rate_limited`), `Err` to end the connection.
    fn admit(&mut self) -> Result<bool, End> {
        match self.limiter.check(self.now) {
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
        if let ClientMessage::IceServers = message {
            self.send_ice_servers();
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
        let open_rooms = usize::try_from(self.shared.metrics.rooms()).unwrap_or(0);
        if let Err(err) = self
            .shared
            .clients
            .admit_init(self.client, &request, open_rooms)
        {
            self.reply_error(&err);
            return;
        }
        let config = &self.shared.config;
        let welcome = |w: &Welcome| {
            let ice = config.ice_servers_for(&w.room, &w.peer);
            ServerMessage::Init(InitReply {
                join: w.join.as_deref().map(Into::into),
                watch: w.watch.as_deref().map(Into::into),
                resume: w.resume.as_deref().map(Into::into),
                peer: w.peer.as_str().into(),
                role: w.role,
                ice_servers: ice.ice_servers,
                ice_servers_ttl: ice.ice_servers_ttl,
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

    /// Answers `{"type":"ice_servers"}`: fresh TURN credentials for a peer
    /// in a room (the label needs its room and peer id).
    fn send_ice_servers(&self) {
        let Some(member) = &self.member else {
            return self.reply_error(&PeerError::new(
                ErrorCode::NotInRoom,
                "send {\"type\":\"init\"} to create or enter a room first",
            ));
        };
        let ice = self
            .shared
            .config
            .ice_servers_for(member.room(), member.peer_id());
        self.link
            .send_text(ServerMessage::IceServers(ice).to_json());
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

    fn reply_error(&self, err: &PeerError) {
        self.shared.metrics.error(err.code);
        debug!(code = %err.code, "error reply: {}", err.message);
        self.link.send_text(protocol::error_json(err));
    }
}

/// Writes what is queued and the close frame, shuts the socket's sending
/// side, then (unless the peer closed first) reads until the peer answers or
/// hangs up: at most [`CLOSE_TIMEOUT`] in all.
async fn close_politely<S: Socket>(
    close: Option<(u16, &'static str)>,
    mut conn: Conn<S>,
    wait_for_answer: bool,
) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if let Some((code, reason)) = close {
            conn.out.finish(code, reason);
            poll_fn(|cx| conn.out.poll_write(cx, Pin::new(&mut conn.io))).await;
        }
        if wait_for_answer {
            while let Ok(message) = poll_fn(|cx| conn.poll_read(cx)).await {
                if let Incoming::Close(_) = message {
                    break;
                }
            }
        }
    })
    .await;
}

/// What a WebSocket connection runs on: the upgraded HTTP connection, or
/// any byte stream in tests.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Socket for S {}

/// A connection's socket with its frame reader and its sending half. Both
/// are driven by the connection's one task, so they take turns on the
/// socket without a lock.
struct Conn<S> {
    io: S,
    reader: ws::Reader,
    out: Outbound,
}

/// What happened on a connection's socket.
enum Event {
    /// A message read, or why reading ended.
    Read(Result<Incoming, ReadError>),
    /// The sending half finished (see [`Outbound::poll_write`]).
    WriterDone,
}

impl<S: Socket> Conn<S> {
    /// Writes what is queued, then reads the next message.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.out.poll_write(cx, Pin::new(&mut self.io)).is_ready() {
            return Poll::Ready(Event::WriterDone);
        }
        self.poll_read(cx).map(Event::Read)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        self.reader.poll_next(cx, Pin::new(&mut self.io))
    }
}

/// The sending half of a connection, driven by the connection's own task (a
/// branch of its select): no second task per connection, and no wake-up of
/// one for each message.
struct Outbound {
    writer: ws::Writer,
    outbox: mpsc::Receiver<Outgoing>,
    /// The close frame to write once the outbox is drained (teardown).
    finish: Option<(u16, &'static str)>,
    state: OutState,
    /// A close frame has been written.
    sent_close: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutState {
    Open,
    /// Write what is encoded, then shut the socket's sending side.
    Closing,
    Done,
}

impl Outbound {
    fn new(outbox: mpsc::Receiver<Outgoing>) -> Self {
        Outbound {
            writer: ws::Writer::new(),
            outbox,
            finish: None,
            state: OutState::Open,
            sent_close: false,
        }
    }

    /// Ends with a close frame after what the outbox holds; nothing more is
    /// taken into it.
    fn finish(&mut self, code: u16, reason: &'static str) {
        self.outbox.close();
        self.finish = Some((code, reason));
    }

    /// Writes what the outbox holds, encoding up to [`WRITE_BATCH`] messages
    /// per write. Pending while the connection is open (woken by the outbox
    /// or the socket); ready when no more can be written: a write failed, or
    /// the close frame was sent.
    fn poll_write<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut io: Pin<&mut W>,
    ) -> Poll<()> {
        let mut fed = 0;
        loop {
            match self.state {
                OutState::Done => return Poll::Ready(()),
                OutState::Closing => {
                    if ready!(self.writer.poll_flush(cx, io.as_mut())).is_ok() {
                        let _ = ready!(io.as_mut().poll_shutdown(cx));
                    }
                    self.state = OutState::Done;
                    continue;
                }
                OutState::Open => {}
            }
            let mut took_all = false;
            while self.writer.pending() < WRITE_HIGH_WATER {
                if fed == WRITE_BATCH {
                    break;
                }
                match self.outbox.poll_recv(cx) {
                    Poll::Ready(Some(Outgoing::Text(text))) => self.writer.text(text),
                    Poll::Ready(Some(Outgoing::Ping)) => self.writer.ping(),
                    Poll::Ready(Some(Outgoing::Close(code, reason))) => {
                        self.close(code, reason);
                        break;
                    }
                    // Every link is gone, or teardown closed the outbox and
                    // it is drained.
                    Poll::Ready(None) => {
                        let (code, reason) = self.finish.unwrap_or((close::NORMAL, ""));
                        self.close(code, reason);
                        break;
                    }
                    Poll::Pending => {
                        took_all = true;
                        break;
                    }
                }
                fed += 1;
            }
            if self.state != OutState::Open {
                continue;
            }
            if ready!(self.writer.poll_flush(cx, io.as_mut())).is_err() {
                self.state = OutState::Done;
                return Poll::Ready(());
            }
            if took_all {
                return Poll::Pending;
            }
            if fed >= WRITE_BATCH {
                // A full batch is out; let the other branches run before the
                // next one.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        self.writer.close(code, reason);
        self.sent_close = true;
        self.state = OutState::Closing;
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
        F: FnOnce(
            hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
            Shared<MemoryRegistry>,
            SocketAddr,
            Option<(Role, String)>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_connection_future_stays_small() {
        // Most of what an idle connection costs (docs/BENCHMARKS.md): it was
        // 3 KB before `run` was assembled from combinators. It holds the
        // socket and the frame reader and writer (empty while idle) since
        // the connection stopped going through tungstenite's `WebSocket`,
        // whose state and buffers lived on the heap beside it.
        let size = future_size(run::<MemoryRegistry, _>);
        assert!(size <= 1856, "the per-connection future is {size} bytes");
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
