//! The broker: the pub/sub role of one realm.
//!
//! Subscriptions live in the same tables as registrations, with no policy to agree on: exact
//! topics in a sharded [`crate::dealer::registry::Registry`] (one lookup per PUBLISH), prefix and
//! wildcard patterns in a [`crate::dealer::patterns::PatternIndex`], whose lookup cost does not
//! grow with the number of patterns. A PUBLISH loads snapshots and takes no lock that SUBSCRIBE
//! takes. Every subscriber of one subscription gets the same EVENT, so it is encoded
//! once per serializer and the same frame bytes are queued to each of them.
//!
//! In a cluster ([`crate::cluster::events`]) a PUBLISH is also sent once to the other nodes after
//! the local dispatch, and events from other nodes are delivered here to the one subscription
//! whose NATS subscription they arrived on. Without a cluster that costs one `None` check.

mod filter;

use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::cluster::events::{Events, Outgoing};
use crate::cluster::subject::Interest;
use crate::dealer::patterns::{PatternIndex, PatternKind};
use crate::dealer::registry::{Registered, Registration, Registry};
use crate::error::{Refusal, WampError};
use crate::metrics::{EventCount, RealmMetrics};
use crate::session::SessionHandle;
use crate::wire::message::MAX_ID;
use crate::wire::uri::{self, MatchPolicy};
use crate::wire::{Dict, Message, Payload, Serializer, Value};

use filter::Recipients;

/// The features the broker announces in `WELCOME.Details.roles.broker.features`.
pub const FEATURES: &[&str] =
    &["publisher_exclusion", "subscriber_blackwhite_listing", "publisher_identification", "pattern_based_subscription"];

/// A subscription: a topic or pattern and its subscribers.
pub type Subscription = Registration<Arc<SessionHandle>, ()>;

/// The pub/sub router of one realm.
pub struct Broker {
    exact: Registry<Arc<SessionHandle>, ()>,
    patterns: PatternIndex<Arc<SessionHandle>, ()>,
    metrics: Arc<RealmMetrics>,
    /// The other nodes, in a cluster.
    cluster: Option<Arc<Events>>,
}

impl Broker {
    /// A broker whose exact-topic table and pattern index have `shards` shards.
    pub fn new(shards: usize) -> Self {
        let metrics = Arc::new(RealmMetrics::new("", &[]));
        Broker { exact: Registry::new(shards), patterns: PatternIndex::new(shards), metrics, cluster: None }
    }

    /// The same broker, exchanging events with the other nodes of a cluster through `events`.
    pub fn with_cluster(mut self, events: Option<Arc<Events>>) -> Self {
        self.cluster = events;
        self
    }

    /// The link to the other nodes, in a cluster.
    pub fn cluster(&self) -> Option<&Arc<Events>> {
        self.cluster.as_ref()
    }

    /// True when subscription `id` has subscribers here.
    pub fn has_subscription(&self, id: u64) -> bool {
        self.exact.get(id).is_some() || self.patterns.get(id).is_some()
    }

