//! Calls between cluster nodes over NATS.
//!
//! A member on another node is, in this node's view, a stand-in session (a *proxy*): a
//! [`SessionHandle`] with the remote session's id and callee features, whose queue is drained by
//! a task that publishes what a writer would write (INVOCATION, further chunks, INTERRUPT) to the
//! member's node. Answers come back to this node's inbox and go through
//! [`call::complete`](crate::dealer::call::complete) as a local callee's YIELD or ERROR would. On
//! the callee's node, the calls of one origin node are made by a stand-in caller whose RESULTs
//! and ERRORs go back over NATS. So the whole in-flight state machine of [`crate::dealer::call`]
//! (one answer per call, cancels, timeouts, progressive results and invocations, a callee or
//! caller leaving) is the single-node one, unchanged, on both nodes; the local call path pays
//! nothing for it.
//!
//! # Subjects and envelope
//! Each node subscribes to `rh.<cluster>.n.<node>.>`. INV (a call), CHK (a further chunk) and
//! INT (an interrupt) go to `….n.<callee node>.i`; RES (final or progressive), ERR and NACK go
//! to the reply subject of the INV, `….n.<origin>.r.<callee session>.<seq>`, where `seq` numbers
//! the origin's forwarded calls. If the callee node's inbox is gone, NATS answers no-responders
//! on that same subject, so the call ends at once with `wamp.error.canceled`. Headers carry the
//! routing (`Rh-K` kind, `Rh-O` origin node, `Rh-S` target session, `Rh-R` realm); the body is a
//! tag byte naming a serializer and the WAMP message in it, in the serializer of the payload it
//! carries, so arguments pass through as the caller's bytes and are transcoded, once, only for
//! a callee of another serializer.
//!
//! # Liveness of calls between nodes
//! Core NATS delivers at most once: an INV or its final RES/ERR can be lost (a slow consumer
//! dropped, a NATS server lost mid-flight) while both nodes stay connected, and a callee's node
//! can drop the stand-in caller of an origin it took for lost. So every heartbeat the origin sends
//! each callee node one PRB (probe) listing the `(callee session, seq)` of its calls to that node
//! forwarded before the previous tick; the callee node answers, to `….n.<origin>.p.<callee>`,
//! only with those it does not hold (never got, or already answered), and the origin ends each
//! of these with `wamp.error.canceled` through the stand-in's invocation table (so never a second
//! answer).
//! Only a positive "not held" cancels: a lost probe or a lost reply delays the verdict by one
//! heartbeat, never cancels a live call, and nothing is sent at all while no forwarded call is a
//! heartbeat old; the callee node keeps no timer. Orderings that make "not held" safe:
//! - a PRB goes to the same subject, on the same connection, after the INVs it names (only seqs
//!   whose INV was handed to the client are probed), so the callee node's inbox has seen each INV
//!   before the PRB;
//! - the callee node forgets a call only after its final answer was handed to the client, and
//!   answers the PRB after that, to the origin's same inbox subscription: the origin applies the
//!   answer first and then finds nothing to cancel.
//!
//! A probe NATS finds nobody to deliver to (no responders) says the callee node's inbox is gone.
//! Twice in a row, a heartbeat apart, and the node crashed or is cut off: the calls it held end
//! with `wamp.error.canceled` then, not when its lease ends. Once is not enough: a node moving to
//! another server of a NATS cluster is away for a moment.
//!
//! # Revocations
//! `wamp.registration.remove_callee` and `force_reregister` for a member on another node send
//! that node an RMV request (to its `….i`); it revokes the member as it would for a local caller
//! (UNREGISTERED with the reason, the record written) and answers once its write is applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::{HeaderMap, StatusCode, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Replica;
use crate::cluster::{Cluster, ClusterError, NodeId};
use crate::dealer::call::{self, CallOptions, CancelMode, Chunk, Invocation, Opened, Outcome};
use crate::error::{Refusal, WampError};
use crate::router::RouterShared;
use crate::session::outbox::OutboxLimits;
use crate::session::{CalleeFeatures, Identity, Outbound, SessionHandle};
use crate::wire::{Dict, Message, Payload, Serializer, Value};

const KIND: &str = "Rh-K";
const ORIGIN: &str = "Rh-O";
const TARGET: &str = "Rh-S";
const REALM: &str = "Rh-R";

