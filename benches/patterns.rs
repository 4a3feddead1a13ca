//! Pattern registrations at scale: what a CALL with no exact registration costs, and what creating
//! a pattern costs, with 1k/10k/100k prefix or wildcard patterns registered.
//!
//! `scan` measures the dealer's previous selection (every prefix pattern, then every wildcard
//! pattern, visited per CALL; one-shard pattern tables, so creating a pattern copies them all),
//! rebuilt here from the public registry and URI functions. It stops at 10k patterns: filling a
//! one-shard table is quadratic.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::dealer::registry::{Registration, Registry};
use roundhouse::dealer::rule::InvocationRule;
use roundhouse::wire::uri;

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
    targets = scan
}
criterion_main!(benches);
