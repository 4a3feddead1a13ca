//! Authorization: a role's rules compiled for lookup, and the per-session cache that keeps the
//! decision off the CALL path.
//!
//! # The decision
//! Of the rules whose pattern matches the URI, one wins, ranked as the spec ranks pattern-based
//! registrations: an exact rule, else the longest prefix rule, else the wildcard rule whose runs
//! of concrete components rank highest ([`uri::wildcard_rank`]); equal rules tie to the earliest
//! in the config. The winner's `allow` list decides; no matching rule means deny. Rules are not
//! added up: a more specific rule with an empty `allow` denies a subtree a broader rule allows.
//! Prefix rules are string prefixes (`com.app.` and `com.app` both cover `com.app.add`; `""`
//! covers everything), as Crossbar's are.
//!
//! The meta API's admin procedures ([`ADMIN_PROCEDURES`]) are decided the same way, with one more
//! condition: the winning rule's URI must itself start with `wamp.`. A catch-all such as `""` or a
//! wildcard never hands out `wamp.session.kill`; only a rule written for the meta API does.
//!
//! # Cost
//! A session decides a URI once and keeps the answer in its own [`Access`] cache, owned by its
//! reader (no lock, no shared state). A role whose only rule is one prefix rule (the default
//! `anonymous` role) decides every URI outside `wamp.` alike, so it skips even the cache.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::{Action, Disclose, RoleConfig, RuleConfig, RuleMatch};
use crate::wire::uri;

/// The meta procedures that act on other sessions; they need a rule naming a `wamp.` URI.
pub const ADMIN_PROCEDURES: &[&str] = &[
    "wamp.session.kill",
    "wamp.session.kill_by_authid",
    "wamp.session.kill_by_authrole",
    "wamp.session.kill_all",
    "wamp.registration.remove_callee",
    "wamp.subscription.remove_subscriber",
];

/// True for a meta procedure that acts on other sessions.
pub fn is_admin_procedure(procedure: &str) -> bool {
    procedure.starts_with("wamp.") && ADMIN_PROCEDURES.contains(&procedure)
}

/// What a role may do with one URI: a bit per action and per disclosure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant(u8);

impl Grant {
    /// Nothing allowed.
    pub const DENY: Grant = Grant(0);

    fn action_bit(action: Action) -> u8 {
        match action {
            Action::Call => 1,
            Action::Register => 2,
            Action::Publish => 4,
            Action::Subscribe => 8,
        }
    }

    fn of(rule: &RuleConfig) -> Grant {
        let mut bits = rule.allow.iter().fold(0, |bits, a| bits | Self::action_bit(*a));
        for disclose in &rule.disclose {
            bits |= match disclose {
                Disclose::Caller => 16,
                Disclose::Publisher => 32,
            };
        }
        Grant(bits)
    }

    /// Whether `action` is allowed.
    pub fn allows(self, action: Action) -> bool {
        self.0 & Self::action_bit(action) != 0
    }

    /// Whether calls name their caller to the callee whatever the caller asked.
    pub fn discloses_caller(self) -> bool {
        self.0 & 16 != 0
    }

    /// Whether events name their publisher whatever the publisher asked.
    pub fn discloses_publisher(self) -> bool {
        self.0 & 32 != 0
    }
}

/// A rule as compiled: its pattern and what it grants.
#[derive(Debug, Clone)]
struct Rule {
    uri: String,
    policy: RuleMatch,
    grant: Grant,
}

/// URI rules (exact, prefix, wildcard) indexed for the ranked lookup that permissions and the
/// realm's procedure tables share: an exact rule, else the longest prefix, else the wildcard of
/// best [`uri::wildcard_rank`], equal ones in the order given (the first exact rule of a URI wins).
#[derive(Debug, Default)]
pub struct RuleIndex {
    keys: Vec<(String, RuleMatch)>,
    exact: HashMap<String, usize>,
    prefixes: Vec<usize>,
    wildcards: Vec<usize>,
}

