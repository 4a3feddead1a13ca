//! Registrations across a cluster: the replicated registry, this node's view of it, and node
//! loss. Calls to members on other nodes are in [`remote`].
//!
//! # The record
//! Every registration of the cluster is one record in the JetStream KV bucket `REG`, under the key
//! `p.<h>` (`h`: the first 32 hex digits of SHA-256 of `realm \0 match \0 uri`). It holds the
//! realm, URI, match policy, invocation rule, registration id and the member list in registration
//! order, each member with its node, that node's incarnation, its session and what routing needs
//! from its REGISTER. Writers change a record only by create or compare-and-set on its revision,
//! retried with jittered backoff on conflict, so `single` and the rule check are decided by one
//! linearizable write: exact cluster-wide. A member is only ever appended or removed.
//!
//! # The view
//! Each node watches the bucket and applies every revision, in the bucket's order, to its
//! dealer's tables (the same sharded, wait-free tables a single node has): members of this node
//! are its sessions, members of other nodes are stand-ins ([`remote`]) that forward calls over
//! NATS. Since every node applies the same appends and removals in the same order, member lists
//! are identical on every node; a CALL reads only the view, never the KV. REGISTER and UNREGISTER
//! answer once this node's watch has applied their write.
//!
//! # Node loss
//! A lost node's members leave every node's view at once (members of nodes that are not live are
//! never applied), calls in flight to it end with `wamp.error.canceled`, and one node (the winner
//! of the cluster's claim) removes them from the records.

mod remote;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};

use super::call::QueueBounds;
use super::registry::Registered;
use super::rule::InvocationRule;
use super::{register_refusal, Callee, CalleeOptions, RegisterPlan, Registration};
use crate::cluster::{Cluster, ClusterError, Isolation, NodeEvent, NodeId};
use crate::error::{Refusal, WampError};
use crate::router::RouterShared;
use crate::session::{CalleeFeatures, SessionHandle};
use crate::wire::uri::MatchPolicy;
use crate::wire::Value;

/// How many times a registry write is tried against concurrent writers before it gives up.
const MAX_ATTEMPTS: u32 = 64;

/// The pause before a registry request that failed for another reason than a conflict is tried
/// again.
const TRANSIENT_PAUSE: Duration = Duration::from_millis(50);

/// One registration as the cluster records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    realm: String,
    uri: String,
    #[serde(rename = "match")]
    policy: String,
    invoke: String,
    id: u64,
    members: Vec<MemberRecord>,
}

/// One member of a registration, as the cluster records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MemberRecord {
    node: String,
    inc: u64,
    session: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    disclose_caller: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    forward_timeout: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_reroutes: Option<u64>,
    /// The callee features its session announced, as bits (see [`features_bits`]).
    #[serde(default)]
    features: u8,
}

impl MemberRecord {
    fn is(&self, node: &NodeId) -> bool {
        *self.node == *node.name && self.inc == node.incarnation
    }

    fn node_id(&self) -> NodeId {
        NodeId::new(&self.node, self.inc)
    }

    fn options(&self) -> CalleeOptions {
        CalleeOptions {
            disclose_caller: self.disclose_caller,
            forward_timeout: self.forward_timeout,
            max_reroutes: self.max_reroutes,
        }
    }
}

impl Record {
    fn policy(&self) -> Option<MatchPolicy> {
        MatchPolicy::from_option(Some(&Value::from(self.policy.as_str()))).ok()
    }

    fn rule(&self) -> Option<InvocationRule> {
        InvocationRule::from_option(Some(&Value::from(self.invoke.as_str()))).ok()
    }
}

fn features_bits(features: CalleeFeatures) -> u8 {
    u8::from(features.progressive_call_results)
        | u8::from(features.call_canceling) << 1
        | u8::from(features.registration_revocation) << 2
        | u8::from(features.progressive_call_invocations) << 3
}

fn features_of(bits: u8) -> CalleeFeatures {
    CalleeFeatures {
        progressive_call_results: bits & 1 != 0,
        call_canceling: bits & 2 != 0,
        registration_revocation: bits & 4 != 0,
        progressive_call_invocations: bits & 8 != 0,
    }
}

/// The KV key of a registration: hashed, so any realm and URI fit the key charset and length.
fn key_of(realm: &str, policy: MatchPolicy, uri: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(realm.as_bytes());
    hash.update([0]);
    hash.update(policy.name().as_bytes());
    hash.update([0]);
    hash.update(uri.as_bytes());
    let digest = hex::encode(hash.finalize());
    format!("p.{}", &digest[..32])
}

/// A member of this node, as REGISTER asked for it: what the view needs to make its [`Callee`],
/// and what re-registering it after an isolation needs.
struct Local {
    realm: Arc<str>,
    session: Arc<SessionHandle>,
    uri: String,
    policy: MatchPolicy,
    rule: InvocationRule,
    /// The registration id it last joined (reused if its record must be made again).
    id: u64,
    options: CalleeOptions,
    concurrency: Option<u64>,
    queue: Option<QueueBounds>,
}

#[derive(Default)]
struct State {
    /// The last applied value and revision of every record.
    records: HashMap<String, (u64, Record)>,
    /// This node's members, by (key, session): only these are applied as local members, so a
    /// member that left here is never brought back by a revision written before it left.
    local: HashMap<(String, u64), Local>,
    /// Removals from a record still being written in the background, by key.
    removing: HashMap<String, usize>,
}

