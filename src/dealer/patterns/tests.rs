//! The pattern index against the spec's examples, a brute-force model, and its cost claim.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::wire::uri;
use InvocationRule::*;
use PatternKind::{Prefix, Wildcard};

type Registrations = PatternIndex<u64>;
type Subscriptions = PatternIndex<u64, ()>;

fn add(index: &Registrations, pattern: &str, kind: PatternKind, member: u64) -> u64 {
    index.register(pattern, kind, Single, member).unwrap().id
}

fn chosen(index: &Registrations, uri: &str) -> Option<String> {
    index.best_match(uri).map(|r| r.uri.to_string())
}

fn subscribe(index: &Subscriptions, pattern: &str, kind: PatternKind) -> u64 {
    index.register(pattern, kind, (), 1).unwrap().id
}

fn matching(index: &Subscriptions, topic: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    index.for_each_match(topic, |s| assert!(found.insert(s.uri.to_string()), "{} visited twice", s.uri));
    found
}

fn set(patterns: &[&str]) -> BTreeSet<String> {
    patterns.iter().map(|p| p.to_string()).collect()
}

#[test]
fn registrations_are_chosen_as_the_specs_examples_say() {
    let index = Registrations::new(16);
    for (pattern, kind) in [
        ("a1.b2.c3", Prefix),
        ("a1.b2.c3.d4", Prefix),
        ("a1.b2..d4.e5", Wildcard),
        ("a1.b2.c33..e5", Wildcard),
        ("a1.b2..d4.e5..g7", Wildcard),
        ("a1.b2..d4..f6.g7", Wildcard),
    ] {
        add(&index, pattern, kind, 1);
    }
    for (called, expected) in [
        ("a1.b2.c3.d98.e74", Some("a1.b2.c3")),
        ("a1.b2.c3", Some("a1.b2.c3")),
        ("a1.b2.c3.d4.e325", Some("a1.b2.c3.d4")),
        ("a1.b2.c55.d4.e5", Some("a1.b2..d4.e5")),
        ("a1.b2.c33.d4.e5", Some("a1.b2.c33..e5")),
        ("a1.b2.c88.d4.e5.f6.g7", Some("a1.b2..d4.e5..g7")),
        ("a1.b2.c33.d4.e5.f6.g7", Some("a1.b2..d4.e5..g7")),
        ("a2.b2.c2.d2.e2", None),
        ("a1.b2.c33", None),
    ] {
        assert_eq!(chosen(&index, called).as_deref(), expected, "{called}");
    }
}

#[test]
fn wildcards_rank_concrete_components_first_left_to_right() {
    let index = Registrations::new(16);
    for pattern in ["a1...d4", "a1.b2..d4", "..c3.d4", "a1.b2.c3.", "...."] {
        add(&index, pattern, Wildcard, 1);
    }
    assert_eq!(chosen(&index, "a1.b2.c3.d4").as_deref(), Some("a1.b2.c3."));
    assert_eq!(chosen(&index, "a1.b2.x.d4").as_deref(), Some("a1.b2..d4"));
    assert_eq!(chosen(&index, "a1.x.c3.d4").as_deref(), Some("a1...d4"));
    assert_eq!(chosen(&index, "x.x.c3.d4").as_deref(), Some("..c3.d4"));
    assert_eq!(chosen(&index, "x.x.x.x.x").as_deref(), Some("...."));
    assert_eq!(chosen(&index, "x.x.x.x").as_deref(), None, "wildcards match the same number of components");
}

#[test]
fn prefix_registrations_match_whole_components_and_beat_wildcards() {
    let index = Registrations::new(16);
    add(&index, "com.example", Prefix, 1);
    add(&index, "com.example.add", Wildcard, 1);
    assert_eq!(chosen(&index, "com.example.add").as_deref(), Some("com.example"), "prefix beats wildcard");
    assert_eq!(chosen(&index, "com.examples.add"), None);
    assert_eq!(chosen(&index, "com.exam"), None);
    assert_eq!(chosen(&index, "com"), None);
    assert_eq!(chosen(&index, "com.example").as_deref(), Some("com.example"));
}

