//! Invocation rules: which member of a shared registration serves a call.
//!
//! The five rules of the shared-registration contract, and two load-based extensions under
//! Bondy's names (so existing clients work) that read the router's own count of calls in flight
//! per member (see [`super::registry::MemberLoad`]).
//!
//! It also owns the rules a realm's config sets per URI (`[[realm.procedure]]`,
//! [`ProcedureRules`]): compiled once per config, ranked as pattern registrations are, and read
//! by the dealer when a REGISTER creates or joins a registration.

use std::fmt;

use crate::auth::config::RuleMatch;
use crate::auth::permissions::RuleIndex;
use crate::config::ProcedureConfig;
use crate::wire::uri::MatchPolicy;
use crate::wire::{Payload, Value};

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

/// Where a keyed call (`jump_consistent_hash`) takes its key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `CALL.Options.rkey` (the default).
    Option,
    /// A path into the call's payload (`kwargs.user.id`, `args.0.tenant`, `kwargs.items.2`).
    Path(KeyPath),
}

/// The most steps a payload path takes below `args`/`kwargs` (`kwargs.a.b.c` takes three): a
/// config cannot make the router walk deeper than this.
pub const MAX_KEY_PATH_DEPTH: usize = 8;

/// A path into a call's payload: from its positional (`args`) or keyword (`kwargs`) arguments,
/// through object keys and list indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath {
    /// From the keyword arguments (else the positional ones).
    kwargs: bool,
    /// The steps: a key of an object, or, written as a decimal number, the index of a list (or
    /// that key of an object). The first step into `args` is always an index.
    steps: Vec<Box<str>>,
}

impl KeySource {
    /// Reads a config's `rkey`: `"option"`, or a path `"kwargs.NAME[.STEP]…"` or
    /// `"args.N[.STEP]…"`, each step an object key or a list index, at most
    /// [`MAX_KEY_PATH_DEPTH`] steps.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "rkey must be \"option\", \"kwargs.NAME\" or \"args.N\", optionally followed by .KEY or .INDEX \
                 steps into objects and lists (at most {MAX_KEY_PATH_DEPTH} steps), got '{text}': {why}"
            )
        };
        if text == "option" {
            return Ok(KeySource::Option);
        }
        let mut parts = text.split('.');
        let kwargs = match parts.next() {
            Some("kwargs") => true,
            Some("args") => false,
            _ => return Err(bad("it starts with neither kwargs nor args")),
        };
        let steps: Vec<Box<str>> = parts.map(Box::from).collect();
        if steps.is_empty() {
            return Err(bad("it names no argument"));
        }
        if steps.iter().any(|step| step.is_empty()) {
            return Err(bad("a step is empty"));
        }
        if steps.len() > MAX_KEY_PATH_DEPTH {
            return Err(bad(&format!("it takes {} steps", steps.len())));
        }
        if !kwargs && steps[0].parse::<usize>().is_err() {
            return Err(bad("a positional argument is named by its index"));
        }
        Ok(KeySource::Path(KeyPath { kwargs, steps }))
    }

    /// The hashed key of a call whose payload carries it, or why it has none. Decodes the
    /// payload, so only keyed registrations whose config names a payload path pay for it.
    pub fn key_of(&self, payload: &Payload) -> Result<u64, String> {
        let KeySource::Path(path) = self else { unreachable!("CALL.Options.rkey is read with the call's options") };
        let (args, kwargs) = payload.to_values().map_err(|e| format!("the call's payload cannot be read: {e}"))?;
        let (args, kwargs) = (Value::List(args), Value::Dict(kwargs));
        let mut value = if path.kwargs { &kwargs } else { &args };
        let mut walked = String::from(if path.kwargs { "kwargs" } else { "args" });
        for step in &path.steps {
            let next = match value {
                Value::Dict(dict) => dict.get(step),
                Value::List(items) => step.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            value = next.ok_or_else(|| match value {
                Value::Dict(_) | Value::List(_) => format!("the call has no {walked}.{step}, which routes it by key"),
                other => format!("the call's {walked} is {}, which has no {step}", other.describe()),
            })?;
            walked.push('.');
            walked.push_str(step);
        }
        rkey_hash(value)
            .ok_or_else(|| format!("the call's {walked} must be a string or an integer, got {}", value.describe()))
    }
}

/// What one `[[realm.procedure]]` table sets, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredRule {
    /// The URI (or pattern) the table matches.
    pub uri: String,
    /// How it matches.
    pub policy: RuleMatch,
    /// The invocation rule, when set.
    pub invoke: Option<InvocationRule>,
    /// Calls each member may have in flight, when set.
    pub concurrency: Option<u64>,
    /// `max_queued_calls`, when set.
    pub max_queued_calls: Option<u64>,
    /// `max_queue_ms`, when set.
    pub max_queue_ms: Option<u64>,
    /// Where keyed calls take their key from.
    pub key: KeySource,
}

