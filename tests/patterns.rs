//! Pattern registrations and subscriptions through real sockets: patterns never capture the
//! reserved `wamp.` namespace nor an invalid URI, and calls and events still reach the right
//! registration or subscription with thousands of patterns present.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::uri::MatchPolicy;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};
use roundhouse::RouterHandle;

fn matching(policy: &str) -> Dict {
    Dict::new().with("match", policy)
}

async fn silent(client: &mut Client) {
    client.rx.set_timeout(Duration::from_millis(200));
    assert!(matches!(client.recv().await, Err(ClientError::Timeout)), "nothing more expected");
    client.rx.set_timeout(Duration::from_secs(5));
}

/// Sends `request` for each entry, `batch` at a time, and collects the ids the router answers with.
async fn pipelined(client: &mut Client, requests: Vec<(String, Message)>) -> HashMap<String, u64> {
    let mut ids = HashMap::new();
    for batch in requests.chunks(256) {
        let mut names = HashMap::new();
        for (name, message) in batch {
            let request = match message {
                Message::Register { request, .. } | Message::Subscribe { request, .. } => *request,
                other => panic!("not a REGISTER or SUBSCRIBE: {other:?}"),
            };
            client.send(message).await.unwrap();
            names.insert(request, name.clone());
        }
        while !names.is_empty() {
            let (request, id) = match client.recv().await.unwrap() {
                Message::Registered { request, registration } => (request, registration),
                Message::Subscribed { request, subscription } => (request, subscription),
                other => panic!("expected REGISTERED or SUBSCRIBED, got {other:?}"),
            };
            ids.insert(names.remove(&request).expect("an answer to a request sent"), id);
        }
    }
    ids
}

async fn register_all(client: &mut Client, patterns: &[(String, &str)]) -> HashMap<String, u64> {
    let requests = patterns
        .iter()
        .map(|(uri, policy)| {
            let register =
                Message::Register { request: client.request_id(), options: matching(policy), procedure: uri.clone() };
            (uri.clone(), register)
        })
        .collect();
    pipelined(client, requests).await
}

/// Calls `procedure` and has `callee` answer; returns the registration the INVOCATION named and
/// the procedure it showed.
async fn routed(caller: &mut Client, callee: &mut Client, procedure: &str) -> (u64, Option<String>) {
    let request = send_call(caller, procedure).await;
    let (invocation, registration, shown) = match callee.recv().await.unwrap() {
        Message::Invocation { request, registration, details, .. } => {
            (request, registration, details.get("procedure").and_then(Value::as_str).map(str::to_owned))
        }
        other => panic!("{procedure}: expected INVOCATION, got {other:?}"),
    };
    let answer = Message::Yield { request: invocation, options: Dict::new(), payload: Payload::Empty };
    callee.send(&answer).await.unwrap();
    match caller.recv().await.unwrap() {
        Message::Result { request: r, .. } if r == request => {}
        other => panic!("{procedure}: expected RESULT, got {other:?}"),
    }
    (registration, shown)
}

