//! Every call is answered exactly once, through real sockets: request ids in flight, progressive
//! invocations whose call ends or moves while chunks are still coming, progressive results racing
//! the final answer, and a router shutting down with calls in flight.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

/// A joined client announcing callee/caller `features`.
async fn peer(router: &roundhouse::RouterHandle, serializer: Serializer, features: &[&str]) -> Client {
    let mut client = Client::connect(&router.url(), serializer).await.unwrap();
    client.hello_with_features(REALM, features).await.unwrap();
    client
}

fn call(request: u64, procedure: &str, options: Dict, word: &str) -> Message {
    Message::Call { request, options, procedure: procedure.into(), payload: Payload::args(vec![Value::from(word)]) }
}

fn chunk(progress: bool) -> Dict {
    if progress {
        Dict::new().with("progress", true)
    } else {
        Dict::new()
    }
}

/// Every message `client` receives until it has been quiet for `quiet`.
async fn drain(client: &mut Client, quiet: Duration) -> Vec<Message> {
    client.rx.set_timeout(quiet);
    let mut got = Vec::new();
    while let Ok(message) = client.recv().await {
        got.push(message);
    }
    client.rx.set_timeout(Duration::from_secs(5));
    got
}

fn words(payload: &Payload) -> String {
    first_arg(payload)
}

