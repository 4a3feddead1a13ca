//! The cost of picking a callee when many threads route calls at once: every thread picking from
//! one hot round-robin registration (all of them take tickets from its one shared cursor, a cache
//! line every core writes on every call), against the same hot registration under the random
//! rule (no shared write), and against each thread picking from its own registration (no sharing
//! at all). The figure is the wall time of one pick on one thread while `threads` threads pick
//! together; on a machine with fewer cores than threads, threads take turns and the figure
//! includes that.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::dealer::registry::{Registration, Registry};
use roundhouse::dealer::rule::InvocationRule;
use roundhouse::RouterConfig;

/// Members of each registration (a shared procedure with a few callees).
const MEMBERS: u64 = 4;

/// A registration of `procedure` with [`MEMBERS`] members under `rule`.
fn registration(registry: &Registry<u64>, procedure: &str, rule: InvocationRule) -> Arc<Registration<u64>> {
    for member in 1..=MEMBERS {
        registry.register(procedure, rule, member).expect("registers");
    }
    registry.lookup(procedure).expect("registered")
}

/// Runs `iters` picks on each of `threads` threads at once (thread `t` picks from
/// `targets[t % targets.len()]`), and returns the longest thread's time.
fn race(targets: &[Arc<Registration<u64>>], threads: usize, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (target, start) = (targets[t % targets.len()].clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                for _ in 0..iters {
                    black_box(target.pick());
                }
                began.elapsed()
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("picker")).max().unwrap_or_default()
}

fn pick_contention(c: &mut Criterion) {
    let registry = Registry::new(RouterConfig::default().dealer_shards);
    let hot_roundrobin = registration(&registry, "com.example.hot.roundrobin", InvocationRule::RoundRobin);
    let hot_random = registration(&registry, "com.example.hot.random", InvocationRule::Random);
    let own: Vec<_> =
        (0..8).map(|t| registration(&registry, &format!("com.example.own{t}"), InvocationRule::RoundRobin)).collect();
    let mut group = c.benchmark_group("pick_contention");
    for threads in [1usize, 2, 4, 8] {
        let cases: [(&str, Vec<Arc<Registration<u64>>>); 3] = [
            ("one_hot_roundrobin", vec![hot_roundrobin.clone()]),
            ("one_hot_random", vec![hot_random.clone()]),
            ("one_roundrobin_per_thread", own.clone()),
        ];
        for (name, targets) in cases {
            group.bench_with_input(BenchmarkId::new(name, threads), &targets, |b, targets| {
                b.iter_custom(|iters| race(targets, threads, iters));
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = pick_contention
}
criterion_main!(benches);