impl RuleIndex {
    /// Indexes `rules` (URI and match of each, in config order); lookups return positions in it.
    pub fn new<'a>(rules: impl IntoIterator<Item = (&'a str, RuleMatch)>) -> Self {
        let mut index = RuleIndex::default();
        for (position, (uri, policy)) in rules.into_iter().enumerate() {
            match policy {
                RuleMatch::Exact => {
                    index.exact.entry(uri.to_owned()).or_insert(position);
                }
                RuleMatch::Prefix => index.prefixes.push(position),
                RuleMatch::Wildcard => index.wildcards.push(position),
            }
            index.keys.push((uri.to_owned(), policy));
        }
        let keys = &index.keys;
        // Stable sorts: equal keys keep config order.
        index.prefixes.sort_by_key(|&i| std::cmp::Reverse(keys[i].0.len()));
        index.wildcards.sort_by_cached_key(|&i| std::cmp::Reverse(uri::wildcard_rank(&keys[i].0)));
        index
    }

    /// The position of the rule that decides `target` (a URI, or a pattern being registered or
    /// subscribed), if any matches.
    pub fn find(&self, target: &str) -> Option<usize> {
        let matches = |&i: &usize| {
            let (uri, policy) = &self.keys[i];
            match policy {
                RuleMatch::Exact => uri == target,
                RuleMatch::Prefix => target.starts_with(uri.as_str()),
                RuleMatch::Wildcard => uri::wildcard_matches(uri, target),
            }
        };
        self.exact
            .get(target)
            .copied()
            .or_else(|| self.prefixes.iter().copied().find(matches))
            .or_else(|| self.wildcards.iter().copied().find(matches))
    }
}

/// A role compiled for lookup: exact rules in a map, prefix rules longest first, wildcard rules
/// best rank first, each list keeping config order among equals, so the first match is the winner.
#[derive(Debug)]
pub struct Role {
    name: String,
    rules: Vec<Rule>,
    index: RuleIndex,
    /// The grant of every URI outside `wamp.`, when one rule covers them all alike.
    uniform: Option<Grant>,
}

impl Role {
    /// Compiles a role's rules.
    pub fn compile(config: &RoleConfig) -> Role {
        let rules: Vec<Rule> = config
            .permissions
            .iter()
            .map(|r| Rule { uri: r.uri.clone(), policy: r.policy, grant: Grant::of(r) })
            .collect();
        let index = RuleIndex::new(rules.iter().map(|r| (r.uri.as_str(), r.policy)));
        let uniform = match rules.as_slice() {
            [only] if only.policy == RuleMatch::Prefix && only.uri.is_empty() => Some(only.grant),
            [] => Some(Grant::DENY),
            _ => None,
        };
        Role { name: config.name.clone(), rules, index, uniform }
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this role may do with `target` (a URI, or a pattern a session registers or subscribes).
    pub fn decide(&self, target: &str) -> Grant {
        match self.index.find(target).map(|i| &self.rules[i]) {
            Some(rule) if is_admin_procedure(target) && !rule.uri.starts_with("wamp.") => Grant::DENY,
            Some(rule) => rule.grant,
            None => Grant::DENY,
        }
    }
}

/// Most URIs one session keeps decisions for; past this the cache starts over, so a session that
/// calls ever new URIs costs bounded memory.
const CACHE_ENTRIES: usize = 1024;

/// A session's authorization: its role and the decisions it has made, owned by its reader.
#[derive(Debug)]
pub struct Access {
    role: Arc<Role>,
    cache: HashMap<Box<str>, Grant, foldhash::fast::RandomState>,
}

impl Access {
    /// A session of `role` that has decided nothing yet.
    pub fn new(role: Arc<Role>) -> Self {
        Access { role, cache: HashMap::default() }
    }

