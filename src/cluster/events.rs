//! Events across nodes: what a realm's broker sends to and takes from the other nodes.
//!
//! A PUBLISH is dispatched to this node's subscribers first, then sent once to NATS on the event
//! subject of its topic ([`subject::event_subject`]), in an envelope that carries what the other
//! nodes need to deliver it as this node would: the publication id (one id cluster-wide), the
//! publisher's id and disclosure, and the recipient filter options, which each node applies to its
//! own subscribers. The payload travels as the bytes the publisher sent, tagged with their
//! serializer, so a subscriber of the same serializer gets them without a re-encode. The envelope
//! is a format version byte, the origin node's incarnation (8 bytes), a serializer byte, then an
//! EVENT encoded in that serializer whose details hold what [`Broker::publish`] forwards.
//!
//! Each node listens with one NATS subscription per local WAMP subscription (per distinct match
//! policy and URI), opened when the subscription gets its first subscriber and closed when it
//! loses its last. A message is delivered only to the subscription that owns the NATS
//! subscription it arrived on: a topic matching two local subscriptions arrives twice, once for
//! each, which is WAMP's one EVENT per matching subscription. A node skips its own messages (it
//! dispatched them locally already). Each NATS subscription is drained by one task, so events
//! keep the order of the publisher's node connection.
//!
//! While the node is cut off from NATS its events stay local (at most once, as on one node) and
//! a SUBSCRIBE does not wait for NATS; the client resubscribes everything when it reconnects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::subject::{self, Interest};
use super::Cluster;
use crate::broker::Broker;
use crate::wire::uri::MatchPolicy;
use crate::wire::{Dict, Message, Payload, Serializer};

/// The envelope's format version (its first byte).
const VERSION: u8 = 1;
/// Version, origin incarnation, serializer.
const HEADER: usize = 1 + 8 + 1;

/// One realm's link between its broker and the other nodes.
pub struct Events {
    client: async_nats::Client,
    /// `rh.<cluster>.ev`.
    prefix: String,
    realm: String,
    /// This node's incarnation: what marks the messages it sent itself.
    origin: u64,
    /// The NATS subscription of each local WAMP subscription, by subscription id.
    listening: Mutex<HashMap<u64, Listening, foldhash::fast::RandomState>>,
    /// How long a SUBSCRIBE waits for NATS to confirm the subscription before answering anyway.
    timeout: Duration,
    /// Whether the NATS connection is up: while it is down, events are not handed to it (its
    /// buffer would fill and hold up the publishers' sessions) and SUBSCRIBE does not wait.
    connected: tokio::sync::watch::Receiver<bool>,
}

/// One local subscription's NATS subscription.
struct Listening {
    /// Ends its receiving task (and so the NATS subscription).
    stop: CancellationToken,
    /// True once NATS confirmed it (or gave up trying): later subscribers wait for this too.
    ready: tokio::sync::watch::Receiver<bool>,
}

/// An event ready to leave for the other nodes; [`Outgoing::send`] hands it to the node's NATS
/// connection.
pub struct Outgoing {
    client: async_nats::Client,
    subject: String,
    envelope: Bytes,
}

impl Outgoing {
    /// Publishes the event. At most once, like delivery on one node: a failure is logged.
    pub async fn send(self) {
        if let Err(error) = self.client.publish(self.subject, self.envelope).await {
            tracing::warn!(%error, "event not sent to the other nodes");
        }
    }
}

impl Events {
    /// The link of realm `realm` on `cluster`'s connection.
    pub fn new(cluster: &Cluster, realm: &str) -> Self {
        Events {
            client: cluster.client().clone(),
            prefix: cluster.subject("ev"),
            realm: realm.to_owned(),
            origin: cluster.node().incarnation,
            listening: Mutex::default(),
            timeout: cluster.config().kv_timeout(),
            connected: cluster.connection(),
        }
    }

    /// The envelope of an event on `topic`: `details` holds what the broker forwards (topic,
    /// publisher, filter options, disclosure). `None` when the payload cannot be put in one
    /// (logged).
    pub fn outgoing(&self, topic: &str, publication: u64, details: Dict, payload: &Payload) -> Option<Outgoing> {
        if !*self.connected.borrow() {
            // At most once, as on one node: the other nodes miss what is published while cut off.
            return None;
        }
        let serializer = match payload {
            Payload::Raw(raw) => raw.serializer,
            _ => Serializer::MsgPack,
        };
        let event = Message::Event { subscription: 1, publication, details, payload: payload.clone() };
        let mut body = Vec::with_capacity(HEADER + 128);
        body.push(VERSION);
        body.extend_from_slice(&self.origin.to_be_bytes());
        body.push(serializer_code(serializer));
        if let Err(error) = serializer.try_encode(&event, &mut body) {
            tracing::warn!(%error, topic, "event not sent to the other nodes: cannot encode it");
            return None;
        }
        Some(Outgoing {
            client: self.client.clone(),
            subject: subject::event_subject(&self.prefix, &self.realm, topic),
            envelope: Bytes::from(body),
        })
    }

