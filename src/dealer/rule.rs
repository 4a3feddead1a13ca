//! Invocation rules: which member of a shared registration serves a call.
//!
//! The five rules of the shared-registration contract, and two load-based extensions under
//! Bondy's names (so existing clients work) that read the router's own count of calls in flight
//! per member (see [`super::registry::MemberLoad`]).

use std::fmt;

use crate::wire::Value;

/// `REGISTER.Options.invoke`, per the shared-registration contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvocationRule {
    /// One callee only (the default); a second REGISTER fails.
    Single,
    /// Each call goes to the member after the one that served the previous call.
    RoundRobin,
    /// Each call goes to a member chosen uniformly at random.
    Random,
    /// Calls go to the earliest registered member (hot standby).
    First,
    /// Calls go to the latest registered member (hot standby).
    Last,
    /// `queue_least_loaded` (alias `least_loaded`): the member with the fewest calls in flight,
    /// ties broken in registration order.
    LeastLoaded,
    /// `queue_least_loaded_sample`: the less loaded of two members chosen at random (power of
    /// two choices).
    LeastLoadedSample,
    /// `jump_consistent_hash`: the member that jump consistent hash of `CALL.Options.rkey` names
    /// among the members in registration order (sticky: one key, one member).
    JumpConsistentHash,
}

impl InvocationRule {
    /// Every rule, in the contract's order.
    pub const ALL: [InvocationRule; 5] = [
        InvocationRule::Single,
        InvocationRule::RoundRobin,
        InvocationRule::Random,
        InvocationRule::First,
        InvocationRule::Last,
    ];

    /// The load-based rules, beyond the contract.
    pub const EXTENSIONS: [InvocationRule; 3] =
        [InvocationRule::LeastLoaded, InvocationRule::LeastLoadedSample, InvocationRule::JumpConsistentHash];

    /// The rule's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            InvocationRule::Single => "single",
            InvocationRule::RoundRobin => "roundrobin",
            InvocationRule::Random => "random",
            InvocationRule::First => "first",
            InvocationRule::Last => "last",
            InvocationRule::LeastLoaded => "queue_least_loaded",
            InvocationRule::LeastLoadedSample => "queue_least_loaded_sample",
            InvocationRule::JumpConsistentHash => "jump_consistent_hash",
        }
    }

    /// True for the rules that pick by calls in flight.
    pub const fn is_load_based(self) -> bool {
        matches!(self, InvocationRule::LeastLoaded | InvocationRule::LeastLoadedSample)
    }

    /// Reads `Options.invoke`; absent means `single`.
    pub fn from_option(value: Option<&Value>) -> Result<Self, String> {
        let Some(value) = value else {
            return Ok(InvocationRule::Single);
        };
        let name = value
            .as_str()
            .ok_or_else(|| format!("REGISTER.Options.invoke must be a string, got {}", value.describe()))?;
        if name == "least_loaded" {
            return Ok(InvocationRule::LeastLoaded);
        }
        Self::ALL.into_iter().chain(Self::EXTENSIONS).find(|r| r.as_str() == name).ok_or_else(|| {
            format!(
                "unknown invocation rule '{name}' (expected single, roundrobin, random, first, last, \
                 queue_least_loaded, least_loaded, queue_least_loaded_sample or jump_consistent_hash)"
            )
        })
    }

    /// Picks the index of the serving member among `len > 0` members, for the rules that do not
    /// read loads (the registry picks for the others). `rotation` gives the call's round-robin
    /// position (see [`super::registry`]); only `RoundRobin` uses it.
    #[inline]
    pub fn pick(self, len: usize, rotation: impl FnOnce() -> usize) -> usize {
        match self {
            InvocationRule::Single
            | InvocationRule::First
            | InvocationRule::LeastLoaded
            | InvocationRule::LeastLoadedSample
            // Keyed calls are routed by their key (see `Registration::select_key`).
            | InvocationRule::JumpConsistentHash => 0,
            InvocationRule::Last => len - 1,
            InvocationRule::Random => fastrand::usize(..len),
            InvocationRule::RoundRobin => rotation(),
        }
    }
}

