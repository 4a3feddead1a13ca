//! Per-callee concurrency (`REGISTER.Options.concurrency`) and the bounded per-registration call
//! queue, through real sockets: a member never has more calls in flight than its limit, calls
//! that find every member full wait first in, first out, the queue's bounds hold, and every way a
//! call can end gives its slot back (the counters, read through `wamp.registration.get`, return
//! to zero).

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

const P: &str = "com.example.limited";
const CANCELING: &[&str] = &["call_canceling", "progressive_call_results"];

async fn peer(router: &roundhouse::RouterHandle, features: &[&str]) -> Client {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    client.hello_with_features(REALM, features).await.unwrap();
    client
}

fn limited(rule: &str, concurrency: u64) -> Dict {
    Dict::new().with("invoke", rule).with("concurrency", concurrency)
}

/// A registration's queue length and, per member in registration order, (session, in flight,
/// served), as `wamp.registration.get` reports them.
#[derive(Debug, PartialEq, Eq)]
struct Load {
    queued: u64,
    members: Vec<(u64, u64, u64)>,
}

async fn load(admin: &mut Client, registration: u64) -> Option<Load> {
    let details = match admin.call("wamp.registration.get", vec![Value::UInt(registration)]).await {
        Ok(payload) => payload.to_values().unwrap().0.remove(0),
        Err(ClientError::Unexpected(reply)) => {
            assert_error(&reply, MessageType::Call, "wamp.error.no_such_registration");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let details = details.as_dict().unwrap();
    let count = |d: &Dict, key: &str| d.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("{key} in {d:?}"));
    let Some(Value::List(callees)) = details.get("_callees") else { panic!("_callees in {details:?}") };
    let members = callees
        .iter()
        .map(|c| {
            let c = c.as_dict().unwrap();
            (count(c, "session"), count(c, "_in_flight"), count(c, "_served"))
        })
        .collect();
    Some(Load { queued: count(details, "_queued"), members })
}

/// Waits (up to 3 s) until the registration's queue holds `queued` calls and its members have
/// `in_flight` calls in flight (in registration order).
async fn expect_load(admin: &mut Client, registration: u64, queued: u64, in_flight: &[u64]) -> Load {
    let mut last = None;
    for _ in 0..300 {
        let now = load(admin, registration).await.expect("registration exists");
        let flights: Vec<u64> = now.members.iter().map(|m| m.1).collect();
        if now.queued == queued && flights == in_flight {
            return now;
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {queued} queued and {in_flight:?} in flight, got {last:?}");
}

fn call_with(client: &mut Client, options: Dict) -> (u64, Message) {
    let request = client.request_id();
    (request, Message::Call { request, options, procedure: P.into(), payload: Payload::Empty })
}

async fn call(client: &mut Client, options: Dict) -> u64 {
    let (request, message) = call_with(client, options);
    client.send(&message).await.unwrap();
    request
}

async fn invocation(callee: &mut Client) -> u64 {
    match callee.recv().await.unwrap() {
        Message::Invocation { request, .. } => request,
        other => panic!("expected INVOCATION, got {other:?}"),
    }
}

async fn nothing_arrives(client: &mut Client) {
    if let Ok(message) = tokio::time::timeout(Duration::from_millis(150), client.recv()).await {
        panic!("expected nothing, got {message:?}");
    }
}

async fn yield_to(callee: &mut Client, invocation: u64, name: &str) {
    let payload = Payload::args(vec![Value::from(name)]);
    callee.send(&Message::Yield { request: invocation, options: Dict::new(), payload }).await.unwrap();
}

async fn result(caller: &mut Client) -> (u64, String) {
    match caller.recv().await.unwrap() {
        Message::Result { request, payload, .. } => (request, first_arg(&payload)),
        other => panic!("expected RESULT, got {other:?}"),
    }
}

async fn error(caller: &mut Client, request: u64, uri: &str) {
    let reply = caller.recv().await.unwrap();
    assert_error(&reply, MessageType::Call, uri);
    let Message::Error { request: answered, .. } = reply else { unreachable!() };
    assert_eq!(answered, request, "the error answers the call");
}

async fn interrupt(callee: &mut Client, invocation: u64, mode: &str) {
    match callee.recv().await.unwrap() {
        Message::Interrupt { request, options } => {
            assert_eq!(request, invocation);
            assert_eq!(options.get("mode").and_then(Value::as_str), Some(mode));
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
}

async fn close(clients: impl IntoIterator<Item = Client>) {
    for client in clients {
        say_goodbye(client).await;
    }
}

#[tokio::test]
async fn concurrency_caps_each_member_and_the_queue_is_first_in_first_out() {
    let router = router().await;
    let mut a = peer(&router, CANCELING).await;
    let mut b = peer(&router, CANCELING).await;
    let id = a.register(P, limited("roundrobin", 1)).await.unwrap();
    b.register(P, limited("roundrobin", 1)).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let mut admin = peer(&router, &[]).await;

    let mut requests = Vec::new();
    for _ in 0..4 {
        requests.push(call(&mut caller, Dict::new()).await);
    }
    let a1 = invocation(&mut a).await;
    let b1 = invocation(&mut b).await;
    let before = expect_load(&mut admin, id, 2, &[1, 1]).await;
    assert_eq!(before.members.iter().map(|m| m.0).collect::<Vec<_>>(), [a.session_id(), b.session_id()]);
    nothing_arrives(&mut a).await;
    nothing_arrives(&mut b).await;

    // A's answer frees its slot: the oldest waiting call (the third) goes there.
    yield_to(&mut a, a1, "A").await;
    assert_eq!(result(&mut caller).await, (requests[0], "A".into()));
    let a2 = invocation(&mut a).await;
    expect_load(&mut admin, id, 1, &[1, 1]).await;
    yield_to(&mut b, b1, "B").await;
    assert_eq!(result(&mut caller).await, (requests[1], "B".into()));
    let b2 = invocation(&mut b).await;
    expect_load(&mut admin, id, 0, &[1, 1]).await;
    yield_to(&mut b, b2, "B").await;
    assert_eq!(result(&mut caller).await, (requests[3], "B".into()));
    yield_to(&mut a, a2, "A").await;
    assert_eq!(result(&mut caller).await, (requests[2], "A".into()));

    let after = expect_load(&mut admin, id, 0, &[0, 0]).await;
    assert_eq!(after.members.iter().map(|m| m.2).collect::<Vec<_>>(), [2, 2], "served");
    close([a, b, caller, admin]).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_full_queue_refuses_and_a_wait_beyond_max_queue_ms_times_out() {
    let router = router().await;
    let mut callee = peer(&router, CANCELING).await;
    let options = limited("single", 1).with("_max_queued_calls", 1u64).with("_max_queue_ms", 200u64);
    let id = callee.register(P, options).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let mut admin = peer(&router, &[]).await;

    let running = call(&mut caller, Dict::new()).await;
    let held = invocation(&mut callee).await;
    let waiting = call(&mut caller, Dict::new()).await;
    expect_load(&mut admin, id, 1, &[1]).await;
    let refused = call(&mut caller, Dict::new()).await;
    error(&mut caller, refused, "wamp.error.no_available_callee").await;
    let started = tokio::time::Instant::now();
    error(&mut caller, waiting, "wamp.error.timeout").await;
    assert!(started.elapsed() >= Duration::from_millis(100), "the queue's time limit ended the wait");
    expect_load(&mut admin, id, 0, &[1]).await;

    yield_to(&mut callee, held, "C").await;
    assert_eq!(result(&mut caller).await, (running, "C".into()));
    nothing_arrives(&mut callee).await;
    let after = expect_load(&mut admin, id, 0, &[0]).await;
    assert_eq!(after.members[0].2, 1, "served");
    close([callee, caller, admin]).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn bad_concurrency_and_queue_options_are_refused() {
    let router = router().await;
    let mut callee = peer(&router, &[]).await;
    for options in [
        Dict::new().with("concurrency", 0u64),
        Dict::new().with("concurrency", "2"),
        Dict::new().with("concurrency", -1i64),
        Dict::new().with("_max_queued_calls", Value::Float(1.5)),
        Dict::new().with("_max_queue_ms", true),
    ] {
        let reply = unexpected(callee.register(P, options).await);
        assert_error(&reply, MessageType::Register, "wamp.error.invalid_argument");
    }
    close([callee]).await;
    assert_empty(&router).await;
}

/// Every way a running or waiting call can end, one after the other on one registration whose
/// only member takes one call at a time: after each, nothing is in flight and nothing waits.
#[tokio::test]
async fn every_way_a_call_ends_gives_its_slot_back() {
    let router = router().await;
    let mut callee = peer(&router, CANCELING).await;
    let id = callee.register(P, limited("single", 1)).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let mut admin = peer(&router, &[]).await;

    // YIELD
    let request = call(&mut caller, Dict::new()).await;
    let inv = invocation(&mut callee).await;
    expect_load(&mut admin, id, 0, &[1]).await;
    yield_to(&mut callee, inv, "C").await;
    assert_eq!(result(&mut caller).await, (request, "C".into()));
    expect_load(&mut admin, id, 0, &[0]).await;

    // ERROR
    let request = call(&mut caller, Dict::new()).await;
    let inv = invocation(&mut callee).await;
    let failure = Message::Error {
        request_type: MessageType::Invocation as u64,
        request: inv,
        details: Dict::new(),
        error: "com.example.oops".into(),
        payload: Payload::Empty,
    };
    callee.send(&failure).await.unwrap();
    error(&mut caller, request, "com.example.oops").await;
    expect_load(&mut admin, id, 0, &[0]).await;

    // CANCEL in each mode while running
    for mode in ["killnowait", "kill", "skip"] {
        let request = call(&mut caller, Dict::new()).await;
        let inv = invocation(&mut callee).await;
        caller.send(&Message::Cancel { request, options: Dict::new().with("mode", mode) }).await.unwrap();
        match mode {
            "kill" => {
                interrupt(&mut callee, inv, "kill").await;
                // The callee still works on it: the slot is held until it answers.
                expect_load(&mut admin, id, 0, &[1]).await;
                let canceled = Message::Error {
                    request_type: MessageType::Invocation as u64,
                    request: inv,
                    details: Dict::new(),
                    error: "wamp.error.canceled".into(),
                    payload: Payload::Empty,
                };
                callee.send(&canceled).await.unwrap();
                error(&mut caller, request, "wamp.error.canceled").await;
            }
            "killnowait" => {
                error(&mut caller, request, "wamp.error.canceled").await;
                interrupt(&mut callee, inv, "killnowait").await;
            }
            _ => {
                error(&mut caller, request, "wamp.error.canceled").await;
                // The late answer is dropped.
                yield_to(&mut callee, inv, "late").await;
            }
        }
        expect_load(&mut admin, id, 0, &[0]).await;
    }

    // The call's timeout while running
    let request = call(&mut caller, Dict::new().with("timeout", 100u64)).await;
    let inv = invocation(&mut callee).await;
    error(&mut caller, request, "wamp.error.timeout").await;
    interrupt(&mut callee, inv, "killnowait").await;
    expect_load(&mut admin, id, 0, &[0]).await;

    // A waiting call canceled (each mode) leaves the queue at once; its own timeout counts from
    // the CALL while it waits.
    let running = call(&mut caller, Dict::new()).await;
    let held = invocation(&mut callee).await;
    for mode in ["killnowait", "kill", "skip"] {
        let waiting = call(&mut caller, Dict::new()).await;
        expect_load(&mut admin, id, 1, &[1]).await;
        caller.send(&Message::Cancel { request: waiting, options: Dict::new().with("mode", mode) }).await.unwrap();
        error(&mut caller, waiting, "wamp.error.canceled").await;
        expect_load(&mut admin, id, 0, &[1]).await;
    }
    let waiting = call(&mut caller, Dict::new().with("timeout", 150u64)).await;
    expect_load(&mut admin, id, 1, &[1]).await;
    error(&mut caller, waiting, "wamp.error.timeout").await;
    expect_load(&mut admin, id, 0, &[1]).await;
    yield_to(&mut callee, held, "C").await;
    assert_eq!(result(&mut caller).await, (running, "C".into()));
    nothing_arrives(&mut callee).await;
    let after = expect_load(&mut admin, id, 0, &[0]).await;
    // INVOCATIONs written: the YIELD, the ERROR, the three canceled calls, the timed-out one and
    // the call held while others waited; the waiting calls never reached the callee.
    assert_eq!(after.members[0].2, 7, "served");

    close([callee, caller, admin]).await;
    assert_empty(&router).await;
}

/// A member joining takes waiting calls; a member leaving ends its calls and gives their slots
/// back, so waiting calls move to the others; when the last one leaves, waiting calls end.
#[tokio::test]
async fn joins_and_leaves_move_waiting_calls() {
    let router = router().await;
    let mut a = peer(&router, CANCELING).await;
    let id = a.register(P, limited("roundrobin", 1)).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let mut admin = peer(&router, &[]).await;

    let first = call(&mut caller, Dict::new()).await;
    invocation(&mut a).await;
    let second = call(&mut caller, Dict::new()).await;
    let third = call(&mut caller, Dict::new()).await;
    expect_load(&mut admin, id, 2, &[1]).await;

    // B joins: the oldest waiting call goes to it at once.
    let mut b = peer(&router, CANCELING).await;
    b.register(P, limited("roundrobin", 1)).await.unwrap();
    let b1 = invocation(&mut b).await;
    expect_load(&mut admin, id, 1, &[1, 1]).await;
    yield_to(&mut b, b1, "B").await;
    assert_eq!(result(&mut caller).await, (second, "B".into()));
    let b2 = invocation(&mut b).await;
    expect_load(&mut admin, id, 0, &[1, 1]).await;

    // A fourth waits; A leaves with its call in flight: that call ends canceled and A's slot is
    // gone with it.
    let fourth = call(&mut caller, Dict::new()).await;
    expect_load(&mut admin, id, 1, &[1, 1]).await;
    drop(a);
    error(&mut caller, first, "wamp.error.canceled").await;
    expect_load(&mut admin, id, 1, &[1]).await;

    // B answers: the fourth goes to B. Then B leaves as the last member with one call running
    // and one waiting: both end.
    yield_to(&mut b, b2, "B").await;
    assert_eq!(result(&mut caller).await, (third, "B".into()));
    let _b3 = invocation(&mut b).await;
    let fifth = call(&mut caller, Dict::new()).await;
    expect_load(&mut admin, id, 1, &[1]).await;
    say_goodbye(b).await;
    let mut ended = Vec::new();
    for _ in 0..2 {
        match caller.recv().await.unwrap() {
            Message::Error { request, error, .. } => ended.push((request, error)),
            other => panic!("expected ERROR, got {other:?}"),
        }
    }
    ended.sort();
    let mut expected =
        vec![(fourth, "wamp.error.canceled".to_owned()), (fifth, "wamp.error.no_such_procedure".to_owned())];
    expected.sort();
    assert_eq!(ended, expected);
    assert_eq!(load(&mut admin, id).await, None, "the registration is gone");
    close([caller, admin]).await;
    assert_empty(&router).await;
}

/// A caller that leaves with a call running and one waiting: the callee is interrupted, the
/// waiting call leaves the queue, and the slot is back.
#[tokio::test]
async fn a_caller_leaving_frees_its_slot_and_its_place_in_the_queue() {
    let router = router().await;
    let mut callee = peer(&router, CANCELING).await;
    let id = callee.register(P, limited("single", 1)).await.unwrap();
    let mut admin = peer(&router, &[]).await;
    let mut caller = peer(&router, &[]).await;
    call(&mut caller, Dict::new()).await;
    let inv = invocation(&mut callee).await;
    call(&mut caller, Dict::new()).await;
    expect_load(&mut admin, id, 1, &[1]).await;
    drop(caller);
    interrupt(&mut callee, inv, "killnowait").await;
    expect_load(&mut admin, id, 0, &[0]).await;
    nothing_arrives(&mut callee).await;
    close([callee, admin]).await;
    assert_empty(&router).await;
}

/// `wamp.error.unavailable` hands the call to another member: the first member's slot is back
/// at once, and a member at its limit is passed over.
#[tokio::test]
async fn a_rerouted_call_gives_back_the_slot_it_left() {
    let router = router().await;
    let mut a = peer(&router, CANCELING).await;
    let mut b = peer(&router, CANCELING).await;
    let id = a.register(P, limited("first", 1)).await.unwrap();
    b.register(P, limited("first", 1)).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let mut admin = peer(&router, &[]).await;
    let request = call(&mut caller, Dict::new()).await;
    let inv = invocation(&mut a).await;
    let unavailable = Message::Error {
        request_type: MessageType::Invocation as u64,
        request: inv,
        details: Dict::new(),
        error: "wamp.error.unavailable".into(),
        payload: Payload::Empty,
    };
    a.send(&unavailable).await.unwrap();
    let inv = invocation(&mut b).await;
    expect_load(&mut admin, id, 0, &[0, 1]).await;
    yield_to(&mut b, inv, "B").await;
    assert_eq!(result(&mut caller).await, (request, "B".into()));
    expect_load(&mut admin, id, 0, &[0, 0]).await;
    close([a, b, caller, admin]).await;
    assert_empty(&router).await;
}

/// The next EVENT's arguments.
async fn event_args(client: &mut Client) -> Vec<Value> {
    match client.recv().await.unwrap() {
        Message::Event { payload, .. } => payload.to_values().unwrap().0,
        other => panic!("expected EVENT, got {other:?}"),
    }
}

/// `wamp.registration.on_queue_full` as (registration, procedure, refused, max_queued_calls).
fn queue_full(args: &[Value]) -> (u64, String, u64, u64) {
    let details = args[1].as_dict().expect("details");
    let count = |key: &str| details.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("{key} in {details:?}"));
    let procedure = details.get("procedure").and_then(Value::as_str).expect("procedure");
    (args[0].as_u64().expect("registration id"), procedure.to_owned(), count("refused"), count("max_queued_calls"))
}

/// A burst of calls refused by a full queue reaches operators as `on_queue_full`, at most once a
/// second: the first refusal at once, the rest of the second added up into the next event, so
/// the counts add up to every refusal. The realm grants exactly what each side needs: the
/// application's URIs, and subscribing to the one meta topic.
#[tokio::test]
async fn a_full_queue_is_reported_rate_limited_with_every_refusal_counted() {
    use roundhouse::auth::config::{Action, RuleConfig, RuleMatch};
    let router = router_with(|config| {
        let realm = config.realms.iter_mut().find(|r| r.name == REALM).unwrap();
        let grant = |uri: &str, policy, allow: &[Action]| RuleConfig {
            uri: uri.into(),
            policy,
            allow: allow.to_vec(),
            disclose: vec![],
        };
        realm.roles[0].permissions = vec![
            grant("com.example.", RuleMatch::Prefix, &[Action::Call, Action::Register]),
            grant("wamp.registration.on_queue_full", RuleMatch::Exact, &[Action::Subscribe]),
        ];
    })
    .await;
    let mut callee = peer(&router, CANCELING).await;
    let id = callee.register(P, limited("single", 1).with("_max_queued_calls", 1u64)).await.unwrap();
    let mut operator = peer(&router, &[]).await;
    let request = operator.request_id();
    let topic = "wamp.registration.on_queue_full";
    operator.send(&Message::Subscribe { request, options: Dict::new(), topic: topic.into() }).await.unwrap();
    assert!(matches!(operator.recv().await.unwrap(), Message::Subscribed { .. }));
    let mut caller = peer(&router, &[]).await;

    let running = call(&mut caller, Dict::new()).await;
    let held = invocation(&mut callee).await;
    let waiting = call(&mut caller, Dict::new()).await;
    // Two callers at once, 20 refusals each.
    let mut others = vec![peer(&router, &[]).await, peer(&router, &[]).await];
    let burst = others.iter_mut().map(|c| async move {
        for _ in 0..20 {
            let request = call(c, Dict::new()).await;
            error(c, request, "wamp.error.no_available_callee").await;
        }
    });
    futures_util::future::join_all(burst).await;

    let first = queue_full(&event_args(&mut operator).await);
    let at = tokio::time::Instant::now();
    assert_eq!(first, (id, P.to_owned(), 1, 1), "the first refusal is reported at once");
    let second = queue_full(&event_args(&mut operator).await);
    assert!(at.elapsed() >= Duration::from_millis(800), "one event per second: {:?}", at.elapsed());
    assert_eq!(second, (id, P.to_owned(), 39, 1), "the other 39 refusals of that second, added up");
    nothing_arrives(&mut operator).await;

    // A refusal within the next second waits for its end; nothing is lost.
    let refused = call(&mut caller, Dict::new()).await;
    error(&mut caller, refused, "wamp.error.no_available_callee").await;
    nothing_arrives(&mut operator).await;
    assert_eq!(queue_full(&event_args(&mut operator).await), (id, P.to_owned(), 1, 1));

    // Calls that are parked or served are not reported.
    yield_to(&mut callee, held, "C").await;
    assert_eq!(result(&mut caller).await, (running, "C".into()));
    let next = invocation(&mut callee).await;
    yield_to(&mut callee, next, "C").await;
    assert_eq!(result(&mut caller).await, (waiting, "C".into()));
    nothing_arrives(&mut operator).await;
    close(others).await;
    close([callee, operator, caller]).await;
    assert_empty(&router).await;
}

/// A waiting call that only a busy member may serve (`_callee`) does not hold up the calls
/// behind it: a slot freed on another member goes to the first call that can use it, and the
/// targeted call runs when its member is free.
#[tokio::test]
async fn a_call_waiting_for_a_busy_member_does_not_block_the_queue() {
    let router = router().await;
    let mut a = peer(&router, CANCELING).await;
    let mut b = peer(&router, CANCELING).await;
    let id = a.register(P, limited("roundrobin", 1)).await.unwrap();
    b.register(P, limited("roundrobin", 1)).await.unwrap();
    let mut caller = peer(&router, &[]).await;
    let mut admin = peer(&router, &[]).await;

    let first = call(&mut caller, Dict::new()).await;
    let a1 = invocation(&mut a).await;
    let second = call(&mut caller, Dict::new()).await;
    let b1 = invocation(&mut b).await;
    let for_a = call(&mut caller, Dict::new().with("_callee", a.session_id())).await;
    let anywhere = [call(&mut caller, Dict::new()).await, call(&mut caller, Dict::new()).await];
    expect_load(&mut admin, id, 3, &[1, 1]).await;

    // B's slot frees: the call for A stays, the first call behind it goes to B.
    yield_to(&mut b, b1, "B").await;
    assert_eq!(result(&mut caller).await, (second, "B".into()));
    let b2 = invocation(&mut b).await;
    expect_load(&mut admin, id, 2, &[1, 1]).await;
    nothing_arrives(&mut a).await;
    yield_to(&mut b, b2, "B").await;
    assert_eq!(result(&mut caller).await, (anywhere[0], "B".into()));
    let b3 = invocation(&mut b).await;
    expect_load(&mut admin, id, 1, &[1, 1]).await;

    // A's slot frees: the call for A, oldest, takes it.
    yield_to(&mut a, a1, "A").await;
    assert_eq!(result(&mut caller).await, (first, "A".into()));
    let a2 = invocation(&mut a).await;
    yield_to(&mut a, a2, "A").await;
    assert_eq!(result(&mut caller).await, (for_a, "A".into()));
    yield_to(&mut b, b3, "B").await;
    assert_eq!(result(&mut caller).await, (anywhere[1], "B".into()));
    expect_load(&mut admin, id, 0, &[0, 0]).await;
    close([a, b, caller, admin]).await;
    assert_empty(&router).await;
}
