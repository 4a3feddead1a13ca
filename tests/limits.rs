//! Memory bounded in bytes, through real sockets: timers that leave with their calls, per-session
//! caps with clear errors, testaments that cannot target `wamp.*`, a callee's pending bytes, a
//! subscriber's queue, and frame headers that announce megabytes nobody sends.

// The router binary's allocator: with it, memory a decoder reserves shows in RSS as it does in
// production (the system allocator would leave a large untouched reservation out of RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_call_leaves_no_timer_behind() {
    let router = router().await;
    let echo = Callee::start(&router, Serializer::MsgPack, "E", "com.example.echo", Dict::new(), Behavior::Echo).await;
    let caller = join(&router, Serializer::MsgPack).await;
    let (mut tx, mut rx) = caller.split();
    let sender = tokio::spawn(async move {
        for _ in 0..2000 {
            let request = tx.request_id();
            let options = Dict::new().with("timeout", 3_600_000u64);
            let call =
                Message::Call { request, options, procedure: "com.example.echo".into(), payload: Payload::Empty };
            tx.feed(&call).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    for _ in 0..2000 {
        assert!(matches!(rx.recv().await.unwrap(), Message::Result { .. }));
    }
    let census = router.census();
    assert_eq!((census.timers, census.calls), (0, 0), "every hour-long timer left with its call");
    drop((sender.await.unwrap(), rx));
    echo.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn registrations_and_subscriptions_per_session_are_capped() {
    let router = router_with(|c| {
        c.max_registrations_per_session = 3;
        c.max_subscriptions_per_session = 2;
    })
    .await;
    let mut client = join(&router, Serializer::Json).await;
    for i in 0..3 {
        client.register(&format!("com.example.p{i}"), Dict::new()).await.unwrap();
    }
    let reply = unexpected(client.register("com.example.p3", Dict::new()).await);
    assert_error(&reply, MessageType::Register, "wamp.error.invalid_argument");
    for i in 0..2 {
        client.subscribe(&format!("com.example.t{i}"), Dict::new()).await.unwrap();
    }
    let reply = unexpected(client.subscribe("com.example.t2", Dict::new()).await);
    assert_error(&reply, MessageType::Subscribe, "wamp.error.invalid_argument");
    // A second session has its own allowance.
    let mut other = join(&router, Serializer::Json).await;
    other.register("com.example.p3", Dict::new()).await.unwrap();
    drop((client, other));
    assert_empty(&router).await;
}

async fn add_testament(client: &mut Client, topic: &str, args: Vec<Value>) -> Result<Payload, Message> {
    let payload = Payload::args(vec![Value::from(topic), Value::List(args)]);
    let request = client.request_id();
    let call = Message::Call { request, options: Dict::new(), procedure: "wamp.session.add_testament".into(), payload };
    client.send(&call).await.unwrap();
    match client.recv().await.unwrap() {
        Message::Result { payload, .. } => Ok(payload),
        other => Err(other),
    }
}

#[tokio::test]
async fn testaments_are_capped_and_never_speak_for_the_router() {
    let router = router_with(|c| {
        c.max_testaments_per_session = 2;
        c.max_testament_bytes = 64 * 1024;
    })
    .await;
    let mut watcher = join(&router, Serializer::Json).await;
    watcher.subscribe("wamp.session.on_leave", Dict::new()).await.unwrap();
    let mut client = join(&router, Serializer::Json).await;
    // Forging another session's departure is refused.
    let forged = add_testament(&mut client, "wamp.session.on_leave", vec![Value::UInt(watcher.session_id())]).await;
    assert_error(&forged.unwrap_err(), MessageType::Call, "wamp.error.invalid_uri");
    let big = add_testament(&mut client, "com.example.will", vec![Value::from("x".repeat(100 * 1024))]).await;
    assert_error(&big.unwrap_err(), MessageType::Call, "wamp.error.invalid_argument");
    add_testament(&mut client, "com.example.will", vec![Value::from("one")]).await.unwrap();
    add_testament(&mut client, "com.example.will", vec![Value::from("two")]).await.unwrap();
    let third = add_testament(&mut client, "com.example.will", vec![Value::from("three")]).await;
    assert_error(&third.unwrap_err(), MessageType::Call, "wamp.error.invalid_argument");
    let leaving = client.session_id();
    drop(client);
    match watcher.recv().await.unwrap() {
        Message::Event { payload, .. } => {
            assert_eq!(payload.to_values().unwrap().0.first(), Some(&Value::UInt(leaving)), "only the real on_leave");
        }
        other => panic!("{other:?}"),
    }
    drop(watcher);
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_callee_holds_at_most_its_pending_bytes() {
    let router = router_with(|c| c.max_pending_bytes_per_callee = 1024 * 1024).await;
    let holder = Callee::start(&router, Serializer::MsgPack, "H", "com.example.big", Dict::new(), Behavior::Hold).await;
    let mut caller = join(&router, Serializer::MsgPack).await;
    for _ in 0..4 {
        let request = caller.request_id();
        let payload = Payload::args(vec![Value::Bytes(vec![1; 300 * 1024])]);
        let call = Message::Call { request, options: Dict::new(), procedure: "com.example.big".into(), payload };
        caller.send(&call).await.unwrap();
    }
    let reply = caller.recv().await.unwrap();
    assert_error(&reply, MessageType::Call, "wamp.error.no_available_callee");
    assert_eq!(router.census().invocations, 3, "three calls of 300 KiB fit in 1 MiB, the fourth does not");
    drop(caller);
    holder.stop().await;
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stopped_reading_has_a_bounded_queue() {
    let router = router_with(|c| c.max_outbound_bytes = 256 * 1024).await;
    let mut deaf = join(&router, Serializer::MsgPack).await;
    deaf.subscribe("com.example.flood", Dict::new()).await.unwrap();
    let mut publisher = join(&router, Serializer::MsgPack).await;
    let mut peak = 0;
    for _ in 0..3000 {
        let request = publisher.request_id();
        let payload = Payload::args(vec![Value::Bytes(vec![9; 32 * 1024])]);
        let publish = Message::Publish { request, options: Dict::new(), topic: "com.example.flood".into(), payload };
        publisher.tx.feed(&publish).await.unwrap();
        peak = peak.max(router.census().queued_bytes);
    }
    publisher.tx.flush().await.unwrap();
    assert!(peak <= 256 * 1024 + 64 * 1024, "a deaf subscriber's queue held {peak} bytes");
    drop((deaf, publisher));
    assert_empty(&router).await;
}

/// A WebSocket connection upgraded by hand, so the test can write partial frames.
async fn raw_websocket(router: &roundhouse::RouterHandle) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(router.local_addr()).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: wamp.2.msgpack\r\n\r\n",
        router.local_addr()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut byte).await.unwrap();
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&response));
    tcp
}

/// Resident memory of this process, in bytes (Linux).
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_headers_announcing_megabytes_cost_nothing_and_time_out() {
    let router = router_with(|c| c.message_timeout_ms = 1_000).await;
    let before = rss();
    let mut sockets = Vec::new();
    for i in 0..400 {
        if i % 2 == 0 {
            // RawSocket: handshake, then a header announcing 16 MiB - 1 and nothing after it.
            let mut tcp = tokio::net::TcpStream::connect(router.local_addr()).await.unwrap();
            tcp.write_all(&[0x7f, 0xf1, 0, 0]).await.unwrap();
            let mut reply = [0u8; 4];
            tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut reply).await.unwrap();
            tcp.write_all(&[0, 0xff, 0xff, 0xff]).await.unwrap();
            sockets.push(tcp);
        } else {
            // WebSocket: a masked binary frame announcing 16 MiB with 64-bit length, no body.
            let mut tcp = raw_websocket(&router).await;
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&(16u64 * 1024 * 1024 - 64).to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]);
            tcp.write_all(&header).await.unwrap();
            sockets.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = rss().saturating_sub(before);
    assert!(grown < 64 * 1024 * 1024, "400 announced 16 MiB frames grew RSS by {} MiB", grown >> 20);
    for _ in 0..300 {
        if router.census().sessions == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(router.census().sessions, 0, "every stalled frame timed out");
    drop(sockets);
    assert_empty(&router).await;
}
