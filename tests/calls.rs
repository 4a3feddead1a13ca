//! Calls end to end: errors, payload passthrough and transcoding, in-flight calls when a callee
//! or caller leaves, and calls racing with membership churn.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

#[tokio::test]
async fn calling_an_unregistered_procedure_is_no_such_procedure() {
    let router = router().await;
    let mut caller = join(&router, Serializer::Json).await;
    let reply = unexpected(caller.call("com.example.nobody", vec![]).await);
    assert_error(&reply, MessageType::Call, "wamp.error.no_such_procedure");
    let reply = unexpected(caller.call("com..bad", vec![]).await);
    assert_error(&reply, MessageType::Call, "wamp.error.invalid_uri");
    say_goodbye(caller).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn register_refuses_invalid_and_reserved_uris() {
    let router = router().await;
    let mut callee = join(&router, Serializer::MsgPack).await;
    for uri in ["com..x", "com.x y", "", "wamp.session.count"] {
        let reply = unexpected(callee.register(uri, Dict::new()).await);
        assert_error(&reply, MessageType::Register, "wamp.error.invalid_uri");
    }
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn unregister_by_a_non_member_twice_or_unknown_is_no_such_registration() {
    let router = router().await;
    let a = Callee::start(&router, Serializer::Json, "A", "com.example.p", rule("first"), Behavior::Name).await;
    let mut b = join(&router, Serializer::Json).await;
    let reply = unexpected(b.unregister(a.registration).await);
    assert_error(&reply, MessageType::Unregister, "wamp.error.no_such_registration");
    let reply = unexpected(b.unregister(12345).await);
    assert_error(&reply, MessageType::Unregister, "wamp.error.no_such_registration");
    let id = b.register("com.example.q", Dict::new()).await.unwrap();
    b.unregister(id).await.unwrap();
    let reply = unexpected(b.unregister(id).await);
    assert_error(&reply, MessageType::Unregister, "wamp.error.no_such_registration");
    let mut caller = join(&router, Serializer::Json).await;
    assert_eq!(call_names(&mut caller, "com.example.p", 1).await, ["A"], "A is untouched");
    say_goodbye(caller).await;
    say_goodbye(b).await;
    a.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_callee_error_reaches_the_caller_unchanged() {
    for (callee_ser, caller_ser) in [
        (Serializer::Json, Serializer::Json),
        (Serializer::MsgPack, Serializer::Json),
        (Serializer::Json, Serializer::MsgPack),
    ] {
        let router = router().await;
        let mut callee = join(&router, callee_ser).await;
        callee.register("com.example.fail", Dict::new()).await.unwrap();
        let mut caller = join(&router, caller_ser).await;
        let request = send_call(&mut caller, "com.example.fail").await;
        let Message::Invocation { request: invocation, .. } = callee.recv().await.unwrap() else { panic!() };
        let payload = Payload::Values(vec![Value::UInt(1), Value::from("two")], Some(Dict::new().with("x", 3u64)));
        callee
            .send(&Message::Error {
                request_type: MessageType::Invocation as u64,
                request: invocation,
                details: Dict::new(),
                error: "com.example.oops".into(),
                payload,
            })
            .await
            .unwrap();
        match caller.recv().await.unwrap() {
            Message::Error { request_type, request: r, error, payload, .. } => {
                assert_eq!((request_type, r, error.as_str()), (MessageType::Call as u64, request, "com.example.oops"));
                let (args, kwargs) = payload.to_values().unwrap();
                assert_eq!(args, vec![Value::UInt(1), Value::from("two")]);
                assert_eq!(kwargs, Dict::new().with("x", 3u64));
            }
            other => panic!("{other:?}"),
        }
        say_goodbye(caller).await;
        say_goodbye(callee).await;
        assert_empty(&router).await;
    }
}

fn rich_args() -> (Vec<Value>, Dict) {
    let args = vec![
        Value::from("héllo ✓ \"quoted\"\n"),
        Value::UInt(1 << 53),
        Value::Int(-42),
        Value::Float(2.5),
        Value::Bool(true),
        Value::Null,
        Value::Bytes(vec![0, 1, 2, 254, 255]),
        Value::List(vec![Value::Dict(Dict::new().with("deep", Value::List(vec![Value::UInt(7)])))]),
    ];
    (args, Dict::new().with("k", "v").with("bin", Value::Bytes(b"\x00raw".to_vec())))
}

#[tokio::test]
async fn payloads_pass_through_and_transcode_between_serializers() {
    for callee_ser in SERIALIZERS {
        for caller_ser in SERIALIZERS {
            let router = router().await;
            let callee = Callee::start(&router, callee_ser, "E", "com.example.echo", Dict::new(), Behavior::Echo).await;
            let mut caller = join(&router, caller_ser).await;
            let (args, kwargs) = rich_args();
            let request = caller.request_id();
            let payload = Payload::Values(args.clone(), Some(kwargs.clone()));
            let call = Message::Call { request, options: Dict::new(), procedure: "com.example.echo".into(), payload };
            caller.send(&call).await.unwrap();
            let Message::Result { payload, details, .. } = caller.recv().await.unwrap() else { panic!() };
            assert!(details.is_empty());
            assert_eq!(
                payload.to_values().unwrap(),
                (args.clone(), kwargs.clone()),
                "{caller_ser:?} -> {callee_ser:?}"
            );
            let seen = callee.invocations.lock()[0].clone();
            let Message::Invocation { payload, details, .. } = seen else { panic!() };
            assert!(details.is_empty(), "INVOCATION.Details is {{}}");
            assert_eq!(payload.to_values().unwrap(), (args, kwargs));
            say_goodbye(caller).await;
            callee.stop().await;
            assert_empty(&router).await;
        }
    }
}

#[tokio::test]
async fn json_binary_is_the_nul_prefixed_base64_string() {
    let router = router().await;
    let mut callee = join(&router, Serializer::Json).await;
    callee.register("com.example.bin", Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::MsgPack).await;
    let request = caller.request_id();
    let payload = Payload::args(vec![Value::Bytes(vec![1, 2, 3])]);
    caller
        .send(&Message::Call { request, options: Dict::new(), procedure: "com.example.bin".into(), payload })
        .await
        .unwrap();
    let Message::Invocation { payload: roundhouse::wire::Payload::Raw(raw), .. } = callee.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(&raw.args.unwrap()[..], br#"["\u0000AQID"]"#);
    // The call is never answered: both sides just go away.
    drop(caller);
    drop(callee);
    assert_empty(&router).await;
}

#[tokio::test]
async fn invocation_ids_are_sequential_per_callee() {
    let router = router().await;
    let a = Callee::start(&router, Serializer::Json, "A", "com.example.rr", rule("roundrobin"), Behavior::Name).await;
    let b =
        Callee::start(&router, Serializer::MsgPack, "B", "com.example.rr", rule("roundrobin"), Behavior::Name).await;
    let mut caller = join(&router, Serializer::Json).await;
    call_names(&mut caller, "com.example.rr", 10).await;
    for callee in [&a, &b] {
        let ids: Vec<u64> = callee
            .invocations
            .lock()
            .iter()
            .map(|m| match m {
                Message::Invocation { request, registration, .. } => {
                    assert_eq!(*registration, callee.registration);
                    *request
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, (1..=5).collect::<Vec<_>>());
    }
    say_goodbye(caller).await;
    a.stop().await;
    b.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_callee_that_leaves_cancels_its_calls_in_flight() {
    for how in [Leave::Drop, Leave::Goodbye] {
        for ser in SERIALIZERS {
            let router = router().await;
            let holder = Callee::start(&router, ser, "H", "com.example.slow", rule("roundrobin"), Behavior::Hold).await;
            let mut caller = join(&router, ser).await;
            let mut requests = Vec::new();
            for _ in 0..3 {
                let request = send_call(&mut caller, "com.example.slow").await;
                requests.push(request);
            }
            while holder.invocation_count() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            holder.leave(how).await;
            let mut canceled = Vec::new();
            for _ in 0..3 {
                let reply = caller.recv().await.unwrap();
                assert_error(&reply, MessageType::Call, "wamp.error.canceled");
                let Message::Error { request, .. } = reply else { unreachable!() };
                canceled.push(request);
            }
            canceled.sort();
            assert_eq!(canceled, requests, "{how:?} {ser:?}");
            say_goodbye(caller).await;
            holder.stop().await;
            assert_empty(&router).await;
        }
    }
}

#[tokio::test]
async fn a_late_yield_for_a_caller_that_left_is_dropped_quietly() {
    let router = router().await;
    let mut callee = join(&router, Serializer::Json).await;
    callee.register("com.example.p", Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    send_call(&mut caller, "com.example.p").await;
    let Message::Invocation { request: invocation, .. } = callee.recv().await.unwrap() else { panic!() };
    drop(caller);
    tokio::time::sleep(Duration::from_millis(50)).await;
    callee.send(&Message::Yield { request: invocation, options: Dict::new(), payload: Payload::Empty }).await.unwrap();
    // The callee's session carries on: it still serves the next caller.
    let mut next = join(&router, Serializer::Json).await;
    let request = send_call(&mut next, "com.example.p").await;
    let Message::Invocation { request: invocation, .. } = callee.recv().await.unwrap() else { panic!() };
    callee.send(&Message::Yield { request: invocation, options: Dict::new(), payload: Payload::Empty }).await.unwrap();
    assert!(matches!(next.recv().await.unwrap(), Message::Result { request: r, .. } if r == request));
    say_goodbye(next).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

/// Callees join and leave (all three ways) in a loop while callers call without pause. Every
/// call must end with RESULT or a defined ERROR, and no callee may get a call after it was told
/// UNREGISTERED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_membership_churn() {
    let router = router().await;
    let procedure = "com.example.churn";
    // One member that never leaves, so calls always have somewhere to go.
    let anchor =
        Callee::start(&router, Serializer::Json, "anchor", procedure, rule("roundrobin"), Behavior::Name).await;
    let results = Arc::new(AtomicUsize::new(0));
    let defined_errors = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut callers = Vec::new();
    for i in 0..3 {
        let ser = SERIALIZERS[i % 2];
        let client = Client::join(&router.url(), REALM, ser).await.unwrap();
        let (results, defined_errors, stop) = (results.clone(), defined_errors.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let (mut tx, mut rx) = client.split();
            let mut outstanding = 0usize;
            let mut ids = std::collections::HashSet::new();
            loop {
                while outstanding < 8 && !stop.is_cancelled() {
                    let request = tx.request_id();
                    ids.insert(request);
                    let call = Message::Call {
                        request,
                        options: Dict::new(),
                        procedure: procedure.into(),
                        payload: Payload::Empty,
                    };
                    tx.send(&call).await.unwrap();
                    outstanding += 1;
                }
                if outstanding == 0 {
                    drop((tx, rx));
                    return ids.is_empty();
                }
                match rx.recv().await.expect("every call is answered") {
                    Message::Result { request, .. } => {
                        assert!(ids.remove(&request));
                        results.fetch_add(1, Ordering::Relaxed);
                    }
                    Message::Error { request, error, .. } => {
                        assert!(ids.remove(&request));
                        assert!(
                            ["wamp.error.canceled", "wamp.error.no_such_procedure"].contains(&error.as_str()),
                            "{error}"
                        );
                        defined_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("{other:?}"),
                }
                outstanding -= 1;
            }
        }));
    }
    let mut rounds = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let how = [Leave::Unregister, Leave::Goodbye, Leave::Drop][rounds % 3];
        let ser = SERIALIZERS[rounds % 2];
        let callee = Callee::start(&router, ser, "churner", procedure, rule("roundrobin"), Behavior::Name).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        callee.leave(how).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_nothing_after_unregistered(&callee);
        callee.stop().await;
        rounds += 1;
    }
    stop.cancel();
    for caller in callers {
        assert!(caller.await.unwrap(), "every call was answered");
    }
    let answered = results.load(Ordering::Relaxed);
    // Sanity floors only: the machine may be loaded; what matters is that every call was answered.
    assert!(rounds > 5, "only {rounds} churn rounds");
    assert!(answered > 100, "only {answered} results");
    assert!(anchor.invocation_count() > 0);
    println!("{rounds} churn rounds, {answered} results, {} defined errors", defined_errors.load(Ordering::Relaxed));
    anchor.stop().await;
    assert_empty(&router).await;
}
