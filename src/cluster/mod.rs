//! The cluster: several Roundhouse nodes on one NATS system acting as one router.
//!
//! This module owns a node's membership: its NATS connection, its identity ([`NodeId`]: the
//! configured name and a random incarnation drawn at boot), its heartbeat lease in the cluster's
//! node bucket, and the view of which nodes are alive ([`nodes`]), with the events subsystems act on
//! when a node joins or is lost ([`NodeEvent`]). The dealer and the broker build on it: they open
//! their own JetStream buckets through [`Cluster::open_bucket`] and address other nodes through
//! [`Cluster::node_subject`].
//!
//! Nothing here is on the call path. A router without `[cluster]` never creates a [`Cluster`] and
//! never opens a NATS connection.

pub mod config;
pub mod events;
pub mod nodes;
pub mod sessions;
pub mod subject;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use config::{ClusterConfig, Isolation, MIN_REPLICATED_LEASE_MS};
pub use nodes::{NodeEvent, NodeId};

/// Why a node could not join the cluster or reach its buckets.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS connection could not be made (or its options could not be read).
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The configured servers.
        urls: String,
        /// What failed.
        reason: String,
    },
    /// JetStream refused or did not answer in time.
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl ClusterError {
    /// A JetStream failure, with what was being done.
    pub fn jetstream(doing: &str, error: impl std::fmt::Display) -> Self {
        ClusterError::JetStream(format!("{doing}: {error}"))
    }
}

/// This node's membership in the cluster (see the module docs). Shared behind an `Arc` by the
/// router, its realms and the cluster's own tasks; dropping the last one stops the heartbeat.
pub struct Cluster {
    config: ClusterConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    node: NodeId,
    nodes: nodes::NodeTable,
    node_bucket: kv::Store,
    connected: watch::Receiver<bool>,
    stop: CancellationToken,
}

