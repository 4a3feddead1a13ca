//! A realm: a routing namespace with its own dealer and broker. Sessions join exactly one realm.

use crate::broker::Broker;
use crate::dealer::Dealer;

/// One realm served by the router.
pub struct Realm {
    /// The realm's URI.
    pub name: String,
    /// Its RPC router.
    pub dealer: Dealer,
    /// Its pub/sub router.
    pub broker: Broker,
}

impl Realm {
    /// A realm whose registration and subscription tables have `shards` shards each.
    pub fn new(name: &str, shards: usize) -> Self {
        Realm {
            name: name.to_owned(),
            dealer: Dealer::new(shards),
            broker: Broker::new(shards),
        }
    }

    /// True when nobody holds a subscription in this realm.
    pub fn broker_is_empty(&self) -> bool {
        self.broker.subscription_count() == 0
    }
}