/// The most calls one PRB names (64 KiB).
const PROBE_PAIRS: usize = 4096;

/// The calls of this node to members on other nodes, and of other nodes to members here.
pub(super) struct Remote(Arc<Inner>);

struct Inner {
    client: async_nats::Client,
    cluster: Arc<Cluster>,
    router: Weak<RouterShared>,
    /// `rh.<cluster>.n.<this node>`.
    inbox: String,
    /// This node as `name/incarnation`.
    origin: String,
    /// Numbers this node's forwarded calls (the INVOCATION id of the stand-in callee).
    seq: AtomicU64,
    /// Probe rounds so far (see [`probe`]).
    round: AtomicU64,
    /// The calls the latest probe round asked about: forwarded with a seq up to this.
    probed: AtomicU64,
    /// The round in which each node's inbox was last found gone (no responders to a probe), by
    /// node name: gone in two rounds in a row, the node is taken for dead for the calls it held.
    absent: Mutex<HashMap<Arc<str>, u64>>,
    /// Stand-ins of members on other nodes, by session id.
    callees: Mutex<HashMap<u64, Proxy>>,
    /// Stand-in callers of the calls other nodes forward here, by origin node.
    callers: Mutex<HashMap<NodeId, Arc<Caller>>>,
    limits: OutboxLimits,
    /// Bytes of further chunks a forwarded progressive invocation may hold here.
    max_buffered: usize,
    connected: watch::Receiver<bool>,
    stop: CancellationToken,
}

struct Proxy {
    node: NodeId,
    handle: Arc<SessionHandle>,
    /// The last seq whose INV its forwarding task handed to the client (seqs of one stand-in
    /// go out in increasing order).
    published: Arc<AtomicU64>,
}

