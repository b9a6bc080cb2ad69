//! Tests of the byte budgets.

use super::*;
use crate::rooms::{Outgoing, PeerLink, Queued};

fn budget(f: impl FnOnce(&mut Config)) -> Arc<Budget> {
    let mut config = Config::default();
    f(&mut config);
    Budget::new(QueueLimits::new(&config), Metrics::new())
}

fn text(n: usize) -> Utf8Bytes {
    Utf8Bytes::from("x".repeat(n))
}

#[test]
fn frames_are_counted_as_the_writer_frames_them() {
    for len in [0, 1, 125, 126, 1000, 65535, 65536, 70000] {
        let mut w = crate::ws::Writer::new();
        w.text(text(len));
        assert_eq!(w.pending() as u64, frame_len(len), "length {len}");
    }
    let mut w = crate::ws::Writer::new();
    w.ping();
    assert_eq!(w.pending() as u64, frame_len(0));
}

#[test]
fn a_queue_over_the_hard_limit_is_cut_off_and_its_bytes_leave_the_total() {
    let b = budget(|c| c.outbox_max_bytes = 10_000);
    let (link, _rx) = PeerLink::with_budget(1024, &b);
    assert_eq!(link.send_text(text(4000)), Queued::Yes);
    assert_eq!(link.send_text(text(4000)), Queued::Yes);
    assert_eq!(b.queued(), 2 * text_cost(4000));
    assert_eq!(link.send_text(text(4000)), Queued::Full);
    assert_eq!(link.kick_reason(), Some(Kick::Backlog(QueueLimit::Bytes)));
    assert_eq!(b.queued(), 0, "a cut-off link's bytes leave the total");
    assert_eq!(link.send_text(text(10)), Queued::Gone);
    assert_eq!(b.queued(), 0);
    assert_eq!(b.links(), 0);
}

#[test]
fn a_guests_share_is_refused_not_the_host() {
    let b = budget(|c| {
        c.sender_share_bytes = 10_000;
        c.max_peers_per_room = 2;
        c.outbox_max_bytes = 5_000;
    });
    let (host, mut host_rx) = PeerLink::with_budget(1024, &b);
    let (guest, _g) = PeerLink::with_budget(1024, &b);
    let (other, _o) = PeerLink::with_budget(1024, &b);
    // Past the host's own hard limit, but guests' bytes do not count
    // against it: the sender's share is what refuses.
    assert_eq!(
        host.send_guest(text(4000), Some(guest.state())),
        Queued::Yes
    );
    assert_eq!(
        host.send_guest(text(4000), Some(guest.state())),
        Queued::Yes
    );
    assert_eq!(
        host.send_guest(text(4000), Some(guest.state())),
        Queued::Refused
    );
    assert_eq!(guest.state().waiting_at_host().0, 2);
    // Another sender has a share of its own.
    assert_eq!(
        host.send_guest(text(4000), Some(other.state())),
        Queued::Yes
    );
    assert!(host.kick_reason().is_none());
    assert_eq!(host.state().queued_own(), 0);
    // The host's writer takes one: the sender's share is freed.
    match host_rx.try_recv() {
        Ok(Outgoing::FromGuest(g)) => drop(g),
        other => panic!("{other:?}"),
    }
    assert_eq!(guest.state().waiting_at_host().0, 1);
    assert_eq!(
        host.send_guest(text(4000), Some(guest.state())),
        Queued::Yes
    );
}

#[test]
fn at_the_server_budget_the_largest_queues_go_first() {
    let b = budget(|c| c.max_queued_bytes = 100_000);
    let (small, _s) = PeerLink::with_budget(1024, &b);
    let (large, _l) = PeerLink::with_budget(1024, &b);
    let (host, _h) = PeerLink::with_budget(1024, &b);
    let (guest, _g) = PeerLink::with_budget(1024, &b);
    assert_eq!(small.send_text(text(10_000)), Queued::Yes);
    // A host holding its guests' bytes is not ranked by them.
    assert_eq!(
        host.send_guest(text(60_000), Some(guest.state())),
        Queued::Yes
    );
    for _ in 0..3 {
        assert_eq!(large.send_text(text(9_000)), Queued::Yes);
    }
    // Near the budget, guests are refused first...
    assert_eq!(
        host.send_guest(text(30_000), Some(guest.state())),
        Queued::Refused
    );
    // ...and a send that crosses it drops the largest queue of its own.
    assert_eq!(small.send_text(text(3_000)), Queued::Yes);
    assert_eq!(
        large.kick_reason(),
        Some(Kick::Backlog(QueueLimit::ServerBudget))
    );
    assert!(small.kick_reason().is_none());
    assert!(host.kick_reason().is_none());
    assert!(b.queued() <= 100_000 / 8 * 7, "{}", b.queued());
}

#[test]
fn the_writer_side_settles_what_it_takes_and_writes() {
    let b = budget(|_| {});
    let (link, _rx) = PeerLink::with_budget(16, &b);
    let (guest, _g) = PeerLink::with_budget(16, &b);
    assert_eq!(link.send_text(text(100)), Queued::Yes);
    assert_eq!(link.send_guest(text(200), Some(guest.state())), Queued::Yes);
    let st = link.state();
    // The writer took both (framed bytes now in the writer), then wrote
    // all but 50.
    let taken = text_cost(100) + text_cost(200);
    let in_writer = (frame_len(100) + frame_len(200)) as i64;
    st.settle(in_writer - taken as i64, text_cost(200));
    assert_eq!(st.queued_total(), in_writer as u64);
    assert_eq!(st.queued_own(), in_writer as u64);
    st.settle(50 - in_writer, 0);
    assert_eq!(b.queued(), 50);
    st.close_accounting();
    assert_eq!(b.queued(), 0);
    assert_eq!(b.links(), 1, "the guest's link is still counted");
}

#[tokio::test]
async fn a_kick_wakes_the_task_waiting_for_it_and_one_made_before_the_wait_ends_it_at_once() {
    let b = budget(|_| {});
    let (link, _rx) = PeerLink::with_budget(8, &b);
    let waiting = {
        let state = Arc::clone(link.state());
        tokio::spawn(async move { state.kicked().await })
    };
    // The waiter has registered (it cannot finish before a kick).
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "ended without a kick");
    link.kick(Kick::Replaced);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the kick woke no one")
        .expect("the waiter panicked");
    assert_eq!(link.kick_reason(), Some(Kick::Replaced));

    let (late, _rx) = PeerLink::with_budget(8, &b);
    late.kick(Kick::SlowConsumer);
    tokio::time::timeout(Duration::from_secs(10), late.kicked())
        .await
        .expect("a kick before the wait did not end it");
    assert_eq!(late.kick_reason(), Some(Kick::SlowConsumer));
}