#[test]
fn subscriptions_match_string_prefixes_and_wildcards() {
    let index = Subscriptions::new(16);
    for pattern in ["com", "com.my", "com.myapp.topic", "com.myapp.to"] {
        subscribe(&index, pattern, Prefix);
    }
    subscribe(&index, "com.myapp..update", Wildcard);
    assert_eq!(matching(&index, "com.myapp.topic"), set(&["com", "com.my", "com.myapp.topic", "com.myapp.to"]));
    assert_eq!(matching(&index, "com.myapp.topics.x"), set(&["com", "com.my", "com.myapp.topic", "com.myapp.to"]));
    assert_eq!(matching(&index, "com.myapp.top"), set(&["com", "com.my", "com.myapp.to"]));
    assert_eq!(matching(&index, "com.myapp.foo.update"), set(&["com", "com.my", "com.myapp..update"]));
    assert_eq!(matching(&index, "com.myapp.foo.bar.update"), set(&["com", "com.my"]));
    assert_eq!(matching(&index, "comx.y"), set(&["com"]), "a string prefix, not a component prefix");
    assert_eq!(matching(&index, "co"), set(&[]));
    assert_eq!(matching(&index, "org.myapp.topic"), set(&[]));
}

#[test]
fn unicode_and_long_components_match_by_bytes_on_char_boundaries() {
    let registrations = Registrations::new(16);
    add(&registrations, "ünï.cödé", Prefix, 1);
    add(&registrations, ".cödé.ß", Wildcard, 1);
    assert_eq!(chosen(&registrations, "ünï.cödé.x").as_deref(), Some("ünï.cödé"));
    assert_eq!(chosen(&registrations, "ünï.cöd"), None);
    assert_eq!(chosen(&registrations, "ö.cödé.ß").as_deref(), Some(".cödé.ß"));

    let subscriptions = Subscriptions::new(16);
    let long = |n: usize| format!("a.{}", "x".repeat(n));
    for pattern in ["ünï.cö", "ünï.c", "ü", "ünï.cödé.ß"] {
        subscribe(&subscriptions, pattern, Prefix);
    }
    for n in [63, 64, 65, 70] {
        subscribe(&subscriptions, &long(n), Prefix);
    }
    assert_eq!(matching(&subscriptions, "ünï.cödé"), set(&["ünï.cö", "ünï.c", "ü"]));
    assert_eq!(matching(&subscriptions, "ünï.cödé.ß"), set(&["ünï.cö", "ünï.c", "ü", "ünï.cödé.ß"]));
    assert_eq!(matching(&subscriptions, "ünï.c"), set(&["ünï.c", "ü"]));
    assert_eq!(matching(&subscriptions, "üx"), set(&["ü"]));
    let all: BTreeSet<String> = [63, 64, 65, 70].map(long).into();
    assert_eq!(matching(&subscriptions, &long(80)), all);
    assert_eq!(matching(&subscriptions, &long(64)), [63, 64].map(long).into());
    assert_eq!(matching(&subscriptions, &long(69)), [63, 64, 65].map(long).into());
}

#[test]
fn empty_wildcard_components_match_any_one_component() {
    let index = Registrations::new(16);
    for pattern in [".", "a.", ".b", "..", ".b."] {
        add(&index, pattern, Wildcard, 1);
    }
    assert_eq!(chosen(&index, "a.b").as_deref(), Some("a."));
    assert_eq!(chosen(&index, "x.b").as_deref(), Some(".b"));
    assert_eq!(chosen(&index, "x.y").as_deref(), Some("."));
    assert_eq!(chosen(&index, "x.b.z").as_deref(), Some(".b."));
    assert_eq!(chosen(&index, "x.y.z").as_deref(), Some(".."));
    assert_eq!(chosen(&index, "x"), None);
    // The index matches any string as the URI functions do; refusing invalid URIs is the dealer's.
    assert_eq!(chosen(&index, "a.").as_deref(), Some("a."));
    assert_eq!(chosen(&index, ".").as_deref(), Some("."));
}

