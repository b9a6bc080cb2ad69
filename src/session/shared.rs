//! What every session of a server shares: the registry, the limits and
//! counters, access control ([`SharedState`], behind the one pointer
//! [`Shared`] each connection holds), and the shared budgets and rates
//! ([`Pressure`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{JoinGate, Rates};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rooms::{Budget, QueueLimits};

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

/// What every session shares: one pointer in each connection's state.
pub struct Shared<R>(Arc<SharedState<R>>);

/// What [`Shared`] points to.
pub struct SharedState<R> {
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
    /// Per-client limits (room creations and attaches per minute).
    pub clients: crate::clients::Clients,
    /// Access control: the keys, the revocations, and `revoke` (for the
    /// admin API too).
    pub auth: Arc<crate::auth::Auth>,
}

impl<R> Shared<R> {
    /// The handle every session of a server shares.
    pub fn new(state: SharedState<R>) -> Self {
        Shared(Arc::new(state))
    }
}

impl<R> std::ops::Deref for Shared<R> {
    type Target = SharedState<R>;

    fn deref(&self) -> &SharedState<R> {
        &self.0
    }
}

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}
