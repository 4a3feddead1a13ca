//! Validation at ingress, through real sockets: a peer that sends what its serializer forbids is
//! aborted, and nobody else notices. The sender pays, never the receiver.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::transport::rawsocket::RawFrame;
use roundhouse::wire::{Message, Serializer};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ECHO: &str = "com.example.echo";

/// A joined RawSocket session of `realm1`.
async fn raw_join(router: &roundhouse::RouterHandle, serializer: Serializer) -> Client {
    let mut client = Client::connect_rawsocket(router.local_addr(), serializer, 15).await.expect("RawSocket handshake");
    client.hello(REALM).await.expect("joins over RawSocket");
    client
}

/// Asserts the router's next message is ABORT `wamp.error.protocol_violation` whose text
/// contains `why`, and that the connection then closes.
async fn assert_aborted(client: &mut Client, why: &str) {
    match client.recv().await {
        Ok(Message::Abort { reason, details }) => {
            assert_eq!(reason, "wamp.error.protocol_violation");
            let text = details.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
            assert!(text.contains(why), "ABORT says {text:?}, expected it to mention {why:?}");
        }
        other => panic!("expected ABORT protocol_violation ({why}), got {other:?}"),
    }
    assert!(matches!(client.recv().await, Err(ClientError::Closed)), "the connection closes after ABORT");
}

/// CALLs the issue found reaching callees, and other frames that are not JSON, each with the
/// words its ABORT must contain.
fn hostile_calls() -> Vec<(Vec<u8>, &'static str)> {
    let call = |args: &[u8]| [br#"[48,1,{},"com.example.echo","#.as_slice(), args, b"]"].concat();
    vec![
        (call(b"[01]"), "leading zero"),
        (call(b"[\"\xFF\"]"), "not UTF-8"),
        (call(b"[\"caf\xC3\"]"), "not UTF-8"),
        (call(br#"["\ud800"]"#), "unpaired surrogate"),
        (call(br#"["\udc00\ud800"]"#), "unpaired surrogate"),
        (call(b"[-]"), "a digit must follow '-'"),
        (call(b"[1e400]"), "out of range"),
        (call(b"[\"tab\there\"]"), "control character"),
        (call(br#"[],{"k":-01}"#), "leading zero"),
    ]
}

/// The issue's case: over RawSocket, a JSON caller's malformed CALL reached a WebSocket-JSON
/// callee and broke its connection (our writer refused the invalid UTF-8, autobahn refused the
/// leading zero); with roundrobin, repeated calls knocked out every worker in turn. Now each
/// caller is aborted at ingress and every worker keeps serving.
#[tokio::test]
async fn a_malformed_call_aborts_its_caller_and_never_reaches_a_callee() {
    let router = router().await;
    let mut workers = Vec::new();
    for name in ["W1", "W2", "W3"] {
        workers.push(Callee::start(&router, Serializer::Json, name, ECHO, rule("roundrobin"), Behavior::Name).await);
    }
    let mut healthy = join(&router, Serializer::Json).await;
    let mut healthy_raw = raw_join(&router, Serializer::Json).await;
    for (frame, why) in hostile_calls() {
        // Twice per frame, so that with roundrobin each worker would have had its turn.
        for _ in 0..2 {
            let mut hostile = raw_join(&router, Serializer::Json).await;
            hostile.tx.send_raw_frame(RawFrame::Message(Bytes::from(frame.clone()))).await.unwrap();
            assert_aborted(&mut hostile, why).await;
        }
        // Other callers, over either transport, are served by every worker as before.
        let mut names = call_names(&mut healthy, ECHO, 3).await;
        names.extend(call_names(&mut healthy_raw, ECHO, 3).await);
        names.sort();
        assert_eq!(names, ["W1", "W1", "W2", "W2", "W3", "W3"], "after {}", String::from_utf8_lossy(&frame));
    }
    let invocations: usize = workers.iter().map(Callee::invocation_count).sum();
    assert_eq!(invocations, 6 * hostile_calls().len(), "no hostile CALL became an INVOCATION");
}

/// The same rules hold over WebSocket: text frames are UTF-8 (tungstenite checks that), and the
/// JSON grammar is ours to check.
#[tokio::test]
async fn websocket_json_callers_are_held_to_the_same_grammar() {
    let router = router().await;
    let _worker = Callee::start(&router, Serializer::Json, "W", ECHO, rule("roundrobin"), Behavior::Name).await;
    for (frame, why) in hostile_calls() {
        let Ok(text) = String::from_utf8(frame) else { continue };
        let mut hostile = join(&router, Serializer::Json).await;
        hostile.tx.send_raw(WsMessage::Text(text.into())).await.unwrap();
        assert_aborted(&mut hostile, why).await;
    }
    let mut healthy = join(&router, Serializer::Json).await;
    assert_eq!(call_names(&mut healthy, ECHO, 2).await, ["W", "W"]);
}

/// MessagePack and CBOR strings are UTF-8, in payloads the router forwards without parsing too.
#[tokio::test]
async fn binary_serializers_refuse_strings_that_are_not_utf8() {
    let router = router().await;
    let _worker = Callee::start(&router, Serializer::Json, "W", ECHO, rule("roundrobin"), Behavior::Name).await;
    // [48, 1, {}, "com.example.echo", ["\xFF"]]
    let procedure = [&[0xb0][..], ECHO.as_bytes()].concat();
    let msgpack = [&[0x95, 0x30, 0x01, 0x80][..], &procedure, &[0x91, 0xa1, 0xff]].concat();
    let cbor = [&[0x85, 0x18, 0x30, 0x01, 0xa0, 0x70][..], ECHO.as_bytes(), &[0x81, 0x61, 0xff]].concat();
    for (serializer, frame) in [(Serializer::MsgPack, msgpack), (Serializer::Cbor, cbor)] {
        let mut hostile = raw_join(&router, serializer).await;
        hostile.tx.send_raw_frame(RawFrame::Message(Bytes::from(frame))).await.unwrap();
        assert_aborted(&mut hostile, "not UTF-8").await;
    }
    let mut healthy = join(&router, Serializer::Cbor).await;
    assert_eq!(call_names(&mut healthy, ECHO, 2).await, ["W", "W"]);
}

/// Three 2.4 MB HELLOs repeating one key 400k times once froze every session for seconds
/// (quadratic object building). Now they cost milliseconds. The bound is generous on purpose:
/// `benches/codec.rs` measures speed; this only catches a return to quadratic work.
#[tokio::test]
async fn a_hello_with_many_repeated_keys_costs_linear_time() {
    let router = router().await;
    let _worker = Callee::start(&router, Serializer::Json, "W", ECHO, rule("roundrobin"), Behavior::Name).await;
    let mut healthy = join(&router, Serializer::Json).await;
    let mut hello = br#"[1,"realm1",{"roles":{"caller":{},"callee":{}}"#.to_vec();
    for _ in 0..400_000 {
        hello.extend_from_slice(br#","x":1"#);
    }
    hello.extend_from_slice(b"}]");
    let started = Instant::now();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.unwrap();
        client.tx.send_raw_frame(RawFrame::Message(Bytes::from(hello.clone()))).await.unwrap();
        sessions.push(client);
    }
    for client in &mut sessions {
        assert!(matches!(client.recv().await, Ok(Message::Welcome { .. })));
    }
    assert_eq!(call_names(&mut healthy, ECHO, 1).await, ["W"]);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}