/// What a registry write decided, given the current record.
enum Change<T> {
    /// Write this record (create it when there was none).
    Write(Record, T),
    /// Delete the record.
    Delete(T),
    /// Nothing to write.
    Keep(T),
    /// Refuse the request.
    Refuse(Refusal),
}

/// The dealer's part of a cluster node: the replicated registry and the calls to other nodes.
pub struct Replica {
    cluster: Arc<Cluster>,
    router: Weak<RouterShared>,
    kv: kv::Store,
    /// The last revision the watch applied to the view.
    applied: watch::Sender<u64>,
    state: Mutex<State>,
    remote: remote::Remote,
    /// Signalled when NATS is back after a disconnection: the registry consumer is made again
    /// (one that lived through a server restart can stall without an error).
    resync: Arc<tokio::sync::Notify>,
    /// One turn per record being written by this node (see [`Replica::modify`]).
    writers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Signalled whenever a background removal ([`Replica::forget`]) is done.
    removed: tokio::sync::Notify,
}

/// A realm's dealer's link to the node's [`Replica`].
pub struct Link {
    replica: Arc<Replica>,
    realm: Arc<str>,
}

impl Replica {
    /// Opens the registry bucket, applies what it holds, reaps the members of nodes that are not
    /// live, starts the call inbox and links every realm's dealer to it.
    pub async fn start(router: &Arc<RouterShared>, cluster: Arc<Cluster>) -> Result<Arc<Replica>, ClusterError> {
        let kv = cluster.open_bucket("REG", 1, None, None).await?;
        let remote = remote::Remote::new(&cluster, router);
        let replica = Arc::new(Replica {
            cluster: cluster.clone(),
            router: Arc::downgrade(router),
            kv,
            applied: watch::channel(0).0,
            state: Mutex::default(),
            remote,
            resync: Arc::new(tokio::sync::Notify::new()),
            writers: Mutex::default(),
            removed: tokio::sync::Notify::new(),
        });
        // Subscribed before anything is registered: a call forwarded here finds the inbox.
        remote::start_inbox(&replica).await?;
        // A replicated bucket another node just created answers once its stream has a leader.
        let info =
            crate::cluster::retry_transient(cluster.config().kv_timeout(), Duration::from_millis(100), || async {
                replica
                    .kv
                    .stream
                    .get_info()
                    .await
                    .map_err(|e| ClusterError::jetstream("reading the registry bucket", e))
            })
            .await?;
        let last = info.state.last_sequence;
        let events = cluster.node_events();
        tokio::spawn(watch_registry(Arc::downgrade(&replica)));
        let mut applied = replica.applied.subscribe();
        // A large registry takes a while to replay: bounded by ten registry timeouts.
        tokio::time::timeout(cluster.config().kv_timeout() * 10, applied.wait_for(|a| *a >= last))
            .await
            .map_err(|_| ClusterError::JetStream("the registry did not replay in time".into()))?
            .map_err(|e| ClusterError::jetstream("replaying the registry", e))?;
        tracing::info!(
            registrations = replica.state.lock().records.len(),
            revision = last,
            "read the cluster's registrations"
        );
        for (name, realm) in &router.realms {
            let link = Link { replica: replica.clone(), realm: Arc::from(name.as_str()) };
            let _ = realm.dealer.cluster.set(link);
        }
        tokio::spawn(node_events(Arc::downgrade(&replica), events));
        tokio::spawn(connection(Arc::downgrade(&replica), cluster.connection()));
        let dead: HashSet<NodeId> = {
            let state = replica.state.lock();
            state.records.values().flat_map(|(_, r)| r.members.iter().map(MemberRecord::node_id)).collect()
        };
        for node in dead.into_iter().filter(|n| !cluster.is_live(n) && !replica.is_me(n)) {
            let replica = replica.clone();
            tokio::spawn(async move {
                if let Ok(true) = replica.cluster.claim("reg", &node).await {
                    replica.reap(&node).await;
                }
            });
        }
        Ok(replica)
    }

    fn is_me(&self, node: &NodeId) -> bool {
        node == self.cluster.node()
    }

    fn kv_timeout(&self) -> Duration {
        self.cluster.config().kv_timeout()
    }

