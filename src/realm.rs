//! A realm: a routing namespace with its own dealer and broker. Sessions join exactly one realm.

use std::sync::Arc;

use dashmap::DashMap;

use crate::broker::Broker;
use crate::config::{RealmConfig, SessionLimits};
use crate::dealer::Dealer;
use crate::metrics::RealmMetrics;
use crate::session::SessionHandle;

/// One realm served by the router.
pub struct Realm {
    /// The realm's URI.
    pub name: String,
    /// Its RPC router.
    pub dealer: Dealer,
    /// Its pub/sub router.
    pub broker: Broker,
    /// Its joined sessions (meta API).
    pub sessions: DashMap<u64, Arc<SessionHandle>, foldhash::fast::RandomState>,
    /// What one session may hold here.
    pub limits: SessionLimits,
    /// Its counters (`/metrics`, the status page).
    pub metrics: Arc<RealmMetrics>,
}

impl Realm {
    /// A realm whose registration and subscription tables have `shards` shards each. Must be
    /// created inside a tokio runtime (the dealer starts its timeout sweeper).
    pub fn new(
        config: &RealmConfig,
        shards: usize,
        limits: SessionLimits,
        max_buffered_chunks: usize,
        metrics: Arc<RealmMetrics>,
    ) -> Self {
        Realm {
            name: config.name.clone(),
            dealer: Dealer::new(shards, config.allow_disclose_caller, max_buffered_chunks, metrics.clone()),
            broker: Broker::new(shards).with_metrics(metrics.clone()),
            sessions: DashMap::default(),
            limits,
            metrics,
        }
    }

    /// True when nobody holds a subscription in this realm.
    pub fn broker_is_empty(&self) -> bool {
        self.broker.subscription_count() == 0
    }
}
