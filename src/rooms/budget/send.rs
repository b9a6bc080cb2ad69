//! Queueing on a budgeted link (see [`crate::rooms::PeerLink`]).

use tokio::sync::mpsc;

use super::*;
use crate::rooms::{Outgoing, Queued};

/// Queues `message` within the link's limits.
pub fn send(
    tx: &mpsc::Sender<Outgoing>,
    st: &LinkState,
    budget: &Budget,
    message: Outgoing,
) -> Queued {
    let cost = message.cost();
    let Some((prev, over_server)) = st.charge(budget, cost, false) else {
        return Queued::Gone;
    };
    let limits = &budget.limits;
    let own = own(prev) + cost;
    if own > limits.max_bytes {
        st.uncharge(budget, cost, false);
        return slow(st, QueueLimit::Bytes);
    }
    match tx.try_send(message) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            st.uncharge(budget, cost, false);
            return slow(st, QueueLimit::Messages);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            st.uncharge(budget, cost, false);
            return Queued::Gone;
        }
    }
    if own > limits.soft_bytes && st.soft_expired(budget) {
        return slow(st, QueueLimit::SoftBytes);
    }
    if over_server {
        budget.relieve();
        if st.is_closed() {
            return Queued::Gone;
        }
    }
    Queued::Yes
}

/// Queues a guest's or watcher's message to its host (`st`), from
/// `sender` (`None`: from another instance), or refuses it.
pub fn send_guest(
    tx: &mpsc::Sender<Outgoing>,
    st: &LinkState,
    budget: &Budget,
    text: Utf8Bytes,
    sender: Option<&Arc<LinkState>>,
) -> Queued {
    let limits = &budget.limits;
    let cost = text_cost(text.len());
    let capacity = tx.max_capacity();
    if let Some(s) = sender {
        let (messages, bytes) = s.waiting_at_host();
        if bytes + cost > limits.share_bytes || messages >= limits.share_messages(capacity) {
            return budget.refuse(Refusal::Share);
        }
    }
    let q = st.queued.load(Ordering::Acquire);
    if q & CLOSED != 0 {
        return Queued::Gone;
    }
    if guest(q) + cost > limits.guest_bytes || tx.capacity() <= limits.guest_reserve(capacity) {
        return budget.refuse(Refusal::HostQueue);
    }
    if budget.queued() + cost > limits.server_bytes {
        return budget.refuse(Refusal::ServerBudget);
    }
    let credit = Credit::charge(sender, cost);
    if st.charge(budget, cost, true).is_none() {
        return Queued::Gone;
    }
    match tx.try_send(Outgoing::FromGuest(Box::new(GuestText { text, credit }))) {
        Ok(()) => Queued::Yes,
        // Never the host's fault: the message is refused, the host kept.
        Err(mpsc::error::TrySendError::Full(_)) => {
            st.uncharge(budget, cost, true);
            budget.refuse(Refusal::HostQueue)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            st.uncharge(budget, cost, true);
            Queued::Gone
        }
    }
}

fn slow(st: &LinkState, limit: QueueLimit) -> Queued {
    if st.cut_slow(limit) {
        Queued::Full
    } else {
        Queued::Gone
    }
}