impl Cluster {
    /// Connects to NATS, opens the node bucket, reads which nodes are alive, and starts this
    /// node's heartbeat. Returns once the node's own lease is visible in its view of the cluster.
    pub async fn join(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        config.validate().map_err(|reason| ClusterError::Connect { urls: config.nats_urls.join(","), reason })?;
        let node = NodeId::new(&config.node_id, fastrand::u64(1..=crate::wire::message::MAX_ID));
        let (connected_tx, connected) = watch::channel(true);
        let client = connect(config, &node, connected_tx).await?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.kv_timeout());
        let stop = CancellationToken::new();
        let node_bucket = open_bucket(
            &jetstream,
            config,
            &bucket_name(&config.cluster_name, "NODES"),
            1,
            Some(config.lease()),
            // The expiry marker of a lease is what tells every node a node is lost; it stays long
            // enough for a watcher that reconnects within a lease to see it.
            Some(config.lease().max(Duration::from_secs(1))),
        )
        .await?;
        // Leases expire at the bucket's age limit, set by the node that made the bucket.
        let lease = node_bucket.stream.cached_info().config.max_age;
        if lease != config.lease() {
            tracing::warn!(
                cluster_lease_ms = lease.as_millis() as u64,
                lease_ms = config.lease_ms,
                "the cluster's leases last as long as the node that made its node bucket asked, not this node's \
                 lease_ms; give every node the same lease_ms"
            );
        }
        let nodes = nodes::NodeTable::default();
        let cluster =
            Arc::new(Cluster { config: config.clone(), client, jetstream, node, nodes, node_bucket, connected, stop });
        nodes::start(&cluster).await?;
        tracing::info!(
            cluster = %cluster.config.cluster_name,
            node = %cluster.node,
            nats = %cluster.config.nats_urls.join(","),
            live_nodes = cluster.nodes.len(),
            "joined the cluster"
        );
        Ok(cluster)
    }

    /// The configuration the node joined with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The node's NATS connection (one per node; NATS keeps the order of what it publishes).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// JetStream on [`Cluster::client`], with the configured `kv_timeout_ms`.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// This node: its configured name and this process's incarnation.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.config.cluster_name
    }

    /// A subject in the cluster's namespace: `rh.<cluster>.<tail>`.
    pub fn subject(&self, tail: &str) -> String {
        format!("rh.{}.{tail}", self.config.cluster_name)
    }

    /// The subject prefix of one node's inbox, `rh.<cluster>.n.<node>`: what other nodes send that
    /// node goes to subjects below it.
    pub fn node_subject(&self, node: &str) -> String {
        self.subject(&format!("n.{node}"))
    }

    /// The name of one of the cluster's JetStream buckets: `RH_<cluster>_<kind>`.
    pub fn bucket_name(&self, kind: &str) -> String {
        bucket_name(&self.config.cluster_name, kind)
    }

    /// Creates the bucket `kind` (see [`Cluster::bucket_name`]) with the configured replicas, or
    /// opens it when another node created it first. `max_age` expires every key that long after
    /// its last write; `limit_markers` makes such an expiry visible to watchers as a purge.
    pub async fn open_bucket(
        &self,
        kind: &str,
        history: i64,
        max_age: Option<Duration>,
        limit_markers: Option<Duration>,
    ) -> Result<kv::Store, ClusterError> {
        open_bucket(&self.jetstream, &self.config, &self.bucket_name(kind), history, max_age, limit_markers).await
    }

    /// The nodes alive now, this one included.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes.live()
    }

    /// True when `node` (that incarnation) holds a lease.
    pub fn is_live(&self, node: &NodeId) -> bool {
        self.nodes.incarnation(&node.name) == Some(node.incarnation)
    }

    /// Nodes joining and being lost, from now on (see [`NodeEvent`]).
    pub fn node_events(&self) -> broadcast::Receiver<NodeEvent> {
        self.nodes.subscribe()
    }

    /// Whether the NATS connection is up now; changes as it drops and comes back.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Claims `task` for the lost node `node`: true for exactly one node in the cluster per task,
    /// node and incarnation (while the claim's lease lasts; asking again, that node gets true
    /// again), so one node reaps what a lost node left, whichever nodes see it lost at once.
    pub async fn claim(&self, task: &str, node: &NodeId) -> Result<bool, ClusterError> {
        let key = format!("claim.{task}.{}.{}", node.name, node.incarnation);
        let me = bytes::Bytes::from(self.node.to_string());
        // A claim whose answer was lost is found again by its value.
        retry_transient(self.config.kv_timeout(), Duration::from_millis(100), || async {
            match self.node_bucket.create(&key, me.clone()).await {
                Ok(_) => Ok(true),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match self.node_bucket.get(&key).await {
                        Ok(holder) => Ok(holder.as_ref() == Some(&me)),
                        Err(error) => Err(ClusterError::jetstream("reading a reaper's claim", error)),
                    }
                }
                Err(error) => Err(ClusterError::jetstream("claiming a reaper's task", error)),
            }
        })
        .await
    }

    /// Leaves the cluster gracefully: stops the heartbeat and deletes the lease, so the other
    /// nodes see this node lost at once instead of after the lease.
    pub async fn leave(&self) {
        self.stop.cancel();
        // Bounded: with NATS unreachable there is nobody to tell, and the lease ends by itself.
        let farewell = async {
            self.node_bucket.delete(nodes::lease_key(&self.node.name)).await?;
            self.client.flush().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        match tokio::time::timeout(self.config.kv_timeout(), farewell).await {
            Ok(Ok(())) => tracing::info!(node = %self.node, "left the cluster"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not delete this node's lease; the others see it lost when it expires")
            }
            Err(_) => tracing::warn!("NATS did not answer; the others see this node lost when its lease expires"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn bucket_name(cluster: &str, kind: &str) -> String {
    format!("RH_{cluster}_{kind}")
}

async fn connect(
    config: &ClusterConfig,
    node: &NodeId,
    connected: watch::Sender<bool>,
) -> Result<async_nats::Client, ClusterError> {
    let urls = config.nats_urls.join(",");
    let failed = |reason: String| ClusterError::Connect { urls: urls.clone(), reason };
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("roundhouse {}/{}", config.cluster_name, node))
        .connection_timeout(config.kv_timeout())
        // Unbounded reconnects: a node cut off from NATS keeps serving local calls and comes back.
        .max_reconnects(None)
        .event_callback(move |event| {
            let connected = connected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connection up");
                        connected.send_replace(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS connection lost; calls to other nodes fail until it is back");
                        connected.send_replace(false);
                    }
                    async_nats::Event::SlowConsumer(subscription) => {
                        tracing::warn!(subscription, "NATS dropped messages to a slow subscription of this node")
                    }
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        });
    if let Some(path) = &config.credentials_file {
        options = options.credentials_file(path).await.map_err(|e| failed(format!("{}: {e}", path.display())))?;
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options = options.require_tls(config.tls_required);
    let servers: Vec<async_nats::ServerAddr> = config
        .nats_urls
        .iter()
        .map(|url| url.parse().map_err(|e| failed(format!("'{url}': {e}"))))
        .collect::<Result<_, _>>()?;
    options.connect(servers).await.map_err(|e| failed(e.to_string()))
}

async fn open_bucket(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
    bucket: &str,
    history: i64,
    max_age: Option<Duration>,
    limit_markers: Option<Duration>,
) -> Result<kv::Store, ClusterError> {
    let wanted = kv::Config {
        bucket: bucket.to_owned(),
        history,
        max_age: max_age.unwrap_or_default(),
        num_replicas: config.kv_replicas,
        storage: jetstream::stream::StorageType::File,
        limit_markers,
        ..Default::default()
    };
    // Short attempts: a request to a server that went away is not waited for the whole timeout.
    let mut jetstream = jetstream.clone();
    jetstream.set_timeout(config.kv_timeout().min(Duration::from_secs(1)));
    retry_transient(config.kv_timeout(), Duration::from_millis(250), || async {
        match jetstream.create_key_value(wanted.clone()).await {
            Ok(store) => Ok(store),
            // Another node created it first (with the same settings: creating is idempotent then),
            // or with other settings by an older release: use it as it is.
            Err(created) => jetstream
                .get_key_value(bucket)
                .await
                .map_err(|error| ClusterError::jetstream(&format!("opening bucket {bucket} ({created})"), error)),
        }
    })
    .await
}

/// Runs `attempt` until it succeeds or `within` has passed, pausing `pause` between tries, and
/// returns the last error then. A NATS cluster that is starting, or electing a new leader for a
/// replicated stream after losing a server (JetStream waits 4 to 9 s before it elects), refuses
/// requests for a while; what the cluster asks of JetStream outside a call's path rides that out
/// here.
pub(crate) async fn retry_transient<T, F, Fut>(
    within: Duration,
    pause: Duration,
    mut attempt: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match attempt().await {
            Err(error) if tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(%error, "JetStream not ready; retrying");
                tokio::time::sleep(pause).await;
            }
            done => return done,
        }
    }
}
