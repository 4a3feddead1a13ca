//! A payload that cannot be represented in the receiver's serializer is answered, never altered,
//! through real sockets: the call is refused to its caller, a result that cannot reach its caller
//! becomes an ERROR, and an event is not sent to the subscribers who cannot read it.

mod common;

use bytes::Bytes;
use common::*;
use roundhouse::transport::rawsocket::RawFrame;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

/// A JSON integer no MessagePack or CBOR integer can hold.
const TOO_BIG: &str = "18446744073709551616";

#[tokio::test]
async fn arguments_the_callee_cannot_read_are_refused_to_the_caller() {
    let router = router().await;
    let callee = Callee::start(&router, Serializer::MsgPack, "M", "com.example.p", Dict::new(), Behavior::Echo).await;
    let mut caller =
        roundhouse::client::Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.unwrap();
    caller.hello(REALM).await.unwrap();
    let frame = format!(r#"[48,1,{{}},"com.example.p",[{TOO_BIG}]]"#);
    caller.tx.send_raw_frame(RawFrame::Message(Bytes::from(frame))).await.unwrap();
    let reply = caller.recv().await.unwrap();
    assert_error(&reply, MessageType::Call, "wamp.error.invalid_argument");
    assert_eq!(callee.invocation_count(), 0, "the callee never saw an altered call");
    // The same caller goes on; a call the callee can read goes through.
    let echoed = caller.call("com.example.p", vec![Value::from("fine")]).await.unwrap();
    assert_eq!(first_arg(&echoed), "fine");
    drop(caller);
    callee.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_result_the_caller_cannot_read_becomes_an_error() {
    let router = router().await;
    let mut callee =
        roundhouse::client::Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.unwrap();
    callee.hello(REALM).await.unwrap();
    callee.register("com.example.big", Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::Cbor).await;
    let request = send_call(&mut caller, "com.example.big").await;
    let Message::Invocation { request: id, .. } = callee.recv().await.unwrap() else { panic!() };
    let frame = format!(r#"[70,{id},{{}},[{TOO_BIG}]]"#);
    callee.tx.send_raw_frame(RawFrame::Message(Bytes::from(frame))).await.unwrap();
    match caller.recv().await.unwrap() {
        Message::Error { request: r, error, payload, .. } => {
            assert_eq!((r, error.as_str()), (request, "wamp.error.invalid_argument"));
            assert!(first_arg(&payload).contains("cannot be sent"), "{}", first_arg(&payload));
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    drop((caller, callee));
    assert_empty(&router).await;
}

#[tokio::test]
async fn an_event_is_not_sent_altered() {
    let router = router().await;
    let mut binary = join(&router, Serializer::MsgPack).await;
    binary.subscribe("com.example.t", Dict::new()).await.unwrap();
    let mut json = join(&router, Serializer::Json).await;
    json.subscribe("com.example.t", Dict::new()).await.unwrap();
    let mut publisher =
        roundhouse::client::Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.unwrap();
    publisher.hello(REALM).await.unwrap();
    for (id, args) in [(1, TOO_BIG), (2, "1")] {
        let frame = format!(r#"[16,{id},{{}},"com.example.t",[{args}]]"#);
        publisher.tx.send_raw_frame(RawFrame::Message(Bytes::from(frame))).await.unwrap();
    }
    let first_value = |message: Message| match message {
        Message::Event { payload, .. } => payload,
        other => panic!("{other:?}"),
    };
    // The JSON subscriber gets both events as sent; the MessagePack one only the one it can read.
    let (a, b) = (first_value(json.recv().await.unwrap()), first_value(json.recv().await.unwrap()));
    assert!(matches!(a, Payload::Raw(_)) && matches!(b, Payload::Raw(_)));
    let only = first_value(binary.recv().await.unwrap());
    assert_eq!(only.to_values().unwrap().0, vec![Value::UInt(1)]);
    drop((binary, json, publisher));
    assert_empty(&router).await;
}
