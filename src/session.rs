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

use crate::config::{Config, HOST_BUSY_RUN_RESET};
use crate::metrics::{Metrics, QueueLimit, RateLimit, SenderClosed};
use crate::protocol::{
    self, ClientMessage, ErrorCode, InitReply, InitRequest, PeerError, Role, ServerMessage,
};
use crate::rooms::{
    budget, Budget, GuestText, Kick, LinkState, Member, Outgoing, PeerLink, QueueLimits, Registry,
    Welcome,
};
use crate::ws::{self, Incoming, ReadError, Utf8Bytes};

mod joins;

pub use self::joins::JoinGate;

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

/// WebSocket close codes the server uses.
pub mod close {
    /// Normal closure (the room ended).
    pub const NORMAL: u16 = 1000;
    /// Going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error at the WebSocket layer.
    pub const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (idle, ping timeout, persistent flooding).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
}

/// The limits every session shares: the server's budget of queued bytes,
/// the per-room join rate, and the senders' rates.
pub struct Pressure {
    /// Queued bytes, per connection and in all.
    pub budget: Arc<Budget>,
    /// Entries per room.
    pub joins: JoinGate,
    /// Each connection's message and byte rates.
    pub rates: Rates,
}

impl Pressure {
    /// The limits `config` sets, counted in `metrics`.
    pub fn new(config: &Config, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Pressure {
            budget: Budget::new(QueueLimits::new(config), metrics.clone()),
            joins: JoinGate::new(config.room_join_rate, config.room_join_burst),
            rates: Rates::from_config(config),
        })
    }
}

/// What every session shares.
pub struct Shared<R> {
    /// The room registry.
    pub registry: R,
    /// Budgets and rates shared by every session.
    pub pressure: Arc<Pressure>,
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
            pressure: Arc::clone(&self.pressure),
            config: Arc::clone(&self.config),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
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
    let (link, outbox) =
        PeerLink::with_budget(shared.config.outbox_capacity, &shared.pressure.budget);
    let conn = Conn {
        reader: ws::Reader::new(shared.config.max_message_size),
        out: Outbound::new(outbox, Arc::clone(link.state())),
        io: socket,
    };
    Session::new(shared, link)
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
            End::Kicked(Some(Kick::Backlog(limit))) => {
                format!("dropped: slow consumer ({} limit)", limit.as_str())
            }
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
}

