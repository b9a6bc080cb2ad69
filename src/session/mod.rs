//! One WebSocket connection, from upgrade to teardown.
//!
//! Every connection has the same shape: one task reads frames and acts on
//! them (`read.rs`, within the rate limits of `rate.rs`), and, in the same
//! `select!`, drains the connection's bounded outbox (its [`PeerLink`]) into
//! the socket, encoding a batch and writing it with one system call
//! (`outbound.rs`, which counts what is queued against the connection's byte
//! budget); `Session::run` is that one `select!` over the reasons a
//! connection ends. Errors are classified by who caused them: a peer's bad
//! message is answered and the socket stays open; a transport error, a kick
//! or a limit ends the connection. `joins.rs` holds the per-room join rate,
//! `shared.rs` what every session shares.
//!
//! Frames are read and written by [`crate::ws`], which holds buffers only
//! while they have bytes in them: an idle connection costs its task, its
//! outbox and its socket, nothing more.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, info_span, Instrument};

use crate::protocol::{
    self, ClientMessage, ErrorCode, InitReply, InitRequest, PeerError, Role, ServerMessage,
};
use crate::rooms::{Kick, Member, PeerLink, Registry, Welcome};
use crate::webhooks::LeaveReason;
use crate::ws::{self, close, Incoming, ReadError, Utf8Bytes};

mod joins;
mod outbound;
mod rate;
mod read;
mod shared;
mod signed;

pub use self::joins::JoinGate;
pub use self::rate::{RateLimiter, Rates, Verdict};
pub use self::shared::{Pressure, Shared, SharedState};
pub use self::signed::{entry_action, entry_role, peer_error, QueryToken, CLOSE_REPLACED};

use self::outbound::Outbound;

/// How long teardown waits for a close frame to be written and answered.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one connection to its end, on the upgraded connection `socket`. `attach` is a
/// query-string token (`?join=` / `?watch=`, or `?token=` in token mode) to
/// enter with before reading anything.
///
/// The returned future is most of what an idle connection costs, so it is
/// kept small: it is assembled with combinators rather than an `async`
/// wrapper (which would keep its own copy of everything it moves into the
/// future it awaits).
pub fn run<R: Registry, S: Socket>(
    socket: S,
    shared: Shared<R>,
    remote: SocketAddr,
    attach: Option<QueryToken>,
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
    Session::new(shared, link, remote.ip())
        .attach(attach)
        .then(move |session| session.run(conn))
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
    /// Why the peer left its room, for the `peer_left` and `host_left`
    /// events.
    fn leave_reason(&self) -> LeaveReason {
        match self {
            End::PeerClosing(_) => LeaveReason::Left,
            End::PeerClosed | End::Transport(_) => LeaveReason::Lost,
            End::Kicked(Some(Kick::SlowConsumer | Kick::Backlog(_))) => LeaveReason::SlowConsumer,
            End::Kicked(Some(Kick::Replaced)) => LeaveReason::Replaced,
            End::Kicked(None) | End::WriterDone => LeaveReason::Lost,
            End::Close(code, _) if *code == close::GOING_AWAY => LeaveReason::Left,
            End::Close(..) => LeaveReason::Lost,
        }
    }

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
    /// Whether the peer has sent anything since the last ping.
    heard: bool,
    /// The client's address (what its per-client limits count under).
    client: std::net::IpAddr,
    /// Token mode, once in a room: completes when the session's token
    /// expires or is revoked.
    token_end: Option<signed::TokenEnd>,
}

impl<R: Registry> Session<R> {
    fn new(shared: Shared<R>, link: PeerLink, client: std::net::IpAddr) -> Self {
        let limiter = RateLimiter::new(&shared.pressure.rates);
        Session {
            shared,
            link,
            member: None,
            limiter,
            now: Instant::now(),
            heard: true,
            client,
            token_end: None,
        }
    }

