//! One peer that stops reading slows down nobody else, through real sockets: not another caller's
//! timeout, not a REGISTER or join whose meta event it subscribed to, not the publisher or the
//! other subscribers of its topic, not the other callers of a callee it also calls. Only the
//! CALL→callee direction waits, and a peer that stays stuck is closed with its calls answered.

mod common;

use std::time::{Duration, Instant};

use common::*;
use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

/// Bounds for "promptly": far above what a healthy router needs on a loaded 2-core machine, far
/// below the stuck timeout the old behaviour waited for.
const PROMPT: Duration = Duration::from_secs(5);
const STUCK_MS: u64 = 15_000;

async fn slow_router() -> roundhouse::RouterHandle {
    router_with(|c| c.stuck_timeout_ms = STUCK_MS).await
}

/// A session that sends `count` calls of `size` bytes each to `procedure` and never reads again:
/// their results pile up in its socket and queue.
async fn flooding_caller(router: &roundhouse::RouterHandle, procedure: &str, count: usize, size: usize) -> Client {
    flood(join(router, Serializer::MsgPack).await, procedure, count, size).await
}

/// Sends `count` calls of `size` bytes each to `procedure` from `client`, without reading.
async fn flood(mut client: Client, procedure: &str, count: usize, size: usize) -> Client {
    for _ in 0..count {
        let request = client.request_id();
        let payload = Payload::args(vec![Value::Bytes(vec![0x33; size])]);
        let call = Message::Call { request, options: Dict::new(), procedure: procedure.into(), payload };
        // The router may close it as a slow consumer before it is done.
        if client.tx.feed(&call).await.is_err() {
            return client;
        }
    }
    let _ = client.tx.flush().await;
    client
}

