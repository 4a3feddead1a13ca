//! Decoding and encoding the four messages of every call, in JSON and MessagePack, with a 16-byte
//! payload passed through (the common case) and transcoded (caller and callee disagree).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roundhouse::wire::{Dict, Message, Payload, Serializer, Value};

fn messages(serializer: Serializer) -> Vec<(&'static str, Message)> {
    // A payload as a peer sends it: decoded from the wire, so it travels as raw bytes.
    let mut wire = Vec::new();
    let sample = Message::Result {
        request: 1,
        details: Dict::new(),
        payload: Payload::Values(vec![Value::Bytes(vec![7; 16])], None),
    };
    serializer.try_encode(&sample, &mut wire).unwrap();
    let Message::Result { payload, .. } = serializer.decode(Bytes::from(wire)).unwrap() else { unreachable!() };
    vec![
        (
            "call",
            Message::Call {
                request: 123_456,
                options: Dict::new(),
                procedure: "com.example.service.compute".into(),
                payload: payload.clone(),
            },
        ),
        (
            "invocation",
            Message::Invocation {
                request: 987,
                registration: 4_503_599_627_370_496,
                details: Dict::new(),
                payload: payload.clone(),
            },
        ),
        ("yield", Message::Yield { request: 987, options: Dict::new(), payload: payload.clone() }),
        ("result", Message::Result { request: 123_456, details: Dict::new(), payload }),
    ]
}

fn codec(c: &mut Criterion) {
    for serializer in Serializer::ALL {
        let mut group = c.benchmark_group(format!("codec_{}", serializer.subprotocol()));
        for (name, message) in messages(serializer) {
            let mut frame = Vec::new();
            serializer.try_encode(&message, &mut frame).unwrap();
            let frame = Bytes::from(frame);
            group.bench_with_input(BenchmarkId::new("decode", name), &frame, |b, f| {
                b.iter(|| serializer.decode(black_box(f.clone())).unwrap())
            });
            group.bench_with_input(BenchmarkId::new("encode", name), &message, |b, m| {
                let mut out = Vec::with_capacity(256);
                b.iter(|| {
                    out.clear();
                    serializer.try_encode(black_box(m), &mut out).unwrap();
                })
            });
            let other = if serializer == Serializer::Json { Serializer::MsgPack } else { Serializer::Json };
            group.bench_with_input(BenchmarkId::new("encode_transcoded", name), &message, |b, m| {
                let mut out = Vec::with_capacity(256);
                b.iter(|| {
                    out.clear();
                    other.try_encode(black_box(m), &mut out).unwrap();
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
