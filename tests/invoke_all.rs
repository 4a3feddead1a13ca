//! Invoke-all (`CALL.Options.runmode: "all"`) through real sockets: every member gets the call,
//! each member's answer reaches the caller as a progressive RESULT naming the member, then one
//! final empty RESULT; errors, members leaving, cancel and timeout end the call exactly once, and
//! the router holds nothing afterwards.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

const PROCEDURE: &str = "com.example.all";

/// `n` raw member sessions registered for [`PROCEDURE`] under `options`, announcing `features`.
async fn members(router: &roundhouse::RouterHandle, n: usize, options: Dict, features: &[&str]) -> Vec<Client> {
    let mut members = Vec::new();
    for _ in 0..n {
        let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
        client.hello_with_features(REALM, features).await.unwrap();
        client.register(PROCEDURE, options.clone()).await.unwrap();
        members.push(client);
    }
    members
}

fn all_options() -> Dict {
    Dict::new().with("runmode", "all").with("receive_progress", true)
}

async fn send_all_call(caller: &mut Client, options: Dict) -> u64 {
    let request = caller.request_id();
    let payload = Payload::args(vec![Value::from("hi")]);
    caller.send(&Message::Call { request, options, procedure: PROCEDURE.into(), payload }).await.unwrap();
    request
}

/// The INVOCATION a member received: its id, and checks it carries the caller's arguments and
/// does not offer the member progressive results.
async fn invocation(member: &mut Client) -> u64 {
    match member.recv().await.unwrap() {
        Message::Invocation { request, details, payload, .. } => {
            assert_eq!(first_arg(&payload), "hi");
            assert_eq!(details.get("receive_progress"), None, "members are not offered progress");
            request
        }
        other => panic!("expected INVOCATION, got {other:?}"),
    }
}

async fn yield_name(member: &mut Client, invocation: u64, name: &str) {
    let payload = Payload::args(vec![Value::from(name)]);
    member.send(&Message::Yield { request: invocation, options: Dict::new(), payload }).await.unwrap();
}

/// One progressive RESULT for `request`: (member session id, error URI if any, first argument).
async fn progress(caller: &mut Client, request: u64) -> (u64, Option<String>, String) {
    match caller.recv().await.unwrap() {
        Message::Result { request: r, details, payload } => {
            assert_eq!(r, request);
            assert_eq!(details.get("progress"), Some(&Value::Bool(true)), "{details:?}");
            let callee = details.get("callee").and_then(Value::as_u64).expect("callee disclosed");
            let error = details.get("error").and_then(|e| e.as_str()).map(str::to_owned);
            (callee, error, first_arg(&payload))
        }
        other => panic!("expected a progressive RESULT, got {other:?}"),
    }
}

/// The final RESULT: empty, not progressive.
async fn final_result(caller: &mut Client, request: u64) {
    match caller.recv().await.unwrap() {
        Message::Result { request: r, details, payload } => {
            assert_eq!(r, request);
            assert_eq!(details, Dict::new(), "the final RESULT is empty");
            assert_eq!(payload, Payload::Empty);
        }
        other => panic!("expected the final RESULT, got {other:?}"),
    }
}

/// Nothing more arrives at `client` within a short while.
async fn quiet(client: &mut Client) {
    client.rx.set_timeout(Duration::from_millis(200));
    let got = client.recv().await;
    assert!(got.is_err(), "expected nothing more, got {got:?}");
    client.rx.set_timeout(Duration::from_secs(5));
}

