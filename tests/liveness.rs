//! Dead peers leave the rotation, through real sockets: the router pings, closes a peer that stays
//! silent (its calls answered, its registrations gone), keeps a quiet but live peer, and refuses
//! connections beyond `max_connections` in the transport's own words.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Serializer};

async fn lively_router() -> roundhouse::RouterHandle {
    router_with(|c| {
        c.keepalive_interval_ms = 200;
        c.idle_timeout_ms = 1_000;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_went_silent_leaves_the_rotation_and_its_calls_are_answered() {
    let router = lively_router().await;
    let live =
        Callee::start(&router, Serializer::Json, "L", "com.example.work", rule("roundrobin"), Behavior::Name).await;
    // A callee whose process froze: its socket still takes bytes, but nothing comes back, not
    // even a PONG.
    let mut frozen = join(&router, Serializer::MsgPack).await;
    frozen.register("com.example.work", rule("roundrobin")).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    assert_eq!(call_names(&mut caller, "com.example.work", 1).await, ["L"]);
    let request = send_call(&mut caller, "com.example.work").await; // goes to the frozen one
    caller.rx.set_timeout(Duration::from_secs(5));
    match caller.recv().await.unwrap() {
        Message::Error { request: r, error, .. } => {
            assert_eq!((r, error.as_str()), (request, "wamp.error.canceled"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(call_names(&mut caller, "com.example.work", 3).await, ["L", "L", "L"], "only the live one is left");
    assert_eq!(router.census().registrations, 1);
    drop((frozen, caller));
    live.stop().await;
    assert_empty(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_peer_that_answers_pings_stays() {
    let router = lively_router().await;
    let mut quiet = join(&router, Serializer::Json).await;
    quiet.rx.set_timeout(Duration::from_millis(3_000));
    // Reading (and so answering pings) but sending nothing for several idle timeouts.
    assert!(matches!(quiet.recv().await, Err(ClientError::Timeout)));
    let mut caller = join(&router, Serializer::Json).await;
    caller.call("wamp.session.count", vec![]).await.unwrap();
    assert_eq!(router.census().sessions, 2, "the quiet session is still here");
    drop((quiet, caller));
    assert_empty(&router).await;
}

#[tokio::test]
async fn rawsocket_peers_are_pinged_only_when_asked() {
    // By default a RawSocket peer is neither pinged nor closed for silence: some clients do not
    // implement PING.
    let router = lively_router().await;
    let mut client = Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.unwrap();
    client.hello(REALM).await.unwrap();
    client.rx.set_timeout(Duration::from_millis(2_500));
    assert!(matches!(client.rx.next_raw_frame().await, Err(ClientError::Timeout)), "no PING, still open");
    client.call("wamp.session.count", vec![]).await.unwrap();
    drop(client);
    assert_empty(&router).await;

    let router = router_with(|c| {
        c.keepalive_interval_ms = 200;
        c.idle_timeout_ms = 1_000;
        c.rawsocket_keepalive = true;
    })
    .await;
    let mut client = Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await.unwrap();
    client.hello(REALM).await.unwrap();
    match client.rx.next_raw_frame().await.unwrap() {
        roundhouse::transport::rawsocket::RawFrame::Ping(_) => {}
        other => panic!("expected a PING, got {other:?}"),
    }
    drop(client);
    assert_empty(&router).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_in_their_transports_words() {
    let router = router_with(|c| c.max_connections = 1).await;
    let first = join(&router, Serializer::Json).await;
    match Client::connect_rawsocket(router.local_addr(), Serializer::Json, 15).await {
        Err(ClientError::Refused(code)) => assert_eq!(code, 4, "RawSocket error 4: connection limit"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    match Client::connect(&router.url(), Serializer::Json).await {
        Err(ClientError::Transport(roundhouse::client::tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    drop(first);
    assert_empty(&router).await;
    let second = join(&router, Serializer::Json).await; // room again
    drop(second);
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_refused_call_to_a_silent_single_callee_is_still_answered() {
    // The frozen callee is the only member: its call ends with canceled, the next with
    // no_such_procedure once it is gone.
    let router = lively_router().await;
    let mut frozen = join(&router, Serializer::Json).await;
    frozen.register("com.example.only", Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    send_call(&mut caller, "com.example.only").await;
    caller.rx.set_timeout(Duration::from_secs(5));
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.canceled");
    let reply = unexpected(caller.call("com.example.only", vec![]).await);
    assert_error(&reply, MessageType::Call, "wamp.error.no_such_procedure");
    drop((frozen, caller));
    assert_empty(&router).await;
}