struct Caller {
    handle: Arc<SessionHandle>,
    /// Where the answers of each call in flight go (the reply subject of its INV).
    replies: Mutex<HashMap<u64, Subject>>,
    /// The last chunk that had to wait for its callee's queue: later chunks go after it, so the
    /// chunks of a call reach its callee in the order they were sent.
    chunks: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Caller {
    /// Delivers a further chunk of a forwarded progressive invocation, after any chunk still
    /// waiting.
    fn chunk(self: &Arc<Self>, request: u64, chunk: Chunk, max_buffered: usize) {
        let mut tail = self.chunks.lock();
        let waiting = tail.take().filter(|t| !t.is_finished());
        let caller = self.clone();
        let deliver = async move { call::chunk(&caller.handle, request, chunk, max_buffered).await };
        match waiting {
            Some(before) => {
                *tail = Some(tokio::spawn(async move {
                    let _ = before.await;
                    deliver.await
                }))
            }
            None => {
                let mut deliver = Box::pin(deliver);
                if deliver.as_mut().now_or_never().is_none() {
                    *tail = Some(tokio::spawn(deliver));
                }
            }
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.0.stop.cancel();
    }
}

impl Remote {
    pub(super) fn new(cluster: &Arc<Cluster>, router: &Arc<RouterShared>) -> Self {
        let node = cluster.node();
        Remote(Arc::new(Inner {
            client: cluster.client().clone(),
            cluster: cluster.clone(),
            router: Arc::downgrade(router),
            inbox: cluster.node_subject(&node.name),
            origin: node.to_string(),
            seq: AtomicU64::new(0),
            round: AtomicU64::new(0),
            probed: AtomicU64::new(0),
            absent: Mutex::default(),
            callees: Mutex::default(),
            callers: Mutex::default(),
            limits: OutboxLimits {
                max_bytes: 64 << 20,
                slow_consumer_bytes: 1 << 30,
                stuck_timeout: router.config.stuck_timeout(),
            },
            max_buffered: router.config.max_message_size,
            connected: cluster.connection(),
            stop: CancellationToken::new(),
        }))
    }

    /// The stand-in of `session` on `node` (made on first use).
    pub(super) fn callee(
        &self,
        node: &NodeId,
        realm: &str,
        session: u64,
        features: CalleeFeatures,
    ) -> Arc<SessionHandle> {
        let inner = &self.0;
        let mut callees = inner.callees.lock();
        if let Some(proxy) = callees.get(&session).filter(|p| p.node == *node && !p.handle.closing.is_cancelled()) {
            return proxy.handle.clone();
        }
        // Stand-ins no registration holds any more, with nothing in flight, go now: two
        // references left are the table's and the forwarding task's.
        callees.retain(|_, p| {
            let idle = Arc::strong_count(&p.handle) <= 2 && p.handle.invocations.is_empty();
            if idle {
                p.handle.kill();
            }
            !idle
        });
        let (handle, queue) = SessionHandle::new(session, Serializer::MsgPack, inner.limits);
        handle.set_identity(Identity {
            authid: String::new(),
            authrole: String::new(),
            authmethod: "cluster",
            authprovider: "cluster",
            features,
        });
        let published = Arc::new(AtomicU64::new(0));
        let proxy = Proxy { node: node.clone(), handle: handle.clone(), published: published.clone() };
        if let Some(old) = callees.insert(session, proxy) {
            old.handle.kill();
        }
        let subject = format!("{}.i", inner.cluster.node_subject(&node.name));
        tokio::spawn(forward(inner.clone(), handle.clone(), published, subject, Arc::from(realm), queue));
        handle
    }

    /// `node` is lost: calls in flight to its members end with `wamp.error.canceled`, and calls
    /// it made here are interrupted.
    pub(super) fn node_lost(&self, node: &NodeId) {
        let inner = &self.0;
        let lost: Vec<Arc<SessionHandle>> = {
            let mut callees = inner.callees.lock();
            let sessions: Vec<u64> = callees.iter().filter(|(_, p)| p.node == *node).map(|(s, _)| *s).collect();
            sessions.iter().filter_map(|s| callees.remove(s)).map(|p| p.handle).collect()
        };
        for proxy in lost {
            proxy.kill();
            call::callee_gone(&proxy);
        }
        if let Some(caller) = inner.callers.lock().remove(node) {
            call::caller_gone(&caller.handle);
            caller.handle.kill();
        }
        inner.absent.lock().remove(&node.name);
    }

    /// The node of `session`, a member on another node.
    pub(super) fn node_of(&self, session: u64) -> Option<NodeId> {
        self.0.callees.lock().get(&session).map(|p| p.node.clone())
    }

    /// Asks `node` to revoke its member `callee` of `registration` with `reason`; returns once
    /// that node's record no longer holds the member, with its refusal, or with
    /// `wamp.error.network_failure` when the node does not answer in `wait`.
    pub(super) async fn revoke(
        &self,
        node: &NodeId,
        realm: &str,
        registration: u64,
        callee: u64,
        reason: &str,
        wait: Duration,
    ) -> Result<(), Refusal> {
        let inner = &self.0;
        let details = Dict::new()
            .with("realm", realm)
            .with("registration", registration)
            .with("callee", callee)
            .with("reason", reason);
        let body = encode(&Message::Event { subscription: 0, publication: 0, details, payload: Payload::Empty })
            .map_err(|e| Refusal::new(WampError::InvalidArgument, e.to_string()))?;
        let mut headers = headers("RMV");
        headers.insert(ORIGIN, inner.origin.as_str());
        headers.insert(REALM, realm);
        let subject = format!("{}.i", inner.cluster.node_subject(&node.name));
        let request = async_nats::Request::new().headers(headers).payload(body).timeout(Some(wait));
        let answer = inner.client.send_request(subject, request).await.map_err(|error| {
            let outcome = match error.kind() {
                async_nats::client::RequestErrorKind::NoResponders => "it is gone; nothing was changed",
                _ => "the callee may or may not have been removed",
            };
            Refusal::new(
                WampError::NetworkFailure,
                format!("the callee's router node {node} did not answer ({error}): {outcome}"),
            )
        })?;
        if answer.payload.is_empty() {
            return Ok(());
        }
        match decode(&answer.payload).as_ref().and_then(Refusal::from_message) {
            Some(refusal) => Err(refusal),
            None => Err(Refusal::new(WampError::NetworkFailure, "unreadable answer from the callee's router node")),
        }
    }

    /// This node lost NATS: calls in flight to other nodes end with `wamp.error.canceled`.
    pub(super) fn disconnected(&self) {
        let proxies: Vec<Arc<SessionHandle>> = self.0.callees.lock().values().map(|p| p.handle.clone()).collect();
        for proxy in proxies {
            call::callee_gone(&proxy);
        }
    }
}

/// Subscribes this node's inbox and handles what arrives there.
pub(super) async fn start_inbox(replica: &Arc<Replica>) -> Result<(), ClusterError> {
    let inner = replica.remote.0.clone();
    let mut inbox = inner
        .client
        .subscribe(format!("{}.>", inner.inbox))
        .await
        .map_err(|e| ClusterError::jetstream("subscribing the node's inbox", e))?;
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = inner.stop.cancelled() => return,
                message = inbox.next() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            inner.received(message);
        }
    });
    tokio::spawn(probe(replica.remote.0.clone()));
    Ok(())
}

