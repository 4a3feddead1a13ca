//! One call round trip (CALL → INVOCATION → YIELD → RESULT) through an in-process router over
//! loopback WebSockets, per invocation rule, with four callees (one for `single`).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::client::{echo_invocations, Client};
use roundhouse::dealer::rule::InvocationRule;
use roundhouse::wire::{Dict, Serializer, Value};
use roundhouse::{Router, RouterConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn call_round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let router = runtime.block_on(async {
        let config = RouterConfig { listen: "127.0.0.1:0".parse().unwrap(), ..RouterConfig::default() };
        Router::start(config).await.unwrap()
    });
    let mut group = c.benchmark_group("call_round_trip");
    for serializer in Serializer::ALL {
        for rule in InvocationRule::ALL {
            let procedure = format!("com.bench.{}.{}", rule.as_str(), serializer.subprotocol());
            let mut caller = runtime.block_on(async {
                let callees = if rule == InvocationRule::Single { 1 } else { 4 };
                for _ in 0..callees {
                    let mut callee = Client::join(&router.url(), "realm1", serializer).await.unwrap();
                    callee.register(&procedure, Dict::new().with("invoke", rule.as_str())).await.unwrap();
                    tokio::spawn(echo_invocations(callee));
                }
                Client::join(&router.url(), "realm1", serializer).await.unwrap()
            });
            let id = BenchmarkId::new(serializer.subprotocol(), rule.as_str());
            group.bench_function(id, |b| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iterations {
                            caller.call(&procedure, vec![Value::Bytes(vec![7; 16])]).await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
    runtime.block_on(router.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = call_round_trip
}
criterion_main!(benches);
