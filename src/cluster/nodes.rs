//! Which nodes are alive: heartbeat leases in the cluster's node bucket, and the view every node
//! builds from watching them.
//!
//! Each node puts its lease key `n.<node>` (its incarnation) every `heartbeat_ms`. The bucket
//! expires a key `lease_ms` after its last write and leaves a marker that every watcher receives,
//! so a node that stops heartbeating (crashed, frozen, or cut off from NATS) is seen lost by every
//! node at the same point of the bucket's history, with no clock of ours involved. A graceful
//! leave deletes the key. JetStream orders the bucket's writes, so all nodes see the same
//! sequence of joins and losses.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt;
use parking_lot::RwLock;
use tokio::sync::broadcast;

use super::{Cluster, ClusterError};

/// One incarnation of a node: its configured name and a random number drawn when the process
/// started. A restarted node is a new incarnation; what the old one held is reaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId {
    /// `[cluster] node_id`.
    pub name: Arc<str>,
    /// Drawn at boot, in [1, 2^53].
    pub incarnation: u64,
}

impl NodeId {
    /// The node `name` in its incarnation `incarnation`.
    pub fn new(name: &str, incarnation: u64) -> Self {
        NodeId { name: name.into(), incarnation }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.incarnation)
    }
}

/// A change in the cluster's membership, in the order the node bucket recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A node (a new incarnation) took its lease.
    Joined(NodeId),
    /// A node's lease ended: it left, or stopped renewing for `lease_ms`, or a newer incarnation
    /// of the same name replaced it. What it held is to be reaped. `Lost` of this very node means
    /// the cluster reaped it while it was cut off.
    Lost(NodeId),
}

/// The lease key of the node named `name`.
pub(super) fn lease_key(name: &str) -> String {
    format!("n.{name}")
}

/// The live nodes, by name, with the events of their changes.
pub(super) struct NodeTable {
    live: RwLock<HashMap<Arc<str>, u64>>,
    events: broadcast::Sender<NodeEvent>,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable { live: RwLock::default(), events: broadcast::channel(4096).0 }
    }
}

impl NodeTable {
    pub(super) fn live(&self) -> Vec<NodeId> {
        self.live.read().iter().map(|(name, inc)| NodeId { name: name.clone(), incarnation: *inc }).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.live.read().len()
    }