/// Waits until `client` has received some message, or `PROMPT` passes.
async fn answered_promptly(client: &mut Client, what: &str) -> Message {
    let started = Instant::now();
    client.rx.set_timeout(PROMPT);
    let message = client.recv().await.unwrap_or_else(|e| panic!("{what}: nothing within {PROMPT:?}: {e}"));
    client.rx.set_timeout(Duration::from_secs(5));
    assert!(started.elapsed() < PROMPT, "{what} took {:?}", started.elapsed());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_call_fires_on_time_next_to_a_stuck_caller() {
    let router = slow_router().await;
    let echo = Callee::start(&router, Serializer::MsgPack, "E", "com.example.echo", Dict::new(), Behavior::Echo).await;
    let holder = Callee::start(&router, Serializer::Json, "H", "com.example.hold", Dict::new(), Behavior::Hold).await;
    // The stuck caller's own timed call is due first, while its queue is full of results.
    let mut stuck = join(&router, Serializer::MsgPack).await;
    let request = stuck.request_id();
    let timed = Dict::new().with("timeout", 300u64);
    let call = Message::Call { request, options: timed, procedure: "com.example.hold".into(), payload: Payload::Empty };
    stuck.send(&call).await.unwrap();
    let stuck = flood(stuck, "com.example.echo", 6000, 16 * 1024).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut healthy = join(&router, Serializer::Json).await;
    let request = healthy.request_id();
    let timed = Dict::new().with("timeout", 200u64);
    let call = Message::Call { request, options: timed, procedure: "com.example.hold".into(), payload: Payload::Empty };
    healthy.send(&call).await.unwrap();
    let answer = answered_promptly(&mut healthy, "the healthy caller's timeout").await;
    assert_error(&answer, MessageType::Call, "wamp.error.timeout");
    drop((stuck, healthy));
    echo.stop().await;
    holder.stop().await;
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_subscriber_that_stopped_reading_delays_no_join_and_no_register() {
    let router = slow_router().await;
    let mut deaf = Vec::new();
    for _ in 0..3 {
        let mut subscriber = join(&router, Serializer::Json).await;
        for topic in ["wamp.session.on_join", "wamp.registration.on_register", "com.example.noise"] {
            subscriber.subscribe(topic, Dict::new()).await.unwrap();
        }
        deaf.push(subscriber);
    }
    // Fill the deaf subscribers' sockets and queues.
    let mut publisher = join(&router, Serializer::Json).await;
    let noise = tokio::spawn(async move {
        for _ in 0..5000 {
            let request = publisher.request_id();
            let payload = Payload::args(vec![Value::from("n".repeat(8 * 1024))]);
            let publish =
                Message::Publish { request, options: Dict::new(), topic: "com.example.noise".into(), payload };
            if publisher.send(&publish).await.is_err() {
                break;
            }
        }
        publisher
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let started = Instant::now();
    let mut callee = join(&router, Serializer::Json).await;
    callee.register("com.example.fresh", Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    let request = send_call(&mut caller, "com.example.fresh").await;
    let invocation = answered_promptly(&mut callee, "the INVOCATION").await;
    let Message::Invocation { request: id, .. } = invocation else { panic!("{invocation:?}") };
    callee.send(&Message::Yield { request: id, options: Dict::new(), payload: Payload::Empty }).await.unwrap();
    assert!(
        matches!(answered_promptly(&mut caller, "the RESULT").await, Message::Result { request: r, .. } if r == request)
    );
    assert!(started.elapsed() < PROMPT * 2, "join, register and call took {:?}", started.elapsed());
    let publisher = noise.await.unwrap();
    drop((deaf, publisher, callee, caller));
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_stalls_neither_the_publisher_nor_the_other_subscribers() {
    let router = slow_router().await;
    let mut stuck = join(&router, Serializer::MsgPack).await;
    stuck.subscribe("com.example.ticks", Dict::new()).await.unwrap();
    let mut healthy = join(&router, Serializer::MsgPack).await;
    let subscription = healthy.subscribe("com.example.ticks", Dict::new()).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < 1499 {
            match healthy.recv().await {
                Ok(Message::Event { subscription: s, payload, .. }) if s == subscription => {
                    if let Some(Value::UInt(n)) = payload.to_values().unwrap().0.first() {
                        last = *n;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the healthy subscriber stopped hearing events: {e}"),
            }
        }
        healthy
    });
    let mut publisher = join(&router, Serializer::MsgPack).await;
    let started = Instant::now();
    for n in 0..1500u64 {
        let request = publisher.request_id();
        let payload = Payload::args(vec![Value::UInt(n), Value::Bytes(vec![1; 16 * 1024])]);
        let options = Dict::new().with("acknowledge", true);
        publisher
            .send(&Message::Publish { request, options, topic: "com.example.ticks".into(), payload })
            .await
            .unwrap();
        assert!(matches!(publisher.recv().await.unwrap(), Message::Published { .. }));
    }
    assert!(started.elapsed() < PROMPT * 2, "1500 publications took {:?}", started.elapsed());
    let healthy = tokio::time::timeout(PROMPT, reader).await.expect("the healthy subscriber got every event").unwrap();
    drop((stuck, healthy, publisher));
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stopped_reading_stalls_no_other_caller_of_its_callee() {
    let router = slow_router().await;
    let echo = Callee::start(&router, Serializer::MsgPack, "E", "com.example.echo", Dict::new(), Behavior::Echo).await;
    let stuck = flooding_caller(&router, "com.example.echo", 2000, 16 * 1024).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut healthy = join(&router, Serializer::Json).await;
    let started = Instant::now();
    let payload = healthy.call("com.example.echo", vec![Value::from("hi")]).await.unwrap();
    assert_eq!(first_arg(&payload), "hi");
    assert!(started.elapsed() < PROMPT, "the call took {:?}", started.elapsed());
    drop((stuck, healthy));
    echo.stop().await;
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_its_pongs_is_closed_before_its_queue_grows_past_the_limit() {
    let router = router_with(|c| c.slow_consumer_bytes = 4 * 1024 * 1024).await;
    let addr = router.local_addr();
    let mut pinger = Client::connect_rawsocket(addr, Serializer::Json, 15).await.unwrap();
    pinger.hello(REALM).await.unwrap();
    let mut peak = 0;
    for _ in 0..40 {
        let ping = roundhouse::transport::rawsocket::RawFrame::Ping(vec![7u8; 1024 * 1024].into());
        if pinger.tx.send_raw_frame(ping).await.is_err() {
            break;
        }
        peak = peak.max(router.census().queued_bytes);
    }
    assert!(peak <= 4 * 1024 * 1024 + 2 * 1024 * 1024, "queued {peak} bytes for one peer");
    for _ in 0..300 {
        if router.census().sessions == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(router.census().sessions, 0, "the slow consumer was closed");
    drop(pinger);
    assert_empty(&router).await;
}
