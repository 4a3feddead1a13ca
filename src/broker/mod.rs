//! The broker: the pub/sub role of one realm.
//!
//! Subscriptions live in the same sharded snapshot table as registrations
//! ([`crate::dealer::registry::Registry`], with no policy to agree on), so a PUBLISH loads one
//! snapshot of the topic's subscribers and takes no lock that SUBSCRIBE takes. Every subscriber of
//! one subscription gets the same EVENT, so it is encoded once per serializer and the same frame
//! bytes are queued to each of them.

use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::dealer::registry::Registry;
use crate::error::{Refusal, WampError};
use crate::session::{Outbound, SessionHandle};
use crate::wire::message::MAX_ID;
use crate::wire::{uri, Dict, Message, Payload, Serializer, Value};

/// The features the broker announces in `WELCOME.Details.roles.broker.features`.
pub const FEATURES: &[&str] = &["publisher_exclusion"];

/// The pub/sub router of one realm.
pub struct Broker {
    subscriptions: Registry<Arc<SessionHandle>, ()>,
}

impl Broker {
    /// A broker whose subscription table has `shards` shards.
    pub fn new(shards: usize) -> Self {
        Broker {
            subscriptions: Registry::new(shards),
        }
    }

    /// How many topics have subscribers.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// SUBSCRIBE: adds the session to the subscription of `topic`, returning its id.
    pub fn subscribe(&self, subscriber: &Arc<SessionHandle>, topic: &str, options: &Dict) -> Result<u64, Refusal> {
        if !uri::is_valid(topic) {
            return Err(Refusal::new(
                WampError::InvalidUri,
                format!("invalid topic URI '{topic}'"),
            ));
        }
        match options.get("match").map(|m| m.as_str()) {
            None | Some(Some("exact")) => {}
            Some(other) => {
                return Err(Refusal::new(
                    WampError::InvalidArgument,
                    format!("match policy {other:?} is not supported: subscriptions match exactly"),
                ))
            }
        }
        match self.subscriptions.register(topic, (), subscriber.clone()) {
            Ok(subscribed) => Ok(subscribed.id),
            Err(_) => unreachable!("subscriptions have no policy to conflict on"),
        }
    }

    /// UNSUBSCRIBE: removes the session from a subscription it holds.
    pub fn unsubscribe(&self, session: u64, subscription: u64) -> Result<(), Refusal> {
        match self.subscriptions.unregister(subscription, session) {
            Some(_) => Ok(()),
            None => Err(Refusal::new(
                WampError::NoSuchSubscription,
                format!("session holds no subscription {subscription}"),
            )),
        }
    }

    /// PUBLISH: sends an EVENT to every subscriber of `topic` (but the publisher, unless it set
    /// `exclude_me: false`). Returns the publication id.
    pub async fn publish(
        &self,
        publisher: &SessionHandle,
        topic: &str,
        options: &Dict,
        payload: Payload,
    ) -> Result<u64, Refusal> {
        if !uri::is_valid(topic) || uri::is_reserved(topic) {
            return Err(Refusal::new(
                WampError::InvalidUri,
                format!("cannot publish to topic URI '{topic}'"),
            ));
        }
        let exclude_me = match options.get("exclude_me") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(Refusal::new(
                    WampError::InvalidArgument,
                    format!("exclude_me must be a boolean, got {other:?}"),
                ))
            }
        };
        let publication = fastrand::u64(1..=MAX_ID);
        let Some(subscription) = self.subscriptions.lookup(topic) else {
            return Ok(publication);
        };
        let event = Message::Event {
            subscription: subscription.id,
            publication,
            details: Dict::new(),
            payload,
        };
        // One encoding per serializer in use among the subscribers, made on first need.
        let mut frames: SmallVec<[(Serializer, Bytes); 3]> = SmallVec::new();
        for subscriber in subscription.snapshot().iter() {
            if exclude_me && subscriber.id == publisher.id {
                continue;
            }
            let frame = match frames.iter().find(|(s, _)| *s == subscriber.serializer) {
                Some((_, frame)) => frame.clone(),
                None => {
                    let mut out = Vec::with_capacity(128);
                    subscriber.serializer.encode(&event, &mut out);
                    frames.push((subscriber.serializer, Bytes::from(out)));
                    frames[frames.len() - 1].1.clone()
                }
            };
            let _ = subscriber.deliver(Outbound::Frame(frame)).await;
        }
        Ok(publication)
    }
}