    /// The session's role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// What the session may do with `target`; decided once per URI.
    pub fn grant(&mut self, target: &str) -> Grant {
        if let Some(grant) = self.role.uniform {
            if !target.starts_with("wamp.") {
                return grant;
            }
        }
        if let Some(grant) = self.cache.get(target) {
            return *grant;
        }
        let grant = self.role.decide(target);
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(target.into(), grant);
        grant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(uri: &str, policy: RuleMatch, allow: &[Action]) -> RuleConfig {
        RuleConfig { uri: uri.into(), policy, allow: allow.to_vec(), disclose: Vec::new() }
    }

    fn role(rules: Vec<RuleConfig>) -> Role {
        Role::compile(&RoleConfig { name: "r".into(), permissions: rules })
    }

    /// The precedence written out plainly: every matching rule, best by (kind, specificity,
    /// earliest).
    fn naive(rules: &[RuleConfig], target: &str) -> Grant {
        let kind = |p: RuleMatch| match p {
            RuleMatch::Exact => 2,
            RuleMatch::Prefix => 1,
            RuleMatch::Wildcard => 0,
        };
        let matching = rules.iter().enumerate().filter(|(_, r)| match r.policy {
            RuleMatch::Exact => r.uri == target,
            RuleMatch::Prefix => target.starts_with(r.uri.as_str()),
            RuleMatch::Wildcard => uri::wildcard_matches(&r.uri, target),
        });
        let best = matching.max_by(|(ia, a), (ib, b)| {
            let specificity = |r: &RuleConfig| match r.policy {
                RuleMatch::Prefix => vec![r.uri.len()],
                RuleMatch::Wildcard => uri::wildcard_rank(&r.uri),
                RuleMatch::Exact => Vec::new(),
            };
            (kind(a.policy), specificity(a), std::cmp::Reverse(*ia)).cmp(&(
                kind(b.policy),
                specificity(b),
                std::cmp::Reverse(*ib),
            ))
        });
        match best {
            Some((_, r)) if is_admin_procedure(target) && !r.uri.starts_with("wamp.") => Grant::DENY,
            Some((_, r)) => Grant::of(r),
            None => Grant::DENY,
        }
    }

    #[test]
    fn the_most_specific_rule_wins_and_no_rule_denies() {
        use Action::*;
        let r = role(vec![
            rule("com.app.", RuleMatch::Prefix, &[Call, Subscribe]),
            rule("com.app.admin.", RuleMatch::Prefix, &[]),
            rule("com.app.admin.status", RuleMatch::Exact, &[Call]),
            rule("com..status", RuleMatch::Wildcard, &[Publish]),
        ]);
        assert!(r.decide("com.app.add").allows(Call));
        assert!(!r.decide("com.app.add").allows(Register));
        assert!(!r.decide("com.app.admin.reset").allows(Call), "a deny subtree beats a broader prefix");
        assert!(r.decide("com.app.admin.status").allows(Call), "exact beats every prefix");
        assert!(r.decide("com.other.status").allows(Publish), "wildcard when no prefix matches");
        assert!(!r.decide("com.app.status").allows(Publish), "a prefix beats a wildcard, as in registrations");
        assert_eq!(r.decide("org.elsewhere"), Grant::DENY);
    }

    #[test]
    fn admin_procedures_need_a_rule_that_names_the_meta_api() {
        let everything = role(vec![rule("", RuleMatch::Prefix, &[Action::Call])]);
        let mut access = Access::new(Arc::new(everything));
        assert!(access.grant("wamp.session.list").allows(Action::Call));
        assert!(!access.grant("wamp.session.kill").allows(Action::Call));
        assert!(!access.grant("wamp.registration.remove_callee").allows(Action::Call));
        let wildcard = role(vec![rule("..kill", RuleMatch::Wildcard, &[Action::Call])]);
        assert!(!wildcard.decide("wamp.session.kill").allows(Action::Call), "a wildcard that does not name wamp.");
        let named = role(vec![rule("wamp.session.", RuleMatch::Wildcard, &[Action::Call])]);
        assert!(named.decide("wamp.session.kill").allows(Action::Call));
        let admin = role(vec![
            rule("", RuleMatch::Prefix, &[Action::Call]),
            rule("wamp.session.", RuleMatch::Prefix, &[Action::Call]),
        ]);
        assert!(admin.decide("wamp.session.kill_all").allows(Action::Call));
        assert!(!admin.decide("wamp.registration.remove_callee").allows(Action::Call));
    }

    #[test]
    fn equal_rules_tie_to_the_earliest() {
        let r = role(vec![rule("a.b", RuleMatch::Exact, &[Action::Call]), rule("a.b", RuleMatch::Exact, &[])]);
        assert!(r.decide("a.b").allows(Action::Call));
        let r = role(vec![rule("a.", RuleMatch::Prefix, &[]), rule("a.", RuleMatch::Prefix, &[Action::Call])]);
        assert!(!r.decide("a.b").allows(Action::Call));
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("ab".to_owned()), Just("wamp".to_owned())]
    }

    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(component(), 1..4).prop_map(|c| c.join(".")),
            prop::sample::select(ADMIN_PROCEDURES).prop_map(str::to_owned),
        ]
    }

    fn any_rule() -> impl Strategy<Value = RuleConfig> {
        let pattern = prop::collection::vec(prop_oneof![component(), Just(String::new())], 0..4)
            .prop_map(|c| c.join("."))
            .boxed();
        let pattern = prop_oneof![pattern, prop::sample::select(ADMIN_PROCEDURES).prop_map(str::to_owned)];
        let policy = prop::sample::select(vec![RuleMatch::Exact, RuleMatch::Prefix, RuleMatch::Wildcard]);
        let allow =
            prop::sample::subsequence(vec![Action::Call, Action::Register, Action::Publish, Action::Subscribe], 0..4);
        (pattern, policy, allow).prop_map(|(uri, policy, allow)| RuleConfig {
            uri,
            policy,
            allow,
            disclose: Vec::new(),
        })
    }

    proptest! {
        #[test]
        fn compiled_decisions_equal_a_naive_scan(
            rules in prop::collection::vec(any_rule(), 0..12),
            targets in prop::collection::vec(target(), 1..20),
        ) {
            let compiled = Arc::new(role(rules.clone()));
            let mut access = Access::new(compiled.clone());
            for target in &targets {
                prop_assert_eq!(compiled.decide(target), naive(&rules, target), "{}", target);
                prop_assert_eq!(access.grant(target), naive(&rules, target), "{} (cached)", target);
            }
        }
    }
}