    /// Applies one revision of the bucket to the view (`value` is `None` for a delete), and
    /// publishes the meta events it means.
    fn apply(self: &Arc<Self>, key: &str, value: Option<&bytes::Bytes>, revision: u64) {
        let Some(router) = self.router.upgrade() else { return };
        let record = value.and_then(|value| match serde_json::from_slice::<Record>(value) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(key, %error, "unreadable registry record ignored");
                None
            }
        });
        let events = {
            let mut state = self.state.lock();
            let previous = state.records.remove(key).map(|(_, r)| r);
            self.update_view(&router, &state, key, previous.as_ref(), record.as_ref());
            let events = diff(previous.as_ref(), record.as_ref());
            // A member of this node that another node removed (a reaper that took this node for
            // lost while it was only slow or cut off) and that never left here is put back.
            let me = self.cluster.node();
            let reaped: Vec<u64> = previous
                .iter()
                .flat_map(|p| p.members.iter())
                .filter(|m| m.is(me) && state.local.contains_key(&(key.to_owned(), m.session)))
                .filter(|m| {
                    record.as_ref().is_none_or(|r| !r.members.iter().any(|x| x.session == m.session && x.is(me)))
                })
                .map(|m| m.session)
                .collect();
            if !reaped.is_empty() && self.cluster.config().on_isolation == Isolation::Rejoin {
                let (replica, key) = (self.clone(), key.to_owned());
                tokio::spawn(async move { replica.heal(&key, &reaped).await });
            }
            if let Some(record) = record {
                state.records.insert(key.to_owned(), (revision, record));
            }
            events
        };
        for (realm, event) in events {
            if let Some(realm) = router.realms.get(&realm) {
                match event {
                    Event::Registered { session, id, created } => {
                        crate::meta::publish_registered(realm, session, id, created)
                    }
                    Event::Unregistered { session, id, deleted } => {
                        crate::meta::publish_unregistered(realm, session, id, deleted)
                    }
                }
            }
        }
        self.applied.send_if_modified(|applied| {
            let newer = revision > *applied;
            if newer {
                *applied = revision;
            }
            newer
        });
    }

    /// Makes the view of one registration what `next` says (gone when `None`), keeping the
    /// members already in it where they are and appending the new ones in record order.
    fn update_view(
        &self,
        router: &RouterShared,
        state: &State,
        key: &str,
        previous: Option<&Record>,
        next: Option<&Record>,
    ) {
        if let Some(previous) = previous.filter(|p| next.is_none_or(|n| n.id != p.id)) {
            if let Some(realm) = router.realms.get(&previous.realm) {
                evict(&realm.dealer, previous.id);
            }
        }
        let Some(next) = next else { return };
        let Some(realm) = router.realms.get(&next.realm) else { return };
        let (Some(policy), Some(rule)) = (next.policy(), next.rule()) else {
            tracing::warn!(key, "registry record with an unknown policy or rule ignored");
            return;
        };
        let dealer = &realm.dealer;
        // An entry for the same URI under another id is a registration deleted meanwhile.
        if let Some(stale) = dealer.lookup_exactly(&next.uri, policy).filter(|r| r.id != next.id) {
            evict(dealer, stale.id);
        }
        let me = self.cluster.node();
        let mut wanted: Vec<(u64, Option<&MemberRecord>)> = Vec::with_capacity(next.members.len());
        for member in &next.members {
            if member.is(me) {
                match state.local.get(&(key.to_owned(), member.session)) {
                    Some(local) if !local.session.closing.is_cancelled() => wanted.push((member.session, None)),
                    _ => {}
                }
            } else if self.cluster.is_live(&member.node_id()) {
                wanted.push((member.session, Some(member)));
            }
        }
        if let Some((existing, _)) = dealer.get(next.id) {
            for callee in existing.members() {
                if !wanted.iter().any(|(session, _)| *session == callee.session.id) {
                    dealer.leave(callee.session.id, next.id);
                }
            }
        }
        for (session, remote) in wanted {
            if dealer.get(next.id).is_some_and(|(r, _)| r.has_member(session)) {
                continue;
            }
            let (callee, queue) = match remote {
                None => {
                    let Some(local) = state.local.get(&(key.to_owned(), session)) else { continue };
                    (Callee::new(local.session.clone(), local.options, local.concurrency), local.queue)
                }
                // Other nodes' members take no concurrency slots here: their own node keeps
                // their limit, and queues calls forwarded to a member at its limit.
                Some(member) => {
                    let proxy = self.remote.callee(
                        &member.node_id(),
                        &next.realm,
                        member.session,
                        features_of(member.features),
                    );
                    (Callee::new(proxy, member.options(), None), None)
                }
            };
            if let Err(error) = dealer.join(&next.uri, policy, rule, Some(next.id), callee, queue) {
                tracing::warn!(key, ?error, "registry record could not be applied to the view");
            }
        }
    }

    /// Reads, decides and writes a record by compare-and-set, until the write goes through or
    /// `change` refuses; `Err` with `wamp.error.network_failure` when the registry cannot be
    /// reached. Returns once the view has applied the write.
    ///
    /// Writes of one node to one record take turns: the callees of a node registering one
    /// procedure at once then cost one write each, not a storm of conflicting ones; conflicts
    /// remain only between nodes, so they are bounded by the number of nodes.
    async fn modify<T>(&self, key: &str, change: impl FnMut(Option<&Record>) -> Change<T>) -> Result<T, Refusal> {
        let turn = self.writers.lock().entry(key.to_owned()).or_default().clone();
        let outcome = {
            let _turn = turn.lock().await;
            self.modify_now(key, change).await
        };
        let mut writers = self.writers.lock();
        // The table's reference and ours: nobody else waits for this record.
        if Arc::strong_count(&turn) == 2 {
            writers.remove(key);
        }
        outcome
    }

    async fn modify_now<T>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&Record>) -> Change<T>,
    ) -> Result<T, Refusal> {
        let mut cached = self.state.lock().records.get(key).cloned().map(|(rev, r)| (rev, Some(r)));
        // Failures other than a conflict (a NATS cluster electing a stream leader answers "no
        // responders" for a moment) are retried until this deadline. A write whose answer was
        // lost is found done when the record is read again.
        let deadline = tokio::time::Instant::now() + self.kv_timeout();
        let mut conflicts = 0u32;
        let mut failure: Option<String> = None;
        loop {
            if let Some(error) = failure.take() {
                if tokio::time::Instant::now() + TRANSIENT_PAUSE >= deadline {
                    return Err(unreachable_registry(&error));
                }
                tokio::time::sleep(TRANSIENT_PAUSE).await;
            }
            let (revision, current) = match cached.take() {
                Some(cached) => cached,
                None => match tokio::time::timeout_at(deadline, self.kv.entry(key)).await {
                    Ok(Ok(Some(entry))) => {
                        let record = match entry.operation {
                            kv::Operation::Put => serde_json::from_slice::<Record>(&entry.value).ok(),
                            _ => None,
                        };
                        (entry.revision, record)
                    }
                    Ok(Ok(None)) => (0, None),
                    Ok(Err(error)) => {
                        failure = Some(error.to_string());
                        continue;
                    }
                    Err(_) => return Err(unreachable_registry(&"timed out")),
                },
            };
            let written = match change(current.as_ref()) {
                Change::Refuse(refusal) => return Err(refusal),
                Change::Keep(outcome) => {
                    self.wait_applied(revision).await;
                    return Ok(outcome);
                }
                Change::Write(record, outcome) => {
                    let value = serde_json::to_vec(&record).expect("a record serializes").into();
                    let written = match current {
                        None => tokio::time::timeout_at(deadline, self.kv.create(key, value))
                            .await
                            .map(|r| r.map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, e.to_string()))),
                        Some(_) => {
                            tokio::time::timeout_at(deadline, self.kv.update(key, value, revision)).await.map(|r| {
                                r.map_err(|e| (e.kind() == kv::UpdateErrorKind::WrongLastRevision, e.to_string()))
                            })
                        }
                    };
                    written.map(|r| r.map(|revision| (revision, outcome)))
                }
                // A failed delete is read again either way: gone, or changed by another writer.
                Change::Delete(outcome) => {
                    tokio::time::timeout_at(deadline, self.kv.delete_expect_revision(key, Some(revision)))
                        .await
                        // A delete's revision is not returned: it is later than the one it replaced.
                        .map(|r| r.map(|()| (revision + 1, outcome)).map_err(|e| (true, e.to_string())))
                }
            };
            match written {
                Ok(Ok((revision, outcome))) => {
                    self.wait_applied(revision).await;
                    return Ok(outcome);
                }
                Ok(Err((true, _))) => {
                    conflicts += 1;
                    if conflicts >= MAX_ATTEMPTS {
                        return Err(Refusal::new(
                            WampError::NetworkFailure,
                            "the registration is changed by too many writers at once; try again",
                        ));
                    }
                    // Another node wrote first: read again, after a pause that spreads the
                    // retries of writers that collided.
                    let pause = fastrand::u64(0..=(200 << conflicts.min(5)));
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
                Ok(Err((false, error))) => failure = Some(error),
                Err(_) => return Err(unreachable_registry(&"timed out")),
            }
        }
    }

    /// Waits until the view has applied `revision` (bounded: the write is done either way).
    async fn wait_applied(&self, revision: u64) {
        let mut applied = self.applied.subscribe();
        if tokio::time::timeout(self.kv_timeout(), applied.wait_for(|a| *a >= revision)).await.is_err() {
            tracing::warn!(revision, "the registry watch has not applied a write of this node yet");
        }
    }

    /// Removes `member` of this node from the record `key` (deleting it when it empties).
    async fn remove_member(&self, key: &str, session: u64) -> Result<(), Refusal> {
        let me = self.cluster.node().clone();
        self.modify(key, |current| match current {
            Some(record) if record.members.iter().any(|m| m.session == session && m.is(&me)) => {
                let mut next = record.clone();
                next.members.retain(|m| !(m.session == session && m.is(&me)));
                if next.members.is_empty() {
                    Change::Delete(())
                } else {
                    Change::Write(next, ())
                }
            }
            _ => Change::Keep(()),
        })
        .await
    }

    /// A session of this node left a registration without waiting (session closed, revoked):
    /// its record is changed in the background, retried while the registry cannot be reached.
    /// `key` is the record's key, or `None` to find it by the registration id.
    fn forget(self: &Arc<Self>, key: Option<String>, session: u64, registration: u64) -> bool {
        let key = {
            let mut state = self.state.lock();
            let key = key.or_else(|| {
                state
                    .local
                    .iter()
                    .find(|((_, s), local)| *s == session && local.id == registration)
                    .map(|((k, _), _)| k.clone())
            });
            let Some(key) = key.filter(|key| state.local.remove(&(key.clone(), session)).is_some()) else {
                return false;
            };
            *state.removing.entry(key.clone()).or_default() += 1;
            key
        };
        let replica = self.clone();
        tokio::spawn(async move {
            let mut removed = false;
            for attempt in 0..30u32 {
                match replica.remove_member(&key, session).await {
                    Ok(()) => {
                        removed = true;
                        break;
                    }
                    Err(refusal) => {
                        tracing::debug!(key, session, attempt, %refusal, "registry removal failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            if !removed {
                tracing::warn!(key, session, "could not remove a member from the registry; the lease reaper will");
            }
            {
                let mut state = replica.state.lock();
                if let Some(count) = state.removing.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        state.removing.remove(&key);
                    }
                }
            }
            replica.removed.notify_waiters();
        });
        true
    }

    /// Waits (bounded) until the background removals from record `key` are done, so that a
    /// REGISTER right after a session left (a client that reconnected, a `force_reregister`)
    /// does not find the member that is leaving.
    async fn settle_removals(&self, key: &str) {
        let deadline = tokio::time::Instant::now() + self.kv_timeout();
        loop {
            // Registered before the check, so a removal that ends in between is not missed.
            let removed = self.removed.notified();
            tokio::pin!(removed);
            removed.as_mut().enable();
            if !self.state.lock().removing.contains_key(key) {
                return;
            }
            if tokio::time::timeout_at(deadline, removed).await.is_err() {
                return;
            }
        }
    }

    /// Applies again the records that name members of `node`, whose liveness changed.
    fn reapply(&self, node: &NodeId) {
        let Some(router) = self.router.upgrade() else { return };
        let state = self.state.lock();
        for (key, (_, record)) in &state.records {
            if record.members.iter().any(|m| m.is(node)) {
                self.update_view(&router, &state, key, Some(record), Some(record));
            }
        }
    }

    /// A node was lost: its members leave the view now, its calls in flight end, and one node
    /// removes its members from the records.
    async fn node_lost(self: &Arc<Self>, node: &NodeId) {
        self.reapply(node);
        self.remote.node_lost(node);
        match self.cluster.claim("reg", node).await {
            Ok(true) => self.reap(node).await,
            Ok(false) => {}
            Err(error) => tracing::warn!(%node, %error, "could not claim the reaping of a lost node's registrations"),
        }
    }

    /// Removes every member of `node` from the records.
    async fn reap(&self, node: &NodeId) {
        let keys: Vec<String> = {
            let state = self.state.lock();
            state
                .records
                .iter()
                .filter(|(_, (_, r))| r.members.iter().any(|m| m.is(node)))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut reaped = 0;
        for key in keys {
            // A node that came back (it was cut off, not dead) publishes its members itself.
            if self.cluster.is_live(node) {
                tracing::info!(%node, "a lost node is back; its registrations are left to it");
                return;
            }
            let removed = self
                .modify(&key, |current| match current {
                    Some(record) if record.members.iter().any(|m| m.is(node)) => {
                        let mut next = record.clone();
                        next.members.retain(|m| !m.is(node));
                        if next.members.is_empty() {
                            Change::Delete(())
                        } else {
                            Change::Write(next, ())
                        }
                    }
                    _ => Change::Keep(()),
                })
                .await;
            match removed {
                Ok(()) => reaped += 1,
                Err(refusal) => tracing::warn!(%node, key, %refusal, "could not reap a lost node's registration"),
            }
        }
        tracing::info!(%node, registrations = reaped, "reaped the registrations of a lost node");
    }

    /// The cluster reaped this node while it was cut off: publish its members again (appended
    /// to their lists), or close its sessions, as configured.
    async fn isolated(self: &Arc<Self>) {
        let Some(router) = self.router.upgrade() else { return };
        if self.cluster.config().on_isolation == Isolation::Fence {
            tracing::warn!("this node was reaped by the cluster; closing its sessions (on_isolation = fence)");
            for realm in router.realms.values() {
                for session in realm.sessions.iter() {
                    crate::meta::shut_down(session.value(), "this router node was cut off from its cluster");
                }
            }
            return;
        }
        tracing::warn!("this node was reaped by the cluster; registering its callees again");
        // Members the reaper removes later are put back as their records change (see `apply`).
        self.wait_live().await;
        let members: Vec<(String, u64)> = self.state.lock().local.keys().cloned().collect();
        for (key, session) in members {
            if let Err(refusal) = self.rejoin(&key, session).await {
                tracing::warn!(key, session, %refusal, "could not register a callee again after an isolation");
            }
        }
    }

    /// Puts members of this node that were reaped back into the record `key`, once this node is
    /// live again (so that no reaper removes them a second time).
    async fn heal(&self, key: &str, sessions: &[u64]) {
        self.wait_live().await;
        for session in sessions {
            tracing::info!(key, session, "a callee of this node was reaped by another node; registering it again");
            if let Err(refusal) = self.rejoin(key, *session).await {
                tracing::warn!(key, session, %refusal, "could not register a reaped callee again");
            }
        }
    }

    /// Waits (bounded) until this node holds its lease again.
    async fn wait_live(&self) {
        let heartbeat = Duration::from_millis(self.cluster.config().heartbeat_ms);
        let deadline = tokio::time::Instant::now() + self.kv_timeout() * 4;
        while !self.cluster.is_live(self.cluster.node()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(heartbeat / 4).await;
        }
    }

    async fn rejoin(&self, key: &str, session: u64) -> Result<(), Refusal> {
        let me = self.cluster.node().clone();
        let (realm, uri, policy, rule, id, member) = {
            let state = self.state.lock();
            let Some(local) = state.local.get(&(key.to_owned(), session)) else { return Ok(()) };
            if local.session.closing.is_cancelled() {
                return Ok(());
            }
            let member = member_record(&me, &local.session, local.options);
            (local.realm.clone(), local.uri.clone(), local.policy, local.rule, local.id, member)
        };
        self.modify(key, |current| match current {
            None => Change::Write(new_record(&realm, &uri, policy, rule, id, member.clone()), ()),
            Some(record) if record.members.iter().any(|m| m.session == session && m.is(&me)) => Change::Keep(()),
            Some(record) if record.rule() == Some(rule) && rule != InvocationRule::Single => {
                let mut next = record.clone();
                next.members.push(member.clone());
                Change::Write(next, ())
            }
            Some(_) => Change::Refuse(Refusal::new(
                WampError::ProcedureAlreadyExists,
                "the registration was taken over while this node was cut off",
            )),
        })
        .await
    }
}

fn member_record(me: &NodeId, session: &SessionHandle, options: CalleeOptions) -> MemberRecord {
    MemberRecord {
        node: me.name.to_string(),
        inc: me.incarnation,
        session: session.id,
        disclose_caller: options.disclose_caller,
        forward_timeout: options.forward_timeout,
        max_reroutes: options.max_reroutes,
        features: features_bits(session.identity().map(|i| i.features).unwrap_or_default()),
    }
}

fn new_record(
    realm: &str,
    uri: &str,
    policy: MatchPolicy,
    rule: InvocationRule,
    id: u64,
    member: MemberRecord,
) -> Record {
    Record {
        realm: realm.to_owned(),
        uri: uri.to_owned(),
        policy: policy.name().to_owned(),
        invoke: rule.to_string(),
        id,
        members: vec![member],
    }
}

fn unreachable_registry(error: &dyn std::fmt::Display) -> Refusal {
    tracing::warn!(%error, "the cluster's registry cannot be reached");
    Refusal::new(WampError::NetworkFailure, format!("the cluster's registry cannot be reached: {error}"))
}

/// Takes every member out of registration `id` in the view (deleting it).
fn evict(dealer: &super::Dealer, id: u64) {
    if let Some((registration, _)) = dealer.get(id) {
        for callee in registration.members() {
            dealer.leave(callee.session.id, id);
        }
    }
}

/// A registration meta event a revision means.
enum Event {
    Registered { session: u64, id: u64, created: bool },
    Unregistered { session: u64, id: u64, deleted: bool },
}

/// The meta events between two versions of a record, in the spec's order, with their realm.
fn diff(previous: Option<&Record>, next: Option<&Record>) -> Vec<(String, Event)> {
    let mut events = Vec::new();
    let same = matches!((previous, next), (Some(p), Some(n)) if p.id == n.id);
    if let Some(previous) = previous {
        let kept = |m: &MemberRecord| {
            same && next.is_some_and(|n| n.members.iter().any(|x| x.session == m.session && x.inc == m.inc))
        };
        let gone: Vec<&MemberRecord> = previous.members.iter().filter(|m| !kept(m)).collect();
        let deleted = !same;
        for (i, member) in gone.iter().enumerate() {
            let last = deleted && i + 1 == gone.len();
            events.push((
                previous.realm.clone(),
                Event::Unregistered { session: member.session, id: previous.id, deleted: last },
            ));
        }
    }
    if let Some(next) = next {
        let old = |m: &MemberRecord| {
            same && previous.is_some_and(|p| p.members.iter().any(|x| x.session == m.session && x.inc == m.inc))
        };
        for (i, member) in next.members.iter().filter(|m| !old(m)).enumerate() {
            let created = !same && i == 0;
            events.push((next.realm.clone(), Event::Registered { session: member.session, id: next.id, created }));
        }
    }
    events
}

/// Applies the registry bucket to the view, from the start and then as it changes; resumes
/// after the last applied revision when the consumer breaks (NATS restarted, connection lost).
///
/// An ordered pull consumer rather than the KV watch: a push consumer created on a bucket that
/// already holds records can deliver them before its subscription exists, and then the replay
/// waits for the next write or an idle heartbeat.
async fn watch_registry(replica: Weak<Replica>) {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    // Doubled while attempts deliver nothing (JetStream electing leaders is not to be flooded
    // with consumer requests), reset when one does.
    let mut pause = Duration::from_millis(100);
    loop {
        let (kv, from, resync) = match replica.upgrade() {
            Some(r) => (r.kv.clone(), *r.applied.borrow() + 1, r.resync.clone().notified_owned()),
            None => return,
        };
        tokio::pin!(resync);
        resync.as_mut().enable();
        let deliver_policy = if from == 1 {
            DeliverPolicy::LastPerSubject
        } else {
            DeliverPolicy::ByStartSequence { start_sequence: from }
        };
        // Short pull requests: their idle heartbeats (half the expiry) are what tell the consumer
        // that its server went away (a NATS server of the cluster lost), so it is made again
        // within seconds rather than the client's default half a minute.
        let config = pull::OrderedConfig {
            filter_subject: format!("{}>", kv.prefix),
            deliver_policy,
            max_expires: Duration::from_secs(2),
            ..Default::default()
        };
        let messages = match kv.stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match messages {
            Ok(mut messages) => loop {
                let message = tokio::select! {
                    _ = resync.as_mut() => break,
                    message = messages.next() => match message {
                        Some(message) => message,
                        None => break,
                    },
                };
                let Some(replica) = replica.upgrade() else { return };
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%error, "registry watch failed; resuming it");
                        break;
                    }
                };
                let Ok(info) = message.info() else { continue };
                let revision = info.stream_sequence;
                let Some(key) = message.subject.strip_prefix(kv.prefix.as_str()) else { continue };
                let removed = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                let value = (!removed).then_some(&message.payload);
                replica.apply(key, value, revision);
                pause = Duration::from_millis(100);
            },
            Err(error) => tracing::warn!(%error, "registry watch could not start; retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn node_events(replica: Weak<Replica>, mut events: broadcast::Receiver<NodeEvent>) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "node events missed by the dealer");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(replica) = replica.upgrade() else { return };
        match event {
            NodeEvent::Lost(node) if replica.is_me(&node) => {
                tokio::spawn(async move { replica.isolated().await });
            }
            NodeEvent::Lost(node) => {
                tokio::spawn(async move { replica.node_lost(&node).await });
            }
            // Members of a node that was not live were left out of the view; now they count.
            NodeEvent::Joined(node) => replica.reapply(&node),
        }
    }
}