    /// The same broker, counting its events in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<RealmMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// How many subscriptions (topics and patterns) have subscribers.
    pub fn subscription_count(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    /// SUBSCRIBE: adds the session to the subscription of (`topic`, match policy), returning its
    /// id (every subscriber of the same topic and policy gets the same id) and whether this made
    /// the subscription (then, in a cluster, the caller starts listening to the other nodes for
    /// it: see [`Events::listen`]).
    pub fn subscribe(
        &self,
        subscriber: &Arc<SessionHandle>,
        topic: &str,
        options: &Dict,
    ) -> Result<Registered, Refusal> {
        let policy = MatchPolicy::from_option(options.get("match"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        if !policy.accepts(topic) {
            return Err(Refusal::new(
                WampError::InvalidUri,
                format!("invalid topic URI '{topic}' for {} match", policy.name()),
            ));
        }
        let subscribed = match PatternKind::of(policy) {
            None => self.exact.register(topic, (), subscriber.clone()),
            Some(kind) => self.patterns.register(topic, kind, (), subscriber.clone()),
        };
        match subscribed {
            Ok(subscribed) => Ok(subscribed),
            Err(_) => unreachable!("subscriptions have no policy to conflict on"),
        }
    }

    /// UNSUBSCRIBE: removes the session from a subscription it holds.
    pub fn unsubscribe(&self, session: u64, subscription: u64) -> Result<(), Refusal> {
        let left = self.exact.unregister(subscription, session);
        if let Some((_, deleted)) = left.or_else(|| self.patterns.unregister(subscription, session)) {
            if deleted {
                if let Some(cluster) = &self.cluster {
                    cluster.stop(subscription);
                }
            }
            return Ok(());
        }
        Err(Refusal::new(WampError::NoSuchSubscription, format!("session holds no subscription {subscription}")))
    }

    /// PUBLISH: sends an EVENT to every eligible subscriber of every subscription matching
    /// `topic`. Returns the publication id. Never waits: a subscriber that cannot keep up loses
    /// the event (see [`crate::session::outbox`]), the publisher and the other subscribers do not.
    /// `disclose` names the publisher whatever it asked (its role's rule says so). In a cluster,
    /// also returns the event for the other nodes, which the caller sends (in order, before it
    /// acknowledges).
    pub fn publish(
        &self,
        publisher: &SessionHandle,
        topic: &str,
        options: &Dict,
        payload: Payload,
        disclose: bool,
    ) -> Result<(u64, Option<Outgoing>), Refusal> {
        if !uri::is_valid(topic) || uri::is_reserved(topic) {
            return Err(Refusal::new(WampError::InvalidUri, format!("cannot publish to topic URI '{topic}'")));
        }
        let recipients =
            Recipients::from_options(publisher, options).map_err(|r| Refusal::new(WampError::InvalidArgument, r))?;
        let publication = fastrand::u64(1..=MAX_ID);
        let mut details = Dict::new();
        if disclose || options.get("disclose_me").and_then(Value::as_bool) == Some(true) {
            details.insert("publisher", publisher.id);
            if let Some(identity) = publisher.identity() {
                details.insert("publisher_authid", identity.authid.as_str());
                details.insert("publisher_authrole", identity.authrole.as_str());
            }
        }
        self.metrics.events(EventCount::Published, 1);
        self.fan_out(topic, publication, &details, &payload, &recipients);
        // The other nodes get the EVENT's details (disclosure) plus the topic, the publisher's id
        // (`p`, for `exclude_me`) and the filter options (`x`), which they apply themselves.
        let outgoing = self.cluster.as_ref().and_then(|cluster| {
            let mut envelope = details;
            envelope.insert("topic", topic);
            envelope.insert("p", publisher.id);
            let filter = filter::forwarded(options);
            if !filter.is_empty() {
                envelope.insert("x", filter);
            }
            cluster.outgoing(topic, publication, envelope, &payload)
        });
        Ok((publication, outgoing))
    }

    /// Publishes an event on behalf of the router to every subscriber of `topic` in the cluster
    /// (testaments): dispatched here, and returned for the other nodes.
    pub fn publish_everywhere(&self, topic: &str, payload: Payload) -> Option<Outgoing> {
        let publication = fastrand::u64(1..=MAX_ID);
        self.fan_out(topic, publication, &Dict::new(), &payload, &Recipients::everyone());
        let envelope = Dict::new().with("topic", topic);
        self.cluster.as_ref().and_then(|cluster| cluster.outgoing(topic, publication, envelope, &payload))
    }

    /// Delivers an event another node published to local subscription `subscription`, which
    /// listens with `interest`: `details` is the envelope the publishing node made in
    /// [`Broker::publish`]. Filters and disclosure apply as they would on that node.
    pub fn deliver_remote(
        &self,
        subscription: u64,
        interest: &Interest,
        publication: u64,
        details: &Dict,
        payload: Payload,
    ) {
        let Some(topic) = details.get("topic").and_then(Value::as_str) else { return };
        if !interest.admits(topic) {
            return;
        }
        let (found, pattern) = match self.exact.get(subscription) {
            Some(exact) => (exact, false),
            None => match self.patterns.get(subscription) {
                Some((found, _)) => (found, true),
                None => return,
            },
        };
        let publisher = details.get("p").and_then(Value::as_u64).unwrap_or(0);
        let empty = Dict::new();
        let options = details.get("x").and_then(Value::as_dict).unwrap_or(&empty);
        let Ok(recipients) = Recipients::from_parts(publisher, options) else { return };
        let mut event_details = Dict::new();
        for key in ["publisher", "publisher_authid", "publisher_authrole"] {
            if let Some(value) = details.get(key) {
                event_details.insert(key, value.clone());
            }
        }
        if pattern {
            event_details.insert("topic", topic);
        }
        let event = Message::Event { subscription: found.id, publication, details: event_details, payload };
        let (delivered, dropped) = deliver(&found, &event, &recipients);
        self.metrics.events(EventCount::Delivered, delivered);
        self.metrics.events(EventCount::Dropped, dropped);
    }

    /// Publishes an event on behalf of the router itself (meta events, testaments): no publisher
    /// to exclude, no options, and the reserved `wamp.` namespace allowed. Builds the payload only
    /// when someone listens.
    pub fn publish_internal(&self, topic: &str, payload: impl FnOnce() -> Payload) {
        if self.matching(topic).is_empty() {
            return;
        }
        let recipients = Recipients::everyone();
        self.fan_out(topic, fastrand::u64(1..=MAX_ID), &Dict::new(), &payload(), &recipients);
    }

    fn fan_out(&self, topic: &str, publication: u64, details: &Dict, payload: &Payload, recipients: &Recipients) {
        for (subscription, pattern) in self.matching(topic) {
            let mut details = details.clone();
            if pattern {
                details.insert("topic", topic);
            }
            let event =
                Message::Event { subscription: subscription.id, publication, details, payload: payload.clone() };
            let (delivered, dropped) = deliver(&subscription, &event, recipients);
            self.metrics.events(EventCount::Delivered, delivered);
            self.metrics.events(EventCount::Dropped, dropped);
        }
    }

    /// Subscriptions matching `topic`, each with whether it is a pattern subscription.
    fn matching(&self, topic: &str) -> SmallVec<[(Arc<Subscription>, bool); 2]> {
        let mut found = SmallVec::new();
        if let Some(exact) = self.exact.lookup(topic) {
            found.push((exact, false));
        }
        if !self.patterns.is_empty() {
            self.patterns.for_each_match(topic, |s| found.push((s, true)));
        }
        found
    }
}

/// Queues `event` to every eligible subscriber, encoding it once per serializer in use. An event
/// whose payload cannot be represented in a subscriber's serializer is not sent to it (never sent
/// altered); that is logged.
fn deliver(subscription: &Subscription, event: &Message, recipients: &Recipients) -> (u64, u64) {
    let (mut delivered, mut dropped) = (0, 0);
    let mut frames: SmallVec<[(Serializer, Option<Bytes>); 3]> = SmallVec::new();
    for subscriber in subscription.snapshot().iter() {
        if !recipients.admits(subscriber) {
            continue;
        }
        let frame = match frames.iter().find(|(s, _)| *s == subscriber.serializer) {
            Some((_, frame)) => frame.clone(),
            None => {
                let mut out = Vec::with_capacity(128);
                let frame = match subscriber.serializer.try_encode(event, &mut out) {
                    Ok(()) => Some(Bytes::from(out)),
                    Err(error) => {
                        let serializer = subscriber.serializer.subprotocol();
                        tracing::info!(%error, serializer, "event not sent to subscribers of this serializer");
                        None
                    }
                };
                frames.push((subscriber.serializer, frame.clone()));
                frame
            }
        };
        if let Some(frame) = frame {
            if subscriber.outbox().push_event(frame) {
                delivered += 1;
            } else {
                dropped += 1;
            }
        }
    }
    (delivered, dropped)
}