impl ConfiguredRule {
    fn compile(config: &ProcedureConfig) -> Result<Self, String> {
        let policy = match config.policy {
            RuleMatch::Exact => MatchPolicy::Exact,
            RuleMatch::Prefix => MatchPolicy::Prefix,
            RuleMatch::Wildcard => MatchPolicy::Wildcard,
        };
        // A prefix is a string prefix, as a permission's is: it may be empty (every registration)
        // or end with a dot.
        let checked = match policy {
            MatchPolicy::Prefix => config.uri.strip_suffix('.').unwrap_or(&config.uri),
            _ => &config.uri,
        };
        if !(policy.accepts(checked) || (policy == MatchPolicy::Prefix && checked.is_empty())) {
            return Err(format!("uri '{}' is not a valid {} URI", config.uri, policy.name()));
        }
        let invoke =
            config.invoke.as_deref().map(|name| InvocationRule::from_option(Some(&Value::from(name)))).transpose()?;
        if config.concurrency == Some(0) {
            return Err("concurrency must be at least 1".to_owned());
        }
        let key = match &config.rkey {
            None => KeySource::Option,
            Some(_) if invoke != Some(InvocationRule::JumpConsistentHash) => {
                return Err("rkey applies only with invoke = \"jump_consistent_hash\"".to_owned())
            }
            Some(text) => KeySource::parse(text)?,
        };
        if invoke.is_none()
            && config.concurrency.is_none()
            && config.max_queued_calls.is_none()
            && config.max_queue_ms.is_none()
        {
            return Err("sets none of invoke, concurrency, max_queued_calls and max_queue_ms".to_owned());
        }
        Ok(ConfiguredRule {
            uri: config.uri.clone(),
            policy: config.policy,
            invoke,
            concurrency: config.concurrency,
            max_queued_calls: config.max_queued_calls,
            max_queue_ms: config.max_queue_ms,
            key,
        })
    }
}

/// A realm's `[[realm.procedure]]` tables compiled for lookup, ranked as the permissions of a
/// role are (the same [`RuleIndex`]) and as the dealer ranks pattern registrations: an exact
/// table, else the longest prefix, else the wildcard of best rank; equal ones tie to the earliest
/// in the config.
#[derive(Debug, Default)]
pub struct ProcedureRules {
    rules: Vec<ConfiguredRule>,
    index: RuleIndex,
}

impl ProcedureRules {
    /// Checks and compiles a realm's tables; the error names the table and what is wrong.
    pub fn compile(configs: &[ProcedureConfig]) -> Result<Self, String> {
        let mut rules: Vec<ConfiguredRule> = Vec::with_capacity(configs.len());
        for config in configs {
            let rule = ConfiguredRule::compile(config)
                .map_err(|reason| format!("[[realm.procedure]] uri '{}': {reason}", config.uri))?;
            if rules.iter().any(|r| r.uri == rule.uri && r.policy == rule.policy) {
                return Err(format!("[[realm.procedure]] uri '{}' is configured twice with one match", rule.uri));
            }
            rules.push(rule);
        }
        let index = RuleIndex::new(rules.iter().map(|r| (r.uri.as_str(), r.policy)));
        let compiled = ProcedureRules { rules, index };
        Ok(compiled)
    }

    /// True when the realm configures no procedure.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The table in force for a registration of `target` (its URI or pattern), if any.
    pub fn decide(&self, target: &str) -> Option<&ConfiguredRule> {
        if self.is_empty() {
            return None;
        }
        self.index.find(target).map(|i| &self.rules[i])
    }

    /// The tables as compiled, in config order.
    pub fn rules(&self) -> &[ConfiguredRule] {
        &self.rules
    }
}