#[test]
fn deleting_an_entry_prunes_its_nodes_and_re_adding_makes_a_new_one() {
    let index = Registrations::new(16);
    let keep = add(&index, "a.b", Prefix, 1);
    let id = index.register("a.b.c.d", Prefix, RoundRobin, 1).unwrap().id;
    index.register("a.b.c.d", Prefix, RoundRobin, 2).unwrap();
    let wild = add(&index, "a..c.", Wildcard, 3);
    assert_eq!(index.nodes(), 1 + 4 + 3);
    assert_eq!(chosen(&index, "a.b.c.d.e").as_deref(), Some("a.b.c.d"));
    assert!(index.unregister(id, 9).is_none(), "not a member");
    assert!(!index.unregister(id, 1).unwrap().1, "a member is left");
    assert_eq!(chosen(&index, "a.b.c.d.e").as_deref(), Some("a.b.c.d"));
    assert!(index.unregister(id, 2).unwrap().1);
    assert!(index.unregister(id, 2).is_none(), "second unregister");
    assert_eq!(chosen(&index, "a.b.c.d.e").as_deref(), Some("a.b"));
    assert!(index.get(id).is_none() && index.find("a.b.c.d", Prefix).is_none());
    assert_eq!(index.nodes(), 1 + 2 + 3, "c and d are gone, a and b stay");
    assert!(index.unregister(wild, 3).unwrap().1);
    assert!(index.unregister(keep, 1).unwrap().1);
    assert_eq!((index.nodes(), index.len()), (1, 0));
    assert_eq!(chosen(&index, "a.b.c.d.e"), None);

    let again = index.register("a.b.c.d", Prefix, First, 5).unwrap();
    assert!(again.created);
    assert_ne!(again.id, id);
    assert_eq!(chosen(&index, "a.b.c.d.e").as_deref(), Some("a.b.c.d"));
    assert_eq!(index.best_match("a.b.c.d.e").unwrap().pick(), Some(5));
}

#[test]
fn pattern_entries_keep_members_and_rules() {
    let index = Registrations::new(16);
    for member in [1, 2, 3] {
        index.register("com.example", Prefix, RoundRobin, member).unwrap();
    }
    let picks: Vec<u64> = (0..4).map(|_| index.best_match("com.example.x").unwrap().pick().unwrap()).collect();
    assert_eq!(picks, vec![1, 2, 3, 1]);
    assert_eq!(index.register("com.example", Prefix, Last, 4), Err(RegisterError::DifferentRule(RoundRobin)));
    add(&index, "com.single", Prefix, 1);
    assert_eq!(index.register("com.single", Prefix, Single, 2), Err(RegisterError::AlreadyExists));
    assert_eq!(index.nodes(), 4, "root, com, example, single: refusals leave no node behind");
}

#[test]
fn one_pattern_under_each_kind_is_two_entries() {
    let index = Registrations::new(16);
    let prefix = add(&index, "a.b", Prefix, 1);
    let wildcard = add(&index, "a.b", Wildcard, 2);
    assert_ne!(prefix, wildcard);
    assert_eq!(index.find("a.b", Prefix).map(|r| r.id), Some(prefix));
    assert_eq!(index.find("a.b", Wildcard).map(|r| r.id), Some(wildcard));
    assert_eq!(index.find("a", Prefix).map(|r| r.id), None);
    assert_eq!(index.get(wildcard).map(|(r, k)| (r.id, k)), Some((wildcard, Wildcard)));
    assert_eq!((index.ids(Prefix), index.ids(Wildcard), index.len()), (vec![prefix], vec![wildcard], 2));
    assert_eq!(index.best_match("a.b").map(|r| r.id), Some(prefix));
    index.unregister(prefix, 1).unwrap();
    assert_eq!(index.best_match("a.b").map(|r| r.id), Some(wildcard));
}

/// Steps (node loads and edge probes) one call of `lookup` takes.
fn steps(lookup: impl FnOnce()) -> usize {
    let before = trie::probes();
    lookup();
    trie::probes() - before
}

