//! What checking at ingress costs, and that hostile shapes cost linear time: decoding frames with
//! many repeated dictionary keys (JSON, MessagePack, CBOR), a CALL with a large payload passed
//! through (the UTF-8 pass and the scanner), and a large payload transcoded.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roundhouse::wire::{Dict, Message, Payload, Serializer, Value};

/// A HELLO whose Details repeat one key `n` times, in `serializer`.
fn repeated_keys(serializer: Serializer, n: usize) -> Bytes {
    let mut frame = Vec::new();
    match serializer {
        Serializer::Json => {
            frame.extend_from_slice(br#"[1,"realm1",{"roles":{}"#);
            for _ in 0..n {
                frame.extend_from_slice(br#","x":1"#);
            }
            frame.extend_from_slice(b"}]");
        }
        Serializer::MsgPack => {
            frame.extend_from_slice(&[0x93, 0x01, 0xa6]);
            frame.extend_from_slice(b"realm1");
            frame.push(0xdf);
            frame.extend_from_slice(&(n as u32).to_be_bytes());
            for _ in 0..n {
                frame.extend_from_slice(&[0xa1, b'x', 0x01]);
            }
        }
        Serializer::Cbor => {
            frame.extend_from_slice(&[0x83, 0x01, 0x66]);
            frame.extend_from_slice(b"realm1");
            frame.push(0xba);
            frame.extend_from_slice(&(n as u32).to_be_bytes());
            for _ in 0..n {
                frame.extend_from_slice(&[0x61, b'x', 0x01]);
            }
        }
    }
    Bytes::from(frame)
}

/// A CALL carrying `n` strings of mixed ASCII and UTF-8, as a peer of `serializer` sends it.
fn large_call(serializer: Serializer, n: usize) -> Bytes {
    let args = (0..n).map(|i| Value::from(format!("item {i}: é, ü, 😀"))).collect();
    let call = Message::Call {
        request: 1,
        options: Dict::new(),
        procedure: "com.example.p".into(),
        payload: Payload::args(args),
    };
    let mut out = Vec::new();
    serializer.try_encode(&call, &mut out).expect("encodes");
    Bytes::from(out)
}

fn ingress(c: &mut Criterion) {
    let mut group = c.benchmark_group("repeated_keys");
    for serializer in Serializer::ALL {
        for n in [10_000, 400_000] {
            let frame = repeated_keys(serializer, n);
            group.throughput(Throughput::Bytes(frame.len() as u64));
            group.bench_with_input(BenchmarkId::new(serializer.subprotocol(), n), &frame, |b, f| {
                b.iter(|| serializer.decode(black_box(f.clone())).expect("decodes"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("large_call");
    for serializer in Serializer::ALL {
        let frame = large_call(serializer, 20_000);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::new("decode", serializer.subprotocol()), &frame, |b, f| {
            b.iter(|| serializer.decode(black_box(f.clone())).expect("decodes"))
        });
        let message = serializer.decode(frame.clone()).expect("decodes");
        let other = if serializer == Serializer::Json { Serializer::MsgPack } else { Serializer::Json };
        group.bench_with_input(BenchmarkId::new("transcode", serializer.subprotocol()), &message, |b, m| {
            let mut out = Vec::with_capacity(frame.len() * 2);
            b.iter(|| {
                out.clear();
                other.try_encode(black_box(m), &mut out).expect("transcodes");
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = ingress
}
criterion_main!(benches);