/// Waits until the realm holds no registration and no subscription (sessions leave
/// asynchronously).
async fn assert_router_empties(router: &RouterHandle) {
    let realm = &router.shared().realms[REALM];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let registrations: usize = [MatchPolicy::Exact, MatchPolicy::Prefix, MatchPolicy::Wildcard]
            .map(|p| realm.dealer.ids(p).len())
            .iter()
            .sum();
        if registrations == 0 && realm.broker_is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{registrations} registrations left, broker empty: {}",
            realm.broker_is_empty()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn patterns_never_capture_the_reserved_namespace() {
    let router = router().await;
    let mut callee = join(&router, Serializer::Json).await;
    callee.register("wamp", matching("prefix")).await.unwrap();
    let wildcard = callee.register(".subscription.list", matching("wildcard")).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    for procedure in ["wamp.subscription.list", "wamp.subscription.get", "wamp.x.subscription.list"] {
        let reply = unexpected(caller.call(procedure, vec![]).await);
        assert_error(&reply, MessageType::Call, "wamp.error.no_such_procedure");
    }
    let matched = caller.call("wamp.registration.match", vec!["wamp.subscription.list".into()]).await.unwrap();
    assert_eq!(matched.to_values().unwrap().0, vec![Value::Null], "the meta API's match agrees with routing");
    silent(&mut callee).await;
    // Outside the namespace the same patterns route as before.
    let (registration, shown) = routed(&mut caller, &mut callee, "com.subscription.list").await;
    assert_eq!((registration, shown.as_deref()), (wildcard, Some("com.subscription.list")));
    drop((callee, caller));
    assert_router_empties(&router).await;
}

#[tokio::test]
async fn patterns_never_capture_an_invalid_uri() {
    let router = router().await;
    let mut callee = join(&router, Serializer::Json).await;
    callee.register("com", matching("prefix")).await.unwrap();
    callee.register("com.", matching("wildcard")).await.unwrap();
    callee.register("..", matching("wildcard")).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    for procedure in ["com.a b", "com.#", "com..x", "com.", ".x.y", "com.x\ty", "com.x.y "] {
        let reply = unexpected(caller.call(procedure, vec![]).await);
        assert_error(&reply, MessageType::Call, "wamp.error.invalid_uri");
    }
    silent(&mut callee).await;
    for procedure in ["com.x", "com.x.y", "org.x.y"] {
        routed(&mut caller, &mut callee, procedure).await;
    }
    drop((callee, caller));
    assert_router_empties(&router).await;
}

#[tokio::test]
async fn calls_route_to_the_right_pattern_among_thousands() {
    const EACH: usize = 2_000;
    let router = router().await;
    let mut callee = join(&router, Serializer::MsgPack).await;
    let mut patterns: Vec<(String, &str)> = Vec::new();
    for i in 0..EACH {
        patterns.push((format!("com.example.p{i}"), "prefix"));
        patterns.push((format!("com.example.w{i}..run"), "wildcard"));
        patterns.push((format!(".w{i}.job."), "wildcard"));
    }
    patterns.push(("com.example.p7.deep".into(), "prefix"));
    let ids = register_all(&mut callee, &patterns).await;
    assert_eq!(ids.len(), 3 * EACH + 1);
    let mut exact_callee = join(&router, Serializer::Json).await;
    let exact = exact_callee.register("com.example.p5.exact", Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::Cbor).await;

    for i in [0, 7, 777, 1_999] {
        let called = format!("com.example.p{i}.method");
        let (registration, shown) = routed(&mut caller, &mut callee, &called).await;
        assert_eq!((registration, shown), (ids[&format!("com.example.p{i}")], Some(called)));
        let called = format!("com.example.w{i}.job.run");
        let (registration, _) = routed(&mut caller, &mut callee, &called).await;
        assert_eq!(registration, ids[&format!("com.example.w{i}..run")], "{called}: concrete components first");
        let called = format!("org.w{i}.job.x");
        let (registration, _) = routed(&mut caller, &mut callee, &called).await;
        assert_eq!(registration, ids[&format!(".w{i}.job.")], "{called}");
    }
    let (registration, _) = routed(&mut caller, &mut callee, "com.example.p7.deep.x").await;
    assert_eq!(registration, ids["com.example.p7.deep"], "the longest prefix wins");
    let (registration, _) = routed(&mut caller, &mut callee, "com.example.p70.deep.x").await;
    assert_eq!(registration, ids["com.example.p70"], "prefixes match whole components");
    let (registration, shown) = routed(&mut caller, &mut exact_callee, "com.example.p5.exact").await;
    assert_eq!((registration, shown), (exact, None), "an exact registration beats every pattern");
    for nobody in ["com.example.q7.method", "com.example.w7.job.stop", "org.w7.jobs.x", "com.example"] {
        let reply = unexpected(caller.call(nobody, vec![]).await);
        assert_error(&reply, MessageType::Call, "wamp.error.no_such_procedure");
    }
    silent(&mut callee).await;

    // A pattern that leaves stops matching; its neighbours do not move.
    callee.unregister(ids["com.example.p7.deep"]).await.unwrap();
    let (registration, _) = routed(&mut caller, &mut callee, "com.example.p7.deep.x").await;
    assert_eq!(registration, ids["com.example.p7"]);
    drop((callee, exact_callee, caller));
    assert_router_empties(&router).await;
}

#[tokio::test]
async fn events_reach_every_matching_pattern_subscription_among_thousands() {
    const EACH: usize = 2_000;
    let router = router().await;
    let mut subscriber = join(&router, Serializer::Json).await;
    let mut requests = Vec::new();
    for i in 0..EACH {
        for (topic, policy) in [(format!("com.topic.t{i}"), "prefix"), (format!("com.topic.t{i}..x"), "wildcard")] {
            let request = subscriber.request_id();
            requests.push((topic.clone(), Message::Subscribe { request, options: matching(policy), topic }));
        }
    }
    let ids = pipelined(&mut subscriber, requests).await;
    let mut publisher = join(&router, Serializer::Json).await;
    let request = publisher.request_id();
    let options = Dict::new().with("acknowledge", true);
    let publish = Message::Publish { request, options, topic: "com.topic.t70.y.x".into(), payload: Payload::Empty };
    publisher.send(&publish).await.unwrap();
    assert!(matches!(publisher.recv().await.unwrap(), Message::Published { .. }));
    let mut got = Vec::new();
    for _ in 0..3 {
        match subscriber.recv().await.unwrap() {
            Message::Event { subscription, .. } => got.push(subscription),
            other => panic!("expected EVENT, got {other:?}"),
        }
    }
    got.sort_unstable();
    let mut expected = vec![ids["com.topic.t7"], ids["com.topic.t70"], ids["com.topic.t70..x"]];
    expected.sort_unstable();
    assert_eq!(got, expected, "string prefixes t7 and t70, wildcard t70..x");
    silent(&mut subscriber).await;
    drop((subscriber, publisher));
    assert_router_empties(&router).await;
}
