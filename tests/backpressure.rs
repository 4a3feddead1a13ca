//! Bounded queues: a saturated callee slows its callers down without failing their calls, and a
//! callee that stops reading is evicted after `stuck_timeout_ms` with every call still answered.

mod common;

use std::collections::HashSet;

use common::*;
use roundhouse::wire::{Dict, Message, Payload, Serializer, Value};

/// Sends `count` calls of `size`-byte payloads from one task while another collects the replies;
/// returns (results, errors by URI).
async fn pipeline(
    router: &roundhouse::RouterHandle,
    procedure: &str,
    count: usize,
    size: usize,
) -> (usize, Vec<String>) {
    let caller = join(router, Serializer::MsgPack).await;
    let (mut tx, mut rx) = caller.split();
    let procedure = procedure.to_owned();
    let sender = tokio::spawn(async move {
        for _ in 0..count {
            let request = tx.request_id();
            let payload = Payload::args(vec![Value::Bytes(vec![0xab; size])]);
            tx.send(&Message::Call { request, options: Dict::new(), procedure: procedure.clone(), payload })
                .await
                .unwrap();
        }
        tx
    });
    rx.set_timeout(std::time::Duration::from_secs(10));
    let (mut results, mut errors, mut seen) = (0, Vec::new(), HashSet::new());
    while seen.len() < count {
        match rx.recv().await.expect("every call is answered") {
            Message::Result { request, .. } => {
                assert!(seen.insert(request));
                results += 1;
            }
            Message::Error { request, error, .. } => {
                assert!(seen.insert(request));
                errors.push(error);
            }
            other => panic!("{other:?}"),
        }
    }
    let tx = sender.await.unwrap();
    drop((tx, rx));
    (results, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_callee_slows_callers_without_failing_calls() {
    let router = router_with(|c| c.max_outbound_bytes = 1024).await;
    let callee = Callee::start(&router, Serializer::Json, "A", "com.example.busy", Dict::new(), Behavior::Echo).await;
    let (results, errors) = pipeline(&router, "com.example.busy", 3000, 64).await;
    assert_eq!((results, errors.len()), (3000, 0), "{errors:?}");
    callee.stop().await;
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_callee_is_evicted_and_its_calls_go_to_the_standby() {
    let router = router_with(|c| {
        c.max_outbound_bytes = 1024;
        c.stuck_timeout_ms = 1_000;
    })
    .await;
    // A registers first, then never reads its socket again.
    let mut stuck = join(&router, Serializer::MsgPack).await;
    stuck.register("com.example.ha", rule("first")).await.unwrap();
    let standby =
        Callee::start(&router, Serializer::MsgPack, "B", "com.example.ha", rule("first"), Behavior::Echo).await;
    assert_eq!(router.session_count(), 2);
    let (results, errors) = pipeline(&router, "com.example.ha", 64, 256 * 1024).await;
    assert!(errors.iter().all(|e| e == "wamp.error.canceled"), "{errors:?}");
    assert!(results > 0 && standby.invocation_count() == results, "the standby served the rest");
    println!("{results} results from the standby, {} canceled at the stuck callee", errors.len());
    drop(stuck);
    standby.stop().await;
    assert_empty(&router).await;
}

/// A callee that stops answering holds at most `max_pending_per_callee` calls; further calls go
/// to another member, and fail when there is none.
#[tokio::test]
async fn a_callee_at_its_pending_limit_hands_calls_on() {
    let router = router_with(|c| c.max_pending_per_callee = 2).await;
    let silent = Callee::start(&router, Serializer::Json, "S", "com.example.slow", rule("first"), Behavior::Hold).await;
    let mut caller = join(&router, Serializer::Json).await;
    let mut requests = Vec::new();
    for _ in 0..3 {
        let request = send_call(&mut caller, "com.example.slow").await;
        requests.push(request);
    }
    match caller.recv().await.unwrap() {
        Message::Error { request, error, .. } => {
            assert_eq!((request, error.as_str()), (requests[2], "wamp.error.no_available_callee"));
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..200 {
        if silent.invocation_count() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(silent.invocation_count(), 2, "the silent callee got exactly its limit");
    let standby =
        Callee::start(&router, Serializer::Json, "B", "com.example.slow", rule("first"), Behavior::Name).await;
    assert_eq!(call_names(&mut caller, "com.example.slow", 2).await, ["B", "B"], "the standby takes the overflow");
    // The silent callee still holds two calls when their caller leaves.
    say_goodbye(caller).await;
    silent.stop().await;
    standby.stop().await;
    assert_empty(&router).await;
}
