//! Sessions across the cluster: one record per joined session in the `SESS` bucket, a view of
//! every node's sessions fed by its watch, and what happens to a lost node's sessions.
//!
//! - **Ids**: a session's id (random in [1, 2^53], as on one node) is drawn against this view
//!   and then `create`d in the bucket at join, before WELCOME: two sessions racing for the same
//!   id on two nodes cannot both join. The loser is refused (its client reconnects and draws
//!   again: the odds are ~2^-53 per pair of racing joins). A KV that does not answer in time
//!   does not hold a join up: the session joins on the local check and its record is written
//!   later.
//! - **Meta**: `wamp.session.count/list/get` read the view (every node's sessions);
//!   `wamp.session.on_join`/`on_leave` for another node's session are emitted here, by each
//!   node to its own subscribers, when the watch shows its record made or deleted (a node's own
//!   sessions emit theirs at join and leave, as on one node). So each subscriber gets each event
//!   once, and nothing meta crosses NATS as an event.
//! - **Testaments** are kept in the record (rewritten when added or flushed), so they outlive
//!   their node. A node that learns it was reaped drops its sessions' testaments: the reaper
//!   published them (once), whether the sessions go on (`rejoin`) or are closed (`fence`).
//! - **Node loss**: on [`NodeEvent::Lost`], one node ([`Cluster::claim`] task `sess`) publishes
//!   the lost node's testaments, then deletes its records; every node then sees the deletes and
//!   emits `on_leave`. A node that learns it was itself reaped (cut off longer than a lease)
//!   writes its sessions' records again, or, with `on_isolation = "fence"`, closes them.
//! - **Kill** across nodes: `wamp.session.kill*` for a session of another node is sent to that
//!   node (`<node subject>.sk`), which closes it as it would its own.
//! - **Removing a subscriber** across nodes: `wamp.subscription.remove_subscriber` for a session
//!   of another node is a request to that node (`<node subject>.su`), which removes it as it
//!   would its own and answers with the outcome. Subscription ids are each node's own: the one
//!   named is the one the subscriber was given.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError, NodeEvent, NodeId};
use crate::error::{Refusal, WampError};
use crate::realm::Realm;
use crate::session::SessionHandle;
use crate::wire::{Dict, Message, Payload, Serializer, Value};

/// One session as every node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The realm it joined.
    pub realm: String,
    /// Its `authid`.
    pub authid: String,
    /// Its `authrole`.
    pub authrole: String,
    /// Its `authmethod`.
    pub authmethod: String,
    /// Its `authprovider`.
    pub authprovider: String,
    /// The node it is connected to ...
    pub node: String,
    /// ... and that node's incarnation.
    pub incarnation: u64,
    /// Its transport (`websocket`, `rawsocket`).
    pub transport: String,
    /// Its serializer's subprotocol name.
    pub serializer: String,
    /// Its testaments, each an EVENT (topic in details) encoded in MessagePack, in base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub testaments: Vec<String>,
}

impl Record {
    /// The record of a joined local session.
    pub fn of(session: &SessionHandle, realm: &str, node: &NodeId) -> Self {
        let identity = session.identity();
        let text = |f: fn(&crate::session::Identity) -> &str| identity.map_or(String::new(), |i| f(i).to_owned());
        let testaments = session
            .testaments
            .lock()
            .iter()
            .filter_map(|t| {
                let event = Message::Event {
                    subscription: 1,
                    publication: 1,
                    details: Dict::new().with("topic", t.topic()),
                    payload: t.payload().clone(),
                };
                let mut out = Vec::new();
                Serializer::MsgPack.try_encode(&event, &mut out).ok().map(|()| STANDARD.encode(out))
            })
            .collect();
        Record {
            realm: realm.to_owned(),
            authid: text(|i| &i.authid),
            authrole: text(|i| &i.authrole),
            authmethod: text(|i| i.authmethod),
            authprovider: text(|i| i.authprovider),
            node: node.name.to_string(),
            incarnation: node.incarnation,
            transport: session.transport().as_str().to_owned(),
            serializer: session.serializer.subprotocol().to_owned(),
            testaments,
        }
    }