    /// Enters the room of a query-string token, if there is one. A step of
    /// its own before [`Session::run`], so that the token is not kept in the
    /// connection's future for its whole life.
    async fn attach(mut self, attach: Option<QueryToken>) -> Self {
        match attach {
            // Boxed, like every entry: rare, and its future is large.
            Some(QueryToken::Open(role, token)) => {
                Box::pin(self.enter(InitRequest::Attach(role, &token), None)).await;
            }
            Some(QueryToken::Signed(token)) => {
                Box::pin(self.enter_signed(Some(&token))).await;
            }
            None => {}
        }
        self
    }

    async fn run<S: Socket>(mut self, mut conn: Conn<S>) -> End {
        let shutdown = self.shared.shutdown.clone();

        let config = &self.shared.config;
        // The idle timer of a connection not in a room: boxed, and dropped
        // while the connection is in one (most of its life), so that it does
        // not add a timer's size to every connection in a room; made again
        // (same deadline) if the connection leaves its room.
        let idle_deadline = tokio::time::Instant::now() + config.idle_timeout;
        let mut idle: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let start = tokio::time::Instant::now() + config.ping_interval;
        let mut ping = tokio::time::interval_at(start, config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // The link's state, not the link: one pointer, and no sender of the
        // peer's own outbox held here.
        let link = Arc::clone(self.link.state());
        let kicked = link.kicked();
        tokio::pin!(kicked);
        // Made once, not on every turn of the loop: it registers with a
        // `Notify`, which costs a lock to enter and another to leave.
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);

        let end = loop {
            match (&self.member, &idle) {
                (Some(_), Some(_)) => idle = None,
                (None, None) => idle = Some(Box::pin(tokio::time::sleep_until(idle_deadline))),
                _ => {}
            }
            tokio::select! {
                biased;
                _ = &mut kicked => break End::Kicked(link.kick_reason()),
                _ = &mut stopping => break End::Close(close::GOING_AWAY, "server shutting down"),
                event = poll_fn(|cx| conn.poll_event(cx)) => match event {
                    Event::Read(read) => {
                        if let Some(end) = self.read_batch(&mut conn, read).await {
                            break end;
                        }
                    }
                    Event::WriterDone => break End::WriterDone,
                },
                _ = ping.tick() => {
                    if let Some(end) = self.on_ping(&mut conn) {
                        break end;
                    }
                }
                _ = poll_fn(|cx| idle.as_mut().map_or(Poll::Pending, |t| t.as_mut().poll(cx))),
                    if self.member.is_none() => {
                    break End::Close(close::POLICY, "not in a room");
                }
                why = signed::token_ended(&mut self.token_end), if self.token_end.is_some() => {
                    break self.on_token_end(why);
                }
            }
        };
        // Boxed: rare, and it would otherwise add its size to every idle
        // connection's future.
        Box::pin(self.finish(conn, end)).await
    }

    /// The ping interval's tick: a peer silent since the last one is closed;
    /// the writer's stall and the queue's limits are checked; a ping goes.
    fn on_ping<S: Socket>(&mut self, conn: &mut Conn<S>) -> Option<End> {
        if !self.heard {
            return Some(End::Close(close::POLICY, "ping timeout"));
        }
        self.heard = false;
        conn.out.on_tick(outbound::stall_ticks(&self.shared.config));
        conn.out.writer.ping();
        conn.out.queued_control();
        None
    }

    /// Teardown: leaves the room, then closes politely when there is a close
    /// frame to send.
    async fn finish<S: Socket>(mut self, conn: Conn<S>, end: End) -> End {
        if let Some(member) = self.member.take() {
            member.leave_for(end.leave_reason()).await;
        }
        // A close frame to send: after what is queued, then wait (briefly)
        // for the peer to answer or hang up, so that the socket is not reset
        // with the peer's last frames unread. Otherwise the peer is gone or
        // not reading: nothing more can reach it, and what was queued is
        // dropped.
        let close = match &end {
            End::Close(code, reason) => Some((*code, *reason)),
            // After what it was sent, so that it knows why it is cut off.
            End::Kicked(Some(Kick::Replaced)) => Some((CLOSE_REPLACED, "replaced by another host")),
            End::PeerClosing(code) => Some((*code, "")),
            End::WriterDone if conn.out.sent_close => None,
            _ => return end,
        };
        drop(self.link);
        let answered = !matches!(end, End::PeerClosing(_)) && !conn.reader.peer_closed();
        close_politely(close, conn, answered).await;
        end
    }