/// Every heartbeat, asks the nodes serving this node's calls about the calls forwarded to them
/// before the previous tick (see the module doc).
async fn probe(inner: Arc<Inner>) {
    let period = Duration::from_millis(inner.cluster.config().heartbeat_ms.max(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last seq handed out at the previous tick: calls up to it are at least a period old.
    let mut bound = 0;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let older = std::mem::replace(&mut bound, inner.seq.load(Ordering::Relaxed));
        inner.round.fetch_add(1, Ordering::Relaxed);
        inner.probed.store(older, Ordering::Relaxed);
        if older > 0 && *inner.connected.borrow() {
            inner.send_probes(older).await;
        }
    }
}

/// The envelope body: a tag naming the serializer, then the message in it. The serializer is the
/// payload's own, so the arguments are copied, not re-encoded.
fn encode(message: &Message) -> Result<Bytes, crate::wire::EncodeError> {
    let serializer = match message.payload() {
        Some(Payload::Raw(raw)) => raw.serializer,
        _ => Serializer::MsgPack,
    };
    let tag = Serializer::ALL.iter().position(|s| *s == serializer).unwrap_or(1) as u8;
    let mut out = Vec::with_capacity(96);
    out.push(tag);
    serializer.try_encode(message, &mut out)?;
    Ok(Bytes::from(out))
}

fn decode(body: &Bytes) -> Option<Message> {
    let serializer = *Serializer::ALL.get(usize::from(*body.first()?))?;
    serializer.decode(body.slice(1..)).ok()
}

fn flag(details: &Dict, key: &str) -> bool {
    details.get(key).and_then(Value::as_bool) == Some(true)
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn headers(kind: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(KIND, kind);
    headers
}

/// Runs a future to its end now if it does not wait, else as its own task: the inbox must not
/// wait on one callee's queue.
fn run_or_spawn(future: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut future = Box::pin(future);
    if future.as_mut().now_or_never().is_none() {
        tokio::spawn(future);
    }
}

/// Drains a stand-in callee's queue: what a writer would write goes to the member's node.
async fn forward(
    inner: Arc<Inner>,
    proxy: Arc<SessionHandle>,
    published: Arc<AtomicU64>,
    subject: String,
    realm: Arc<str>,
    mut queue: UnboundedReceiver<Outbound>,
) {
    loop {
        let item = tokio::select! {
            biased;
            _ = proxy.closing.cancelled() => break,
            item = queue.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        proxy.outbox().taken(item.size());
        match item {
            Outbound::Invocation(call) => inner.send_invocation(&proxy, &published, &subject, &realm, call).await,
            Outbound::InvocationChunk(delivery) if proxy.invocations.contains(delivery.invocation) => {
                let delivery = *delivery;
                inner.send_chunk(&proxy, &subject, delivery.invocation, delivery.registration, delivery.chunk).await;
            }
            Outbound::Message(message) if matches!(*message, Message::Interrupt { .. }) => {
                let mut headers = headers("INT");
                headers.insert(ORIGIN, inner.origin.as_str());
                if let Ok(body) = encode(&message) {
                    let _ = inner.client.publish_with_headers(subject.clone(), headers, body).await;
                }
            }
            _ => {}
        }
    }
    // Calls that were on their way to the member go to another one.
    queue.close();
    while let Ok(item) = queue.try_recv() {
        if let Outbound::Invocation(mut call) = item {
            call.unavailable.push(proxy.id);
            call::reroute(call);
        }
    }
}

/// Drains a stand-in caller's queue: RESULTs and ERRORs go back to the origin node.
async fn replies(inner: Arc<Inner>, caller: Arc<Caller>, mut queue: UnboundedReceiver<Outbound>) {
    loop {
        let item = tokio::select! {
            biased;
            _ = caller.handle.closing.cancelled() => return,
            item = queue.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        caller.handle.outbox().taken(item.size());
        let Outbound::Message(message) = item else { continue };
        let (request, last, kind) = match &*message {
            Message::Result { request, details, .. } => (*request, !flag(details, "progress"), "RES"),
            Message::Error { request, .. } => (*request, true, "ERR"),
            _ => continue,
        };
        // A final answer is forgotten only once handed to the client: a probe that finds the
        // call gone is answered after it (see the module doc).
        let Some(subject) = caller.replies.lock().get(&request).cloned() else { continue };
        let (body, kind) = match encode(&message) {
            Ok(body) => (body, kind),
            Err(error) => {
                let reason = format!("the answer cannot be carried to the caller's router node: {error}");
                let refusal = Refusal::new(WampError::InvalidArgument, reason);
                match encode(&refusal.to_message(crate::wire::MessageType::Call, request)) {
                    Ok(body) => (body, "ERR"),
                    Err(_) => continue,
                }
            }
        };
        let _ = inner.client.publish_with_headers(subject, headers(kind), body).await;
        if last {
            caller.replies.lock().remove(&request);
        }
    }
}

impl Inner {
    async fn send_invocation(
        &self,
        proxy: &Arc<SessionHandle>,
        published: &AtomicU64,
        subject: &str,
        realm: &str,
        mut call: Box<Invocation>,
    ) {
        // The member may have left after the call was routed here: another member takes it.
        if !call.registration.has_member(proxy.id) {
            return call::reroute(call);
        }
        if !*self.connected.borrow() {
            return call.fail(WampError::Canceled, "this router node is cut off from the other nodes");
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let registration = call.registration.id;
        let details = std::mem::take(&mut call.details);
        let message = Message::Invocation { request: seq, registration, details, payload: call.payload.clone() };
        let body = match encode(&message) {
            Ok(body) => body,
            Err(error) => {
                let reason = format!("the call's arguments cannot be sent to the callee's router node: {error}");
                return call.fail(WampError::InvalidArgument, &reason);
            }
        };
        let (caller, request, token) = {
            let (caller, request, token) = call.caller_request();
            (caller.clone(), request, token)
        };
        // Pending at the stand-in first, then running for the caller: a cancel that sees the call
        // running finds it there.
        if let Err((_, call)) = proxy.invocations.insert(seq, call, usize::MAX, usize::MAX) {
            return call.fail(WampError::Canceled, "the call could not be forwarded");
        }
        let Some(chunks) = call::start(&caller, request, token, proxy, seq, registration) else {
            if let Some(call) = proxy.invocations.remove(seq) {
                call.discard();
            }
            return;
        };
        let mut headers = headers("INV");
        headers.insert(ORIGIN, self.origin.as_str());
        headers.insert(TARGET, proxy.id.to_string());
        headers.insert(REALM, realm);
        let reply = format!("{}.r.{}.{seq}", self.inbox, proxy.id);
        if let Err(error) = self.client.publish_with_reply_and_headers(subject.to_owned(), reply, headers, body).await {
            if let Some(call) = proxy.invocations.remove(seq) {
                let too_big = error.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded;
                let error_uri = if too_big { WampError::PayloadSizeExceeded } else { WampError::Canceled };
                call.fail(error_uri, &format!("the call could not be forwarded to the callee's router node: {error}"));
            }
            return;
        }
        published.store(seq, Ordering::Release);
        for chunk in chunks {
            self.send_chunk(proxy, subject, seq, registration, chunk).await;
        }
    }

    async fn send_chunk(&self, proxy: &SessionHandle, subject: &str, seq: u64, registration: u64, chunk: Chunk) {
        let Chunk { progress, payload } = chunk;
        let details = if progress { Dict::new().with("progress", true) } else { Dict::new() };
        let message = Message::Invocation { request: seq, registration, details, payload };
        let mut headers = headers("CHK");
        headers.insert(ORIGIN, self.origin.as_str());
        let sent = match encode(&message) {
            Ok(body) => {
                self.client.publish_with_headers(subject.to_owned(), headers, body).await.map_err(|e| e.to_string())
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = sent {
            if let Some(call) = proxy.invocations.remove(seq) {
                call.fail(WampError::Canceled, &format!("a chunk of the call could not be forwarded: {reason}"));
            }
        }
    }

    fn received(self: &Arc<Self>, message: async_nats::Message) {
        let subject = message.subject.as_str();
        let Some(tail) = subject.strip_prefix(self.inbox.as_str()).and_then(|t| t.strip_prefix('.')) else { return };
        if let Some(rest) = tail.strip_prefix("r.") {
            let mut parts = rest.split('.').map(|p| p.parse::<u64>());
            if let (Some(Ok(session)), Some(Ok(seq))) = (parts.next(), parts.next()) {
                self.answer(session, seq, &message);
            }
        } else if tail == "i" {
            self.inbound(message);
        } else if let Some(node) = tail.strip_prefix("p.") {
            self.not_held(node, &message);
        }
    }

    /// Sends each callee node one PRB with the calls forwarded to it up to `bound` that still
    /// wait for their answer.
    async fn send_probes(&self, bound: u64) {
        let proxies: Vec<(NodeId, Arc<SessionHandle>, u64)> = self
            .callees
            .lock()
            .values()
            .filter(|p| !p.handle.invocations.is_empty())
            .map(|p| (p.node.clone(), p.handle.clone(), p.published.load(Ordering::Acquire).min(bound)))
            .collect();
        let mut probes: HashMap<NodeId, Vec<u8>> = HashMap::new();
        for (node, proxy, limit) in proxies {
            let body = probes.entry(node).or_default();
            for seq in proxy.invocations.ids_up_to(limit) {
                body.extend_from_slice(&proxy.id.to_be_bytes());
                body.extend_from_slice(&seq.to_be_bytes());
            }
        }
        for (node, body) in probes {
            let subject = format!("{}.i", self.cluster.node_subject(&node.name));
            let reply = format!("{}.p.{}", self.inbox, node.name);
            // Parts well under NATS's payload limit, however many calls are in flight.
            for part in body.chunks(PROBE_PAIRS * 16) {
                let mut headers = headers("PRB");
                headers.insert(ORIGIN, self.origin.as_str());
                let body = Bytes::copy_from_slice(part);
                let published =
                    self.client.publish_with_reply_and_headers(subject.clone(), reply.clone(), headers, body);
                if let Err(error) = published.await {
                    tracing::debug!(%node, %error, "liveness probe not sent");
                }
            }
        }
    }

    /// The answer to a PRB sent to the node named `node`: the `(session, seq)` pairs it does not
    /// hold. Those still waiting here end with `wamp.error.canceled`; those answered meanwhile
    /// are gone.
    ///
    /// No responders means nobody listens at that node's inbox. Once is not enough to give up on
    /// its calls: a node moving to another NATS server is away for a moment and answers after.
    /// Gone in two probe rounds in a row, a heartbeat apart, the node crashed or is cut off: the
    /// calls it held end now rather than when its lease ends (15 s with replicated buckets).
    fn not_held(&self, node: &str, message: &async_nats::Message) {
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            let round = self.round.load(Ordering::Relaxed);
            let gone_before = self.absent.lock().insert(node.into(), round).is_some_and(|r| r + 1 == round);
            if gone_before {
                self.fail_probed(node);
            }
            return;
        }
        if message.status.is_some() {
            return;
        }
        for (session, seq) in pairs(&message.payload) {
            let Some(proxy) = self.callees.lock().get(&session).map(|p| p.handle.clone()) else { continue };
            if let Some(call) = proxy.invocations.remove(seq) {
                tracing::warn!(session, seq, "a call to another node was lost there (or its answer was); canceled");
                call.fail(WampError::Canceled, "the callee's router node lost the call or its answer");
            }
        }
    }

    /// Ends with `wamp.error.canceled` the calls forwarded to the node named `node` that the
    /// latest probe round asked about (newer ones learn for themselves: NATS answers their INV
    /// with no responders and they are routed again).
    fn fail_probed(&self, node: &str) {
        let bound = self.probed.load(Ordering::Relaxed);
        let proxies: Vec<Arc<SessionHandle>> =
            self.callees.lock().values().filter(|p| &*p.node.name == node).map(|p| p.handle.clone()).collect();
        let mut failed = 0;
        for proxy in proxies {
            for seq in proxy.invocations.ids_up_to(bound) {
                if let Some(call) = proxy.invocations.remove(seq) {
                    call.fail(WampError::Canceled, "the callee's router node is gone (nobody listens there)");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            tracing::warn!(node, calls = failed, "a node's inbox is gone; its calls in flight are canceled");
        }
    }

    /// A PRB from `origin`: answers with the calls it names that this node does not hold.
    fn probed(&self, origin: &NodeId, message: &async_nats::Message) {
        let Some(reply) = message.reply.clone() else { return };
        let caller = self.callers.lock().get(origin).cloned();
        let mut unknown = Vec::new();
        {
            let replies = caller.as_ref().map(|c| c.replies.lock());
            for (session, seq) in pairs(&message.payload) {
                if !replies.as_ref().is_some_and(|r| r.contains_key(&seq)) {
                    unknown.extend_from_slice(&session.to_be_bytes());
                    unknown.extend_from_slice(&seq.to_be_bytes());
                }
            }
        }
        if unknown.is_empty() {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move { client.publish(reply, unknown.into()).await });
    }

    /// An answer (or NACK, or no-responders) for the forwarded call `seq` to `session`.
    fn answer(&self, session: u64, seq: u64, message: &async_nats::Message) {
        let Some(proxy) = self.callees.lock().get(&session).map(|p| p.handle.clone()) else { return };
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            // Nobody listens at that node's inbox any more (it crashed or left, its lease not yet
            // ended): NATS delivered the INV to no one, so the call is routed again, away from
            // every member on that node, as a hot standby expects; never answered twice.
            if let Some(mut call) = proxy.invocations.remove(seq) {
                let callees = self.callees.lock();
                if let Some(node) = callees.get(&session).map(|p| &p.node) {
                    call.unavailable.extend(callees.iter().filter(|(_, p)| p.node == *node).map(|(id, _)| *id));
                }
                drop(callees);
                call::reroute(call);
            }
            return;
        }
        match header(message, KIND) {
            // The member had left its node before the call got there (this view lagged): the call
            // is routed again, without that member.
            Some("NACK") => {
                if let Some(mut call) = proxy.invocations.remove(seq) {
                    call.unavailable.push(proxy.id);
                    call::reroute(call);
                }
            }
            Some("RES" | "ERR") => {
                let outcome = match decode(&message.payload) {
                    Some(Message::Result { details, payload, .. }) if flag(&details, "progress") => {
                        Outcome::Progress(payload)
                    }
                    Some(Message::Result { payload, .. }) => Outcome::Result(payload),
                    Some(Message::Error { error, payload, .. }) => Outcome::Error { error, payload },
                    _ => return,
                };
                call::complete(&proxy, seq, outcome);
            }
            _ => {}
        }
    }

    /// INV, CHK or INT from another node.
    fn inbound(self: &Arc<Self>, message: async_nats::Message) {
        let Some(origin) = header(&message, ORIGIN).and_then(parse_node) else { return };
        if header(&message, KIND) == Some("PRB") {
            return self.probed(&origin, &message);
        }
        let Some(decoded) = decode(&message.payload) else { return };
        match (header(&message, KIND), decoded) {
            (Some("INV"), Message::Invocation { request, registration, details, payload }) => {
                let (Some(reply), Some(target), Some(realm)) = (
                    message.reply.clone(),
                    header(&message, TARGET).and_then(|t| t.parse::<u64>().ok()),
                    header(&message, REALM),
                ) else {
                    return;
                };
                self.invoke(origin, reply, realm, target, request, registration, details, payload);
            }
            (Some("CHK"), Message::Invocation { request, details, payload, .. }) => {
                let Some(caller) = self.callers.lock().get(&origin).cloned() else { return };
                let chunk = Chunk { progress: flag(&details, "progress"), payload };
                caller.chunk(request, chunk, self.max_buffered);
            }
            (Some("RMV"), Message::Event { details, .. }) => {
                let (Some(reply), Some(router)) = (message.reply.clone(), self.router.upgrade()) else { return };
                let client = self.client.clone();
                tokio::spawn(async move {
                    let realm = details.get("realm").and_then(Value::as_str).and_then(|r| router.realms.get(r));
                    let registration = details.get("registration").and_then(Value::as_u64);
                    let callee = details.get("callee").and_then(Value::as_u64);
                    let reason = details.get("reason").and_then(Value::as_str).unwrap_or("wamp.error.removed");
                    let outcome = match (realm, registration, callee) {
                        (Some(realm), Some(registration), Some(callee)) => {
                            let by = origin.to_string();
                            crate::meta::revoke_here(realm, registration, callee, reason, Some(&by)).await
                        }
                        _ => Err(Refusal::new(WampError::InvalidArgument, "malformed revocation")),
                    };
                    let body = match outcome {
                        Ok(()) => Bytes::new(),
                        Err(refusal) => {
                            encode(&refusal.to_message(crate::wire::MessageType::Call, 0)).unwrap_or_default()
                        }
                    };
                    let _ = client.publish(reply, body).await;
                });
            }
            (Some("INT"), Message::Interrupt { request, options }) => {
                let Some(caller) = self.callers.lock().get(&origin).cloned() else { return };
                let mode = CancelMode::from_option(options.get("mode")).unwrap_or(CancelMode::KillNoWait);
                let error = match options.get("reason").and_then(Value::as_str) {
                    Some(reason) if reason == WampError::Timeout.uri() => WampError::Timeout,
                    _ => WampError::Canceled,
                };
                call::cancel(&caller.handle, request, None, mode, error);
            }
            _ => {}
        }
    }

    /// A call forwarded here for the local member `target`.
    #[allow(clippy::too_many_arguments)]
    fn invoke(
        self: &Arc<Self>,
        origin: NodeId,
        reply: Subject,
        realm: &str,
        target: u64,
        seq: u64,
        registration: u64,
        details: Dict,
        payload: Payload,
    ) {
        let found = self.router.upgrade().and_then(|router| {
            let realm = router.realms.get(realm)?;
            let (found, _) = realm.dealer.get(registration)?;
            (found.has_member(target) && realm.sessions.contains_key(&target)).then_some(found)
        });
        let Some(registration) = found else {
            let client = self.client.clone();
            tokio::spawn(async move { client.publish_with_headers(reply, headers("NACK"), Bytes::new()).await });
            return;
        };
        let caller = self.caller(&origin);
        let progress = flag(&details, "progress");
        let token = match caller.handle.calls.open(seq, progress) {
            Opened::New(token) => token,
            _ => return,
        };
        caller.replies.lock().insert(seq, reply);
        let options = CallOptions {
            receive_progress: flag(&details, "receive_progress"),
            progress,
            timeout_ms: details.get("timeout").and_then(Value::as_u64).unwrap_or(0),
            callee: Some(target),
            ..CallOptions::default()
        };
        let mut call = Invocation::new(registration, caller.handle.clone(), seq, token, options, payload);
        call.forwarded = Some(Box::new(details));
        run_or_spawn(call::dispatch(call));
    }

    /// The stand-in caller of the calls `origin` forwards here (made on first use).
    fn caller(self: &Arc<Self>, origin: &NodeId) -> Arc<Caller> {
        let mut callers = self.callers.lock();
        if let Some(caller) = callers.get(origin) {
            return caller.clone();
        }
        let id = crate::dealer::registry::fresh_id(|_| false);
        let (handle, queue) = SessionHandle::new(id, Serializer::MsgPack, self.limits);
        let caller = Arc::new(Caller { handle, replies: Mutex::default(), chunks: Mutex::default() });
        callers.insert(origin.clone(), caller.clone());
        tokio::spawn(replies(self.clone(), caller.clone(), queue));
        caller
    }
}

/// The `(session, seq)` pairs of a PRB or its answer: 16 bytes each, big-endian.
fn pairs(body: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    body.chunks_exact(16).map(|pair| {
        let (session, seq) = pair.split_at(8);
        (
            u64::from_be_bytes(session.try_into().unwrap_or_default()),
            u64::from_be_bytes(seq.try_into().unwrap_or_default()),
        )
    })
}

fn parse_node(text: &str) -> Option<NodeId> {
    let (name, incarnation) = text.rsplit_once('/')?;
    Some(NodeId::new(name, incarnation.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_bodies_are_pairs_of_session_and_seq() {
        let mut body = Vec::new();
        for (session, seq) in [(7u64, 1u64), (u64::MAX, 2)] {
            body.extend_from_slice(&session.to_be_bytes());
            body.extend_from_slice(&seq.to_be_bytes());
        }
        body.push(0); // a torn tail is ignored
        assert_eq!(pairs(&body).collect::<Vec<_>>(), vec![(7, 1), (u64::MAX, 2)]);
    }
}