/// Calls waiting for another node end when this node loses NATS (local calls go on).
async fn connection(replica: Weak<Replica>, mut connected: watch::Receiver<bool>) {
    while connected.changed().await.is_ok() {
        let up = *connected.borrow_and_update();
        let Some(replica) = replica.upgrade() else { return };
        if up {
            replica.resync.notify_waiters();
        } else {
            replica.remote.disconnected();
        }
    }
}

impl Link {
    /// REGISTER (see [`super::Dealer::register_clustered`]).
    pub(crate) async fn register(
        &self,
        session: &Arc<SessionHandle>,
        procedure: &str,
        plan: RegisterPlan,
    ) -> Result<Registered, Refusal> {
        let replica = &self.replica;
        let key = key_of(&self.realm, plan.policy, procedure);
        let me = replica.cluster.node().clone();
        let member = member_record(&me, session, plan.options);
        let fresh = crate::dealer::registry::fresh_id(|_| false);
        replica.settle_removals(&key).await;
        let joined_before = {
            let mut state = replica.state.lock();
            let local = Local {
                realm: self.realm.clone(),
                session: session.clone(),
                uri: procedure.to_owned(),
                policy: plan.policy,
                rule: plan.rule,
                id: fresh,
                options: plan.options,
                concurrency: plan.concurrency,
                queue: plan.queue,
            };
            state.local.insert((key.clone(), session.id), local).is_some()
        };
        let result = replica
            .modify(&key, |current| {
                let Some(record) = current else {
                    let record = new_record(&self.realm, procedure, plan.policy, plan.rule, fresh, member.clone());
                    return Change::Write(record, (fresh, plan.rule, true));
                };
                let Some(existing) = record.rule() else {
                    return Change::Refuse(Refusal::new(WampError::InvalidArgument, "unknown rule in the registry"));
                };
                if record.members.iter().any(|m| m.session == session.id && m.is(&me)) {
                    return Change::Keep((record.id, existing, false));
                }
                if existing == InvocationRule::Single {
                    return Change::Refuse(register_refusal(
                        super::registry::RegisterError::AlreadyExists,
                        procedure,
                        plan.rule,
                    ));
                }
                if existing != plan.rule && !plan.configured_rule {
                    return Change::Refuse(register_refusal(
                        super::registry::RegisterError::DifferentRule(existing),
                        procedure,
                        plan.rule,
                    ));
                }
                let mut next = record.clone();
                next.members.push(member.clone());
                Change::Write(next, (record.id, existing, false))
            })
            .await;
        let mut state = replica.state.lock();
        match result {
            Ok((id, rule, created)) => {
                if let Some(local) = state.local.get_mut(&(key, session.id)) {
                    local.id = id;
                    local.rule = rule;
                }
                Ok(Registered { id, created })
            }
            Err(refusal) if joined_before => Err(refusal),
            // The write may have gone through unacknowledged: the member is taken out again in
            // the background, as when a session leaves.
            Err(refusal) if refusal.error == WampError::NetworkFailure => {
                drop(state);
                replica.forget(Some(key), session.id, fresh);
                Err(refusal)
            }
            Err(refusal) => {
                state.local.remove(&(key, session.id));
                Err(refusal)
            }
        }
    }

