//! The routing decision: registry lookup plus the invocation rule's pick, per rule and member
//! count, alone and while another thread churns registrations on the same shard.
//!
//! The contract's rules are measured as the router ran them before members kept loads (`pick`,
//! which clones the picked member: one reference count, as the router's callee is one `Arc`), and again as the dealer now routes (`select` on members with load counters, plus
//! the release of the slot when the call ends): `<rule>+slot` without a concurrency limit (the
//! default: not gated, so no slot is taken), `<rule>+concurrency` with a limit high enough never to be reached (the gated path).
//! The load-based rules always run gated; `jump_consistent_hash` hashes a string `rkey` per call.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::dealer::registry::{Member, MemberLoad, Registry, Selected};
use roundhouse::dealer::rule::{rkey_hash, InvocationRule};
use roundhouse::wire::Value;

const PROCEDURE: &str = "com.example.service.compute";

/// Members as the router held them before loads: picking one clones one reference count (the
/// dealer's `Callee` is one `Arc` now as then).
fn registry(rule: InvocationRule, callees: u64) -> Registry<Loaded> {
    loaded_registry(rule, callees, None)
}

/// A member with load counters, as the dealer's callees have.
#[derive(Clone)]
struct Loaded {
    id: u64,
    load: Arc<MemberLoad>,
}

impl Member for Loaded {
    fn member_id(&self) -> u64 {
        self.id
    }

    fn load(&self) -> Option<&Arc<MemberLoad>> {
        Some(&self.load)
    }
}

fn loaded(id: u64, concurrency: Option<u64>) -> Loaded {
    Loaded { id, load: Arc::new(MemberLoad::new(concurrency)) }
}

fn loaded_registry(rule: InvocationRule, callees: u64, concurrency: Option<u64>) -> Registry<Loaded> {
    let registry = Registry::new(256);
    for member in 0..callees {
        registry.register(PROCEDURE, rule, loaded(member, concurrency)).unwrap();
    }
    for i in 0..10_000 {
        let neighbour = loaded(1_000_000 + i, None);
        registry.register(&format!("com.example.other.p{i}"), InvocationRule::Single, neighbour).unwrap();
    }
    registry
}

/// Routing keys of keyed calls, as callers send them.
fn keys() -> Vec<Value> {
    (0..1024).map(|i| Value::from(format!("user-{i}"))).collect()
}

/// The dealer's routing decision, and the slot's release when the call ends. A keyed rule hashes
/// the next of `keys` per call (as the router hashes each call's `rkey`).
#[inline]
fn select_and_release(
    registry: &Registry<Loaded>,
    rule: InvocationRule,
    keys: &[Value],
    next: &Cell<usize>,
) -> Option<u64> {
    let registration = registry.lookup(black_box(PROCEDURE))?;
    let selected = if rule == InvocationRule::JumpConsistentHash {
        let key = &keys[next.get() % keys.len()];
        next.set(next.get() + 1);
        registration.select_key(rkey_hash(black_box(key))?, &[])
    } else {
        registration.select(&[])
    };
    match selected {
        Selected::Member(member) => {
            member.load.release();
            Some(member.id)
        }
        Selected::Unmetered(member) => Some(member.id),
        Selected::Full | Selected::Nobody => None,
    }
}

/// The loaded variants: (label, rule, concurrency).
fn loaded_variants() -> Vec<(String, InvocationRule, Option<u64>)> {
    let mut variants = Vec::new();
    for rule in InvocationRule::ALL {
        variants.push((format!("{rule}+slot"), rule, None));
        variants.push((format!("{rule}+concurrency"), rule, Some(u64::MAX / 2)));
    }
    for rule in InvocationRule::EXTENSIONS {
        variants.push((rule.as_str().to_owned(), rule, None));
    }
    variants
}

fn sizes(rule: InvocationRule) -> &'static [u64] {
    match rule {
        InvocationRule::Single => &[1],
        _ => &[1, 4, 16, 64],
    }
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for rule in InvocationRule::ALL {
        for &callees in sizes(rule) {
            let registry = registry(rule, callees);
            group.bench_with_input(BenchmarkId::new(rule.as_str(), callees), &registry, |b, r| {
                b.iter(|| r.lookup(black_box(PROCEDURE)).and_then(|reg| reg.pick()))
            });
        }
    }
    for (label, rule, concurrency) in loaded_variants() {
        for &callees in sizes(rule) {
            let registry = loaded_registry(rule, callees, concurrency);
            let (keys, next) = (keys(), Cell::new(0));
            group.bench_with_input(BenchmarkId::new(&label, callees), &registry, |b, r| {
                b.iter(|| select_and_release(r, rule, &keys, &next))
            });
        }
    }
    group.finish();
}

/// The same decision while a writer thread joins and leaves the same registration and creates and
/// deletes procedures in a loop: routing must not slow down, because it never waits for writers.
fn route_under_churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_under_churn");
    for rule in InvocationRule::ALL {
        let callees = if rule == InvocationRule::Single { 1 } else { 16 };
        let registry = Arc::new(registry(rule, callees));
        churning(&registry, rule, None, || {
            group.bench_with_input(BenchmarkId::new(rule.as_str(), callees), &registry, |b, r| {
                b.iter(|| r.lookup(black_box(PROCEDURE)).and_then(|reg| reg.pick()))
            });
        });
    }
    for (label, rule, concurrency) in loaded_variants() {
        let callees = if rule == InvocationRule::Single { 1 } else { 16 };
        let registry = Arc::new(loaded_registry(rule, callees, concurrency));
        let (keys, next) = (keys(), Cell::new(0));
        churning(&registry, rule, concurrency, || {
            group.bench_with_input(BenchmarkId::new(&label, callees), &registry, |b, r| {
                b.iter(|| select_and_release(r, rule, &keys, &next))
            });
        });
    }
    group.finish();
}

/// Runs `measure` while a writer thread joins and leaves `registry`'s procedure under `rule` (a
/// member with `concurrency`) and creates and deletes other procedures on the same shards.
fn churning(registry: &Arc<Registry<Loaded>>, rule: InvocationRule, concurrency: Option<u64>, measure: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if rule != InvocationRule::Single {
                    let id = registry.register(PROCEDURE, rule, loaded(500_000, concurrency)).unwrap().id;
                    registry.unregister(id, 500_000);
                }
                let uri = format!("com.example.churn.p{}", i % 64);
                let id = registry.register(&uri, InvocationRule::First, loaded(600_000, None)).unwrap().id;
                registry.unregister(id, 600_000);
                i += 1;
            }
        })
    };
    measure();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = route, route_under_churn
}
criterion_main!(benches);
