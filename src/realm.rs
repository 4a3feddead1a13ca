//! A realm: a routing namespace with its own dealer. Sessions join exactly one realm.

use crate::dealer::Dealer;

/// One realm served by the router.
pub struct Realm {
    /// The realm's URI.
    pub name: String,
    /// Its RPC router.
    pub dealer: Dealer,
}

impl Realm {
    /// A realm whose registration table has `dealer_shards` shards.
    pub fn new(name: &str, dealer_shards: usize) -> Self {
        Realm {
            name: name.to_owned(),
            dealer: Dealer::new(dealer_shards),
        }
    }
}
