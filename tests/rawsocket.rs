//! WAMP over RawSocket: handshake and its refusals, framing, PING/PONG, length limits both ways,
//! and sessions mixing RawSocket and WebSocket peers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::transport::rawsocket::RawFrame;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_join(addr: std::net::SocketAddr, serializer: Serializer) -> Client {
    let mut client = Client::connect_rawsocket(addr, serializer, 15).await.expect("RawSocket handshake");
    client.hello(REALM).await.expect("joins over RawSocket");
    client
}

#[tokio::test]
async fn rawsocket_sessions_share_the_websocket_port_and_mix_with_websocket_peers() {
    for ser in SERIALIZERS {
        let router = router().await;
        let callee = raw_join(router.local_addr(), ser).await;
        let mut callee = callee;
        callee.register("com.example.raw", rule("roundrobin")).await.unwrap();
        let raw_member = tokio::spawn(roundhouse::client::echo_invocations(callee));
        let ws_member =
            Callee::start(&router, Serializer::Json, "W", "com.example.raw", rule("roundrobin"), Behavior::Echo).await;
        let mut caller = join(&router, SERIALIZERS[1]).await;
        for _ in 0..4 {
            let args = vec![Value::from("x"), Value::Bytes(vec![1, 2, 3])];
            let payload = caller.call("com.example.raw", args.clone()).await.unwrap();
            assert_eq!(payload.to_values().unwrap().0, args);
        }
        // A RawSocket publisher, WebSocket and RawSocket subscribers.
        let mut ws_sub = join(&router, Serializer::Json).await;
        let mut raw_sub = raw_join(router.local_addr(), ser).await;
        for sub in [&mut ws_sub, &mut raw_sub] {
            let request = sub.request_id();
            sub.send(&Message::Subscribe { request, options: Dict::new(), topic: "com.example.t".into() })
                .await
                .unwrap();
            assert!(matches!(sub.recv().await.unwrap(), Message::Subscribed { .. }));
        }
        let mut publisher = raw_join(router.local_addr(), ser).await;
        let request = publisher.request_id();
        let payload = Payload::args(vec![Value::UInt(42)]);
        publisher
            .send(&Message::Publish { request, options: Dict::new(), topic: "com.example.t".into(), payload })
            .await
            .unwrap();
        for sub in [&mut ws_sub, &mut raw_sub] {
            let Message::Event { payload, .. } = sub.recv().await.unwrap() else { panic!() };
            assert_eq!(payload.to_values().unwrap().0, vec![Value::UInt(42)]);
        }
        for client in [publisher, ws_sub, raw_sub, caller] {
            say_goodbye(client).await;
        }
        ws_member.stop().await;
        // The RawSocket member's task owns its client: ending the task drops the connection.
        raw_member.abort();
        let _ = raw_member.await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn a_separate_rawsocket_port_serves_only_rawsocket() {
    let router = router_with(|c| {
        c.rawsocket_listen = Some("127.0.0.1:0".parse().unwrap());
        c.rawsocket_on_websocket_port = false;
    })
    .await;
    let addr = router.rawsocket_addr().expect("RawSocket listener");
    let client = raw_join(addr, Serializer::MsgPack).await;
    assert!(client.session_id() > 0);
    // The main port no longer takes RawSocket.
    assert!(Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.is_err());
    let ws = join(&router, Serializer::Json).await;
    say_goodbye(ws).await;
    say_goodbye(client).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn handshake_refusals_say_why() {
    let router = router().await;
    for (request, code) in [([0x7f, 0xf7, 0, 0], 1u8), ([0x7f, 0xf1, 0, 1], 3), ([0x7f, 0xf0, 0, 0], 1)] {
        let mut tcp = tokio::net::TcpStream::connect(router.local_addr()).await.unwrap();
        tcp.write_all(&request).await.unwrap();
        let mut reply = [0u8; 4];
        tcp.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0x7f, code << 4, 0, 0], "{request:?}");
        drop(tcp);
    }
    let client = join(&router, Serializer::Json).await;
    say_goodbye(client).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn ping_is_answered_with_the_same_payload() {
    let router = router().await;
    let mut client = raw_join(router.local_addr(), Serializer::Json).await;
    client.tx.send_raw_frame(RawFrame::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    assert_eq!(client.rx.next_raw_frame().await.unwrap(), RawFrame::Pong(Bytes::from_static(b"are you there")));
    say_goodbye(client).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn frames_over_the_announced_length_or_with_a_bad_header_are_violations() {
    let router = router_with(|c| c.max_message_size = 64 * 1024).await;
    let mut big = raw_join(router.local_addr(), Serializer::Json).await;
    let request = big.request_id();
    let payload = Payload::args(vec![Value::from("x".repeat(100_000))]);
    big.send(&Message::Call { request, options: Dict::new(), procedure: "com.x".into(), payload }).await.unwrap();
    assert!(matches!(big.recv().await, Ok(Message::Abort { reason, .. }) if reason == "wamp.error.protocol_violation"));
    let mut bad = raw_join(router.local_addr(), Serializer::Json).await;
    bad.tx.send_raw_frame(RawFrame::Pong(Bytes::new())).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(router.local_addr()).await.unwrap();
    tcp.write_all(&[0x7f, 0xf1, 0, 0]).await.unwrap();
    let mut reply = [0u8; 4];
    tcp.read_exact(&mut reply).await.unwrap();
    tcp.write_all(&[0x07, 0, 0, 0]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest)).await;
    assert!(rest.len() > 4, "an ABORT frame came before the close");
    let client = join(&router, Serializer::Json).await;
    say_goodbye(client).await;
    drop((big, bad, tcp));
    assert_empty(&router).await;
}

#[tokio::test]
async fn messages_larger_than_the_peer_accepts_are_answered_not_sent() {
    let router = router().await;
    // The callee accepts at most 2^10 = 1024 bytes.
    let mut small = Client::connect_rawsocket(router.local_addr(), Serializer::MsgPack, 1).await.unwrap();
    small.hello(REALM).await.unwrap();
    small.register("com.example.small", Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    let reply = unexpected(caller.call("com.example.small", vec![Value::from("y".repeat(2000))]).await);
    assert_error(&reply, MessageType::Call, "wamp.error.payload_size_exceeded");
    // A small call still goes through, and a RESULT too large for a small caller becomes an error.
    send_call(&mut caller, "com.example.small").await;
    let Message::Invocation { request: invocation, .. } = small.recv().await.unwrap() else { panic!() };
    small.send(&Message::Yield { request: invocation, options: Dict::new(), payload: Payload::Empty }).await.unwrap();
    assert!(matches!(caller.recv().await.unwrap(), Message::Result { .. }));

    let echo = Callee::start(&router, Serializer::Json, "E", "com.example.big", Dict::new(), Behavior::Echo).await;
    let request = small.request_id();
    let payload = Payload::args(vec![Value::from("z".repeat(300))]);
    small
        .send(&Message::Call {
            request,
            options: Dict::new(),
            procedure: "com.example.big".into(),
            payload: payload.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(small.recv().await.unwrap(), Message::Result { .. }), "300 bytes fit");
    let request = small.request_id();
    let payload = Payload::args(vec![Value::from("z".repeat(900)), Value::from("w".repeat(300))]);
    small
        .send(&Message::Call { request, options: Dict::new(), procedure: "com.example.big".into(), payload })
        .await
        .unwrap();
    match small.recv().await {
        Ok(reply) => assert_error(&reply, MessageType::Call, "wamp.error.payload_size_exceeded"),
        Err(ClientError::Closed) => panic!("the session must survive"),
        Err(e) => panic!("{e}"),
    }
    say_goodbye(small).await;
    say_goodbye(caller).await;
    echo.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_peer_too_small_for_welcome_gets_an_abort_not_silence() {
    let router = router().await;
    let mut tiny = Client::connect_rawsocket(router.local_addr(), Serializer::Json, 0).await.unwrap();
    match tiny.hello(REALM).await {
        Err(ClientError::Unexpected(reply)) => match *reply {
            Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.payload_size_exceeded"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    drop(tiny);
    assert_empty(&router).await;
}

/// On the port serving both transports, the router reads the first octets to tell them apart and
/// hands them to the transport: none is lost, whether the first read holds a RawSocket handshake
/// and the HELLO sent with it, one octet of an upgrade request, or only part of a long one.
#[tokio::test]
async fn the_shared_port_hands_the_octets_it_read_first_to_the_transport() {
    let router = router().await;
    // A RawSocket client that sends HELLO with its handshake, before the answer.
    let hello = format!(r#"[1,"{REALM}",{{"roles":{{"caller":{{}}}}}}]"#);
    let mut bytes = vec![0x7f, 0xf1, 0, 0, 0, 0, 0, hello.len() as u8];
    bytes.extend_from_slice(hello.as_bytes());
    let mut tcp = tokio::net::TcpStream::connect(router.local_addr()).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    let mut reply = [0u8; 4];
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!((reply[0], reply[1] & 0x0f), (0x7f, 1), "accepted, JSON");
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header).await.unwrap();
    let mut welcome = vec![0u8; usize::from(header[2]) << 8 | usize::from(header[3])];
    tcp.read_exact(&mut welcome).await.unwrap();
    assert_eq!(header[0], 0);
    assert!(welcome.starts_with(b"[2,"), "{}", String::from_utf8_lossy(&welcome));

    // An upgrade request whose first octet arrives alone, and one far longer than the first read.
    let padding = "x".repeat(3000);
    for (first, rest) in [("G", String::new()), ("", format!("X-Padding: {padding}\r\n"))] {
        let mut tcp = tokio::net::TcpStream::connect(router.local_addr()).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{rest}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
        );
        tcp.write_all(first.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(&request.as_bytes()[first.len()..]).await.unwrap();
        let mut answer = vec![0u8; 12];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 101");
    }
    drop(tcp);
    assert_empty(&router).await;
}
