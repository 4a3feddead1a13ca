//! The meta API: registration and session procedures, meta events in the spec's order,
//! testaments, session kill, and registration revocation.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

async fn peer(router: &roundhouse::RouterHandle, features: &[&str]) -> Client {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    client.hello_with_features(REALM, features).await.unwrap();
    client
}

/// Calls a meta procedure; returns its first result argument (Null when none).
async fn meta(client: &mut Client, procedure: &str, args: Vec<Value>) -> Result<Value, Message> {
    match client.call(procedure, args).await {
        Ok(payload) => Ok(payload.to_values().unwrap().0.into_iter().next().unwrap_or(Value::Null)),
        Err(ClientError::Unexpected(reply)) => Err(*reply),
        Err(e) => panic!("{e}"),
    }
}

async fn subscribe(client: &mut Client, topic: &str) {
    let request = client.request_id();
    client.send(&Message::Subscribe { request, options: Dict::new(), topic: topic.into() }).await.unwrap();
    assert!(matches!(client.recv().await.unwrap(), Message::Subscribed { .. }));
}

/// The next event's topic (by subscription order given) and arguments.
async fn event(client: &mut Client) -> (u64, Vec<Value>) {
    match client.recv().await.unwrap() {
        Message::Event { subscription, payload, .. } => (subscription, payload.to_values().unwrap().0),
        other => panic!("expected EVENT, got {other:?}"),
    }
}

