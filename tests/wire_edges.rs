//! The small things a peer sees at the edge, through real sockets: close statuses, request id 0,
//! readable error texts, frame-type errors naming the right serializer, invalid UTF-8 text frames.

mod common;

use common::*;
use roundhouse::client::tungstenite::protocol::frame::coding::{Data, OpCode};
use roundhouse::client::tungstenite::protocol::frame::Frame;
use roundhouse::client::tungstenite::Message as WsMessage;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

async fn closed_with(client: &mut Client) -> Option<u16> {
    loop {
        match client.recv().await {
            Ok(_) => continue,
            Err(ClientError::Closed) => return client.rx.close_code(),
            Err(other) => panic!("{other}"),
        }
    }
}

fn abort_text(message: &Message) -> String {
    match message {
        Message::Abort { reason, details } => {
            assert_eq!(reason, "wamp.error.protocol_violation", "{message:?}");
            details.get("message").and_then(Value::as_str).unwrap_or_default().to_owned()
        }
        other => panic!("expected ABORT, got {other:?}"),
    }
}

#[tokio::test]
async fn goodbye_and_abort_close_the_websocket_with_a_status() {
    let router = router().await;
    let mut client = join(&router, Serializer::Json).await;
    let goodbye = Message::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() };
    client.send(&goodbye).await.unwrap();
    assert!(matches!(client.recv().await.unwrap(), Message::Goodbye { .. }));
    assert_eq!(closed_with(&mut client).await, Some(1000));

    let mut client = join(&router, Serializer::Json).await;
    client.send(&Message::Welcome { session: 1, details: Dict::new() }).await.unwrap();
    abort_text(&client.recv().await.unwrap());
    assert_eq!(closed_with(&mut client).await, Some(1002));
    drop(client);
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let router = router().await;
    let mut client = join(&router, Serializer::Json).await;
    let frame = Frame::message(b"[48,1,{},\"com.x\",[\"\xff\"]]".to_vec(), OpCode::Data(Data::Text), true);
    client.tx.send_raw(WsMessage::Frame(frame)).await.unwrap();
    abort_text(&client.recv().await.unwrap());
    assert_eq!(closed_with(&mut client).await, Some(1007));
    drop(client);
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_text_frame_on_a_cbor_session_names_cbor() {
    let router = router().await;
    let mut client = join(&router, Serializer::Cbor).await;
    client.tx.send_raw(WsMessage::Text("[1]".into())).await.unwrap();
    let text = abort_text(&client.recv().await.unwrap());
    assert!(text.contains("wamp.2.cbor"), "{text}");
    assert_eq!(closed_with(&mut client).await, Some(1003));
    drop(client);
    assert_empty(&router).await;
}

#[tokio::test]
async fn request_id_zero_is_a_protocol_violation() {
    let router = router().await;
    for message in [
        Message::Call { request: 0, options: Dict::new(), procedure: "com.x".into(), payload: Payload::Empty },
        Message::Register { request: 0, options: Dict::new(), procedure: "com.x".into() },
        Message::Subscribe { request: 0, options: Dict::new(), topic: "com.x".into() },
    ] {
        let mut client = join(&router, Serializer::MsgPack).await;
        client.send(&message).await.unwrap();
        let text = abort_text(&client.recv().await.unwrap());
        assert!(text.contains("request id 0"), "{text}");
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn error_texts_show_values_as_peers_wrote_them() {
    let router = router().await;
    let callee = Callee::start(&router, Serializer::Json, "A", "com.example.p", Dict::new(), Behavior::Name).await;
    let mut caller = join(&router, Serializer::Json).await;
    let reason = |reply: &Message| match reply {
        Message::Error { payload, .. } => first_arg(payload),
        other => panic!("{other:?}"),
    };
    let request = caller.request_id();
    let options = Dict::new().with("timeout", Value::Int(-1));
    caller
        .send(&Message::Call { request, options, procedure: "com.example.p".into(), payload: Payload::Empty })
        .await
        .unwrap();
    let reply = caller.recv().await.unwrap();
    assert_error(&reply, MessageType::Call, "wamp.error.invalid_argument");
    let text = reason(&reply);
    assert!(text.contains("got -1") && !text.contains("Int("), "{text}");

    let reply = unexpected(caller.register("com.example.q", Dict::new().with("invoke", Value::UInt(5))).await);
    let text = reason(&reply);
    assert!(text.contains("got 5") && !text.contains("UInt("), "{text}");

    let request = caller.request_id();
    let options = Dict::new().with("mode", Value::from("gently"));
    caller.send(&Message::Cancel { request, options }).await.unwrap();
    let text = reason(&caller.recv().await.unwrap());
    assert!(text.contains("'gently'") && !text.contains("Some("), "{text}");
    drop(caller);
    callee.stop().await;
    assert_empty(&router).await;
}
