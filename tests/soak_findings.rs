//! What the chaos soak (`loadtest --mode chaos`) found, each reduced to the smallest test through
//! real sockets, so that it stays fixed. A test that still fails is `#[ignore]`d with the reason;
//! remove the attribute once the router is fixed.

mod common;

use bytes::Bytes;
use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::transport::rawsocket::RawFrame;
use roundhouse::wire::{Dict, Message, Serializer, Value};

const ECHO: &str = "com.example.echo";

/// A RawSocket-JSON session of `realm1` that sends `frame` as one CALL, and what it got back.
async fn send_raw_json_call(router: &roundhouse::RouterHandle, frame: &[u8]) -> Result<Message, ClientError> {
    let mut hostile = Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.unwrap();
    hostile.hello(REALM).await.unwrap();
    hostile.tx.send_raw_frame(RawFrame::Message(Bytes::copy_from_slice(frame))).await.unwrap();
    hostile.recv().await
}

fn assert_protocol_violation(reply: Result<Message, ClientError>, what: &str) {
    match reply {
        Ok(Message::Abort { reason, .. }) => assert_eq!(reason, "wamp.error.protocol_violation", "{what}"),
        other => panic!("{what}: expected ABORT wamp.error.protocol_violation, got {other:?}"),
    }
}

/// Soak finding: a hostile RawSocket-JSON CALL whose argument is the JSON number `01` was routed.
/// A JSON callee got the bytes as they were (and could not read them); a MessagePack or CBOR callee
/// got the call with its arguments silently replaced by `[]`; the caller got that callee's answer.
/// (Fixed by the validation at ingress.)
#[tokio::test]
async fn a_json_number_with_a_leading_zero_reaches_no_callee_of_any_serializer() {
    let router = router().await;
    let mut callees = Vec::new();
    for (name, serializer) in [("J", Serializer::Json), ("M", Serializer::MsgPack), ("C", Serializer::Cbor)] {
        callees.push(Callee::start(&router, serializer, name, ECHO, rule("roundrobin"), Behavior::Echo).await);
    }
    for _ in 0..3 {
        let reply = send_raw_json_call(&router, br#"[48,1,{},"com.example.echo",[01]]"#).await;
        assert_protocol_violation(reply, "a CALL with the JSON number 01");
    }
    for callee in &callees {
        assert_eq!(callee.invocation_count(), 0, "callee {} got the malformed call", callee.name);
    }
    for callee in callees {
        callee.stop().await;
    }
    assert_empty(&router).await;
}

/// Soak finding: a hostile RawSocket-JSON CALL holding the byte 0xFF in a string was routed to a
/// WebSocket-JSON callee, whose connection the router then closed (a text frame must be UTF-8):
/// the hostile caller got `wamp.error.canceled`, the healthy callee lost its session, and the
/// healthy callers of its procedure got `wamp.error.no_such_procedure`. (Fixed by the validation
/// at ingress.)
#[tokio::test]
async fn a_json_string_that_is_not_utf8_disturbs_no_websocket_json_callee() {
    let router = router().await;
    let callee = Callee::start(&router, Serializer::Json, "W", ECHO, Dict::new(), Behavior::Echo).await;
    let reply = send_raw_json_call(&router, b"[48,1,{},\"com.example.echo\",[\"\xff\"]]").await;
    assert_protocol_violation(reply, "a CALL with the byte 0xFF in a JSON string");
    let mut healthy = join(&router, Serializer::Json).await;
    let echoed = healthy.call(ECHO, vec![Value::from("still here")]).await.expect("the callee still serves");
    assert_eq!(first_arg(&echoed), "still here");
    assert_eq!(callee.invocation_count(), 1, "only the healthy call reached the callee");
    drop(healthy);
    callee.stop().await;
    assert_empty(&router).await;
}
