//! Invocation rules from the realm's config (`[[realm.procedure]]`) through real sockets: plain
//! REGISTERs (no options) get the configured rule, limits and queue; the config beats the callee's
//! `invoke`; an exact table beats a prefix one; a keyed rule takes its key from the payload; a
//! reload applies to registrations created after it.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::auth::config::RuleMatch;
use roundhouse::client::Client;
use roundhouse::config::{ProcedureConfig, RouterConfig};
use roundhouse::dealer::rule::{jump_consistent_hash, rkey_hash};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

const P: &str = "com.example.configured";

fn table(uri: &str, policy: RuleMatch, invoke: Option<&str>) -> ProcedureConfig {
    ProcedureConfig {
        uri: uri.to_owned(),
        policy,
        invoke: invoke.map(str::to_owned),
        concurrency: None,
        max_queued_calls: None,
        max_queue_ms: None,
        rkey: None,
    }
}

fn with_tables(config: &mut RouterConfig, tables: Vec<ProcedureConfig>) {
    config.realms.iter_mut().find(|r| r.name == REALM).unwrap().procedures = tables;
}

async fn router_with_tables(tables: Vec<ProcedureConfig>) -> roundhouse::RouterHandle {
    router_with(|config| with_tables(config, tables)).await
}

/// Which of `clients` got the next INVOCATION, and its id.
async fn invoked(clients: &mut [Client]) -> (usize, u64) {
    let receives = clients.iter_mut().enumerate().map(|(i, c)| {
        Box::pin(async move {
            match c.recv().await {
                Ok(Message::Invocation { request, .. }) => (i, request),
                other => panic!("member {i}: expected INVOCATION, got {other:?}"),
            }
        })
    });
    futures_util::future::select_all(receives).await.0
}

async fn answer(clients: &mut [Client], member: usize, invocation: u64, caller: &mut Client) {
    let payload = Payload::args(vec![Value::from(format!("m{member}"))]);
    clients[member].send(&Message::Yield { request: invocation, options: Dict::new(), payload }).await.unwrap();
    match caller.recv().await.unwrap() {
        Message::Result { payload, .. } => assert_eq!(first_arg(&payload), format!("m{member}")),
        other => panic!("expected RESULT, got {other:?}"),
    }
}

async fn quiet(clients: &mut [Client]) {
    for (i, c) in clients.iter_mut().enumerate() {
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await {
            panic!("member {i} got {message:?}");
        }
    }
}

async fn registered_rule(router: &roundhouse::RouterHandle, id: u64) -> String {
    let mut admin = join(router, Serializer::Json).await;
    let details = admin.call("wamp.registration.get", vec![Value::UInt(id)]).await.unwrap();
    let details = details.to_values().unwrap().0.remove(0);
    let invoke = details.as_dict().unwrap().get("invoke").and_then(Value::as_str).unwrap().to_owned();
    say_goodbye(admin).await;
    invoke
}

