//! Session establishment, closing, shutdown, and bad input of every kind: the router answers
//! with ABORT or an HTTP error, never crashes, and other sessions carry on undisturbed.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, Serializer, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

#[tokio::test]
async fn welcome_announces_what_is_implemented() {
    for ser in SERIALIZERS {
        let router = router().await;
        let mut client = Client::connect(&router.url(), ser).await.unwrap();
        let roles = Dict::new().with("caller", Dict::new());
        client.send(&Message::Hello { realm: REALM.into(), details: Dict::new().with("roles", roles) }).await.unwrap();
        let Message::Welcome { session, details } = client.recv().await.unwrap() else { panic!() };
        assert!((1..=1u64 << 53).contains(&session));
        let roles = details.get("roles").and_then(Value::as_dict).unwrap();
        let dealer = roles.get("dealer").and_then(Value::as_dict).unwrap();
        let features = dealer.get("features").and_then(Value::as_dict).unwrap();
        assert_eq!(features.get("shared_registration"), Some(&Value::Bool(true)));
        let broker = roles.get("broker").and_then(Value::as_dict).unwrap();
        let features = broker.get("features").and_then(Value::as_dict).unwrap();
        assert_eq!(features.get("publisher_exclusion"), Some(&Value::Bool(true)));
        assert_eq!(details.get("authrole").and_then(Value::as_str), Some("anonymous"));
        assert_eq!(details.get("realm").and_then(Value::as_str), Some(REALM));
        say_goodbye(client).await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn session_ids_are_distinct() {
    let router = router().await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..50 {
        let client = join(&router, Serializer::Json).await;
        assert!(ids.insert(client.session_id()));
        drop(client);
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn an_unknown_realm_is_aborted_with_no_such_realm() {
    let router = router().await;
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    match client.hello("com.nowhere").await {
        Err(ClientError::Unexpected(m)) => match *m {
            Message::Abort { reason, details } => {
                assert_eq!(reason, "wamp.error.no_such_realm");
                assert!(details.get("message").is_some());
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(matches!(client.recv().await, Err(ClientError::Closed) | Err(ClientError::Transport(_))));
    drop(client);
    assert_empty(&router).await;
}

#[tokio::test]
async fn goodbye_is_answered_and_the_session_closes() {
    let router = router().await;
    let client = join(&router, Serializer::MsgPack).await;
    match client.goodbye().await.unwrap() {
        Message::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.goodbye_and_out"),
        other => panic!("{other:?}"),
    }
    wait_until(|| router.session_count() == 0).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_realm_keeps_its_registrations_to_itself() {
    let router = router().await;
    let a = Callee::start(&router, Serializer::Json, "A", "com.example.p", Dict::new(), Behavior::Name).await;
    let mut other = Client::join(&router.url(), "realm2", Serializer::Json).await.unwrap();
    let reply = unexpected(other.call("com.example.p", vec![]).await);
    assert_error(&reply, roundhouse::wire::MessageType::Call, "wamp.error.no_such_procedure");
    say_goodbye(other).await;
    a.stop().await;
    assert_empty(&router).await;
}

/// Sends `frame` on a fresh connection and expects ABORT protocol_violation, then checks that a
/// call between two other sessions still works.
async fn assert_aborted(router: &roundhouse::RouterHandle, ser: Serializer, hello_first: bool, frame: WsMessage) {
    let mut bad = Client::connect(&router.url(), ser).await.unwrap();
    if hello_first {
        bad.hello(REALM).await.unwrap();
    }
    bad.tx.send_raw(frame.clone()).await.unwrap();
    match bad.recv().await {
        Ok(Message::Abort { reason, details }) => {
            assert_eq!(reason, "wamp.error.protocol_violation", "{frame:?}");
            assert!(details.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()));
        }
        other => panic!("{frame:?}: expected ABORT, got {other:?}"),
    }
    assert!(bad.recv().await.is_err(), "connection closes after ABORT");
    drop(bad);
}

#[tokio::test]
async fn bad_input_is_aborted_and_disturbs_nobody() {
    let router = router_with(|c| c.max_message_size = 64 * 1024).await;
    let callee = Callee::start(&router, Serializer::Json, "A", "com.example.ok", Dict::new(), Behavior::Name).await;
    let mut witness = join(&router, Serializer::MsgPack).await;
    let text = |s: &str| WsMessage::Text(Utf8Bytes::from(s));
    let cases: Vec<(Serializer, bool, WsMessage)> = vec![
        (Serializer::Json, false, text("[1, \"realm1\", {\"roles\": ")),
        (Serializer::Json, false, text("{\"not\": \"an array\"}")),
        (Serializer::Json, false, text("[64, 1, {}, \"com.example.x\"]")),
        (Serializer::Json, true, text("[1, \"realm1\", {\"roles\": {\"caller\": {}}}]")),
        (Serializer::Json, true, text("[999, 1, {}]")),
        (Serializer::Json, true, text("[48, 1, {}]")),
        (Serializer::Json, true, text("[48, \"1\", {}, \"com.example.ok\"]")),
        (Serializer::Json, true, text("[48, 1, {}, \"com.example.ok\", {\"not\": \"a list\"}]")),
        (Serializer::Json, true, text("[48, 9007199254740993, {}, \"com.example.ok\"]")),
        (Serializer::Json, true, text("[68, 1, 1, {}]")),
        (Serializer::Json, true, text("[8, 48, 1, {}, \"com.x\"]")),
        (Serializer::Json, true, text("[]")),
        (Serializer::Json, true, WsMessage::Binary(vec![0x93, 0x30, 0x01, 0x80].into())),
        (Serializer::Json, true, text(&format!("[48, 1, {{}}, \"com.example.ok\", [\"{}\"]]", "x".repeat(100_000)))),
        (Serializer::MsgPack, true, WsMessage::Binary((0..64).map(|_| fastrand::u8(..)).collect::<Vec<u8>>().into())),
        (Serializer::MsgPack, true, WsMessage::Binary(vec![0xdd, 0xff, 0xff, 0xff, 0xff].into())),
        (Serializer::MsgPack, false, text("[1, \"realm1\", {}]")),
        (Serializer::MsgPack, true, WsMessage::Binary(vec![0xc1].into())),
    ];
    for (ser, hello_first, frame) in cases {
        assert_aborted(&router, ser, hello_first, frame).await;
        assert_eq!(call_names(&mut witness, "com.example.ok", 1).await, ["A"], "other sessions are undisturbed");
    }
    wait_until(|| router.session_count() == 2).await;
    say_goodbye(witness).await;
    callee.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn hello_without_roles_or_with_foreign_authmethods_is_refused() {
    let router = router().await;
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    client.send(&Message::Hello { realm: REALM.into(), details: Dict::new() }).await.unwrap();
    assert!(
        matches!(client.recv().await.unwrap(), Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation")
    );
    drop(client);
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    let details = Dict::new()
        .with("roles", Dict::new().with("caller", Dict::new()))
        .with("authmethods", Value::List(vec![Value::from("ticket")]));
    client.send(&Message::Hello { realm: REALM.into(), details }).await.unwrap();
    assert!(
        matches!(client.recv().await.unwrap(), Message::Abort { reason, .. } if reason == "wamp.error.no_matching_auth_method")
    );
    drop(client);
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let router = router_with(|c| c.handshake_timeout_ms = 200).await;
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    match client.recv().await.unwrap() {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.protocol_violation"),
        other => panic!("{other:?}"),
    }
    drop(client);
    assert_empty(&router).await;
}

#[tokio::test]
async fn handshakes_without_our_subprotocol_or_path_get_http_errors() {
    let router = router().await;
    let addr = router.local_addr();
    for (path, protocol, status) in
        [("/ws", "wamp.2.ubjson", "400"), ("/ws", "", "400"), ("/other", "wamp.2.json", "404")]
    {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let header =
            if protocol.is_empty() { String::new() } else { format!("Sec-WebSocket-Protocol: {protocol}\r\n") };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{header}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_string(&mut response)).await;
        assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{path} {protocol}: {response}");
        assert!(response.contains("wamp.2.json") || status == "404", "says what it speaks: {response}");
        drop(tcp);
    }
    // Garbage instead of HTTP is dropped without harm.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0xff; 4096]).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut sink)).await;
    drop(tcp);
    let client = join(&router, Serializer::Json).await;
    say_goodbye(client).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn the_client_may_pick_among_several_subprotocols() {
    let router = router().await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(router.url()).unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "wamp.2.ubjson, wamp.2.msgpack, wamp.2.json".parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "wamp.2.msgpack");
    drop(ws);
    assert_empty(&router).await;
}

#[tokio::test]
async fn shutdown_says_goodbye_to_every_session() {
    let router = router().await;
    let shared = router.shared().clone();
    let mut a = join(&router, Serializer::Json).await;
    let mut b = join(&router, Serializer::MsgPack).await;
    let shutdown = tokio::spawn(router.shutdown());
    for client in [&mut a, &mut b] {
        match client.recv().await.unwrap() {
            Message::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.system_shutdown"),
            other => panic!("{other:?}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown).await.unwrap().unwrap();
    drop((a, b));
    assert_empty_after_shutdown(&shared).await;
}

#[tokio::test]
async fn many_sessions_come_and_go_without_leaking_sessions() {
    let router = router().await;
    for i in 0..200 {
        let client = join(&router, SERIALIZERS[i % 2]).await;
        if i % 2 == 0 {
            client.goodbye().await.unwrap();
        } else {
            drop(client);
        }
    }
    wait_until(|| router.session_count() == 0).await;
    assert_empty(&router).await;
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never became true");
}