    /// Starts listening for the other nodes' events for local subscription `subscription` (its
    /// first subscriber just came). Returns once NATS confirmed the subscription, or after the
    /// cluster's KV timeout (the subscription stays, and NATS takes it when it can).
    pub async fn listen(self: &Arc<Self>, broker: &Arc<Broker>, subscription: u64, policy: MatchPolicy, uri: &str) {
        let interest = subject::interest(&self.prefix, &self.realm, policy, uri);
        let stop = CancellationToken::new();
        let (ready, waiting) = tokio::sync::watch::channel(false);
        self.listening.lock().insert(subscription, Listening { stop: stop.clone(), ready: waiting });
        // Whatever happens below, subscribers waiting in `ready` go on when this returns.
        let _ready = ReadyOnDrop(ready);
        let subscriber = match self.client.subscribe(interest.subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::warn!(%error, uri, "events of other nodes not received for this subscription");
                self.stop(subscription);
                return;
            }
        };
        // The subscription left again while NATS was asked (the subscriber gone at once).
        if stop.is_cancelled() || !broker.has_subscription(subscription) {
            self.stop(subscription);
            return;
        }
        tokio::spawn(receive(self.clone(), broker.clone(), subscription, interest, subscriber, stop));
        // SUBSCRIBED then means an event published anywhere after it reaches the subscriber.
        if !*self.connected.borrow() {
            return;
        }
        match tokio::time::timeout(self.timeout, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, uri, "NATS did not confirm a subscription"),
            Err(_) => tracing::warn!(uri, "NATS did not confirm a subscription in time"),
        }
    }

    /// Waits until the NATS subscription of `subscription` is in place: for a subscriber that
    /// joins a subscription whose first subscriber's SUBSCRIBE is still waiting for NATS.
    pub async fn ready(&self, subscription: u64) {
        let Some(mut ready) = self.listening.lock().get(&subscription).map(|l| l.ready.clone()) else { return };
        let _ = tokio::time::timeout(self.timeout, ready.wait_for(|ready| *ready)).await;
    }

    /// Stops listening for subscription `subscription` (its last subscriber left).
    pub fn stop(&self, subscription: u64) {
        if let Some(listening) = self.listening.lock().remove(&subscription) {
            listening.stop.cancel();
        }
    }

    /// How many NATS subscriptions this realm holds.
    pub fn listening(&self) -> usize {
        self.listening.lock().len()
    }
}

/// Marks a subscription ready when [`Events::listen`] returns, however it returns.
struct ReadyOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for ReadyOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

async fn receive(
    events: Arc<Events>,
    broker: Arc<Broker>,
    subscription: u64,
    interest: Interest,
    mut subscriber: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Some((origin, serializer, body)) = split(message.payload) else {
            tracing::debug!(subject = %message.subject, "not an event envelope; ignored");
            continue;
        };
        if origin == events.origin {
            continue;
        }
        match serializer.decode(body) {
            Ok(Message::Event { publication, details, payload, .. }) => {
                broker.deliver_remote(subscription, &interest, publication, &details, payload)
            }
            Ok(_) | Err(_) => tracing::debug!(subject = %message.subject, "undecodable event envelope; ignored"),
        }
    }
    // Dropping the subscriber unsubscribes it.
    drop(subscriber);
}

/// The origin, serializer and encoded event of an envelope.
fn split(envelope: Bytes) -> Option<(u64, Serializer, Bytes)> {
    if envelope.len() < HEADER || envelope[0] != VERSION {
        return None;
    }
    let origin = u64::from_be_bytes(envelope[1..9].try_into().ok()?);
    let serializer = match envelope[9] {
        0 => Serializer::Json,
        1 => Serializer::MsgPack,
        2 => Serializer::Cbor,
        _ => return None,
    };
    Some((origin, serializer, envelope.slice(HEADER..)))
}

fn serializer_code(serializer: Serializer) -> u8 {
    match serializer {
        Serializer::Json => 0,
        Serializer::MsgPack => 1,
        Serializer::Cbor => 2,
    }
}