#[tokio::test]
async fn every_member_answers_then_one_final_result() {
    let router = router().await;
    let mut members = members(&router, 3, rule("roundrobin"), &[]).await;
    let ids: Vec<u64> = members.iter().map(Client::session_id).collect();
    let mut caller = join(&router, Serializer::Json).await;
    let request = send_all_call(&mut caller, all_options()).await;
    let mut got = BTreeMap::new();
    // Members answer in reverse order; each answer reaches the caller as it comes.
    let invocations =
        [invocation(&mut members[0]).await, invocation(&mut members[1]).await, invocation(&mut members[2]).await];
    for i in (0..3).rev() {
        yield_name(&mut members[i], invocations[i], &format!("m{i}")).await;
        let (callee, error, name) = progress(&mut caller, request).await;
        assert_eq!((callee, error), (ids[i], None));
        got.insert(callee, name);
    }
    final_result(&mut caller, request).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[&ids[0]], "m0");
    quiet(&mut caller).await;
    drop((caller, members));
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_member_error_is_that_member_s_progressive_result() {
    let router = router().await;
    let mut members = members(&router, 2, rule("random"), &[]).await;
    let ids: Vec<u64> = members.iter().map(Client::session_id).collect();
    let mut caller = join(&router, Serializer::MsgPack).await;
    let request = send_all_call(&mut caller, all_options()).await;
    let first = invocation(&mut members[0]).await;
    let second = invocation(&mut members[1]).await;
    let error = Message::Error {
        request_type: MessageType::Invocation as u64,
        request: second,
        details: Dict::new(),
        error: "com.example.oops".into(),
        payload: Payload::args(vec![Value::from("bad input")]),
    };
    members[1].send(&error).await.unwrap();
    assert_eq!(progress(&mut caller, request).await, (ids[1], Some("com.example.oops".into()), "bad input".into()));
    yield_name(&mut members[0], first, "fine").await;
    assert_eq!(progress(&mut caller, request).await, (ids[0], None, "fine".into()));
    final_result(&mut caller, request).await;
    drop((caller, members));
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_member_leaving_mid_call_answers_canceled_and_the_call_still_ends_once() {
    let router = router().await;
    let mut members = members(&router, 3, rule("roundrobin"), &[]).await;
    let ids: Vec<u64> = members.iter().map(Client::session_id).collect();
    let mut caller = join(&router, Serializer::Json).await;
    let request = send_all_call(&mut caller, all_options()).await;
    let mut invocations = Vec::new();
    for member in members.iter_mut() {
        invocations.push(invocation(member).await);
    }
    yield_name(&mut members[0], invocations[0], "m0").await;
    assert_eq!(progress(&mut caller, request).await, (ids[0], None, "m0".into()));
    // Member 2 drops its connection without answering.
    let leaver = members.remove(2);
    drop(leaver);
    let (callee, error, _) = progress(&mut caller, request).await;
    assert_eq!((callee, error.as_deref()), (ids[2], Some("wamp.error.canceled")));
    yield_name(&mut members[1], invocations[1], "m1").await;
    assert_eq!(progress(&mut caller, request).await, (ids[1], None, "m1".into()));
    final_result(&mut caller, request).await;
    quiet(&mut caller).await;
    drop((caller, members));
    assert_empty(&router).await;
}

/// Members holding the call: CANCEL (or the timeout) ends it at once with its one ERROR, every
/// member that announced call canceling gets INTERRUPT, and late YIELDs reach nobody.
async fn ended_early(options: Dict, cancel: bool, uri: &str) {
    let router = router().await;
    let mut members = members(&router, 3, rule("roundrobin"), &["call_canceling"]).await;
    let mut caller = join(&router, Serializer::Json).await;
    let request = send_all_call(&mut caller, options).await;
    let mut invocations = Vec::new();
    for member in members.iter_mut() {
        invocations.push(invocation(member).await);
    }
    yield_name(&mut members[0], invocations[0], "m0").await;
    assert_eq!(progress(&mut caller, request).await.0, members[0].session_id());
    if cancel {
        caller.send(&Message::Cancel { request, options: Dict::new() }).await.unwrap();
    }
    let reply = caller.recv().await.unwrap();
    assert_error(&reply, MessageType::Call, uri);
    for (i, member) in members.iter_mut().enumerate().skip(1) {
        match member.recv().await.unwrap() {
            Message::Interrupt { request, options } => {
                assert_eq!(request, invocations[i]);
                assert_eq!(options.get("reason").and_then(|r| r.as_str()), Some(uri));
            }
            other => panic!("expected INTERRUPT, got {other:?}"),
        }
        yield_name(member, invocations[i], "late").await;
    }
    quiet(&mut caller).await;
    quiet(&mut members[0]).await;
    drop((caller, members));
    assert_empty(&router).await;
}

#[tokio::test]
async fn cancel_ends_the_call_and_interrupts_every_outstanding_member() {
    ended_early(all_options(), true, "wamp.error.canceled").await;
}

#[tokio::test]
async fn the_timeout_applies_to_every_outstanding_member() {
    ended_early(all_options().with("timeout", 300u64), false, "wamp.error.timeout").await;
}

#[tokio::test]
async fn without_receive_progress_or_with_a_progressive_call_it_is_refused() {
    let router = router().await;
    let mut members = members(&router, 2, rule("roundrobin"), &[]).await;
    let mut caller = join(&router, Serializer::Json).await;
    for options in [
        Dict::new().with("runmode", "all"),
        Dict::new().with("runmode", "all").with("receive_progress", false),
        all_options().with("progress", true),
        all_options().with("_callee", members[0].session_id()),
    ] {
        let request = send_all_call(&mut caller, options.clone()).await;
        let reply = caller.recv().await.unwrap();
        assert_error(&reply, MessageType::Call, "wamp.error.invalid_argument");
        assert!(matches!(reply, Message::Error { request: r, .. } if r == request), "{options:?}");
    }
    quiet(&mut members[0]).await;
    quiet(&mut members[1]).await;
    drop((caller, members));
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_single_registration_gets_one_result_and_the_final_one() {
    let router = router().await;
    let mut members = members(&router, 1, Dict::new(), &[]).await;
    let mut caller = join(&router, Serializer::Cbor).await;
    let request = send_all_call(&mut caller, all_options()).await;
    let id = invocation(&mut members[0]).await;
    yield_name(&mut members[0], id, "only").await;
    assert_eq!(progress(&mut caller, request).await, (members[0].session_id(), None, "only".into()));
    final_result(&mut caller, request).await;
    drop((caller, members));
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_member_at_its_concurrency_limit_answers_no_available_callee() {
    let router = router().await;
    let options = rule("roundrobin").with("concurrency", 1u64);
    let mut members = members(&router, 2, options, &[]).await;
    let ids: Vec<u64> = members.iter().map(Client::session_id).collect();
    let mut caller = join(&router, Serializer::Json).await;
    // An ordinary call takes member 0's only slot.
    let held_request = send_call(&mut caller, PROCEDURE).await;
    let held = match members[0].recv().await.unwrap() {
        Message::Invocation { request, .. } => request,
        other => panic!("expected INVOCATION, got {other:?}"),
    };
    let request = send_all_call(&mut caller, all_options()).await;
    assert_eq!(
        progress(&mut caller, request).await,
        (ids[0], Some("wamp.error.no_available_callee".into()), "the member is at its concurrency limit".into())
    );
    let id = invocation(&mut members[1]).await;
    yield_name(&mut members[1], id, "m1").await;
    assert_eq!(progress(&mut caller, request).await, (ids[1], None, "m1".into()));
    final_result(&mut caller, request).await;
    yield_name(&mut members[0], held, "held").await;
    match caller.recv().await.unwrap() {
        Message::Result { request, details, .. } => {
            assert_eq!(request, held_request);
            assert_eq!(details, Dict::new());
        }
        other => panic!("expected the held call's RESULT, got {other:?}"),
    }
    drop((caller, members));
    assert_empty(&router).await;
}

#[tokio::test]
async fn the_dealer_announces_runmode_all() {
    let router = router().await;
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    client
        .send(&Message::Hello {
            realm: REALM.into(),
            details: Dict::new().with("roles", Dict::new().with("caller", Dict::new())),
        })
        .await
        .unwrap();
    match client.recv().await.unwrap() {
        Message::Welcome { details, .. } => {
            let features = details
                .get("roles")
                .and_then(|r| r.as_dict())
                .and_then(|r| r.get("dealer"))
                .and_then(|d| d.as_dict())
                .and_then(|d| d.get("features"))
                .and_then(|f| f.as_dict())
                .expect("dealer features");
            assert_eq!(features.get("_runmode_all"), Some(&Value::Bool(true)));
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
    drop(client);
    assert_empty(&router).await;
}

/// A member whose outbound queue is full (it stopped reading) does not hold up the others: they
/// get their INVOCATIONs and answer while it waits, and once it is gone its result ends the call.
#[tokio::test]
async fn a_member_with_a_full_queue_does_not_delay_the_others() {
    let router = router_with(|c| c.max_outbound_bytes = 1024).await;
    let mut members = members(&router, 2, rule("roundrobin"), &[]).await;
    let (stuck, mut fine) = (members.remove(0), members.remove(0));
    // Fill the first member's queue: big calls to it alone, from a caller that will wait.
    let mut filler = join(&router, Serializer::MsgPack).await;
    let target = stuck.session_id();
    let filling = tokio::spawn(async move {
        for _ in 0..64 {
            let request = filler.request_id();
            let options = Dict::new().with("_callee", target);
            let payload = Payload::args(vec![Value::Bytes(vec![0xab; 256 * 1024])]);
            filler.send(&Message::Call { request, options, procedure: PROCEDURE.into(), payload }).await.unwrap();
        }
        filler
    });
    for _ in 0..500 {
        if router.census().queued_bytes > 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(router.census().queued_bytes > 1024, "the first member's queue is full");

    let mut caller = join(&router, Serializer::Json).await;
    let request = send_all_call(&mut caller, all_options()).await;
    // Well before the stuck member would be closed (`stuck_timeout_ms`, 10 s).
    let invoked = tokio::time::timeout(Duration::from_secs(2), invocation(&mut fine)).await;
    let invoked = invoked.expect("the second member is not held up by the first one's full queue");
    yield_name(&mut fine, invoked, "fine").await;
    assert_eq!(progress(&mut caller, request).await, (fine.session_id(), None, "fine".into()));

    drop(stuck);
    let (member, error, _) = progress(&mut caller, request).await;
    // Still waiting for room when it left, or (had its queue drained a little) queued there.
    assert_eq!(member, target);
    assert!(matches!(error.as_deref(), Some("wamp.error.no_available_callee" | "wamp.error.canceled")), "{error:?}");
    final_result(&mut caller, request).await;
    drop(filling.await.unwrap());
    say_goodbye(caller).await;
    say_goodbye(fine).await;
    assert_empty(&router).await;
}