    /// UNREGISTER (see [`super::Dealer::unregister_clustered`]).
    pub(crate) async fn unregister(&self, session: u64, registration: u64) -> Result<bool, Refusal> {
        let replica = &self.replica;
        let router = replica.router.upgrade().ok_or_else(|| Refusal::new(WampError::Canceled, "shutting down"))?;
        let realm = router.realms.get(&*self.realm).ok_or_else(|| Refusal::new(WampError::Canceled, "no realm"))?;
        let not_member = || {
            Refusal::new(
                WampError::NoSuchRegistration,
                format!("session is not registered under registration {registration}"),
            )
        };
        let (found, policy) = realm.dealer.get(registration).ok_or_else(not_member)?;
        let key = key_of(&self.realm, policy, &found.uri);
        if !found.has_member(session) || !replica.state.lock().local.contains_key(&(key.clone(), session)) {
            return Err(not_member());
        }
        // Out of the local table first: the revision without the member must not look like a
        // reaper's work to be undone.
        let local = replica.state.lock().local.remove(&(key.clone(), session));
        if let Err(refusal) = replica.remove_member(&key, session).await {
            if let Some(local) = local {
                replica.state.lock().local.insert((key, session), local);
            }
            return Err(refusal);
        }
        let deleted = match realm.dealer.leave(session, registration) {
            Some((_, _, deleted)) => deleted,
            None => realm.dealer.get(registration).is_none(),
        };
        Ok(deleted)
    }

