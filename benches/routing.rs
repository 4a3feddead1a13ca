//! The routing decision: registry lookup plus the invocation rule's pick, per rule and member
//! count, alone and while another thread churns registrations on the same shard.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::dealer::registry::Registry;
use roundhouse::dealer::rule::InvocationRule;

const PROCEDURE: &str = "com.example.service.compute";

fn registry(rule: InvocationRule, callees: u64) -> Registry<u64> {
    let registry = Registry::new(256);
    for member in 0..callees {
        registry.register(PROCEDURE, rule, member).unwrap();
    }
    // Neighbours, so the lookup is not in an otherwise empty table.
    for i in 0..10_000 {
        registry.register(&format!("com.example.other.p{i}"), InvocationRule::Single, 1_000_000 + i).unwrap();
    }
    registry
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
    group.finish();
}

/// The same decision while a writer thread joins and leaves the same registration and creates and
/// deletes procedures in a loop: routing must not slow down, because it never waits for writers.
fn route_under_churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_under_churn");
    for rule in InvocationRule::ALL {
        let callees = if rule == InvocationRule::Single { 1 } else { 16 };
        let registry = Arc::new(registry(rule, callees));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (registry, stop) = (registry.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if rule != InvocationRule::Single {
                        let id = registry.register(PROCEDURE, rule, 500_000).unwrap().id;
                        registry.unregister(id, 500_000);
                    }
                    let uri = format!("com.example.churn.p{}", i % 64);
                    let id = registry.register(&uri, InvocationRule::First, 600_000).unwrap().id;
                    registry.unregister(id, 600_000);
                    i += 1;
                }
            })
        };
        group.bench_with_input(BenchmarkId::new(rule.as_str(), callees), &registry, |b, r| {
            b.iter(|| r.lookup(black_box(PROCEDURE)).and_then(|reg| reg.pick()))
        });
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = route, route_under_churn
}
criterion_main!(benches);
