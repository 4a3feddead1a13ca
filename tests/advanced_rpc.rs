//! The Advanced Profile's RPC features through real sockets, with shared registrations wherever
//! they interact: caller identification, progressive results, cancel, timeout, call reroute.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

/// A joined client announcing callee/caller `features`.
async fn peer(router: &roundhouse::RouterHandle, features: &[&str]) -> Client {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    client.hello_with_features(REALM, features).await.unwrap();
    client
}

async fn call(client: &mut Client, procedure: &str, options: Dict) -> u64 {
    let request = client.request_id();
    let payload = Payload::args(vec![Value::from("in")]);
    client.send(&Message::Call { request, options, procedure: procedure.into(), payload }).await.unwrap();
    request
}

async fn invocation(callee: &mut Client) -> (u64, Dict) {
    match callee.recv().await.unwrap() {
        Message::Invocation { request, details, .. } => (request, details),
        other => panic!("expected INVOCATION, got {other:?}"),
    }
}

async fn yield_(callee: &mut Client, request: u64, options: Dict, word: &str) {
    let payload = Payload::args(vec![Value::from(word)]);
    callee.send(&Message::Yield { request, options, payload }).await.unwrap();
}

async fn silent(client: &mut Client) {
    client.rx.set_timeout(Duration::from_millis(200));
    assert!(matches!(client.recv().await, Err(ClientError::Timeout)), "nothing more expected");
    client.rx.set_timeout(Duration::from_secs(5));
}