    /// Revokes the membership of `callee`, a member on another node, in `registration`: that
    /// node revokes it as it revokes its own (UNREGISTERED with `reason`, its record written),
    /// and this returns once this node's view no longer shows the member.
    pub(crate) async fn revoke_elsewhere(&self, registration: u64, callee: u64, reason: &str) -> Result<(), Refusal> {
        let replica = &self.replica;
        let router = replica.router.upgrade().ok_or_else(|| Refusal::new(WampError::Canceled, "shutting down"))?;
        let realm = router.realms.get(&*self.realm).ok_or_else(|| Refusal::new(WampError::Canceled, "no realm"))?;
        let holds = || realm.dealer.get(registration).is_some_and(|(r, _)| r.has_member(callee));
        let node = replica.remote.node_of(callee).filter(|_| holds()).ok_or_else(|| {
            Refusal::new(
                WampError::NoSuchRegistration,
                format!("session {callee} is not registered under registration {registration}"),
            )
        })?;
        // The other node writes the record (bounded by a registry timeout) and waits for its own
        // view (another one); a node lost meanwhile will not answer.
        let wait = self.replica.kv_timeout() * 2 + Duration::from_millis(replica.cluster.config().heartbeat_ms);
        let mut events = replica.cluster.node_events();
        let lost = async {
            while replica.cluster.is_live(&node) {
                match events.recv().await {
                    Ok(NodeEvent::Lost(gone)) if gone == node => break,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    _ => {}
                }
            }
        };
        tokio::select! {
            revoked = replica.remote.revoke(&node, &self.realm, registration, callee, reason, wait) => revoked?,
            () = lost => {
                return Err(Refusal::new(
                    WampError::NetworkFailure,
                    format!("the callee's router node {node} was lost; the cluster removes its members"),
                ))
            }
        }
        let mut applied = replica.applied.subscribe();
        if tokio::time::timeout(replica.kv_timeout(), applied.wait_for(|_| !holds())).await.is_err() {
            tracing::warn!(registration, callee, "a revocation on another node is not in this node's view yet");
        }
        Ok(())
    }