#[test]
fn lookups_take_the_same_steps_with_10_or_100k_patterns_that_do_not_match() {
    let registrations = Registrations::new(4096);
    let subscriptions = Subscriptions::new(4096);
    let calls = ["com.example.q7.job.run", "com.example.p7x.job.run", "org.example", "com.example.p3.job.run"];
    let measure = |r: &Registrations, s: &Subscriptions| -> Vec<usize> {
        calls
            .iter()
            .flat_map(|uri| [steps(|| drop(r.best_match(uri))), steps(|| s.for_each_match(uri, drop))])
            .collect()
    };
    // Neighbours of the URIs called: same first components, siblings at the third.
    let fill = |from: u64, to: u64| {
        for i in from..to {
            match i % 3 {
                0 => add(&registrations, &format!("com.example.p{i}.job"), Prefix, 1),
                1 => add(&registrations, &format!("com.example.p{i}..stop"), Wildcard, 1),
                _ => add(&registrations, &format!("..p{i}.x.y"), Wildcard, 1),
            };
            match i % 2 {
                0 => subscribe(&subscriptions, &format!("com.example.p{i}.job.stop"), Prefix),
                _ => subscribe(&subscriptions, &format!("com.example.p{i}..stop"), Wildcard),
            };
        }
    };
    // Patterns the calls match, present throughout.
    add(&registrations, "com.example.p3.job", Prefix, 1);
    subscribe(&subscriptions, "com.example.p3.j", Prefix);
    fill(10, 20);
    let with_10 = measure(&registrations, &subscriptions);
    fill(20, 100_010);
    let with_100k = measure(&registrations, &subscriptions);
    assert_eq!((registrations.len(), subscriptions.len()), (100_001, 100_001));
    assert_eq!(with_10, with_100k, "steps per lookup, 10 vs 100k patterns");
    assert!(with_10.iter().all(|&s| s < 40), "{with_10:?}");
    assert_eq!(chosen(&registrations, "com.example.p3.job.run").as_deref(), Some("com.example.p3.job"));
}

#[test]
fn lookups_keep_working_while_patterns_churn() {
    let index = Arc::new(Registrations::new(2));
    add(&index, "com.example", Prefix, 1);
    let churn = {
        let index = index.clone();
        std::thread::spawn(move || {
            for i in 0..2_000 {
                let pattern = format!("com.example.p{}", i % 7);
                let id = add(&index, &pattern, Prefix, 2);
                let wild = add(&index, &format!("com..p{}", i % 5), Wildcard, 3);
                index.unregister(id, 2).unwrap();
                index.unregister(wild, 3).unwrap();
            }
        })
    };
    for i in 0..20_000 {
        let chosen = index.best_match(&format!("com.example.p{}.x", i % 9)).unwrap();
        assert!(chosen.uri.starts_with("com.example"), "{}", chosen.uri);
        assert!(index.best_match("org.x.p1").is_none());
    }
    churn.join().unwrap();
    assert_eq!((index.nodes(), index.len()), (3, 1));
}

// The model: a list of live entries, matched by brute force with the URI functions.

#[derive(Debug, Clone)]
enum Op {
    Join { pattern: String, kind: PatternKind, member: u64 },
    Leave { entry: usize, member: u64 },
    Lookup { uri: String },
}

struct Entry {
    pattern: String,
    kind: PatternKind,
    id: u64,
    members: Vec<u64>,
}

fn component(wildcards: bool) -> BoxedStrategy<String> {
    let literal = prop::sample::select(vec!["a", "b", "ab", "ba", "ä", "äb", "x"]).prop_map(String::from);
    match wildcards {
        true => prop_oneof![3 => literal, 1 => Just(String::new())].boxed(),
        false => literal.boxed(),
    }
}

fn uri_of(wildcards: bool) -> impl Strategy<Value = String> {
    prop::collection::vec(component(wildcards), 1..5).prop_map(|c| c.join("."))
}

fn op() -> impl Strategy<Value = Op> {
    let pattern = prop_oneof![
        uri_of(false).prop_map(|p| (p, Prefix)),
        uri_of(true).prop_filter("not empty", |p| !p.is_empty()).prop_map(|p| (p, Wildcard)),
    ];
    prop_oneof![
        3 => (pattern, 1..4u64).prop_map(|((pattern, kind), member)| Op::Join { pattern, kind, member }),
        2 => (any::<usize>(), 1..4u64).prop_map(|(entry, member)| Op::Leave { entry, member }),
        4 => uri_of(true).prop_map(|uri| Op::Lookup { uri }),
    ]
}

