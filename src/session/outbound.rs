//! The sending half of a connection: its outbox drained into its WebSocket
//! writer and the socket, and what that costs counted on its link (the
//! write side of the connection's byte budget, `rooms/budget.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::close;
use crate::config::Config;
use crate::metrics::QueueLimit;
use crate::rooms::{budget, GuestText, LinkState, Outgoing};
use crate::ws;

/// Messages encoded per write: bounds the time the writer spends before
/// pushing bytes out, while batching bursts into few system calls.
const WRITE_BATCH: usize = 64;
/// Encoded bytes above which the writer stops taking messages from the
/// outbox until the socket has taken what it has: what a peer that does not
/// read can cost beyond its outbox.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// The sending half of a connection, driven by the connection's own task (a
/// branch of its select): no second task per connection, and no wake-up of
/// one for each message.
pub(super) struct Outbound {
    pub(super) writer: ws::Writer,
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
    pub(super) sent_close: bool,
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
    pub(super) fn new(outbox: mpsc::Receiver<Outgoing>, link: Arc<LinkState>) -> Self {
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
    pub(super) fn queued_control(&mut self) {
        self.settle(Taken::default());
        self.link.check_limits();
    }

    /// At each ping tick, before queueing the ping: a writer that has had
    /// bytes waiting, and written none, for more than `stall_ticks` ticks
    /// is dropped (its peer does not read); and a queue above the soft
    /// limit for too long, though no longer growing, likewise.
    pub(super) fn on_tick(&mut self, stall_ticks: u16) {
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
    pub(super) fn finish(&mut self, code: u16, reason: &'static str) {
        self.outbox.close();
        self.finish = Some((code, reason));
    }

    /// Writes what the outbox holds, encoding up to [`WRITE_BATCH`] messages
    /// per write. Pending while the connection is open (woken by the outbox
    /// or the socket); ready when no more can be written: a write failed, or
    /// the close frame was sent.
    pub(super) fn poll_write<W: AsyncWrite + ?Sized>(
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

/// Ping intervals a write may stall before the connection is dropped.
pub(super) fn stall_ticks(config: &Config) -> u16 {
    config
        .write_stall_timeout
        .as_nanos()
        .div_ceil(config.ping_interval.as_nanos().max(1))
        .clamp(1, u128::from(u16::MAX)) as u16
}