    /// A member left this node's view without waiting for the registry (see
    /// [`Replica::forget`]).
    pub(crate) fn forget(&self, session: u64, registration: &Registration, policy: MatchPolicy) {
        self.replica.forget(Some(key_of(&self.realm, policy, &registration.uri)), session, registration.id);
    }

    /// A session leaves a registration it holds in the registry though this node's view does
    /// not show it (its record is being changed meanwhile); `false` when it holds none.
    pub(crate) fn forget_id(&self, session: u64, registration: u64) -> bool {
        self.replica.forget(None, session, registration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, inc: u64, session: u64) -> MemberRecord {
        MemberRecord {
            node: node.into(),
            inc,
            session,
            disclose_caller: false,
            forward_timeout: false,
            max_reroutes: None,
            features: 0,
        }
    }

    fn record(id: u64, members: Vec<MemberRecord>) -> Record {
        Record { realm: "r".into(), uri: "p".into(), policy: "exact".into(), invoke: "roundrobin".into(), id, members }
    }

    #[test]
    fn keys_are_hashed_per_realm_policy_and_uri() {
        let key = key_of("realm1", MatchPolicy::Exact, "com.example.add");
        assert!(key.starts_with("p.") && key.len() == 34, "{key}");
        assert_ne!(key, key_of("realm1", MatchPolicy::Prefix, "com.example.add"));
        assert_ne!(key, key_of("realm2", MatchPolicy::Exact, "com.example.add"));
        assert_eq!(key, key_of("realm1", MatchPolicy::Exact, "com.example.add"));
    }

    #[test]
    fn records_round_trip_with_their_member_order() {
        let mut m = member("n1", 7, 42);
        m.features = features_bits(CalleeFeatures { call_canceling: true, ..Default::default() });
        let r = record(5, vec![m, member("n2", 8, 43)]);
        let back: Record = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(features_of(back.members[0].features).call_canceling);
        assert_eq!(back.rule(), Some(InvocationRule::RoundRobin));
    }

    #[test]
    fn meta_events_follow_the_record_changes() {
        let names = |events: Vec<(String, Event)>| {
            events
                .into_iter()
                .map(|(_, e)| match e {
                    Event::Registered { session, created, .. } => format!("reg {session} {created}"),
                    Event::Unregistered { session, deleted, .. } => format!("unreg {session} {deleted}"),
                })
                .collect::<Vec<_>>()
        };
        let one = record(1, vec![member("a", 1, 10)]);
        let two = record(1, vec![member("a", 1, 10), member("b", 2, 11)]);
        assert_eq!(names(diff(None, Some(&one))), ["reg 10 true"]);
        assert_eq!(names(diff(Some(&one), Some(&two))), ["reg 11 false"]);
        assert_eq!(names(diff(Some(&two), Some(&record(1, vec![member("b", 2, 11)])))), ["unreg 10 false"]);
        assert_eq!(names(diff(Some(&one), None)), ["unreg 10 true"]);
    }
}