#[tokio::test]
async fn registration_procedures_describe_the_registrations() {
    let router = router().await;
    let mut a = peer(&router, &[]).await;
    let mut b = peer(&router, &[]).await;
    let id = a.register("com.example.p", rule("roundrobin")).await.unwrap();
    b.register("com.example.p", rule("roundrobin")).await.unwrap();
    let prefix = a.register("com.example", Dict::new().with("match", "prefix")).await.unwrap();
    let mut admin = peer(&router, &[]).await;

    let list = meta(&mut admin, "wamp.registration.list", vec![]).await.unwrap();
    let list = list.as_dict().unwrap();
    assert_eq!(list.get("exact"), Some(&Value::List(vec![Value::UInt(id)])));
    assert_eq!(list.get("prefix"), Some(&Value::List(vec![Value::UInt(prefix)])));
    assert_eq!(
        meta(&mut admin, "wamp.registration.lookup", vec!["com.example.p".into()]).await.unwrap(),
        Value::UInt(id)
    );
    let prefix_lookup = vec!["com.example".into(), Value::Dict(Dict::new().with("match", "prefix"))];
    assert_eq!(meta(&mut admin, "wamp.registration.lookup", prefix_lookup).await.unwrap(), Value::UInt(prefix));
    assert_eq!(meta(&mut admin, "wamp.registration.lookup", vec!["com.nothing".into()]).await.unwrap(), Value::Null);
    assert_eq!(
        meta(&mut admin, "wamp.registration.match", vec!["com.example.q".into()]).await.unwrap(),
        Value::UInt(prefix)
    );
    let details = meta(&mut admin, "wamp.registration.get", vec![Value::UInt(id)]).await.unwrap();
    let details = details.as_dict().unwrap();
    assert_eq!(details.get("uri").and_then(Value::as_str), Some("com.example.p"));
    assert_eq!(details.get("invoke").and_then(Value::as_str), Some("roundrobin"));
    assert_eq!(details.get("match").and_then(Value::as_str), Some("exact"));
    assert!(details.get("created").and_then(Value::as_str).is_some_and(|c| c.ends_with('Z')));
    let callees = meta(&mut admin, "wamp.registration.list_callees", vec![Value::UInt(id)]).await.unwrap();
    assert_eq!(callees, Value::List(vec![Value::UInt(a.session_id()), Value::UInt(b.session_id())]));
    assert_eq!(
        meta(&mut admin, "wamp.registration.count_callees", vec![Value::UInt(id)]).await.unwrap(),
        Value::UInt(2)
    );
    let missing = meta(&mut admin, "wamp.registration.get", vec![Value::UInt(42)]).await.unwrap_err();
    assert_error(&missing, MessageType::Call, "wamp.error.no_such_registration");
    for client in [admin, a, b] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn registration_events_come_in_the_specs_order() {
    let router = router().await;
    let mut observer = peer(&router, &[]).await;
    for topic in ["on_create", "on_register", "on_unregister", "on_delete"] {
        subscribe(&mut observer, &format!("wamp.registration.{topic}")).await;
    }
    let mut callee = peer(&router, &[]).await;
    let id = callee.register("com.example.p", Dict::new()).await.unwrap();
    callee.unregister(id).await.unwrap();
    let session = Value::UInt(callee.session_id());
    let (_, args) = event(&mut observer).await;
    assert_eq!(args[0], session);
    assert_eq!(args[1].as_dict().and_then(|d| d.get("id")), Some(&Value::UInt(id)), "on_create");
    for name in ["on_register", "on_unregister", "on_delete"] {
        let (_, args) = event(&mut observer).await;
        assert_eq!(args, vec![session.clone(), Value::UInt(id)], "{name}");
    }
    // A second member joining an existing registration: on_register only.
    let mut a = peer(&router, &[]).await;
    a.register("com.example.s", rule("first")).await.unwrap();
    for _ in 0..2 {
        event(&mut observer).await;
    }
    let mut b = peer(&router, &[]).await;
    b.register("com.example.s", rule("first")).await.unwrap();
    let (_, args) = event(&mut observer).await;
    assert_eq!(args[0], Value::UInt(b.session_id()));
    observer.rx.set_timeout(Duration::from_millis(200));
    assert!(matches!(observer.recv().await, Err(ClientError::Timeout)));
    // The observer goes first: it would hear the others' leaving as events.
    for client in [observer, callee, a, b] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn session_procedures_and_events() {
    let router = router().await;
    let mut observer = peer(&router, &[]).await;
    subscribe(&mut observer, "wamp.session.on_join").await;
    subscribe(&mut observer, "wamp.session.on_leave").await;
    let other = peer(&router, &[]).await;
    let (_, args) = event(&mut observer).await;
    let joined = args[0].as_dict().unwrap();
    assert_eq!(joined.get("session"), Some(&Value::UInt(other.session_id())));
    assert_eq!(joined.get("authrole").and_then(Value::as_str), Some("anonymous"));
    assert_eq!(meta(&mut observer, "wamp.session.count", vec![]).await.unwrap(), Value::UInt(2));
    let list = meta(&mut observer, "wamp.session.list", vec![]).await.unwrap();
    let Value::List(ids) = list else { panic!() };
    assert!(ids.contains(&Value::UInt(other.session_id())) && ids.len() == 2);
    let filtered = vec![Value::List(vec![Value::from("admin")])];
    assert_eq!(meta(&mut observer, "wamp.session.count", filtered).await.unwrap(), Value::UInt(0));
    let details = meta(&mut observer, "wamp.session.get", vec![Value::UInt(other.session_id())]).await.unwrap();
    assert_eq!(details.as_dict().and_then(|d| d.get("session")), Some(&Value::UInt(other.session_id())));
    let missing = meta(&mut observer, "wamp.session.get", vec![Value::UInt(7)]).await.unwrap_err();
    assert_error(&missing, MessageType::Call, "wamp.error.no_such_session");
    let other_id = other.session_id();
    drop(other);
    let (_, args) = event(&mut observer).await;
    assert_eq!(args[0], Value::UInt(other_id), "on_leave");
    assert_eq!(args[2], Value::from("anonymous"));
    say_goodbye(observer).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn kill_ends_other_sessions_with_goodbye() {
    let router = router_with(grant_admin).await;
    let mut admin = peer(&router, &[]).await;
    let mut victim = peer(&router, &[]).await;
    let own = Value::UInt(admin.session_id());
    let self_kill = meta(&mut admin, "wamp.session.kill", vec![own]).await.unwrap_err();
    assert_error(&self_kill, MessageType::Call, "wamp.error.no_such_session");
    let request = admin.request_id();
    let kwargs = Dict::new().with("reason", "com.example.bye").with("message", "maintenance");
    let payload = Payload::Values(vec![Value::UInt(victim.session_id())], Some(kwargs));
    admin
        .send(&Message::Call { request, options: Dict::new(), procedure: "wamp.session.kill".into(), payload })
        .await
        .unwrap();
    assert!(matches!(admin.recv().await.unwrap(), Message::Result { request: r, .. } if r == request));
    match victim.recv().await.unwrap() {
        Message::Goodbye { reason, details } => {
            assert_eq!(reason, "com.example.bye");
            assert_eq!(details.get("message").and_then(Value::as_str), Some("maintenance"));
        }
        other => panic!("{other:?}"),
    }
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(peer(&router, &[]).await);
    }
    let authid = Value::from(format!("anonymous-{}", others[0].session_id()));
    assert_eq!(meta(&mut admin, "wamp.session.kill_by_authid", vec![authid]).await.unwrap(), Value::UInt(1));
    assert_eq!(meta(&mut admin, "wamp.session.kill_all", vec![]).await.unwrap(), Value::UInt(2));
    for other in &mut others {
        assert!(
            matches!(other.recv().await.unwrap(), Message::Goodbye { reason, .. } if reason == "wamp.close.killed")
        );
    }
    // The killed sessions are closed by the router; their clients just go.
    drop(victim);
    drop(others);
    say_goodbye(admin).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn testaments_are_published_when_a_session_is_lost_unless_flushed() {
    let router = router().await;
    let mut listener = peer(&router, &[]).await;
    subscribe(&mut listener, "com.example.gone").await;
    for flush in [false, true] {
        let mut mortal = peer(&router, &[]).await;
        let args = vec![Value::from("com.example.gone"), Value::List(vec![Value::UInt(mortal.session_id())])];
        meta(&mut mortal, "wamp.session.add_testament", args).await.unwrap();
        if flush {
            assert_eq!(meta(&mut mortal, "wamp.session.flush_testaments", vec![]).await.unwrap(), Value::UInt(1));
        }
        let id = mortal.session_id();
        drop(mortal);
        if flush {
            listener.rx.set_timeout(Duration::from_millis(300));
            assert!(matches!(listener.recv().await, Err(ClientError::Timeout)));
            listener.rx.set_timeout(Duration::from_secs(5));
        } else {
            assert_eq!(event(&mut listener).await.1, vec![Value::UInt(id)]);
        }
    }
    say_goodbye(listener).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_revoked_callee_is_told_and_calls_go_to_the_rest() {
    let router = router_with(grant_admin).await;
    let mut revoked = peer(&router, &["registration_revocation"]).await;
    let id = revoked.register("com.example.p", rule("first")).await.unwrap();
    let standby = Callee::start(&router, Serializer::Json, "B", "com.example.p", rule("first"), Behavior::Name).await;
    let mut admin = peer(&router, &[]).await;
    let request = admin.request_id();
    let payload = Payload::Values(
        vec![Value::UInt(id), Value::UInt(revoked.session_id())],
        Some(Dict::new().with("reason", "com.example.maintenance")),
    );
    let procedure = "wamp.registration.remove_callee".to_owned();
    admin.send(&Message::Call { request, options: Dict::new(), procedure, payload }).await.unwrap();
    assert!(matches!(admin.recv().await.unwrap(), Message::Result { .. }));
    match revoked.recv().await.unwrap() {
        Message::Unregistered { request, details: Some(details) } => {
            assert_eq!(request, 0);
            assert_eq!(details.get("registration"), Some(&Value::UInt(id)));
            assert_eq!(details.get("reason").and_then(Value::as_str), Some("com.example.maintenance"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(call_names(&mut admin, "com.example.p", 2).await, ["B", "B"]);
    standby.stop().await;
    say_goodbye(admin).await;
    say_goodbye(revoked).await;
    assert_empty(&router).await;
}