    pub(super) fn incarnation(&self, name: &str) -> Option<u64> {
        self.live.read().get(name).copied()
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Applies one write to a lease key: the events it means, in order.
    fn apply(&self, name: &str, lease: Option<u64>) -> Vec<NodeEvent> {
        let mut live = self.live.write();
        let before = live.get(name).copied();
        let mut events = Vec::new();
        match (before, lease) {
            (Some(old), Some(new)) if old == new => {}
            (before, Some(new)) => {
                if let Some(old) = before {
                    events.push(NodeEvent::Lost(NodeId::new(name, old)));
                }
                live.insert(name.into(), new);
                events.push(NodeEvent::Joined(NodeId::new(name, new)));
            }
            (Some(old), None) => {
                live.remove(name);
                events.push(NodeEvent::Lost(NodeId::new(name, old)));
            }
            (None, None) => {}
        }
        drop(live);
        for event in &events {
            // No receiver is fine: nothing to tell.
            let _ = self.events.send(event.clone());
        }
        events
    }
}

/// The lease value: the incarnation, as decimal text (readable with `nats kv get`).
fn incarnation_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Reads the live nodes, takes this node's lease, and keeps watching and renewing in the
/// background until the cluster is dropped or leaves.
pub(super) async fn start(cluster: &Arc<Cluster>) -> Result<(), ClusterError> {
    let bucket = &cluster.node_bucket;
    let me = cluster.node.clone();
    let value = bytes::Bytes::from(me.incarnation.to_string());
    let key = lease_key(&me.name);
    // A replicated bucket another node just created takes writes once its stream has a leader.
    let mut revision = super::retry_transient(cluster.config.kv_timeout(), Duration::from_millis(100), || async {
        bucket.put(&key, value.clone()).await.map_err(|e| ClusterError::jetstream("taking this node's lease", e))
    })
    .await?;
    let mut watch =
        super::retry_transient(cluster.config.kv_timeout(), cluster.config.heartbeat(), || replay(cluster)).await?;

    let watcher = Arc::downgrade(cluster);
    let stop = cluster.stop.clone();
    let mut connection = cluster.connection();
    tokio::spawn(async move {
        loop {
            let entry = tokio::select! {
                _ = stop.cancelled() => return,
                changed = connection.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let up = *connection.borrow_and_update();
                    let Some(cluster) = watcher.upgrade() else { return };
                    // Back from a NATS outage: what happened meanwhile may be gone from the
                    // bucket's history (a lost node's marker outlives it by one lease only), so
                    // read the table again instead of trusting the watch to catch up.
                    while up && !stop.is_cancelled() {
                        match replay(&cluster).await {
                            Ok(fresh) => {
                                watch = fresh;
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "re-reading the node bucket after a reconnect; retrying");
                                tokio::time::sleep(cluster.config.heartbeat()).await;
                            }
                        }
                    }
                    continue;
                }
                entry = watch.next() => entry,
            };
            let Some(cluster) = watcher.upgrade() else { return };
            match entry {
                Some(Ok(entry)) => apply_entry(&cluster, &entry),
                Some(Err(error)) => tracing::warn!(%error, "reading the node bucket"),
                None => return tracing::error!("the node bucket's watch ended; node losses are no longer seen"),
            }
        }
    });

    let renew = Arc::downgrade(cluster);
    let stop = cluster.stop.clone();
    let period = cluster.config.heartbeat();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(cluster) = renew.upgrade() else { return };
            // A renewal that hangs must not delay the next one past the lease. It is a
            // compare-and-set on the lease's last revision: if that fails, the lease expired
            // meanwhile (or was taken over), and the cluster reaped this node.
            match tokio::time::timeout(period, cluster.node_bucket.update(&key, value.clone(), revision)).await {
                Ok(Ok(next)) => revision = next,
                Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // A renewal that timed out may have been written after all (a stream electing a
                    // new leader answers late): the lease is still ours if it holds our incarnation.
                    // Asked of the stream's leader: a follower answering a direct get may lag.
                    let subject = format!("{}{key}", cluster.node_bucket.prefix);
                    match cluster.node_bucket.stream.get_last_raw_message_by_subject(&subject).await {
                        // Deletes and expiry markers carry no incarnation.
                        Ok(current) if incarnation_of(&current.payload) == Some(me.incarnation) => {
                            revision = current.sequence;
                            continue;
                        }
                        Ok(_) => {}
                        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                        // No answer is no proof of being reaped: asked again at the next tick.
                        Err(error) => {
                            tracing::warn!(%error, "could not check this node's lease; checking again");
                            continue;
                        }
                    }
                    log(&cluster, &cluster.nodes.apply(&me.name, None));
                    match cluster.node_bucket.put(&key, value.clone()).await {
                        Ok(next) => revision = next,
                        Err(error) => tracing::warn!(%error, "could not take this node's lease again"),
                    }
                }
                Ok(Err(error)) => tracing::warn!(%error, "could not renew this node's lease"),
                Err(_) => tracing::warn!("renewing this node's lease timed out"),
            }
        }
    });
    Ok(())
}

