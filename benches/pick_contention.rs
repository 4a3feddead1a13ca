//! The cost of picking a callee when many threads route calls at once: every thread picking from
//! one hot round-robin registration (all of them take tickets from its one shared cursor, a cache
//! line every core writes on every call), against the same hot registration under the random
//! rule (no shared write), and against each thread picking from its own registration (no sharing
//! at all). The figure is the wall time of one pick on one thread while `threads` threads pick
//! together; on a machine with fewer cores than threads, threads take turns and the figure
//! includes that.
//!
//! A second group, `cursor_design`, models the two ways a round-robin cursor can hand out tickets
//! when many cores route calls to one hot registration: every pick a `fetch_add(1)` on the one
//! shared cursor (what the registry does), or each thread taking a block of tickets with one
//! `fetch_add(BLOCK)` and handing them out locally (block tickets), against each thread counting
//! alone (no shared cursor at all). Every variant clones the chosen member's `Arc` as the
//! registry's `Callee` does, so the member's reference count, the next shared line a hot
//! procedure writes, is in those figures; the `+index_only` variants read the member without
//! cloning it, to show the cursor alone.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Tickets a thread takes at once under block tickets.
const BLOCK: u64 = 64;

/// How a thread gets its next round-robin ticket in the `cursor_design` model.
#[derive(Clone, Copy)]
enum CursorDesign {
    /// One `fetch_add(1)` on the shared cursor per pick (the registry's design).
    Shared,
    /// One `fetch_add(BLOCK)` per [`BLOCK`] picks; tickets handed out locally in between.
    Blocks,
    /// A counter of the thread's own (the floor: no shared cursor write at all).
    Alone,
}

/// Runs `iters` picks on each of `threads` threads at once, all from `members` under `design`,
/// cloning the chosen member's `Arc` like a routed call does when `clone_member` (else reading
/// its value only, to isolate the cursor); returns the longest thread's time.
fn race_design(
    members: &Arc<Vec<Arc<u64>>>,
    cursor: &Arc<AtomicU64>,
    design: CursorDesign,
    clone_member: bool,
    threads: usize,
    iters: u64,
) -> Duration {
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (members, cursor, start) = (members.clone(), cursor.clone(), start.clone());
            std::thread::spawn(move || {
                let len = members.len() as u64;
                let (mut next, mut end) = (0u64, 0u64);
                start.wait();
                let began = Instant::now();
                for _ in 0..iters {
                    let ticket = match design {
                        CursorDesign::Shared => cursor.fetch_add(1, Ordering::Relaxed),
                        CursorDesign::Blocks => {
                            if next == end {
                                next = cursor.fetch_add(BLOCK, Ordering::Relaxed);
                                end = next + BLOCK;
                            }
                            next += 1;
                            next - 1
                        }
                        CursorDesign::Alone => {
                            next += 1;
                            black_box(next)
                        }
                    };
                    let member = &members[(ticket % len) as usize];
                    if clone_member {
                        black_box(member.clone());
                    } else {
                        black_box(**member);
                    }
                }
                began.elapsed()
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("picker")).max().unwrap_or_default()
}

fn cursor_design(c: &mut Criterion) {
    let members: Arc<Vec<Arc<u64>>> = Arc::new((1..=MEMBERS).map(Arc::new).collect());
    let mut group = c.benchmark_group("cursor_design");
    for threads in [1usize, 2, 4] {
        for (name, design) in [
            ("shared_cursor", CursorDesign::Shared),
            ("block_tickets_64", CursorDesign::Blocks),
            ("no_shared_cursor", CursorDesign::Alone),
        ] {
            for (suffix, clone_member) in [("", true), ("+index_only", false)] {
                let cursor = Arc::new(AtomicU64::new(0));
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}{suffix}"), threads),
                    &threads,
                    |b, &threads| {
                        b.iter_custom(|iters| race_design(&members, &cursor, design, clone_member, threads, iters));
                    },
                );
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = pick_contention, cursor_design
}
criterion_main!(benches);
