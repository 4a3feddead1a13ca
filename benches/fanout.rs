//! Broker fan-out: events per second delivered to 1, 100 and 10,000 subscribers of one topic,
//! half of them JSON and half MessagePack (so each event is encoded twice, once per serializer).
//!
//! Measured at the broker: subscribers are sessions whose queues are drained by plain tasks, so
//! the figure is the router's own cost (snapshot load, encode once per serializer, one queue push
//! per subscriber) without socket writes, which belong to each subscriber's writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roundhouse::broker::Broker;
use roundhouse::session::outbox::OutboxLimits;
use roundhouse::session::SessionHandle;
use roundhouse::wire::{Dict, Payload, Serializer, Value};

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("fanout");
    group.sample_size(10);
    // Queues large enough that no event is dropped: this measures fan-out, not a slow consumer.
    let limits =
        OutboxLimits { max_bytes: 1 << 32, slow_consumer_bytes: 1 << 33, stuck_timeout: Duration::from_secs(10) };
    for subscribers in [1u64, 100, 10_000] {
        let broker = Broker::new(4096);
        let delivered = Arc::new(AtomicU64::new(0));
        let publisher = runtime.block_on(async {
            for id in 0..subscribers {
                let serializer = if id % 2 == 0 { Serializer::Json } else { Serializer::MsgPack };
                let (handle, mut queue) = SessionHandle::new(id + 1, serializer, limits);
                broker.subscribe(&handle, "com.example.ticker", &Dict::new()).unwrap();
                let delivered = delivered.clone();
                tokio::spawn(async move {
                    while let Some(item) = queue.recv().await {
                        handle.outbox().taken(item.size());
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            SessionHandle::new(u64::MAX >> 11, Serializer::Json, limits).0
        });
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter_custom(|events| {
                runtime.block_on(async {
                    let target = delivered.load(Ordering::Relaxed) + events * subscribers;
                    let start = Instant::now();
                    for i in 0..events {
                        let payload = Payload::args(vec![Value::UInt(i), Value::from("tick")]);
                        broker.publish(&publisher, "com.example.ticker", &Dict::new(), payload, false).unwrap();
                    }
                    while delivered.load(Ordering::Relaxed) < target {
                        tokio::task::yield_now().await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = fanout
}
criterion_main!(benches);
