//! Register/unregister cost as the number of procedures grows: creating and deleting a procedure,
//! and joining and leaving an existing shared one.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::dealer::registry::Registry;
use roundhouse::dealer::rule::InvocationRule;
use roundhouse::RouterConfig;

fn filled(procedures: u64) -> Registry<u64> {
    let registry = Registry::new(RouterConfig::default().dealer_shards);
    for i in 0..procedures {
        registry.register(&format!("com.example.p{i}"), InvocationRule::RoundRobin, i).unwrap();
    }
    registry
}

fn register_unregister(c: &mut Criterion) {
    let mut group = c.benchmark_group("register_unregister");
    for procedures in [1_000u64, 10_000, 100_000] {
        let registry = filled(procedures);
        group.bench_with_input(BenchmarkId::new("new_procedure", procedures), &registry, |b, r| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let uri = format!("com.example.fresh{}", i % 1024);
                let id = r.register(black_box(&uri), InvocationRule::Single, 7).unwrap().id;
                r.unregister(id, 7)
            })
        });
        group.bench_with_input(BenchmarkId::new("join_shared", procedures), &registry, |b, r| {
            b.iter(|| {
                let id = r.register(black_box("com.example.p1"), InvocationRule::RoundRobin, u64::MAX).unwrap().id;
                r.unregister(id, u64::MAX)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = register_unregister
}
criterion_main!(benches);