impl fmt::Display for InvocationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Dict;

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

    fn table(uri: &str, policy: RuleMatch, invoke: &str) -> ProcedureConfig {
        ProcedureConfig {
            uri: uri.to_owned(),
            policy,
            invoke: Some(invoke.to_owned()),
            concurrency: None,
            max_queued_calls: None,
            max_queue_ms: None,
            rkey: None,
        }
    }

    #[test]
    fn procedure_tables_rank_exact_then_longest_prefix_then_best_wildcard() {
        let rules = ProcedureRules::compile(&[
            table("com.app..get", RuleMatch::Wildcard, "random"),
            table("com.", RuleMatch::Prefix, "first"),
            table("com.app.", RuleMatch::Prefix, "last"),
            table("com.app.users.get", RuleMatch::Exact, "roundrobin"),
        ])
        .unwrap();
        let rule = |uri: &str| rules.decide(uri).and_then(|r| r.invoke);
        assert_eq!(rule("com.app.users.get"), Some(InvocationRule::RoundRobin));
        assert_eq!(rule("com.app.orders.get"), Some(InvocationRule::Last));
        assert_eq!(rule("com.other"), Some(InvocationRule::First));
        assert_eq!(rule("org.app.users.get"), None);
        let wildcard = ProcedureRules::compile(&[table("org.app..get", RuleMatch::Wildcard, "random")]).unwrap();
        assert_eq!(wildcard.decide("org.app.x.get").and_then(|r| r.invoke), Some(InvocationRule::Random));
    }

    #[test]
    fn procedure_tables_refuse_what_cannot_apply() {
        let refused = |config: ProcedureConfig| ProcedureRules::compile(&[config]).unwrap_err();
        assert!(refused(table("com.a", RuleMatch::Exact, "bogus")).contains("unknown invocation rule 'bogus'"));
        let mut zero = table("com.a", RuleMatch::Exact, "random");
        zero.concurrency = Some(0);
        assert!(refused(zero).contains("concurrency must be at least 1"));
        let mut path = table("com.a", RuleMatch::Exact, "jump_consistent_hash");
        path.rkey = Some("body.user".to_owned());
        assert!(refused(path).contains("rkey must be"));
        let mut unkeyed = table("com.a", RuleMatch::Exact, "random");
        unkeyed.rkey = Some("kwargs.user".to_owned());
        assert!(refused(unkeyed).contains("only with invoke"));
        let mut empty = table("com.a", RuleMatch::Exact, "random");
        empty.invoke = None;
        assert!(refused(empty).contains("sets none"));
        assert!(refused(table("com..a", RuleMatch::Exact, "random")).contains("not a valid exact URI"));
        let twice =
            ProcedureRules::compile(&[table("a.b", RuleMatch::Exact, "first"), table("a.b", RuleMatch::Exact, "last")]);
        assert!(twice.unwrap_err().contains("twice"));
        assert_eq!(KeySource::parse("option"), Ok(KeySource::Option));
        for good in ["args.0", "kwargs.user_id", "kwargs.user.id", "args.0.tenant", "kwargs.items.2", "args.1.2.3"] {
            assert!(matches!(KeySource::parse(good), Ok(KeySource::Path(_))), "{good}");
        }
        for (bad, why) in [
            ("args.x", "named by its index"),
            ("args", "names no argument"),
            ("kwargs.", "a step is empty"),
            ("kwargs.a..b", "a step is empty"),
            ("body.user", "neither kwargs nor args"),
            ("kwargs.a.b.c.d.e.f.g.h.i", "takes 9 steps"),
        ] {
            let refused = KeySource::parse(bad).unwrap_err();
            assert!(refused.contains(why) && refused.contains(bad), "{bad}: {refused}");
        }
    }

    #[test]
    fn payload_paths_walk_objects_and_lists() {
        let user = Dict::new().with("id", "u-7").with("tags", Value::List(vec![Value::from("x"), Value::UInt(9)]));
        let kwargs = Dict::new().with("user", Value::Dict(user)).with("n", 3u64);
        let args =
            vec![Value::Dict(Dict::new().with("tenant", "acme")), Value::List(vec![Value::Null, Value::from("k")])];
        let payload = Payload::Values(args, Some(kwargs));
        let key = |path: &str| KeySource::parse(path).unwrap().key_of(&payload);
        let hash = |v: Value| Ok(rkey_hash(&v).unwrap());
        assert_eq!(key("kwargs.user.id"), hash(Value::from("u-7")));
        assert_eq!(key("kwargs.user.tags.1"), hash(Value::UInt(9)));
        assert_eq!(key("args.0.tenant"), hash(Value::from("acme")));
        assert_eq!(key("args.1.1"), hash(Value::from("k")));
        assert_eq!(key("kwargs.user.name").unwrap_err(), "the call has no kwargs.user.name, which routes it by key");
        assert_eq!(
            key("kwargs.user.tags.5").unwrap_err(),
            "the call has no kwargs.user.tags.5, which routes it by key"
        );
        assert!(key("kwargs.n.x").unwrap_err().starts_with("the call's kwargs.n is "), "{:?}", key("kwargs.n.x"));
        assert!(key("kwargs.user").unwrap_err().starts_with("the call's kwargs.user must be a string or an integer"));
        assert!(key("args.1.0").unwrap_err().contains("args.1.0 must be a string or an integer"));
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