/// The routing key of `CALL.Options.rkey` (a string, or an integer taken as its decimal form),
/// hashed: stable across routers and restarts (FNV-1a, then a 64-bit finalizer to spread it over
/// the bits jump consistent hash reads). `None` for other values.
pub fn rkey_hash(value: &Value) -> Option<u64> {
    let text;
    let bytes = match value {
        Value::Str(s) => s.as_bytes(),
        Value::UInt(n) => {
            text = n.to_string();
            text.as_bytes()
        }
        Value::Int(n) => {
            text = n.to_string();
            text.as_bytes()
        }
        _ => return None,
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finalizer.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Some(hash ^ (hash >> 31))
}

/// Jump consistent hash (Lamping and Veach, 2014): the bucket in `0..buckets` of `key`. When
/// buckets go from n to n + 1, exactly the keys that land in the new bucket move, about 1/(n + 1)
/// of them, and no other key moves.
pub fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < buckets as i64 {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket.max(0) as usize
}

impl fmt::Display for InvocationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_rule_and_refuses_others() {
        assert_eq!(InvocationRule::from_option(None), Ok(InvocationRule::Single));
        for rule in InvocationRule::ALL.into_iter().chain(InvocationRule::EXTENSIONS) {
            assert_eq!(InvocationRule::from_option(Some(&Value::from(rule.as_str()))), Ok(rule));
        }
        let alias = InvocationRule::from_option(Some(&Value::from("least_loaded")));
        assert_eq!(alias, Ok(InvocationRule::LeastLoaded));
        assert!(InvocationRule::from_option(Some(&Value::from("bogus"))).is_err());
        assert!(InvocationRule::from_option(Some(&Value::UInt(1))).is_err());
        assert!(InvocationRule::from_option(Some(&Value::from("RoundRobin"))).is_err());
    }

    #[test]
    fn jump_consistent_hash_moves_only_the_keys_of_the_new_bucket() {
        let keys: Vec<u64> = (0..100_000u64).map(|k| rkey_hash(&Value::from(format!("user-{k}"))).unwrap()).collect();
        for n in [1usize, 3, 10, 50] {
            let before: Vec<usize> = keys.iter().map(|k| jump_consistent_hash(*k, n)).collect();
            let after: Vec<usize> = keys.iter().map(|k| jump_consistent_hash(*k, n + 1)).collect();
            let moved: Vec<usize> = before.iter().zip(&after).filter(|(b, a)| b != a).map(|(_, a)| *a).collect();
            assert!(moved.iter().all(|to| *to == n), "keys move only to the new bucket");
            let fraction = moved.len() as f64 / keys.len() as f64;
            let expected = 1.0 / (n + 1) as f64;
            assert!((fraction - expected).abs() < expected * 0.1, "{n} -> {}: {fraction} moved", n + 1);
            // And back: the newest bucket leaving moves exactly those keys again.
            for (k, b) in keys.iter().zip(&before).take(1000) {
                assert_eq!(jump_consistent_hash(*k, n), *b);
            }
            // Buckets are even within a few percent.
            let mut sizes = vec![0usize; n + 1];
            after.iter().for_each(|b| sizes[*b] += 1);
            let even = keys.len() / (n + 1);
            assert!(sizes.iter().all(|s| s.abs_diff(even) < even / 10 + 50), "{sizes:?}");
        }
    }

    #[test]
    fn rkeys_hash_stably_and_integers_as_their_decimal_form() {
        assert_eq!(rkey_hash(&Value::UInt(42)), rkey_hash(&Value::from("42")));
        assert_eq!(rkey_hash(&Value::Int(-7)), rkey_hash(&Value::from("-7")));
        assert_ne!(rkey_hash(&Value::from("a")), rkey_hash(&Value::from("b")));
        assert_eq!(rkey_hash(&Value::Bool(true)), None);
        assert_eq!(jump_consistent_hash(rkey_hash(&Value::from("a")).unwrap(), 1), 0);
        assert_eq!(jump_consistent_hash(12345, 0), 0);
    }

    #[test]
    fn fixed_rules_pick_ends() {
        assert_eq!(InvocationRule::First.pick(3, || unreachable!()), 0);
        assert_eq!(InvocationRule::Last.pick(3, || unreachable!()), 2);
        for _ in 0..100 {
            assert!(InvocationRule::Random.pick(3, || unreachable!()) < 3);
        }
    }
}