/// Reads every lease in the bucket and applies the difference to the node table (so a node
/// whose lease vanished while this one was not looking is lost now), then returns the watch
/// that goes on from there.
///
/// A replay that does not hold this node's own lease is incomplete and changes nothing: the lease
/// was written before the first replay and is renewed before a later one can succeed, so its
/// absence means the read came too early (a replicated bucket electing a new leader, a consumer
/// made on a server that is catching up), not that every other node is gone. Had the cluster
/// really reaped this node, the renewal finds out and takes the lease again, and the next replay
/// holds it.
async fn replay(cluster: &Cluster) -> Result<kv::Watch, ClusterError> {
    let bucket = &cluster.node_bucket;
    let failed = |e: &dyn fmt::Display| ClusterError::jetstream("reading the node bucket", e);
    let incomplete = || ClusterError::JetStream("the node bucket's replay did not catch up".into());
    let mut watch = bucket.watch_with_history("n.*").await.map_err(|e| failed(&e))?;
    let mut leases: HashMap<String, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + cluster.config.kv_timeout();
    loop {
        let entry = match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(entry))) => entry,
            Ok(Some(Err(error))) => return Err(failed(&error)),
            Ok(None) | Err(_) => return Err(incomplete()),
        };
        if let (Some(name), Operation::Put) = (entry.key.strip_prefix("n."), entry.operation) {
            if let Some(incarnation) = incarnation_of(&entry.value) {
                leases.insert(name.to_owned(), incarnation);
            }
        } else if let Some(name) = entry.key.strip_prefix("n.") {
            leases.remove(name);
        }
        if entry.delta == 0 {
            break;
        }
    }
    if !leases.contains_key(&*cluster.node.name) {
        return Err(incomplete());
    }
    for gone in cluster.nodes.live().into_iter().filter(|n| !leases.contains_key(&*n.name)) {
        log(cluster, &cluster.nodes.apply(&gone.name, None));
    }
    for (name, incarnation) in leases {
        log(cluster, &cluster.nodes.apply(&name, Some(incarnation)));
    }
    Ok(watch)
}

fn apply_entry(cluster: &Cluster, entry: &async_nats::jetstream::kv::Entry) {
    let Some(name) = entry.key.strip_prefix("n.") else { return };
    let lease = match entry.operation {
        Operation::Put => incarnation_of(&entry.value),
        Operation::Delete | Operation::Purge => None,
    };
    log(cluster, &cluster.nodes.apply(name, lease));
    if let (Operation::Put, Some(other)) = (entry.operation, lease) {
        if *name == *cluster.node.name && other != cluster.node.incarnation {
            tracing::error!(node = %name, "another process joined with this node's node_id; node_id must be unique");
        }
    }
}

fn log(cluster: &Cluster, events: &[NodeEvent]) {
    for event in events {
        match event {
            NodeEvent::Joined(node) if *node == cluster.node => {}
            NodeEvent::Joined(node) => tracing::info!(%node, "node joined the cluster"),
            NodeEvent::Lost(node) if *node == cluster.node => {
                tracing::error!(node = %node, "the cluster reaped this node (it was cut off longer than its lease)")
            }
            NodeEvent::Lost(node) => tracing::warn!(%node, "node lost"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_incarnation_replaces_the_old_one_and_a_delete_loses_it() {
        let table = NodeTable::default();
        let a1 = NodeId::new("a", 1);
        assert_eq!(table.apply("a", Some(1)), vec![NodeEvent::Joined(a1.clone())]);
        assert_eq!(table.apply("a", Some(1)), vec![], "a heartbeat changes nothing");
        let a2 = NodeId::new("a", 2);
        assert_eq!(table.apply("a", Some(2)), vec![NodeEvent::Lost(a1), NodeEvent::Joined(a2.clone())]);
        assert_eq!(table.apply("a", None), vec![NodeEvent::Lost(a2)]);
        assert_eq!(table.apply("a", None), vec![], "a marker of a node already lost changes nothing");
        assert!(table.live().is_empty());
    }

    #[test]
    fn lease_values_are_decimal_incarnations() {
        assert_eq!(incarnation_of(b"42"), Some(42));
        assert_eq!(incarnation_of(b"x"), None);
    }
}