    /// Its testaments: topic and payload.
    pub fn testaments(&self) -> Vec<(String, Payload)> {
        self.testaments
            .iter()
            .filter_map(|encoded| {
                let bytes = STANDARD.decode(encoded).ok()?;
                match Serializer::MsgPack.decode(Bytes::from(bytes)).ok()? {
                    Message::Event { details, payload, .. } => {
                        Some((details.get("topic")?.as_str()?.to_owned(), payload))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// What `wamp.session.get` and `on_join` say of it: what they say of a local session.
    pub fn details(&self, session: u64) -> Dict {
        Dict::new()
            .with("session", session)
            .with("authid", self.authid.as_str())
            .with("authrole", self.authrole.as_str())
            .with("authmethod", self.authmethod.as_str())
            .with("authprovider", self.authprovider.as_str())
            .with("serializer", self.serializer.as_str())
            .with("node", self.node.as_str())
    }

    fn is_of(&self, node: &NodeId) -> bool {
        self.incarnation == node.incarnation && *self.node == *node.name
    }
}

/// What the writer task does, in order.
enum Write {
    /// Write the record of local session `id` as it is now (made late, or testaments changed).
    Put(u64),
    /// Send a leaving session's testaments to the other nodes (before its record goes).
    Send(Vec<super::events::Outgoing>),
    /// Delete the record of session `id` (it left).
    Delete(u64),
    /// Tell when everything before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The cluster-wide session table of one node (all realms).
pub struct Sessions {
    cluster: Arc<Cluster>,
    kv: kv::Store,
    /// Every session of the cluster, by id.
    view: RwLock<HashMap<u64, Arc<Record>, foldhash::fast::RandomState>>,
    writes: mpsc::UnboundedSender<Write>,
    pending: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Write>>>,
    /// Weak: the realms hold this table.
    realms: std::sync::OnceLock<HashMap<String, Weak<Realm>>>,
}

/// What became of a join's id reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The id is this session's cluster-wide (or the KV did not answer and it goes on with the
    /// local check: logged, its record written later).
    Yes,
    /// Another session in the cluster holds the id.
    Taken,
}

fn key(session: u64) -> String {
    format!("s.{session}")
}

impl Sessions {
    /// Opens the `SESS` bucket. The view is fed once [`Sessions::start`] runs.
    pub async fn open(cluster: &Arc<Cluster>) -> Result<Arc<Self>, ClusterError> {
        let kv = cluster.open_bucket("SESS", 1, None, None).await?;
        let (writes, pending) = mpsc::unbounded_channel();
        Ok(Arc::new(Sessions {
            cluster: cluster.clone(),
            kv,
            view: RwLock::default(),
            writes,
            pending: parking_lot::Mutex::new(Some(pending)),
            realms: std::sync::OnceLock::new(),
        }))
    }

    /// Starts the watch, the record writer, the kill inbox and the reaper, for `realms`, until
    /// `shutdown`.
    pub async fn start(self: &Arc<Self>, realms: HashMap<String, Arc<Realm>>, shutdown: CancellationToken) {
        let _ = self.realms.set(realms.iter().map(|(name, realm)| (name.clone(), Arc::downgrade(realm))).collect());
        let Some(writes) = self.pending.lock().take() else { return };
        tokio::spawn(write(Arc::downgrade(self), writes));
        // Made before the router takes connections: no record written after it is missed.
        let first = match self.kv.watch_with_history("s.*").await {
            Ok(entries) => Some(entries),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the session bucket yet; retrying");
                None
            }
        };
        tokio::spawn(watch(self.clone(), first, shutdown.clone()));
        tokio::spawn(node_events(self.clone(), self.cluster.node_events(), shutdown.clone()));
        let me = &self.cluster.node().name;
        match self.cluster.client().subscribe(self.kill_subject(me)).await {
            Ok(inbox) => {
                tokio::spawn(serve(self.clone(), inbox, shutdown.clone(), kill));
            }
            Err(error) => tracing::warn!(%error, "sessions of this node cannot be killed from other nodes"),
        }
        match self.cluster.client().subscribe(self.unsubscribe_subject(me)).await {
            Ok(inbox) => {
                tokio::spawn(serve(self.clone(), inbox, shutdown, unsubscribe));
            }
            Err(error) => tracing::warn!(%error, "subscribers of this node cannot be removed from other nodes"),
        }
    }

    fn kill_subject(&self, node: &str) -> String {
        format!("{}.sk", self.cluster.node_subject(node))
    }

    fn unsubscribe_subject(&self, node: &str) -> String {
        format!("{}.su", self.cluster.node_subject(node))
    }

    fn realm(&self, name: &str) -> Option<Arc<Realm>> {
        self.realms.get().and_then(|r| r.get(name)).and_then(Weak::upgrade)
    }

    fn all_realms(&self) -> Vec<Arc<Realm>> {
        self.realms.get().map_or(Vec::new(), |r| r.values().filter_map(Weak::upgrade).collect())
    }

    /// True when some session in the cluster has id `id` (as far as this node's view knows).
    pub fn contains(&self, id: u64) -> bool {
        self.view.read().contains_key(&id)
    }

    /// Claims `session`'s id cluster-wide as it joins `realm` (before WELCOME).
    pub async fn reserve(&self, session: &SessionHandle, realm: &str) -> Reserved {
        let record = Record::of(session, realm, self.cluster.node());
        let value = match serde_json::to_vec(&record) {
            Ok(value) => Bytes::from(value),
            Err(_) => return Reserved::Yes,
        };
        if !*self.cluster.connection().borrow() {
            // Cut off from NATS, a node goes on serving: joins are checked on this node only.
            tracing::debug!(session = session.id, "NATS is down; session id checked on this node only");
            self.view.write().insert(session.id, Arc::new(record));
            let _ = self.writes.send(Write::Put(session.id));
            return Reserved::Yes;
        }
        let timeout = self.cluster.config().kv_timeout();
        match tokio::time::timeout(timeout, self.kv.create(key(session.id), value)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) if error.kind() == kv::CreateErrorKind::AlreadyExists => return Reserved::Taken,
            Ok(Err(error)) => {
                tracing::warn!(session = session.id, %error, "session id not reserved in the cluster; checked on this node only");
                let _ = self.writes.send(Write::Put(session.id));
            }
            Err(_) => {
                tracing::warn!(session = session.id, "session id reservation timed out; checked on this node only");
                let _ = self.writes.send(Write::Put(session.id));
            }
        }
        self.view.write().insert(session.id, Arc::new(record));
        Reserved::Yes
    }

    /// A local session left: its testaments (dispatched on this node already) go to the other
    /// nodes, then its record goes. In that order, and on the task the router's shutdown waits
    /// for ([`Sessions::flush`]), so no reaper finds the record with its testaments unsent.
    pub fn left(&self, session: u64, testaments: Vec<super::events::Outgoing>) {
        self.view.write().remove(&session);
        if !testaments.is_empty() {
            let _ = self.writes.send(Write::Send(testaments));
        }
        let _ = self.writes.send(Write::Delete(session));
    }

    /// A local session's testaments changed: its record is written again.
    pub fn changed(&self, session: u64) {
        let _ = self.writes.send(Write::Put(session));
    }

    /// Waits (up to `timeout`) until every record write asked for so far is done.
    pub async fn flush(&self, timeout: Duration) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.writes.send(Write::Flush(done)).is_ok() && tokio::time::timeout(timeout, written).await.is_err() {
            tracing::warn!("session records not all written before leaving the cluster");
        }
    }

    /// The sessions of `realm`, cluster-wide, with their records.
    pub fn of_realm(&self, realm: &str) -> Vec<(u64, Arc<Record>)> {
        self.view.read().iter().filter(|(_, r)| r.realm == realm).map(|(id, r)| (*id, r.clone())).collect()
    }

    /// The record of session `id`.
    pub fn get(&self, id: u64) -> Option<Arc<Record>> {
        self.view.read().get(&id).cloned()
    }

    /// True when session `id` is connected to this node.
    pub fn is_local(&self, record: &Record) -> bool {
        record.is_of(self.cluster.node())
    }

    /// Asks the node of the (remote) session `id` to close it with `reason` and `message`.
    pub async fn kill_remote(&self, id: u64, record: &Record, reason: &str, message: Option<&str>) {
        let mut request = Dict::new().with("session", id).with("realm", record.realm.as_str()).with("reason", reason);
        if let Some(message) = message {
            request.insert("message", message);
        }
        if let Some(body) = encode(request) {
            if let Err(error) = self.cluster.client().publish(self.kill_subject(&record.node), body).await {
                tracing::warn!(session = id, %error, "kill not sent to the session's node");
            }
        }
    }

    /// Asks the node of the (remote) session `id` to remove it from its subscription
    /// `subscription` (an id of that node), and returns what that node answered;
    /// `wamp.error.network_failure` when it does not answer within the registry timeout.
    pub async fn unsubscribe_remote(&self, id: u64, record: &Record, subscription: u64) -> Result<(), Refusal> {
        let request =
            Dict::new().with("session", id).with("realm", record.realm.as_str()).with("subscription", subscription);
        let body = encode(request).ok_or_else(|| Refusal::new(WampError::InvalidArgument, "unencodable request"))?;
        let request = async_nats::Request::new().payload(body).timeout(Some(self.cluster.config().kv_timeout()));
        let subject = self.unsubscribe_subject(&record.node);
        let answer = self.cluster.client().send_request(subject, request).await.map_err(|error| {
            Refusal::new(
                WampError::NetworkFailure,
                format!("the subscriber's router node {} did not answer ({error})", record.node),
            )
        })?;
        if answer.payload.is_empty() {
            return Ok(());
        }
        let refusal = Serializer::MsgPack.decode(answer.payload).ok().as_ref().and_then(Refusal::from_message);
        Err(refusal.unwrap_or_else(|| Refusal::new(WampError::NetworkFailure, "unreadable answer from another node")))
    }

    /// Reaps a lost node's sessions: publishes their testaments, then deletes their records.
    async fn reap(&self, node: &NodeId) {
        let lost: Vec<(u64, Arc<Record>)> =
            self.view.read().iter().filter(|(_, r)| r.is_of(node)).map(|(id, r)| (*id, r.clone())).collect();
        let mut testaments = 0;
        for (_, record) in &lost {
            let Some(realm) = self.realm(&record.realm) else { continue };
            for (topic, payload) in record.testaments() {
                testaments += 1;
                if let Some(outgoing) = realm.broker.publish_everywhere(&topic, payload) {
                    outgoing.send().await;
                }
            }
        }
        // The testaments reach NATS before the deletes that make every node emit `on_leave`.
        if testaments > 0 {
            let _ = self.cluster.client().flush().await;
        }
        for (id, _) in &lost {
            if let Err(error) = self.kv.delete(key(*id)).await {
                tracing::warn!(session = id, %error, "could not delete a lost node's session record");
            }
        }
        tracing::info!(node = %node, sessions = lost.len(), testaments, "reaped a lost node's sessions");
    }

    /// The nodes that own records in the view and hold no lease.
    fn dead_nodes(&self) -> Vec<NodeId> {
        let mut dead: Vec<NodeId> = Vec::new();
        for record in self.view.read().values() {
            let node = NodeId::new(&record.node, record.incarnation);
            if node != *self.cluster.node() && !self.cluster.is_live(&node) && !dead.contains(&node) {
                dead.push(node);
            }
        }
        dead
    }

    /// Writes every local session's record again (this node was reaped while cut off).
    fn rewrite_local(&self) {
        for realm in self.all_realms() {
            for session in realm.sessions.iter() {
                let _ = self.writes.send(Write::Put(*session.key()));
            }
        }
    }

    /// Forgets every local session's testaments.
    fn drop_testaments(&self) {
        for realm in self.all_realms() {
            for session in realm.sessions.iter() {
                session.testaments.lock().clear();
            }
        }
    }

    /// Closes every local session with `wamp.close.system_shutdown` (fence): their clients
    /// reconnect, through the load balancer, to a node that stayed in the cluster.
    fn close_local(&self) {
        for realm in self.all_realms() {
            let local: Vec<Arc<SessionHandle>> = realm.sessions.iter().map(|s| s.clone()).collect();
            for session in local {
                let message = Some("this node was cut off from the cluster");
                crate::meta::kill_for(&session, "wamp.close.system_shutdown", message, "the cluster (fence)");
            }
        }
    }

    fn local_session(&self, id: u64) -> Option<(Arc<Realm>, Arc<SessionHandle>)> {
        self.all_realms().into_iter().find_map(|realm| {
            let session = realm.sessions.get(&id).map(|s| s.clone());
            session.map(|s| (realm, s))
        })
    }
}

/// Ends when the table is dropped (it holds the only sender).
async fn write(sessions: Weak<Sessions>, mut writes: mpsc::UnboundedReceiver<Write>) {
    while let Some(next) = writes.recv().await {
        let Some(sessions) = sessions.upgrade() else { return };
        match next {
            Write::Put(id) => {
                let Some((realm, session)) = sessions.local_session(id) else { continue };
                let record = Record::of(&session, &realm.name, sessions.cluster.node());
                let Ok(value) = serde_json::to_vec(&record) else { continue };
                sessions.view.write().insert(id, Arc::new(record));
                if let Err(error) = sessions.kv.put(key(id), value.into()).await {
                    tracing::warn!(session = id, %error, "could not write a session record");
                }
            }
            Write::Send(testaments) => {
                for testament in testaments {
                    testament.send().await;
                }
            }
            Write::Delete(id) => {
                if let Err(error) = sessions.kv.delete(key(id)).await {
                    tracing::warn!(session = id, %error, "could not delete a session record");
                }
            }
            Write::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Feeds the view from the bucket, and emits `on_join`/`on_leave` for other nodes' sessions.
async fn watch(sessions: Arc<Sessions>, mut first: Option<kv::Watch>, shutdown: CancellationToken) {
    loop {
        // With history: the last value of every key, then what changes.
        let watching = match first.take() {
            Some(entries) => Ok(entries),
            None => sessions.kv.watch_with_history("s.*").await,
        };
        let mut entries = match watching {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the session bucket; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // A watch starts with the bucket as it is: records deleted while this node was not
        // watching (cut off from NATS) are found missing once that replay is over.
        let mut replayed = Some(std::collections::HashSet::new());
        loop {
            let entry = tokio::select! {
                _ = shutdown.cancelled() => return,
                entry = entries.next() => entry,
            };
            match entry {
                Some(Ok(entry)) => {
                    let caught_up = entry.delta == 0;
                    if let (Some(seen), Some(id)) = (replayed.as_mut(), session_of(&entry.key)) {
                        seen.insert(id);
                    }
                    apply(&sessions, entry);
                    if let (true, Some(seen)) = (caught_up, replayed.take()) {
                        forget_missing(&sessions, &seen);
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "session bucket watch failed; watching again");
                    break;
                }
                None => break,
            }
        }
    }
}

fn session_of(key: &str) -> Option<u64> {
    key.strip_prefix("s.").and_then(|id| id.parse::<u64>().ok())
}

/// Drops from the view the other nodes' sessions a fresh watch did not replay, with `on_leave`.
fn forget_missing(sessions: &Sessions, seen: &std::collections::HashSet<u64>) {
    let gone: Vec<(u64, Arc<Record>)> = {
        let mut view = sessions.view.write();
        let missing: Vec<u64> =
            view.iter().filter(|(id, r)| !seen.contains(id) && !sessions.is_local(r)).map(|(id, _)| *id).collect();
        missing.into_iter().filter_map(|id| view.remove(&id).map(|r| (id, r))).collect()
    };
    for (id, record) in gone {
        if let Some(realm) = sessions.realm(&record.realm) {
            crate::meta::left_elsewhere(&realm, id, &record);
        }
    }
}

fn apply(sessions: &Sessions, entry: kv::Entry) {
    let Some(id) = session_of(&entry.key) else { return };
    match entry.operation {
        kv::Operation::Put => {
            let Ok(record) = serde_json::from_slice::<Record>(&entry.value) else {
                tracing::warn!(key = entry.key, "unreadable session record; ignored");
                return;
            };
            // This node keeps its own sessions in the view itself.
            if sessions.is_local(&record) {
                return;
            }
            let record = Arc::new(record);
            let joined = sessions.view.write().insert(id, record.clone()).is_none();
            if joined {
                if let Some(realm) = sessions.realm(&record.realm) {
                    crate::meta::joined_elsewhere(&realm, id, &record);
                }
            }
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            let mut view = sessions.view.write();
            let is_remote = view.get(&id).is_some_and(|r| !sessions.is_local(r));
            let gone = if is_remote { view.remove(&id) } else { None };
            drop(view);
            if let Some(record) = gone {
                if let Some(realm) = sessions.realm(&record.realm) {
                    crate::meta::left_elsewhere(&realm, id, &record);
                }
            }
        }
    }
}

async fn node_events(
    sessions: Arc<Sessions>,
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    shutdown: CancellationToken,
) {
    // Records can outlive every node that saw their node go (a whole cluster restarted, a reaper
    // that died mid-way): a sweep each lease reaps the nodes not alive at two sweeps in a row.
    let mut sweep = tokio::time::interval(sessions.cluster.config().lease());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut suspects: Vec<NodeId> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sweep.tick() => {
                let dead = sessions.dead_nodes();
                for node in dead.iter().filter(|n| suspects.contains(n)) {
                    if let Ok(true) = sessions.cluster.claim("sess", node).await {
                        sessions.reap(node).await;
                    }
                }
                suspects = dead;
                continue;
            }
            event = events.recv() => event,
        };
        match event {
            Ok(NodeEvent::Lost(node)) if node == *sessions.cluster.node() => {
                // The node that reaped this one published these sessions' testaments already.
                sessions.drop_testaments();
                match sessions.cluster.config().on_isolation {
                    super::Isolation::Rejoin => {
                        tracing::warn!("this node was reaped by the cluster; writing its session records again");
                        sessions.rewrite_local();
                    }
                    super::Isolation::Fence => {
                        tracing::warn!("this node was reaped by the cluster; closing its sessions (fence)");
                        sessions.close_local();
                    }
                }
            }
            Ok(NodeEvent::Lost(node)) => match sessions.cluster.claim("sess", &node).await {
                Ok(true) => sessions.reap(&node).await,
                Ok(false) => {}
                Err(error) => tracing::warn!(node = %node, %error, "could not claim a lost node's sessions"),
            },
            Ok(NodeEvent::Joined(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed node events")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A request between nodes about one session: its details, in an EVENT in MessagePack.
fn encode(details: Dict) -> Option<Bytes> {
    let event = Message::Event { subscription: 1, publication: 1, details, payload: Payload::Empty };
    let mut out = Vec::new();
    Serializer::MsgPack.try_encode(&event, &mut out).ok()?;
    Some(out.into())
}

/// Serves the requests other nodes send about this node's sessions on `inbox` with `handle`,
/// given the request's details, the realm and the local session it names. A request naming no
/// session of this node is answered `wamp.error.no_such_session` if it expects an answer (a kill
/// does not); one that cannot be read is dropped.
async fn serve(
    sessions: Arc<Sessions>,
    mut inbox: async_nats::Subscriber,
    shutdown: CancellationToken,
    handle: fn(&async_nats::Client, async_nats::Message, &Dict, &Realm, Arc<SessionHandle>),
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = inbox.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let Ok(Message::Event { details, .. }) = Serializer::MsgPack.decode(message.payload.clone()) else { continue };
        let (Some(id), Some(realm)) =
            (details.get("session").and_then(Value::as_u64), details.get("realm").and_then(Value::as_str))
        else {
            continue;
        };
        let Some(realm) = sessions.realm(realm) else { continue };
        let Some(session) = realm.sessions.get(&id).map(|s| s.clone()) else {
            if let Some(reply) = message.reply {
                let refusal = Refusal::new(WampError::NoSuchSession, format!("no session {id} on this node"));
                answer(sessions.cluster.client(), reply, Err(refusal));
            }
            continue;
        };
        handle(sessions.cluster.client(), message, &details, &realm, session);
    }
}

/// Closes a local session another node was asked to kill.
fn kill(_: &async_nats::Client, _: async_nats::Message, details: &Dict, _: &Realm, session: Arc<SessionHandle>) {
    let reason = details.get("reason").and_then(Value::as_str).unwrap_or("wamp.close.killed");
    crate::meta::kill_for(&session, reason, details.get("message").and_then(Value::as_str), "another node");
}

/// Removes a local session from one of its subscriptions, as another node was asked to.
fn unsubscribe(
    client: &async_nats::Client,
    message: async_nats::Message,
    details: &Dict,
    realm: &Realm,
    session: Arc<SessionHandle>,
) {
    let Some(reply) = message.reply else { return };
    let outcome = match details.get("subscription").and_then(Value::as_u64) {
        Some(subscription) => realm.broker.unsubscribe(session.id, subscription),
        None => Err(Refusal::new(WampError::InvalidArgument, "no subscription named")),
    };
    if outcome.is_ok() {
        tracing::info!(session = session.id, "subscriber removed at another node's request");
    }
    answer(client, reply, outcome);
}

/// Answers a request of another node: empty for done, else the refusal as an ERROR.
fn answer(client: &async_nats::Client, reply: async_nats::Subject, outcome: Result<(), Refusal>) {
    let body = match outcome {
        Ok(()) => Bytes::new(),
        Err(refusal) => {
            let mut out = Vec::new();
            let message = refusal.to_message(crate::wire::MessageType::Call, 0);
            if Serializer::MsgPack.try_encode(&message, &mut out).is_err() {
                return;
            }
            out.into()
        }
    };
    let client = client.clone();
    tokio::spawn(async move { client.publish(reply, body).await });
}
