//! Pattern registrations at scale: what a CALL with no exact registration costs, and what creating
//! a pattern costs, with 1k/10k/100k prefix or wildcard patterns registered.
//!
//! `register` and `lookup` measure the [`PatternIndex`] (with the exact table's lookup alongside
//! for comparison), `subscriptions` its string-prefix matching for PUBLISH. `scan` measures the
//! dealer's previous selection (every prefix pattern, then every wildcard
//! pattern, visited per CALL; one-shard pattern tables, so creating a pattern copies them all),
//! rebuilt here from the public registry and URI functions. It stops at 10k patterns: filling a
//! one-shard table is quadratic.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::dealer::patterns::{PatternIndex, PatternKind};
use roundhouse::dealer::registry::{Registration, Registry};
use roundhouse::dealer::rule::InvocationRule;
use roundhouse::wire::uri;
use roundhouse::RouterConfig;

const SIZES: [u64; 3] = [1_000, 10_000, 100_000];

/// The pattern with number `i`: siblings under one parent, the widest a trie node gets.
fn prefix_pattern(i: u64) -> String {
    format!("com.example.p{i}")
}

fn wildcard_pattern(i: u64) -> String {
    format!("com.example.p{i}..run")
}

const PREFIX_MATCH: &str = "com.example.p777.method";
const PREFIX_MISS: &str = "com.example.q777.method";
const WILDCARD_MATCH: &str = "com.example.p777.job.run";
const WILDCARD_MISS: &str = "com.example.p777.job.stop";

fn index(kind: PatternKind, patterns: u64) -> PatternIndex<u64> {
    let index = PatternIndex::new(RouterConfig::default().dealer_shards);
    for i in 0..patterns {
        let pattern = match kind {
            PatternKind::Prefix => prefix_pattern(i),
            PatternKind::Wildcard => wildcard_pattern(i),
        };
        index.register(&pattern, kind, InvocationRule::Single, i).unwrap();
    }
    index
}

/// Creating and deleting one pattern next to `patterns` others.
fn register(c: &mut Criterion) {
    let mut group = c.benchmark_group("register");
    for patterns in SIZES {
        for (name, kind) in [("prefix", PatternKind::Prefix), ("wildcard", PatternKind::Wildcard)] {
            let index = index(kind, patterns);
            group.bench_with_input(BenchmarkId::new(name, patterns), &index, |b, index| {
                let mut i = 0u64;
                b.iter(|| {
                    i += 1;
                    let pattern = match kind {
                        PatternKind::Prefix => format!("com.example.fresh{}", i % 1024),
                        PatternKind::Wildcard => format!("com.example.fresh{}..run", i % 1024),
                    };
                    let id = index.register(black_box(&pattern), kind, InvocationRule::Single, 7).unwrap().id;
                    index.unregister(id, 7)
                })
            });
        }
    }
    group.finish();
}

/// The pattern selection of a CALL that has no exact registration, matching one pattern or none;
/// and the exact lookup of a registered procedure among as many, for comparison.
fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for patterns in SIZES {
        let exact = Registry::new(RouterConfig::default().dealer_shards);
        for i in 0..patterns {
            exact.register(&format!("com.example.p{i}.method"), InvocationRule::Single, i).unwrap();
        }
        group.bench_with_input(BenchmarkId::new("exact", patterns), &exact, |b, exact| {
            b.iter(|| exact.lookup(black_box(PREFIX_MATCH)))
        });
        let prefix = index(PatternKind::Prefix, patterns);
        let wildcard = index(PatternKind::Wildcard, patterns);
        for (name, index, procedure) in [
            ("prefix_match", &prefix, PREFIX_MATCH),
            ("prefix_miss", &prefix, PREFIX_MISS),
            ("wildcard_match", &wildcard, WILDCARD_MATCH),
            ("wildcard_miss", &wildcard, WILDCARD_MISS),
        ] {
            group.bench_with_input(BenchmarkId::new(name, patterns), index, |b, index| {
                b.iter(|| index.best_match(black_box(procedure)))
            });
        }
    }
    group.finish();
}

/// A PUBLISH's prefix subscriptions: string prefixes, three of which match (`p7`, `p77`, `p777`).
fn subscriptions(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscriptions");
    for patterns in SIZES {
        let index = PatternIndex::<u64, ()>::new(RouterConfig::default().dealer_shards);
        for i in 0..patterns {
            index.register(&prefix_pattern(i), PatternKind::Prefix, (), i).unwrap();
        }
        group.bench_with_input(BenchmarkId::new("string_prefix", patterns), &index, |b, index| {
            b.iter(|| {
                let mut found = 0;
                index.for_each_match(black_box(PREFIX_MATCH), |_| found += 1);
                found
            })
        });
    }
    group.finish();
}

/// The previous dealer's tables: one one-shard registry per match policy.
struct Scan {
    prefix: Registry<u64>,
    wildcard: Registry<u64>,
}

impl Scan {
    fn filled(prefixes: u64, wildcards: u64) -> Scan {
        let scan = Scan { prefix: Registry::new(1), wildcard: Registry::new(1) };
        for i in 0..prefixes {
            scan.prefix.register(&prefix_pattern(i), InvocationRule::Single, i).unwrap();
        }
        for i in 0..wildcards {
            scan.wildcard.register(&wildcard_pattern(i), InvocationRule::Single, i).unwrap();
        }
        scan
    }

    /// The previous `Dealer::lookup` after its exact miss.
    fn lookup(&self, procedure: &str) -> Option<Arc<Registration<u64>>> {
        let mut best: Option<(Arc<Registration<u64>>, usize)> = None;
        self.prefix.for_each(|r| {
            let rank = uri::prefix_rank(&r.uri);
            if uri::component_prefix_matches(&r.uri, procedure) && best.as_ref().is_none_or(|(_, b)| rank > *b) {
                best = Some((r.clone(), rank));
            }
        });
        if let Some((registration, _)) = best {
            return Some(registration);
        }
        let mut best: Option<(Arc<Registration<u64>>, Vec<usize>)> = None;
        self.wildcard.for_each(|r| {
            if uri::wildcard_matches(&r.uri, procedure) {
                let rank = uri::wildcard_rank(&r.uri);
                if best.as_ref().is_none_or(|(_, b)| rank > *b) {
                    best = Some((r.clone(), rank));
                }
            }
        });
        best.map(|(registration, _)| registration)
    }
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan");
    for patterns in [1_000u64, 10_000] {
        let prefix = Scan::filled(patterns, 0);
        let wildcard = Scan::filled(0, patterns);
        for (name, table, procedure) in [
            ("prefix_match", &prefix, PREFIX_MATCH),
            ("prefix_miss", &prefix, PREFIX_MISS),
            ("wildcard_match", &wildcard, WILDCARD_MATCH),
            ("wildcard_miss", &wildcard, WILDCARD_MISS),
        ] {
            group.bench_with_input(BenchmarkId::new(name, patterns), table, |b, t| {
                b.iter(|| t.lookup(black_box(procedure)))
            });
        }
        group.bench_with_input(BenchmarkId::new("register_prefix", patterns), &prefix, |b, t| {
            b.iter(|| {
                let id = t.prefix.register(black_box("com.example.fresh"), InvocationRule::Single, 7).unwrap().id;
                t.prefix.unregister(id, 7)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = register, lookup, subscriptions, scan
}
criterion_main!(benches);