fn model_best(entries: &[Entry], uri: &str) -> Option<u64> {
    let of = |kind| entries.iter().filter(move |e| e.kind == kind);
    let prefix = of(Prefix)
        .filter(|e| uri::component_prefix_matches(&e.pattern, uri))
        .max_by_key(|e| uri::prefix_rank(&e.pattern));
    let wildcard = || {
        of(Wildcard).filter(|e| uri::wildcard_matches(&e.pattern, uri)).max_by_key(|e| uri::wildcard_rank(&e.pattern))
    };
    prefix.or_else(wildcard).map(|e| e.id)
}

fn model_matching(entries: &[Entry], topic: &str) -> BTreeSet<u64> {
    let matches = |e: &&Entry| match e.kind {
        Prefix => topic.starts_with(&e.pattern),
        Wildcard => uri::wildcard_matches(&e.pattern, topic),
    };
    entries.iter().filter(matches).map(|e| e.id).collect()
}

/// Applies `ops` to an index and to the model, and checks every lookup and the end state.
fn check<P: Policy + std::fmt::Debug>(ops: &[Op], policy: P, lookup: impl Fn(&PatternIndex<u64, P>, &[Entry], &str)) {
    let index = PatternIndex::<u64, P>::new(4);
    let mut entries: Vec<Entry> = Vec::new();
    for op in ops {
        match op {
            Op::Join { pattern, kind, member } => {
                let registered = index.register(pattern, *kind, policy, *member).unwrap();
                match entries.iter_mut().find(|e| e.pattern == *pattern && e.kind == *kind) {
                    Some(e) => {
                        assert!(!registered.created && registered.id == e.id);
                        if !e.members.contains(member) {
                            e.members.push(*member);
                        }
                    }
                    None => {
                        assert!(registered.created);
                        let (id, members) = (registered.id, vec![*member]);
                        entries.push(Entry { pattern: pattern.clone(), kind: *kind, id, members });
                    }
                }
            }
            Op::Leave { entry, member } if !entries.is_empty() => {
                let at = entry % entries.len();
                let e = &mut entries[at];
                let left = index.unregister(e.id, *member).map(|(r, deleted)| (r.id, deleted));
                match e.members.iter().position(|m| m == member) {
                    None => assert_eq!(left, None),
                    Some(position) => {
                        e.members.remove(position);
                        assert_eq!(left, Some((e.id, e.members.is_empty())));
                        if e.members.is_empty() {
                            assert!(index.get(e.id).is_none());
                            entries.remove(at);
                        }
                    }
                }
            }
            Op::Leave { .. } => {}
            Op::Lookup { uri } => lookup(&index, &entries, uri),
        }
        assert_eq!(index.len(), entries.len());
    }
    for e in &entries {
        assert_eq!(index.find(&e.pattern, e.kind).map(|r| r.id), Some(e.id), "{e:?}", e = e.pattern);
        assert_eq!(index.get(e.id).map(|(r, k)| (r.members(), k)), Some((e.members.clone(), e.kind)));
    }
    for e in entries.drain(..) {
        for member in e.members {
            index.unregister(e.id, member).unwrap();
        }
    }
    assert_eq!((index.len(), index.nodes()), (0, 1), "an empty index is back to its root");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn registrations_select_as_the_brute_force_model(ops in prop::collection::vec(op(), 1..60)) {
        check(&ops, RoundRobin, |index, entries, uri| {
            assert_eq!(index.best_match(uri).map(|r| r.id), model_best(entries, uri), "{uri}");
        });
    }

    #[test]
    fn subscriptions_match_as_the_brute_force_model(ops in prop::collection::vec(op(), 1..60)) {
        check(&ops, (), |index, entries, topic| {
            let mut found = BTreeSet::new();
            index.for_each_match(topic, |s| assert!(found.insert(s.id), "visited twice"));
            assert_eq!(found, model_matching(entries, topic), "{topic}");
        });
    }
}