#[tokio::test]
async fn a_configured_rule_makes_plain_registers_least_loaded() {
    let router = router_with_tables(vec![table(P, RuleMatch::Exact, Some("queue_least_loaded"))]).await;
    let mut members = Vec::new();
    let mut id = 0;
    for _ in 0..3 {
        let mut client = join(&router, Serializer::Json).await;
        // No options: `single` by the callee's account, which would refuse the second member.
        id = client.register(P, Dict::new()).await.unwrap();
        members.push(client);
    }
    assert_eq!(registered_rule(&router, id).await, "queue_least_loaded", "meta shows the rule in force");
    let mut caller = join(&router, Serializer::Json).await;
    send_call(&mut caller, P).await;
    let (m, first) = invoked(&mut members).await;
    assert_eq!(m, 0, "all idle: the earliest");
    send_call(&mut caller, P).await;
    assert_eq!(invoked(&mut members).await.0, 1);
    send_call(&mut caller, P).await;
    assert_eq!(invoked(&mut members).await.0, 2);
    answer(&mut members, 0, first, &mut caller).await;
    send_call(&mut caller, P).await;
    assert_eq!(invoked(&mut members).await.0, 0, "member 0 is the least loaded again");
    quiet(&mut members).await;
    drop(caller);
    for client in members {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn the_configured_rule_beats_the_callees_invoke() {
    let router = router_with_tables(vec![table(P, RuleMatch::Exact, Some("first"))]).await;
    let mut callees = Vec::new();
    for name in ["a", "b", "c"] {
        // Not refused for asking another rule: the config's is used.
        callees.push(Callee::start(&router, Serializer::Json, name, P, rule("roundrobin"), Behavior::Name).await);
    }
    assert_eq!(registered_rule(&router, callees[0].registration).await, "first");
    let mut caller = join(&router, Serializer::Json).await;
    assert_eq!(call_names(&mut caller, P, 4).await, ["a", "a", "a", "a"]);
    drop(caller);
    for callee in callees {
        callee.leave(Leave::Goodbye).await;
        callee.stop().await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn an_exact_table_beats_a_prefix_and_a_longer_prefix_a_shorter() {
    let router = router_with_tables(vec![
        table("com.example.", RuleMatch::Prefix, Some("last")),
        table("com.example.deep.", RuleMatch::Prefix, Some("roundrobin")),
        table("com.example.one", RuleMatch::Exact, Some("first")),
    ])
    .await;
    let mut callees = Vec::new();
    for procedure in ["com.example.one", "com.example.two", "com.example.deep.three"] {
        for name in ["a", "b"] {
            callees.push(Callee::start(&router, Serializer::Json, name, procedure, Dict::new(), Behavior::Name).await);
        }
    }
    let mut caller = join(&router, Serializer::Json).await;
    assert_eq!(call_names(&mut caller, "com.example.one", 3).await, ["a", "a", "a"]);
    assert_eq!(call_names(&mut caller, "com.example.two", 3).await, ["b", "b", "b"]);
    assert_eq!(call_names(&mut caller, "com.example.deep.three", 4).await, ["a", "b", "a", "b"]);
    // No table matches: the callee's own options (single) apply.
    let _only = Callee::start(&router, Serializer::Json, "x", "org.other", Dict::new(), Behavior::Name).await;
    let mut second = join(&router, Serializer::Json).await;
    let refused = unexpected(second.register("org.other", Dict::new()).await);
    assert_error(&refused, MessageType::Register, "wamp.error.procedure_already_exists");
    drop((caller, second));
    for callee in callees.into_iter().chain([_only]) {
        callee.leave(Leave::Goodbye).await;
        callee.stop().await;
    }
    assert_empty(&router).await;
}

fn call_with(request: u64, procedure: &str, args: Vec<Value>, kwargs: Option<Dict>, options: Dict) -> Message {
    Message::Call { request, options, procedure: procedure.into(), payload: Payload::Values(args, kwargs) }
}

#[tokio::test]
async fn a_keyed_rule_takes_its_key_from_the_payload() {
    let mut by_kwarg = table("com.example.keyed.", RuleMatch::Prefix, Some("jump_consistent_hash"));
    by_kwarg.rkey = Some("kwargs.user_id".to_owned());
    let mut by_arg = table("com.example.positional", RuleMatch::Exact, Some("jump_consistent_hash"));
    by_arg.rkey = Some("args.1".to_owned());
    let router = router_with_tables(vec![by_kwarg, by_arg]).await;
    let names = ["m0", "m1", "m2"];
    let mut callees = Vec::new();
    for procedure in ["com.example.keyed.get", "com.example.positional"] {
        for name in names {
            callees.push(Callee::start(&router, Serializer::Json, name, procedure, Dict::new(), Behavior::Name).await);
        }
    }
    let mut caller = join(&router, Serializer::Json).await;
    for k in 0..30u64 {
        let user = format!("user-{k}");
        let expected = names[jump_consistent_hash(rkey_hash(&Value::from(user.as_str())).unwrap(), 3)];
        // The config's path wins over CALL.Options.rkey.
        let options = Dict::new().with("rkey", "ignored");
        let kwargs = Dict::new().with("user_id", user.as_str());
        let request = caller.request_id();
        caller.send(&call_with(request, "com.example.keyed.get", vec![], Some(kwargs), options)).await.unwrap();
        match caller.recv().await.unwrap() {
            Message::Result { payload, .. } => assert_eq!(first_arg(&payload), expected, "{user}"),
            other => panic!("expected RESULT, got {other:?}"),
        }
        let request = caller.request_id();
        let args = vec![Value::from("first"), Value::UInt(k)];
        caller.send(&call_with(request, "com.example.positional", args, None, Dict::new())).await.unwrap();
        let expected = names[jump_consistent_hash(rkey_hash(&Value::UInt(k)).unwrap(), 3)];
        match caller.recv().await.unwrap() {
            Message::Result { payload, .. } => assert_eq!(first_arg(&payload), expected, "args.1 = {k}"),
            other => panic!("expected RESULT, got {other:?}"),
        }
    }
    // A call without the key, or with a key that is no string or integer, is refused with a reason.
    for (kwargs, reason) in [
        (Some(Dict::new().with("name", "x")), "has no kwargs.user_id"),
        (None, "has no kwargs.user_id"),
        (Some(Dict::new().with("user_id", true)), "must be a string or an integer"),
    ] {
        let request = caller.request_id();
        caller.send(&call_with(request, "com.example.keyed.get", vec![], kwargs, Dict::new())).await.unwrap();
        let reply = caller.recv().await.unwrap();
        assert_error(&reply, MessageType::Call, "wamp.error.invalid_argument");
        let Message::Error { payload, .. } = reply else { unreachable!() };
        assert!(first_arg(&payload).contains(reason), "{payload:?}");
    }
    assert!(callees.iter().map(Callee::invocation_count).sum::<usize>() == 60, "refused calls reach no callee");
    drop(caller);
    for callee in callees {
        callee.leave(Leave::Goodbye).await;
        callee.stop().await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_configured_limit_queues_calls_and_bounds_the_queue() {
    let mut limited = table(P, RuleMatch::Exact, None);
    limited.concurrency = Some(1);
    limited.max_queued_calls = Some(1);
    let router = router_with_tables(vec![limited]).await;
    let mut members = vec![join(&router, Serializer::Json).await];
    members[0].register(P, Dict::new()).await.unwrap();
    let mut caller = join(&router, Serializer::Json).await;
    send_call(&mut caller, P).await;
    let (_, first) = invoked(&mut members).await;
    // The member is at its limit: the second call waits, the third finds the queue full.
    send_call(&mut caller, P).await;
    quiet(&mut members).await;
    send_call(&mut caller, P).await;
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.no_available_callee");
    answer(&mut members, 0, first, &mut caller).await;
    let (_, second) = invoked(&mut members).await;
    answer(&mut members, 0, second, &mut caller).await;
    drop(caller);
    for client in members {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_reload_applies_to_registrations_created_after_it() {
    let router = router_with_tables(vec![table(P, RuleMatch::Exact, Some("first"))]).await;
    let a = Callee::start(&router, Serializer::Json, "a", P, Dict::new(), Behavior::Name).await;
    let mut config = router.shared().config.clone();
    with_tables(
        &mut config,
        vec![
            table(P, RuleMatch::Exact, Some("last")),
            table("com.example.later", RuleMatch::Exact, Some("roundrobin")),
        ],
    );
    let report = router.reload(config).unwrap();
    assert!(report.applied.iter().any(|a| a.contains("procedure rules")), "{:?}", report.applied);
    // The registration that exists keeps `first`; a member joining it joins under that rule.
    let b = Callee::start(&router, Serializer::Json, "b", P, Dict::new(), Behavior::Name).await;
    assert_eq!(registered_rule(&router, a.registration).await, "first");
    let mut caller = join(&router, Serializer::Json).await;
    assert_eq!(call_names(&mut caller, P, 2).await, ["a", "a"]);
    // A registration created after the reload follows the new table.
    let c = Callee::start(&router, Serializer::Json, "c", "com.example.later", Dict::new(), Behavior::Name).await;
    let d = Callee::start(&router, Serializer::Json, "d", "com.example.later", Dict::new(), Behavior::Name).await;
    assert_eq!(call_names(&mut caller, "com.example.later", 3).await, ["c", "d", "c"]);
    // Once its members are gone, the procedure is registered afresh under the new rule.
    for callee in [a, b] {
        callee.leave(Leave::Goodbye).await;
        callee.stop().await;
    }
    let e = Callee::start(&router, Serializer::Json, "e", P, Dict::new(), Behavior::Name).await;
    let f = Callee::start(&router, Serializer::Json, "f", P, Dict::new(), Behavior::Name).await;
    assert_eq!(registered_rule(&router, e.registration).await, "last");
    assert_eq!(call_names(&mut caller, P, 2).await, ["f", "f"]);
    drop(caller);
    for callee in [c, d, e, f] {
        callee.leave(Leave::Goodbye).await;
        callee.stop().await;
    }
    assert_empty(&router).await;
}

/// Keys deeper in the payload: an object key below a keyword argument, a key of an object in a
/// positional argument, an index into a list; each call reaches the member its key names, and a
/// call whose path leads nowhere is refused naming the path.
#[tokio::test]
async fn a_keyed_rule_takes_its_key_from_deep_in_the_payload() {
    let keyed = |uri: &str, path: &str| {
        let mut table = table(uri, RuleMatch::Exact, Some("jump_consistent_hash"));
        table.rkey = Some(path.to_owned());
        table
    };
    let paths = [
        ("com.example.user", "kwargs.user.id"),
        ("com.example.tenant", "args.0.tenant"),
        ("com.example.item", "kwargs.items.2"),
    ];
    let router = router_with_tables(paths.iter().map(|(uri, path)| keyed(uri, path)).collect()).await;
    let names = ["m0", "m1", "m2", "m3"];
    let mut callees = Vec::new();
    for (procedure, _) in paths {
        for name in names {
            callees
                .push(Callee::start(&router, Serializer::MsgPack, name, procedure, Dict::new(), Behavior::Name).await);
        }
    }
    let mut caller = join(&router, Serializer::Json).await;
    for k in 0..24u64 {
        let key = format!("key-{k}");
        let expected = names[jump_consistent_hash(rkey_hash(&Value::from(key.as_str())).unwrap(), names.len())];
        let user = Dict::new().with("id", key.as_str()).with("name", "someone");
        let items = Value::List(vec![Value::UInt(0), Value::Null, Value::from(key.as_str())]);
        let calls = [
            ("com.example.user", vec![], Some(Dict::new().with("user", Value::Dict(user)))),
            ("com.example.tenant", vec![Value::Dict(Dict::new().with("tenant", key.as_str())), Value::UInt(1)], None),
            ("com.example.item", vec![], Some(Dict::new().with("items", items))),
        ];
        for (procedure, args, kwargs) in calls {
            let request = caller.request_id();
            caller.send(&call_with(request, procedure, args, kwargs, Dict::new())).await.unwrap();
            match caller.recv().await.unwrap() {
                Message::Result { payload, .. } => assert_eq!(first_arg(&payload), expected, "{procedure} {key}"),
                other => panic!("expected RESULT, got {other:?}"),
            }
        }
    }
    for (procedure, args, kwargs, reason) in [
        ("com.example.user", vec![], Some(Dict::new().with("user", "flat")), "the call's kwargs.user is"),
        ("com.example.user", vec![], Some(Dict::new().with("user", Value::Dict(Dict::new()))), "has no kwargs.user.id"),
        ("com.example.tenant", vec![Value::List(vec![])], None, "has no args.0.tenant"),
        (
            "com.example.item",
            vec![],
            Some(Dict::new().with("items", Value::List(vec![Value::Null; 2]))),
            "has no kwargs.items.2",
        ),
    ] {
        let request = caller.request_id();
        caller.send(&call_with(request, procedure, args, kwargs, Dict::new())).await.unwrap();
        let reply = caller.recv().await.unwrap();
        assert_error(&reply, MessageType::Call, "wamp.error.invalid_argument");
        let Message::Error { payload, .. } = reply else { unreachable!() };
        assert!(first_arg(&payload).contains(reason), "{reason}: {payload:?}");
    }
    assert_eq!(callees.iter().map(Callee::invocation_count).sum::<usize>(), 72, "refused calls reach no callee");
    drop(caller);
    for callee in callees {
        callee.leave(Leave::Goodbye).await;
        callee.stop().await;
    }
    assert_empty(&router).await;
}