#[tokio::test]
async fn callers_are_disclosed_when_asked_by_either_side() {
    let router = router().await;
    let mut plain = peer(&router, &[]).await;
    plain.register("com.example.p", Dict::new()).await.unwrap();
    let mut curious = peer(&router, &[]).await;
    curious.register("com.example.q", Dict::new().with("disclose_caller", true)).await.unwrap();
    let mut caller = peer(&router, &[]).await;

    call(&mut caller, "com.example.p", Dict::new()).await;
    let (id, details) = invocation(&mut plain).await;
    assert!(details.get("caller").is_none(), "not disclosed unless asked");
    yield_(&mut plain, id, Dict::new(), "ok").await;
    caller.recv().await.unwrap();

    call(&mut caller, "com.example.p", Dict::new().with("disclose_me", true)).await;
    let (id, details) = invocation(&mut plain).await;
    assert_eq!(details.get("caller"), Some(&Value::UInt(caller.session_id())));
    assert_eq!(details.get("caller_authrole").and_then(Value::as_str), Some("anonymous"));
    let authid = format!("anonymous-{}", caller.session_id());
    assert_eq!(details.get("caller_authid").and_then(Value::as_str), Some(authid.as_str()));
    yield_(&mut plain, id, Dict::new(), "ok").await;
    caller.recv().await.unwrap();

    call(&mut caller, "com.example.q", Dict::new()).await;
    let (_, details) = invocation(&mut curious).await;
    assert_eq!(details.get("caller"), Some(&Value::UInt(caller.session_id())), "REGISTER.disclose_caller");
    // The last call is still running when its caller leaves.
    say_goodbye(caller).await;
    say_goodbye(curious).await;
    say_goodbye(plain).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_realm_may_forbid_disclosure() {
    let router = router_with(|c| c.realms[0].allow_disclose_caller = false).await;
    let mut callee = peer(&router, &[]).await;
    callee.register("com.example.p", Dict::new()).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, "com.example.p", Dict::new().with("disclose_me", true)).await;
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.option_disallowed.disclose_me");
    say_goodbye(caller).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn progressive_results_reach_a_caller_that_asked_then_one_final_result() {
    let router = router().await;
    let mut callee = peer(&router, &["progressive_call_results"]).await;
    callee.register("com.example.long", Dict::new()).await.unwrap();
    let mut caller = peer(&router, &["progressive_call_results"]).await;
    let request = call(&mut caller, "com.example.long", Dict::new().with("receive_progress", true)).await;
    let (id, details) = invocation(&mut callee).await;
    assert_eq!(details.get("receive_progress"), Some(&Value::Bool(true)));
    for word in ["one", "two"] {
        yield_(&mut callee, id, Dict::new().with("progress", true), word).await;
        match caller.recv().await.unwrap() {
            Message::Result { request: r, details, payload } => {
                assert_eq!((r, details.get("progress")), (request, Some(&Value::Bool(true))));
                assert_eq!(first_arg(&payload), word);
            }
            other => panic!("{other:?}"),
        }
    }
    yield_(&mut callee, id, Dict::new(), "done").await;
    match caller.recv().await.unwrap() {
        Message::Result { details, payload, .. } => {
            assert!(details.get("progress").is_none());
            assert_eq!(first_arg(&payload), "done");
        }
        other => panic!("{other:?}"),
    }
    // After the final result, more YIELDs for the call are dropped.
    yield_(&mut callee, id, Dict::new(), "late").await;
    silent(&mut caller).await;
    say_goodbye(caller).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn progress_is_not_offered_to_callees_that_did_not_announce_it_nor_sent_to_callers_that_did_not_ask() {
    let router = router().await;
    let mut callee = peer(&router, &[]).await;
    callee.register("com.example.long", Dict::new()).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, "com.example.long", Dict::new().with("receive_progress", true)).await;
    let (id, details) = invocation(&mut callee).await;
    assert!(details.get("receive_progress").is_none());
    yield_(&mut callee, id, Dict::new().with("progress", true), "unasked").await;
    yield_(&mut callee, id, Dict::new(), "final").await;
    let Message::Result { payload, details, .. } = caller.recv().await.unwrap() else { panic!() };
    assert_eq!((first_arg(&payload).as_str(), details.get("progress")), ("final", None));
    say_goodbye(caller).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

/// Two members of a round-robin registration, both supporting cancel; the call lands on the
/// first. Returns (callee running the call, the other member, caller, call id, invocation id).
async fn running_call(router: &roundhouse::RouterHandle) -> (Client, Client, Client, u64, u64) {
    let mut a = peer(router, &["call_canceling"]).await;
    let mut b = peer(router, &["call_canceling"]).await;
    a.register("com.example.slow", rule("roundrobin")).await.unwrap();
    b.register("com.example.slow", rule("roundrobin")).await.unwrap();
    let mut caller = peer(router, &["call_canceling"]).await;
    let request = call(&mut caller, "com.example.slow", Dict::new()).await;
    let (invocation_id, _) = invocation(&mut a).await;
    (a, b, caller, request, invocation_id)
}

#[tokio::test]
async fn cancel_skip_answers_at_once_and_leaves_the_callee_alone() {
    let router = router().await;
    let (mut a, mut b, mut caller, request, id) = running_call(&router).await;
    caller.send(&Message::Cancel { request, options: Dict::new().with("mode", "skip") }).await.unwrap();
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.canceled");
    silent(&mut a).await;
    yield_(&mut a, id, Dict::new(), "late").await;
    silent(&mut caller).await;
    silent(&mut b).await;
    for client in [caller, a, b] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn cancel_killnowait_interrupts_only_the_member_running_the_call() {
    for options in [Dict::new().with("mode", "killnowait"), Dict::new()] {
        let router = router().await;
        let (mut a, mut b, mut caller, request, id) = running_call(&router).await;
        caller.send(&Message::Cancel { request, options }).await.unwrap();
        assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.canceled");
        match a.recv().await.unwrap() {
            Message::Interrupt { request: r, options } => {
                assert_eq!(r, id);
                assert_eq!(options.get("mode").and_then(Value::as_str), Some("killnowait"));
            }
            other => panic!("{other:?}"),
        }
        silent(&mut b).await;
        yield_(&mut a, id, Dict::new(), "late").await;
        silent(&mut caller).await;
        for client in [caller, a, b] {
            say_goodbye(client).await;
        }
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn cancel_kill_waits_for_the_callee_to_answer() {
    let router = router().await;
    let (mut a, mut b, mut caller, request, id) = running_call(&router).await;
    caller.send(&Message::Cancel { request, options: Dict::new().with("mode", "kill") }).await.unwrap();
    assert!(matches!(a.recv().await.unwrap(), Message::Interrupt { request: r, .. } if r == id));
    silent(&mut caller).await;
    a.send(&Message::Error {
        request_type: MessageType::Invocation as u64,
        request: id,
        details: Dict::new(),
        error: "wamp.error.canceled".into(),
        payload: Payload::Empty,
    })
    .await
    .unwrap();
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.canceled");
    silent(&mut b).await;
    for client in [caller, a, b] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_call_past_its_timeout_gets_the_timeout_error_and_the_callee_an_interrupt() {
    let router = router().await;
    let mut callee = peer(&router, &["call_canceling"]).await;
    callee.register("com.example.slow", Dict::new()).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let started = std::time::Instant::now();
    let request = call(&mut caller, "com.example.slow", Dict::new().with("timeout", 300u64)).await;
    let (id, details) = invocation(&mut callee).await;
    assert!(details.get("timeout").is_none(), "the router enforces it");
    let reply = caller.recv().await.unwrap();
    assert_error(&reply, MessageType::Call, "wamp.error.timeout");
    assert!(matches!(reply, Message::Error { request: r, .. } if r == request));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(matches!(callee.recv().await.unwrap(), Message::Interrupt { request: r, .. } if r == id));
    // A call answered in time is not touched by its timer.
    let request = call(&mut caller, "com.example.slow", Dict::new().with("timeout", 200u64)).await;
    let (id, _) = invocation(&mut callee).await;
    yield_(&mut callee, id, Dict::new(), "fast").await;
    assert!(matches!(caller.recv().await.unwrap(), Message::Result { request: r, .. } if r == request));
    tokio::time::sleep(Duration::from_millis(400)).await;
    silent(&mut caller).await;
    silent(&mut callee).await;
    say_goodbye(caller).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn forward_timeout_leaves_the_timeout_to_the_callee() {
    let router = router().await;
    let mut callee = peer(&router, &[]).await;
    callee.register("com.example.slow", Dict::new().with("forward_timeout", true)).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, "com.example.slow", Dict::new().with("timeout", 100u64)).await;
    let (id, details) = invocation(&mut callee).await;
    assert_eq!(details.get("timeout"), Some(&Value::UInt(100)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    yield_(&mut callee, id, Dict::new(), "still wanted").await;
    assert!(matches!(caller.recv().await.unwrap(), Message::Result { .. }));
    say_goodbye(caller).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_caller_that_leaves_has_its_calls_interrupted() {
    let router = router().await;
    let mut callee = peer(&router, &["call_canceling"]).await;
    callee.register("com.example.slow", Dict::new()).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, "com.example.slow", Dict::new()).await;
    let (id, _) = invocation(&mut callee).await;
    drop(caller);
    match callee.recv().await.unwrap() {
        Message::Interrupt { request, options } => {
            assert_eq!(request, id);
            assert_eq!(options.get("mode").and_then(Value::as_str), Some("killnowait"));
        }
        other => panic!("{other:?}"),
    }
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

async fn unavailable(callee: &mut Client, id: u64) {
    callee
        .send(&Message::Error {
            request_type: MessageType::Invocation as u64,
            request: id,
            details: Dict::new(),
            error: "wamp.error.unavailable".into(),
            payload: Payload::Empty,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unavailable_callee_hands_the_call_to_the_next_per_rule() {
    // first: the one after; last: the one before; roundrobin: the next.
    for (rule_name, first_pick, second_pick) in [("first", 0, 1), ("last", 2, 1), ("roundrobin", 0, 1)] {
        let router = router().await;
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut m = peer(&router, &[]).await;
            m.register("com.example.busy", rule(rule_name)).await.unwrap();
            members.push(m);
        }
        let mut caller = peer(&router, &[]).await;
        let request = call(&mut caller, "com.example.busy", Dict::new()).await;
        let (id, _) = invocation(&mut members[first_pick]).await;
        unavailable(&mut members[first_pick], id).await;
        let (id, _) = invocation(&mut members[second_pick]).await;
        yield_(&mut members[second_pick], id, Dict::new(), "served").await;
        match caller.recv().await.unwrap() {
            Message::Result { request: r, payload, .. } => {
                assert_eq!((r, first_arg(&payload).as_str()), (request, "served"), "{rule_name}");
            }
            other => panic!("{rule_name}: {other:?}"),
        }
        say_goodbye(caller).await;
        for member in members {
            say_goodbye(member).await;
        }
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn when_every_member_is_unavailable_the_caller_hears_so() {
    let router = router().await;
    let mut members = Vec::new();
    for _ in 0..2 {
        let mut m = peer(&router, &[]).await;
        m.register("com.example.busy", rule("random")).await.unwrap();
        members.push(m);
    }
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, "com.example.busy", Dict::new()).await;
    let (first, second) = members.split_at_mut(1);
    for _ in 0..2 {
        tokio::select! {
            (id, _) = invocation(&mut first[0]) => unavailable(&mut first[0], id).await,
            (id, _) = invocation(&mut second[0]) => unavailable(&mut second[0], id).await,
        }
    }
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.no_available_callee");
    say_goodbye(caller).await;
    for member in members {
        say_goodbye(member).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn welcome_announces_the_advanced_rpc_features() {
    let router = router().await;
    let mut client = Client::connect(&router.url(), Serializer::MsgPack).await.unwrap();
    let roles = Dict::new().with("caller", Dict::new());
    client.send(&Message::Hello { realm: REALM.into(), details: Dict::new().with("roles", roles) }).await.unwrap();
    let Message::Welcome { details, .. } = client.recv().await.unwrap() else { panic!() };
    let features = details
        .get("roles")
        .and_then(Value::as_dict)
        .and_then(|r| r.get("dealer"))
        .and_then(Value::as_dict)
        .and_then(|d| d.get("features"))
        .and_then(Value::as_dict)
        .unwrap()
        .clone();
    for feature in
        ["progressive_call_results", "call_canceling", "call_timeout", "caller_identification", "call_reroute"]
    {
        assert_eq!(features.get(feature), Some(&Value::Bool(true)), "{feature}");
    }
    say_goodbye(client).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn pattern_registrations_are_chosen_as_the_spec_says() {
    let router = router().await;
    let registrations = [
        ("a1.b2.c3.d4.e55", "exact"),
        ("a1.b2.c3", "prefix"),
        ("a1.b2.c3.d4", "prefix"),
        ("a1.b2..d4.e5", "wildcard"),
        ("a1.b2.c33..e5", "wildcard"),
        ("a1.b2..d4.e5..g7", "wildcard"),
        ("a1.b2..d4..f6.g7", "wildcard"),
    ];
    let mut callees = Vec::new();
    for (uri, policy) in registrations {
        let mut callee = peer(&router, &[]).await;
        callee.register(uri, Dict::new().with("match", policy)).await.unwrap();
        callees.push(callee);
    }
    let mut caller = peer(&router, &[]).await;
    for (called, expected) in [
        ("a1.b2.c3.d4.e55", 0),
        ("a1.b2.c3.d98.e74", 1),
        ("a1.b2.c3.d4.e325", 2),
        ("a1.b2.c55.d4.e5", 3),
        ("a1.b2.c33.d4.e5", 4),
        ("a1.b2.c88.d4.e5.f6.g7", 5),
    ] {
        let request = call(&mut caller, called, Dict::new()).await;
        let (id, details) = invocation(&mut callees[expected]).await;
        let shown = details.get("procedure").and_then(Value::as_str);
        assert_eq!(shown, (expected != 0).then_some(called), "{called}: the called URI for pattern matches only");
        yield_(&mut callees[expected], id, Dict::new(), "ok").await;
        assert!(matches!(caller.recv().await.unwrap(), Message::Result { request: r, .. } if r == request));
    }
    let reply = unexpected(caller.call("a2.b2.c2.d2.e2", vec![]).await);
    assert_error(&reply, MessageType::Call, "wamp.error.no_such_procedure");
    for callee in &mut callees {
        silent(callee).await;
    }
    say_goodbye(caller).await;
    for callee in callees {
        say_goodbye(callee).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_pattern_registration_is_keyed_by_uri_and_match_and_has_its_own_rule() {
    let router = router().await;
    let mut a = peer(&router, &[]).await;
    let mut b = peer(&router, &[]).await;
    let prefix_rr = Dict::new().with("match", "prefix").with("invoke", "roundrobin");
    let id_a = a.register("com.example", prefix_rr.clone()).await.unwrap();
    let id_b = b.register("com.example", prefix_rr).await.unwrap();
    assert_eq!(id_a, id_b, "one shared prefix registration");
    // The same URI with exact matching is a different registration, with a rule of its own.
    let mut c = peer(&router, &[]).await;
    let exact = c.register("com.example", Dict::new().with("invoke", "first")).await.unwrap();
    assert_ne!(exact, id_a);
    let refused =
        unexpected(c.register("com.example", Dict::new().with("match", "prefix").with("invoke", "last")).await);
    assert_error(&refused, MessageType::Register, "wamp.error.procedure_exists_with_different_invocation_policy");
    let mut caller = peer(&router, &[]).await;
    for expected in [0usize, 1, 0] {
        let request = call(&mut caller, "com.example.x", Dict::new()).await;
        let member = if expected == 0 { &mut a } else { &mut b };
        let (id, _) = invocation(member).await;
        yield_(member, id, Dict::new(), "ok").await;
        assert!(matches!(caller.recv().await.unwrap(), Message::Result { request: r, .. } if r == request));
    }
    let refused = unexpected(a.register("com.example", Dict::new().with("match", "regex")).await);
    assert_error(&refused, MessageType::Register, "wamp.error.invalid_argument");
    for client in [caller, a, b, c] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn progressive_invocation_chunks_stick_to_the_member_that_took_the_first() {
    let router = router().await;
    let mut a = peer(&router, &["progressive_call_invocations"]).await;
    let mut b = peer(&router, &["progressive_call_invocations"]).await;
    a.register("com.example.upload", rule("roundrobin")).await.unwrap();
    b.register("com.example.upload", rule("roundrobin")).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let request = caller.request_id();
    for (chunk, more) in [("one", true), ("two", true), ("three", false)] {
        let options = if more { Dict::new().with("progress", true) } else { Dict::new() };
        let payload = Payload::args(vec![Value::from(chunk)]);
        caller
            .send(&Message::Call { request, options, procedure: "com.example.upload".into(), payload })
            .await
            .unwrap();
    }
    let mut invocation_ids = Vec::new();
    for (chunk, more) in [("one", true), ("two", true), ("three", false)] {
        match a.recv().await.unwrap() {
            Message::Invocation { request, details, payload, .. } => {
                invocation_ids.push(request);
                assert_eq!(details.get("progress"), more.then_some(&Value::Bool(true)), "{chunk}");
                assert_eq!(first_arg(&payload), chunk);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(invocation_ids.iter().all(|id| *id == invocation_ids[0]), "one INVOCATION id for every chunk");
    silent(&mut b).await;
    yield_(&mut a, invocation_ids[0], Dict::new(), "stored").await;
    assert!(matches!(caller.recv().await.unwrap(), Message::Result { request: r, .. } if r == request));
    // The rotation moved on once: the next call goes to b.
    call(&mut caller, "com.example.upload", Dict::new()).await;
    invocation(&mut b).await;
    // That call is never answered: its caller and callee just go away.
    drop(caller);
    drop(b);
    say_goodbye(a).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn progressive_invocations_need_a_callee_that_supports_them() {
    let router = router().await;
    let mut callee = peer(&router, &[]).await;
    callee.register("com.example.upload", Dict::new()).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, "com.example.upload", Dict::new().with("progress", true)).await;
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.feature_not_supported");
    silent(&mut callee).await;
    say_goodbye(caller).await;
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn max_reroutes_bounds_how_often_a_call_is_handed_on() {
    let router = router().await;
    let options = rule("first").with("max_reroutes", 1u64);
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut m = peer(&router, &[]).await;
        m.register("com.example.busy", options.clone()).await.unwrap();
        members.push(m);
    }
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, "com.example.busy", Dict::new()).await;
    for member in members.iter_mut().take(2) {
        let (id, _) = invocation(member).await;
        unavailable(member, id).await;
    }
    assert_error(&caller.recv().await.unwrap(), MessageType::Call, "wamp.error.no_available_callee");
    silent(&mut members[2]).await;
    say_goodbye(caller).await;
    for member in members {
        say_goodbye(member).await;
    }
    assert_empty(&router).await;
}