#[tokio::test]
async fn a_call_reusing_a_request_id_in_flight_is_a_protocol_violation() {
    let router = router().await;
    let holder = Callee::start(&router, Serializer::Json, "H", "com.example.hold", Dict::new(), Behavior::Hold).await;
    let mut caller = join(&router, Serializer::Json).await;
    caller.send(&call(7, "com.example.hold", Dict::new(), "first")).await.unwrap();
    for _ in 0..200 {
        if holder.invocation_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(holder.invocation_count(), 1);
    caller.send(&call(7, "com.example.hold", Dict::new(), "second")).await.unwrap();
    match caller.recv().await.unwrap() {
        Message::Abort { reason, details } => {
            assert_eq!(reason, "wamp.error.protocol_violation");
            let text = details.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
            assert!(text.contains("already in flight"), "{text}");
        }
        other => panic!("expected ABORT, got {other:?}"),
    }
    assert_eq!(holder.invocation_count(), 1, "the second CALL reached nobody");
    drop(caller);
    holder.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn chunks_after_a_progressive_call_ended_start_no_new_call() {
    let router = router().await;
    let mut callee = peer(&router, Serializer::Json, &["progressive_call_invocations"]).await;
    callee.register("com.example.stream", Dict::new()).await.unwrap();
    let mut caller = peer(&router, Serializer::Json, &[]).await;
    let first = Dict::new().with("progress", true).with("timeout", 100u64);
    caller.send(&call(1, "com.example.stream", first, "a")).await.unwrap();
    assert!(matches!(callee.recv().await.unwrap(), Message::Invocation { .. }));
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.timeout");
    // The caller had not seen the timeout when it sent its next chunks: they must go nowhere.
    caller.send(&call(1, "com.example.stream", chunk(true), "b")).await.unwrap();
    caller.send(&call(1, "com.example.stream", chunk(false), "c")).await.unwrap();
    assert!(drain(&mut callee, Duration::from_millis(300)).await.is_empty(), "no new INVOCATION");
    assert!(drain(&mut caller, Duration::from_millis(100)).await.is_empty(), "no second answer");
    // The request id is free again once the stream's last chunk was seen.
    caller.send(&call(1, "com.example.stream", Dict::new(), "again")).await.unwrap();
    match callee.recv().await.unwrap() {
        Message::Invocation { request, payload, .. } => {
            assert_eq!(words(&payload), "again");
            callee.send(&Message::Yield { request, options: Dict::new(), payload: Payload::Empty }).await.unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(caller.recv().await.unwrap(), Message::Result { request: 1, .. }));
    drop((caller, callee));
    assert_empty(&router).await;
}

/// A callee `first` in line that stopped reading, over a socket with a small receive buffer; the
/// filler's calls are sent until the router holds some of them queued (its writer is blocked), so
/// the calls routed after them stay in the router until the callee leaves.
async fn clogged_first_member(router: &roundhouse::RouterHandle, procedure: &str) -> (Client, Client) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(router.local_addr()).await.unwrap();
    let mut stuck = Client::rawsocket_over(tcp, Serializer::MsgPack, 15).await.unwrap();
    stuck.hello_with_features(REALM, &["progressive_call_invocations"]).await.unwrap();
    stuck.register(procedure, rule("first")).await.unwrap();
    let mut filler = join(router, Serializer::MsgPack).await;
    for _ in 0..400 {
        if router.census().queued_bytes >= 128 * 1024 {
            return (stuck, filler);
        }
        let request = filler.request_id();
        let payload = Payload::args(vec![Value::Bytes(vec![0x5a; 32 * 1024])]);
        let call = Message::Call { request, options: Dict::new(), procedure: procedure.into(), payload };
        filler.send(&call).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the router never queued the filler's calls: {:?}", router.census());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_follow_their_call_when_it_moves_to_another_member() {
    let router = router().await;
    let (stuck, filler) = clogged_first_member(&router, "com.example.up").await;
    let mut standby = peer(&router, Serializer::Json, &["progressive_call_invocations"]).await;
    standby.register("com.example.up", rule("first")).await.unwrap();
    let mut caller = peer(&router, Serializer::Json, &[]).await;
    let request = 1_000;
    caller.send(&call(request, "com.example.up", chunk(true), "c1")).await.unwrap();
    caller.send(&call(request, "com.example.up", chunk(true), "c2")).await.unwrap();
    caller.send(&call(request, "com.example.up", chunk(false), "c3")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stuck); // its queue, with the first chunk, goes to the standby
    let mut seen = Vec::new();
    let mut invocation = None;
    while seen.len() < 3 {
        match standby.recv().await.expect("the standby gets every chunk") {
            Message::Invocation { request: id, details, payload, .. } => {
                let word = match payload.to_values().unwrap().0.first() {
                    Some(Value::Str(word)) => word.clone(),
                    _ => continue, // a rerouted filler call
                };
                assert!(invocation.is_none_or(|i| i == id), "every chunk carries the first chunk's id");
                invocation = Some(id);
                let progress = details.get("progress").and_then(Value::as_bool) == Some(true);
                seen.push((word, progress));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, [("c1".into(), true), ("c2".into(), true), ("c3".to_owned(), false)]);
    drop((filler, caller, standby));
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progressive_call_canceled_while_it_moves_stays_ended() {
    let router = router().await;
    let (stuck, filler) = clogged_first_member(&router, "com.example.up").await;
    let mut standby = peer(&router, Serializer::Json, &["progressive_call_invocations"]).await;
    standby.register("com.example.up", rule("first")).await.unwrap();
    let mut caller = peer(&router, Serializer::Json, &[]).await;
    caller.send(&call(1_000, "com.example.up", chunk(true), "c1")).await.unwrap();
    caller.send(&Message::Cancel { request: 1_000, options: Dict::new().with("mode", "skip") }).await.unwrap();
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.canceled");
    drop(stuck); // the queued call is handed on: it must not come back to life at the standby
    let (standby_rx, caller_rx) =
        tokio::join!(drain(&mut standby, Duration::from_millis(800)), drain(&mut caller, Duration::from_millis(800)));
    let revived = standby_rx.iter().any(|m| {
        matches!(m, Message::Invocation { payload, .. }
            if matches!(payload.to_values().unwrap().0.first(), Some(Value::Str(_))))
    });
    assert!(!revived, "the canceled call reached the standby");
    assert!(caller_rx.is_empty(), "a second answer: {caller_rx:?}");
    drop((filler, caller, standby));
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_progressive_result_follows_the_final_answer() {
    let router = router().await;
    let features = ["progressive_call_results", "call_canceling"];
    let mut callee = peer(&router, Serializer::MsgPack, &features).await;
    callee.register("com.example.feed", Dict::new()).await.unwrap();
    let mut caller = peer(&router, Serializer::MsgPack, &features).await;
    for round in 0..30u64 {
        let request = round + 1;
        let options = Dict::new().with("receive_progress", true);
        caller.send(&call(request, "com.example.feed", options, "go")).await.unwrap();
        let Message::Invocation { request: invocation, .. } = callee.recv().await.unwrap() else { panic!() };
        // A burst of progressive results, racing the CANCEL the caller sends at the first one.
        for i in 0..300u64 {
            let payload = Payload::args(vec![Value::UInt(i)]);
            callee.tx.feed(&Message::Yield { request: invocation, options: chunk(true), payload }).await.unwrap();
        }
        callee.tx.flush().await.unwrap();
        assert!(matches!(caller.recv().await.unwrap(), Message::Result { .. }));
        caller.send(&Message::Cancel { request, options: Dict::new() }).await.unwrap();
        let after = drain(&mut caller, Duration::from_millis(150)).await;
        let end = after.iter().position(|m| matches!(m, Message::Error { .. })).expect("the cancel is answered");
        assert_error(&after[end], MessageType::Call, "wamp.error.canceled");
        assert_eq!(after.len(), end + 1, "round {round}: messages after the final ERROR: {:?}", &after[end + 1..]);
        // The callee hears INTERRUPT; its own late answer is dropped.
        drain(&mut callee, Duration::from_millis(20)).await;
        callee
            .send(&Message::Yield { request: invocation, options: Dict::new(), payload: Payload::Empty })
            .await
            .unwrap();
    }
    assert!(drain(&mut caller, Duration::from_millis(100)).await.is_empty());
    drop((caller, callee));
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_every_call_in_flight_is_answered_before_goodbye() {
    let router = router().await;
    let _holders: Vec<Callee> = {
        let mut holders = Vec::new();
        for name in ["A", "B", "C"] {
            let holder = Callee::start(
                &router,
                Serializer::MsgPack,
                name,
                "com.example.slow",
                rule("roundrobin"),
                Behavior::Hold,
            )
            .await;
            holders.push(holder);
        }
        holders
    };
    let mut callers = Vec::new();
    for i in 0..12 {
        let serializer = SERIALIZERS[i % 3];
        let mut caller = join(&router, serializer).await;
        for _ in 0..8 {
            send_call(&mut caller, "com.example.slow").await;
        }
        callers.push(caller);
    }
    while router.census().invocations < 96 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shutdown = tokio::spawn(router.shutdown());
    for mut caller in callers {
        let mut errors = 0;
        loop {
            match caller.recv().await {
                Ok(Message::Error { error, .. }) => {
                    assert_eq!(error, "wamp.error.canceled");
                    errors += 1;
                }
                Ok(Message::Goodbye { reason, .. }) => {
                    assert_eq!(reason, "wamp.close.system_shutdown");
                    break;
                }
                Ok(other) => panic!("{other:?}"),
                Err(ClientError::Closed) | Err(_) => break,
            }
        }
        assert_eq!(errors, 8, "every call ends with an ERROR before GOODBYE");
    }
    shutdown.await.unwrap();
}