impl<R: Registry> Session<R> {
    fn new(shared: Shared<R>, link: PeerLink) -> Self {
        let limiter = RateLimiter::new(&shared.pressure.rates);
        Session {
            shared,
            link,
            member: None,
            limiter,
            now: Instant::now(),
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
                            Incoming::Binary => match self.admit(0) {
                                Ok(true) => self.reply_error(&PeerError::new(
                                    ErrorCode::UnsupportedFrame,
                                    "binary frames are not supported: send JSON text",
                                )),
                                Ok(false) => {}
                                Err(end) => break 'session end,
                            },
                            Incoming::Ping(payload) => match self.admit(payload.len()) {
                                Ok(true) => {
                                    conn.out.writer.pong(payload);
                                    conn.out.queued_control();
                                }
                                Ok(false) => {}
                                Err(end) => break 'session end,
                            },
                            Incoming::Pong => {}
                            Incoming::Close(code) => {
                                // Answer with the peer's code (RFC 6455 §5.5.1);
                                // one it may not send is answered with 1002.
                                let code = match code {
                                    None => close::NORMAL,
                                    Some(c) if valid_close_code(c) => c,
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
                    conn.out.on_tick(stall_ticks(&config));
                    conn.out.writer.ping();
                    conn.out.queued_control();
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
        let answered = !matches!(end, End::PeerClosing(_));
        Box::pin(close_politely(close, conn, answered)).await;
        end
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
            match init.request() {
                Ok(request) => Box::pin(self.enter(request)).await,
                Err(err) => self.reply_error(&err),
            }
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
        let joins = &self.shared.pressure.joins;
        if let InitRequest::Attach(_, t) = request {
            if !joins.may_enter(t, Instant::now()) {
                self.reply_error(&PeerError::new(
                    ErrorCode::TooManyJoins,
                    "too many peers have entered this room in the last seconds; try again shortly",
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
                if let InitRequest::Attach(_, t) = request {
                    joins.entered(t, Instant::now());
                }
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

/// Ping intervals a write may stall before the connection is dropped.
fn stall_ticks(config: &Config) -> u16 {
    config
        .write_stall_timeout
        .as_nanos()
        .div_ceil(config.ping_interval.as_nanos().max(1))
        .clamp(1, u128::from(u16::MAX)) as u16
}

/// Close codes a peer may send (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
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
    /// The link's byte counts: the outbox's messages are counted there when
    /// queued; this side takes them out when the writer takes and writes
    /// them, and counts the control frames it queues itself.
    link: Arc<LinkState>,
    /// The writer's bytes as last counted on the link (under the hard
    /// limit, which is under 4 GiB).
    accounted: u32,
    /// Counts the writes that took bytes (for the write-stall rule).
    progress: u16,
    /// `progress` at the last ping tick, and the ticks since with bytes
    /// waiting and none written.
    progress_seen: u16,
    stalled_ticks: u16,
    /// The close frame to write once the outbox is drained (teardown).
    finish: Option<(u16, &'static str)>,
    state: OutState,
    /// A close frame has been written.
    sent_close: bool,
}

/// What the writer took from the outbox in one turn, as counted on the link.
#[derive(Default)]
struct Taken {
    /// Everything taken.
    all: u64,
    /// Of which guests' messages (to a host).
    guests: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutState {
    Open,
    /// Write what is encoded, then shut the socket's sending side.
    Closing,
    Done,
}

impl Outbound {
    fn new(outbox: mpsc::Receiver<Outgoing>, link: Arc<LinkState>) -> Self {
        Outbound {
            writer: ws::Writer::new(),
            outbox,
            link,
            accounted: 0,
            progress: 0,
            progress_seen: 0,
            stalled_ticks: 0,
            finish: None,
            state: OutState::Open,
            sent_close: false,
        }
    }

    /// Counts on the link what changed in the writer since it was last
    /// counted, less what was `taken` from the outbox into it.
    fn settle(&mut self, taken: Taken) -> u64 {
        let pending = self.writer.pending();
        let delta = pending as i64 - self.accounted as i64 - taken.all as i64;
        if delta == 0 && taken.guests == 0 {
            return self.link.queued_own();
        }
        self.accounted = pending as u32;
        self.link.settle(delta, taken.guests)
    }

    /// The session queued a control frame (a pong, a ping) in the writer:
    /// it counts, and may break the hard limit (a peer that pings and never
    /// reads).
    fn queued_control(&mut self) {
        self.settle(Taken::default());
        self.link.check_limits();
    }

    /// At each ping tick, before queueing the ping: a writer that has had
    /// bytes waiting, and written none, for more than `stall_ticks` ticks
    /// is dropped (its peer does not read); and a queue above the soft
    /// limit for too long, though no longer growing, likewise.
    fn on_tick(&mut self, stall_ticks: u16) {
        if self.writer.pending() > 0 && self.progress == self.progress_seen {
            self.stalled_ticks = self.stalled_ticks.saturating_add(1);
            if self.stalled_ticks > stall_ticks {
                self.link.drop_slow(QueueLimit::WriteStall);
            }
        } else {
            self.stalled_ticks = 0;
        }
        self.progress_seen = self.progress;
        self.link.check_limits();
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
        io: Pin<&mut W>,
    ) -> Poll<()> {
        let mut taken = Taken::default();
        let poll = self.poll_write_counted(cx, io, &mut taken);
        self.settle(taken);
        poll
    }

    fn poll_write_counted<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut io: Pin<&mut W>,
        taken: &mut Taken,
    ) -> Poll<()> {
        let mut fed = 0;
        loop {
            match self.state {
                OutState::Done => return Poll::Ready(()),
                OutState::Closing => {
                    if ready!(self.flush(cx, io.as_mut())).is_ok() {
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
                    Poll::Ready(Some(Outgoing::Text(text))) => {
                        taken.all += budget::text_cost(text.len());
                        self.writer.text(text);
                    }
                    Poll::Ready(Some(Outgoing::FromGuest(message))) => {
                        // The credit goes here: the sender's share is freed.
                        let GuestText { text, credit } = *message;
                        taken.all += credit.cost();
                        taken.guests += credit.cost();
                        self.writer.text(text);
                    }
                    Poll::Ready(Some(Outgoing::Ping)) => {
                        taken.all += Outgoing::Ping.cost();
                        self.writer.ping();
                    }
                    Poll::Ready(Some(message @ Outgoing::Close(code, reason))) => {
                        taken.all += message.cost();
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
            if ready!(self.flush(cx, io.as_mut())).is_err() {
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

    /// Writes what the writer holds, counting progress.
    fn flush<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: Pin<&mut W>,
    ) -> Poll<std::io::Result<()>> {
        let before = self.writer.pending();
        let poll = self.writer.poll_flush(cx, io);
        if self.writer.pending() < before {
            self.progress = self.progress.wrapping_add(1);
        }
        poll
    }

    fn close(&mut self, code: u16, reason: &str) {
        self.writer.close(code, reason);
        self.sent_close = true;
        self.state = OutState::Closing;
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // What is left queued goes with the connection.
        self.link.close_accounting();
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
        /// The limit it is over.
        limit: RateLimit,
    },
    /// Over the limit for too long: close the connection.
    Close,
}

/// The limits of a [`RateLimiter`]: shared by every connection (each keeps
/// only its buckets' levels).
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    messages: Rate,
    bytes: Rate,
    max_drops: u32,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    burst: f64,
}

impl Rates {
    /// `burst` messages at once, refilled at `rate` per second; bytes
    /// unlimited. More than a second's worth of messages (`rate`, at least
    /// 10) dropped in a row closes the connection.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Rates {
            messages: Rate {
                per_sec: f64::from(rate_per_sec),
                burst: f64::from(burst.max(1)),
            },
            bytes: Rate {
                per_sec: f64::INFINITY,
                burst: f64::INFINITY,
            },
            max_drops: rate_per_sec.max(10),
        }
    }

    /// Limits bytes too: `burst` at once, refilled at `rate` per second.
    pub fn with_bytes(mut self, rate_per_sec: usize, burst: usize) -> Self {
        self.bytes = Rate {
            per_sec: rate_per_sec as f64,
            burst: burst.max(1) as f64,
        };
        self
    }

    /// The rates `config` sets (the byte burst at least one message).
    pub fn from_config(config: &Config) -> Self {
        Rates::new(config.rate_per_sec, config.rate_burst).with_bytes(
            config.rate_bytes_per_sec,
            config.rate_bytes_burst.max(config.max_message_size),
        )
    }
}

/// Two token buckets, of messages and of bytes (see [`Rates`]); and the
/// run of `host_busy` refusals, which ends after [`HOST_BUSY_RUN_RESET`]
/// without one. Unlike a run of rate-limit drops, a delivered message does
/// not end it: a sender flooding a slow host has some messages delivered.
#[derive(Debug)]
pub struct RateLimiter {
    messages: f64,
    bytes: f64,
    last: Option<Instant>,
    dropped_in_a_row: u32,
    refusals: u32,
    /// Seconds since the last refusal, as the checks saw it.
    quiet: f32,
}

/// What to do with one more refusal.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The first of a run: answer it.
    First,
    /// Another: count it.
    Again,
    /// More than the limit: close the connection.
    Close,
}

impl RateLimiter {
    /// Full buckets.
    pub fn new(rates: &Rates) -> Self {
        RateLimiter {
            messages: rates.messages.burst,
            bytes: rates.bytes.burst,
            last: None,
            dropped_in_a_row: 0,
            refusals: 0,
            quiet: 0.0,
        }
    }

    /// Takes one message's token if there is one.
    pub fn check(&mut self, rates: &Rates, now: Instant) -> Verdict {
        self.check_bytes(rates, now, 0)
    }

    /// Takes one message's token and `bytes` bytes' if there are.
    pub fn check_bytes(&mut self, rates: &Rates, now: Instant, bytes: usize) -> Verdict {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.messages =
                (self.messages + elapsed * rates.messages.per_sec).min(rates.messages.burst);
            self.bytes = (self.bytes + elapsed * rates.bytes.per_sec).min(rates.bytes.burst);
            self.quiet += elapsed as f32;
        }
        self.last = Some(now);
        let limit = if self.messages < 1.0 {
            RateLimit::Messages
        } else if self.bytes < bytes as f64 {
            RateLimit::Bytes
        } else {
            self.messages -= 1.0;
            self.bytes -= bytes as f64;
            self.dropped_in_a_row = 0;
            return Verdict::Allow;
        };
        self.dropped_in_a_row += 1;
        if self.dropped_in_a_row > rates.max_drops {
            Verdict::Close
        } else {
            Verdict::Drop {
                first: self.dropped_in_a_row == 1,
                limit,
            }
        }
    }

    /// One more refusal of the message just checked; `limit` refusals in a
    /// run are allowed.
    fn refuse(&mut self, limit: u32) -> Refused {
        if self.quiet > HOST_BUSY_RUN_RESET.as_secs_f32() {
            self.refusals = 0;
        }
        self.quiet = 0.0;
        self.refusals += 1;
        if self.refusals > limit {
            Refused::Close
        } else if self.refusals == 1 {
            Refused::First
        } else {
            Refused::Again
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
        // 1,864 B since the outbound side counts the connection's queued
        // bytes (issue 11; 1,800 B before).
        let size = future_size(run::<MemoryRegistry, _>);
        assert!(size <= 1920, "the per-connection future is {size} bytes");
    }

    #[test]
    fn the_bucket_allows_its_burst_then_drops_then_closes() {
        let rates = Rates::new(100, 500);
        let mut rl = RateLimiter::new(&rates);
        let t = Instant::now();
        for _ in 0..500 {
            assert_eq!(rl.check(&rates, t), Verdict::Allow);
        }
        assert_eq!(rl.check(&rates, t), drop(true, RateLimit::Messages));
        for _ in 1..100 {
            assert_eq!(rl.check(&rates, t), drop(false, RateLimit::Messages));
        }
        assert_eq!(rl.check(&rates, t), Verdict::Close);
    }

    #[test]
    fn the_bucket_refills_at_the_sustained_rate() {
        let rates = Rates::new(100, 500);
        let mut rl = RateLimiter::new(&rates);
        let mut t = Instant::now();
        for _ in 0..500 {
            rl.check(&rates, t);
        }
        // 100 per second sustained: one message every 10 ms always passes.
        for _ in 0..1000 {
            t += Duration::from_millis(10);
            assert_eq!(rl.check(&rates, t), Verdict::Allow);
        }
        // After a drop, an allowed message resets the run.
        assert_eq!(rl.check(&rates, t), drop(true, RateLimit::Messages));
        t += Duration::from_millis(10);
        assert_eq!(rl.check(&rates, t), Verdict::Allow);
        assert_eq!(rl.check(&rates, t), drop(true, RateLimit::Messages));
    }

    fn drop(first: bool, limit: RateLimit) -> Verdict {
        Verdict::Drop { first, limit }
    }

    #[test]
    fn bytes_have_a_bucket_of_their_own() {
        let rates = Rates::new(100, 500).with_bytes(1000, 4000);
        let mut rl = RateLimiter::new(&rates);
        let mut t = Instant::now();
        assert_eq!(rl.check_bytes(&rates, t, 3000), Verdict::Allow);
        assert_eq!(
            rl.check_bytes(&rates, t, 1500),
            drop(true, RateLimit::Bytes)
        );
        // Small messages still fit; a host's (0 bytes) always do.
        assert_eq!(rl.check_bytes(&rates, t, 1000), Verdict::Allow);
        assert_eq!(rl.check_bytes(&rates, t, 0), Verdict::Allow);
        t += Duration::from_secs(2);
        assert_eq!(rl.check_bytes(&rates, t, 1500), Verdict::Allow);
    }

    #[test]
    fn refusals_close_a_sender_that_goes_on_and_a_pause_ends_the_run() {
        let rates = Rates::new(100, 500);
        let mut r = RateLimiter::new(&rates);
        let mut t = Instant::now();
        // Each refusal follows the check of its message.
        let mut refuse = |t| {
            r.check(&rates, t);
            r.refuse(3)
        };
        assert_eq!(refuse(t), Refused::First);
        assert_eq!(refuse(t), Refused::Again);
        t += Duration::from_secs(9);
        assert_eq!(refuse(t), Refused::Again);
        t += HOST_BUSY_RUN_RESET + Duration::from_millis(1);
        assert_eq!(refuse(t), Refused::First);
        for _ in 0..2 {
            assert_eq!(refuse(t), Refused::Again);
        }
        assert_eq!(refuse(t), Refused::Close);
    }
}