    /// Enters a room as `request` says; `signed`: in token mode, the
    /// verified token that allows it (the reply then names the room and the
    /// token's expiry, and gives out no room tokens).
    async fn enter(
        &mut self,
        request: InitRequest<'_>,
        signed: Option<&crate::auth::Claims>,
    ) -> bool {
        if self.member.is_some() {
            self.reply_error(&PeerError::new(
                ErrorCode::AlreadyInRoom,
                "this connection is already in a room; open another to enter a second one",
            ));
            return false;
        }
        if let InitRequest::Attach(_, t) | InitRequest::Resume(t) = request {
            if signed.is_none() && !crate::token::is_token_shaped(t) {
                self.reply_error(&PeerError::new(
                    ErrorCode::RoomNotFound,
                    "no open room has this token (it is wrong, or the room has closed)",
                ));
                return false;
            }
        }
        let open_rooms = usize::try_from(self.shared.metrics.rooms()).unwrap_or(0);
        if let Err(err) = self
            .shared
            .clients
            .admit_init(self.client, &request, open_rooms)
        {
            self.reply_error(&err);
            return false;
        }
        let joins = &self.shared.pressure.joins;
        if let InitRequest::Attach(_, t) = request {
            if !joins.may_enter(t, Instant::now()) {
                self.reply_error(&PeerError::new(
                    ErrorCode::TooManyJoins,
                    "too many peers have entered this room in the last seconds; try again shortly",
                ));
                return false;
            }
        }
        let config = &self.shared.config;
        let welcome = |w: &Welcome| {
            let ice = config.ice_servers_for(&w.room, w.peer.as_str());
            // A named room's tokens are the server's own: never given out.
            let open = signed.is_none();
            ServerMessage::Init(InitReply {
                join: w.join.as_ref().filter(|_| open).map(Cow::Borrowed),
                watch: w.watch.as_ref().filter(|_| open).map(Cow::Borrowed),
                resume: w.resume.as_ref().filter(|_| open).map(Cow::Borrowed),
                peers: w.peers.as_ref().map(|peers| {
                    peers
                        .iter()
                        .map(|(id, role)| protocol::PresentPeer {
                            id: id.as_str().into(),
                            role: *role,
                        })
                        .collect()
                }),
                peer: w.peer.as_str().into(),
                role: w.role,
                ice_servers: ice.ice_servers,
                ice_servers_ttl: ice.ice_servers_ttl,
                room: signed
                    .and_then(|c| c.room.as_ref())
                    .map(|r| r.as_str().into()),
                expires: signed.map(|c| c.exp),
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
                    InitRequest::Host(_) => "hosting named room",
                };
                match signed {
                    Some(c) => info!(sub = %c.sub.as_str(), jti = %c.jti.as_str(), "{how}"),
                    None => info!("{how}"),
                }
                self.member = Some(member);
                true
            }
            Err(err) => {
                self.reply_error(&err);
                false
            }
        }
    }

    /// `{"type":"close_room"}`: a host ends its room at once; anyone else
    /// is answered with an error.
    async fn close_room(&mut self) {
        let Some(member) = &self.member else {
            return self.reply_error(&PeerError::new(
                ErrorCode::NotInRoom,
                "send {\"type\":\"init\"} to create or enter a room first",
            ));
        };
        match member.close_room().await {
            Ok(()) => info!("closed its room"),
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
            Option<QueryToken>,
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
        // 1,912 B since the outbound side counts the connection's queued
        // bytes and the read batch is a function of its own (issue 11;
        // 1,800 B before).
        // 1,944 B with token mode (issue 13): the auth handle, the token's
        // end (one pointer while unused) and the `?token=` query.
        // 1,624 B since the shared state is one pointer, the kick switch a
        // waker (not a `CancellationToken`'s waiter), the idle timer boxed
        // and dropped while in a room, and the `?token=` query entered
        // before the connection's loop, not kept beside it.
        let size = future_size(run::<MemoryRegistry, _>);
        assert!(size <= 1624, "the per-connection future is {size} bytes");
    }
}
