//! A realm: a routing namespace with its own dealer and broker. Sessions join exactly one realm.

use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::auth::RealmAuth;
use crate::broker::Broker;
use crate::cluster::Cluster;
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
    /// Its pub/sub router (shared with the dealer's congestion reports, which it publishes).
    pub broker: Arc<Broker>,
    /// Its joined sessions (meta API).
    pub sessions: DashMap<u64, Arc<SessionHandle>, foldhash::fast::RandomState>,
    /// What one session may hold here.
    pub limits: SessionLimits,
    /// Who may join and what each role may do; swapped whole on a config reload
    /// ([`crate::auth::apply`]), read once per handshake.
    pub auth: ArcSwap<RealmAuth>,
    /// Its counters (`/metrics`, the status page).
    pub metrics: Arc<RealmMetrics>,
    /// The cluster this node belongs to (`[cluster]`); `None` for a single-node router.
    pub cluster: Option<Arc<Cluster>>,
    /// The sessions of every node, in a cluster (meta API, ids, testaments).
    pub cluster_sessions: Option<Arc<crate::cluster::sessions::Sessions>>,
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
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        let dealer = Dealer::new(shards, config.allow_disclose_caller, max_buffered_chunks, metrics.clone());
        match crate::dealer::rule::ProcedureRules::compile(&config.procedures) {
            Ok(rules) => dealer.set_procedure_rules(rules),
            // Validated before; should it not be, callees' own options apply.
            Err(reason) => tracing::error!(realm = config.name, reason, "invalid procedure rules; none applied"),
        }
        let events = cluster.as_ref().map(|c| Arc::new(crate::cluster::events::Events::new(c, &config.name)));
        let broker = Arc::new(Broker::new(shards).with_metrics(metrics.clone()).with_cluster(events));
        let publisher = broker.clone();
        dealer.report_queue_full(Arc::new(move |full| crate::meta::queue_full(&publisher, &full)));
        Realm {
            name: config.name.clone(),
            dealer,
            broker,
            sessions: DashMap::default(),
            limits,
            auth: ArcSwap::from_pointee(RealmAuth::compile(config).unwrap_or_else(|reason| {
                // The config was validated before; should it not be, admit nobody rather than everybody.
                tracing::error!(realm = config.name, reason, "invalid realm security config; admitting nobody");
                RealmAuth::default()
            })),
            metrics,
            cluster,
            cluster_sessions: None,
        }
    }

    /// The same realm, sharing the cluster's session table.
    pub fn with_sessions(mut self, sessions: Option<Arc<crate::cluster::sessions::Sessions>>) -> Self {
        self.cluster_sessions = sessions;
        self
    }

    /// True when nobody holds a subscription in this realm.
    pub fn broker_is_empty(&self) -> bool {
        self.broker.subscription_count() == 0
    }
}
