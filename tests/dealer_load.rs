//! The load-aware rules through real sockets: `queue_least_loaded` (alias `least_loaded`) and
//! `queue_least_loaded_sample` pick by the router's own count of calls in flight per member, and
//! the contract's rules, given per-member `concurrency`, pick among the members with a free slot
//! (round-robin keeping its exact position among them).

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::Client;
use roundhouse::dealer::rule::{jump_consistent_hash, rkey_hash};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};

const P: &str = "com.example.balanced";

/// Members of one registration, each a client that answers only when told.
struct Members {
    clients: Vec<Client>,
}

impl Members {
    async fn join(router: &roundhouse::RouterHandle, options: &[Dict]) -> (Members, u64) {
        let mut clients = Vec::new();
        let mut id = 0;
        for options in options {
            let mut client = join(router, Serializer::Json).await;
            id = client.register(P, options.clone()).await.unwrap();
            clients.push(client);
        }
        (Members { clients }, id)
    }

    /// Sends a CALL and returns which member (by index) got its INVOCATION, and the invocation id.
    async fn call(&mut self, caller: &mut Client) -> (usize, u64) {
        send_call(caller, P).await;
        self.receive().await
    }

    /// Which member got the next INVOCATION, and its id.
    async fn receive(&mut self) -> (usize, u64) {
        let receives = self.clients.iter_mut().enumerate().map(|(i, c)| {
            Box::pin(async move {
                match c.recv().await {
                    Ok(Message::Invocation { request, .. }) => (i, request),
                    other => panic!("member {i}: expected INVOCATION, got {other:?}"),
                }
            })
        });
        let (got, _, _) = futures_util::future::select_all(receives).await;
        got
    }

    async fn answer(&mut self, member: usize, invocation: u64, caller: &mut Client) {
        let payload = Payload::args(vec![Value::from(format!("m{member}"))]);
        self.clients[member]
            .send(&Message::Yield { request: invocation, options: Dict::new(), payload })
            .await
            .unwrap();
        match caller.recv().await.unwrap() {
            Message::Result { payload, .. } => assert_eq!(first_arg(&payload), format!("m{member}")),
            other => panic!("expected RESULT, got {other:?}"),
        }
    }

    async fn add(&mut self, router: &roundhouse::RouterHandle, options: Dict) {
        let mut client = join(router, Serializer::Json).await;
        client.register(P, options).await.unwrap();
        self.clients.push(client);
    }

    async fn quiet(&mut self) {
        for (i, c) in self.clients.iter_mut().enumerate() {
            if let Ok(message) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await {
                panic!("member {i} got {message:?}");
            }
        }
    }

    async fn leave(self) {
        for client in self.clients {
            say_goodbye(client).await;
        }
    }
}

fn invoke(rule: &str) -> Dict {
    Dict::new().with("invoke", rule)
}

#[tokio::test]
async fn least_loaded_goes_to_the_fewest_in_flight_ties_in_registration_order() {
    for name in ["queue_least_loaded", "least_loaded"] {
        let router = router().await;
        let (mut members, id) = Members::join(&router, &[invoke(name), invoke(name), invoke(name)]).await;
        let mut caller = join(&router, Serializer::Json).await;
        // All idle: the earliest. Then the others, one call each.
        let (m, first) = members.call(&mut caller).await;
        assert_eq!(m, 0);
        assert_eq!(members.call(&mut caller).await.0, 1);
        assert_eq!(members.call(&mut caller).await.0, 2);
        // Member 0 answers: it is the least loaded again, twice over (then a tie at 1 goes to it).
        members.answer(0, first, &mut caller).await;
        assert_eq!(members.call(&mut caller).await.0, 0);
        assert_eq!(members.call(&mut caller).await.0, 0);
        assert_eq!(members.call(&mut caller).await.0, 1);
        members.quiet().await;

        let mut admin = join(&router, Serializer::Json).await;
        let details = admin.call("wamp.registration.get", vec![Value::UInt(id)]).await.unwrap();
        let details = details.to_values().unwrap().0.remove(0);
        let invoke = details.as_dict().unwrap().get("invoke").and_then(Value::as_str).map(str::to_owned);
        assert_eq!(invoke.as_deref(), Some("queue_least_loaded"), "the alias is the same rule");
        say_goodbye(admin).await;
        drop(caller);
        members.leave().await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn least_loaded_sample_picks_the_less_loaded_of_two() {
    let router = router().await;
    let rule = invoke("queue_least_loaded_sample");
    // With two members the sample is both of them: the choice is exact.
    let (mut members, _) = Members::join(&router, &[rule.clone(), rule]).await;
    let mut caller = join(&router, Serializer::Json).await;
    let (m0, a) = members.call(&mut caller).await;
    assert_eq!(m0, 0, "a tie goes to the earlier member");
    let (m1, _) = members.call(&mut caller).await;
    assert_eq!(m1, 1);
    members.answer(0, a, &mut caller).await;
    assert_eq!(members.call(&mut caller).await.0, 0);
    assert_eq!(members.call(&mut caller).await.0, 0);
    assert_eq!(members.call(&mut caller).await.0, 1);
    drop(caller);
    members.leave().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn least_loaded_sample_spreads_over_many_members() {
    let router = router().await;
    let rule = invoke("queue_least_loaded_sample");
    let (mut members, _) = Members::join(&router, &vec![rule; 4]).await;
    let mut caller = join(&router, Serializer::Json).await;
    let mut held = [0usize; 4];
    for _ in 0..40 {
        held[members.call(&mut caller).await.0] += 1;
    }
    // Two choices keep the spread within a few calls of even (never one member taking all).
    for (i, n) in held.iter().enumerate() {
        assert!((4..=16).contains(n), "member {i} holds {n} of 40: {held:?}");
    }
    drop(caller);
    members.leave().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn roundrobin_passes_over_a_full_member_and_keeps_its_position() {
    let router = router().await;
    let free = invoke("roundrobin");
    let limited = invoke("roundrobin").with("concurrency", 1u64);
    let (mut members, _) = Members::join(&router, &[free.clone(), limited, free]).await;
    let mut caller = join(&router, Serializer::Json).await;
    let (_, a) = members.call(&mut caller).await;
    members.answer(0, a, &mut caller).await;
    let mut order = vec![0];
    // Member 1 keeps its first call: from then on its turns pass to the next member.
    for _ in 0..5 {
        order.push(members.call(&mut caller).await.0);
    }
    assert_eq!(order, [0, 1, 2, 0, 2, 0]);
    drop(caller);
    members.leave().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn first_last_and_random_pick_among_members_with_a_free_slot() {
    for (rule, expected) in [("first", [0, 1, 2]), ("last", [2, 1, 0])] {
        let router = router().await;
        let options = invoke(rule).with("concurrency", 1u64);
        let (mut members, _) = Members::join(&router, &vec![options; 3]).await;
        let mut caller = join(&router, Serializer::Json).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(members.call(&mut caller).await.0);
        }
        assert_eq!(got, expected, "{rule}");
        drop(caller);
        members.leave().await;
        assert_empty(&router).await;
    }
    let router = router().await;
    let options = invoke("random").with("concurrency", 2u64);
    let (mut members, _) = Members::join(&router, &vec![options; 3]).await;
    let mut caller = join(&router, Serializer::Json).await;
    let mut held = [0usize; 3];
    for _ in 0..6 {
        held[members.call(&mut caller).await.0] += 1;
    }
    assert_eq!(held, [2, 2, 2], "random never exceeds a member's limit while others have room");
    drop(caller);
    members.leave().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn a_targeted_call_goes_to_the_named_member_or_fails() {
    let router = router().await;
    let rule = invoke("roundrobin");
    let (mut members, _) = Members::join(&router, &[rule.clone(), rule.clone(), rule]).await;
    let sessions: Vec<u64> = members.clients.iter().map(Client::session_id).collect();
    let mut caller = join(&router, Serializer::Json).await;
    let targeted = |caller: &mut Client, callee: Value| {
        let request = caller.request_id();
        let options = Dict::new().with("_callee", callee);
        (request, Message::Call { request, options, procedure: P.into(), payload: Payload::Empty })
    };
    for target in [2, 2, 0, 1, 1] {
        let (_, call) = targeted(&mut caller, Value::UInt(sessions[target]));
        caller.send(&call).await.unwrap();
        let (member, invocation) = members.receive().await;
        assert_eq!(member, target);
        members.answer(member, invocation, &mut caller).await;
    }
    // The rule's rotation is untouched by targeted calls.
    assert_eq!(members.call(&mut caller).await.0, 0);
    let outsider = join(&router, Serializer::Json).await;
    for (callee, uri) in [
        (Value::UInt(outsider.session_id()), "wamp.error.no_available_callee"),
        (Value::UInt(123_456_789), "wamp.error.no_available_callee"),
        (Value::from("someone"), "wamp.error.invalid_argument"),
    ] {
        let (request, call) = targeted(&mut caller, callee);
        caller.send(&call).await.unwrap();
        let reply = caller.recv().await.unwrap();
        assert_error(&reply, MessageType::Call, uri);
        assert!(matches!(reply, Message::Error { request: r, .. } if r == request));
    }
    members.quiet().await;
    say_goodbye(outsider).await;
    drop(caller);
    members.leave().await;
    assert_empty(&router).await;
}

async fn keyed_call(caller: &mut Client, options: Dict) -> u64 {
    let request = caller.request_id();
    caller.send(&Message::Call { request, options, procedure: P.into(), payload: Payload::Empty }).await.unwrap();
    request
}

async fn refused(caller: &mut Client, options: Dict, uri: &str) {
    let request = keyed_call(caller, options).await;
    let reply = caller.recv().await.unwrap();
    assert_error(&reply, MessageType::Call, uri);
    assert!(matches!(reply, Message::Error { request: r, .. } if r == request));
}

fn bucket(key: &str, members: usize) -> usize {
    jump_consistent_hash(rkey_hash(&Value::from(key)).unwrap(), members)
}

/// Each key goes to the member jump consistent hash names, every time; a new member takes only
/// the keys that now hash to it.
async fn sticky(rule: &str, extra: Dict) {
    let router = router().await;
    let (mut members, _) = Members::join(&router, &vec![invoke(rule); 3]).await;
    let mut caller = join(&router, Serializer::Json).await;
    let keys: Vec<String> = (0..24).map(|k| format!("user-{k}")).collect();
    for _ in 0..2 {
        for key in &keys {
            keyed_call(&mut caller, extra.clone().with("rkey", key.as_str())).await;
            let (member, invocation) = members.receive().await;
            assert_eq!(member, bucket(key, 3), "{rule}: {key}");
            members.answer(member, invocation, &mut caller).await;
        }
    }
    keyed_call(&mut caller, extra.clone().with("rkey", 7u64)).await;
    let (member, invocation) = members.receive().await;
    assert_eq!(member, bucket("7", 3), "an integer key is its decimal form");
    members.answer(member, invocation, &mut caller).await;

    members.add(&router, invoke(rule)).await;
    let mut moved = 0;
    for key in &keys {
        keyed_call(&mut caller, extra.clone().with("rkey", key.as_str())).await;
        let (member, invocation) = members.receive().await;
        assert_eq!(member, bucket(key, 4), "{rule}: {key} with four members");
        if member != bucket(key, 3) {
            assert_eq!(member, 3, "a key that moves, moves to the newcomer");
            moved += 1;
        }
        members.answer(member, invocation, &mut caller).await;
    }
    assert!(moved < keys.len() / 2, "{moved} of {} keys moved", keys.len());

    refused(&mut caller, extra.clone(), "wamp.error.invalid_argument").await;
    refused(&mut caller, extra.clone().with("rkey", true), "wamp.error.invalid_argument").await;
    members.quiet().await;
    drop(caller);
    members.leave().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn jump_consistent_hash_sticks_each_rkey_to_one_member() {
    sticky("jump_consistent_hash", Dict::new()).await;
}

#[tokio::test]
async fn runmode_partition_routes_any_shared_registration_by_rkey() {
    sticky("roundrobin", Dict::new().with("runmode", "partition")).await;
    let router = router().await;
    let (mut members, _) = Members::join(&router, &[invoke("random"), invoke("random")]).await;
    let mut caller = join(&router, Serializer::Json).await;
    refused(&mut caller, Dict::new().with("runmode", "everywhere"), "wamp.error.invalid_argument").await;
    // Without `runmode` an rkey is ignored by the contract's rules.
    keyed_call(&mut caller, Dict::new().with("rkey", "user-1")).await;
    let (member, invocation) = members.receive().await;
    members.answer(member, invocation, &mut caller).await;
    drop(caller);
    members.leave().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn welcome_announces_the_dealer_extensions() {
    let router = router().await;
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    let roles = Dict::new().with("caller", Dict::new());
    client.send(&Message::Hello { realm: REALM.into(), details: Dict::new().with("roles", roles) }).await.unwrap();
    let Message::Welcome { details, .. } = client.recv().await.unwrap() else { panic!("expected WELCOME") };
    let roles = details.get("roles").and_then(Value::as_dict).unwrap();
    let dealer = roles.get("dealer").and_then(Value::as_dict).unwrap();
    let features = dealer.get("features").and_then(Value::as_dict).unwrap();
    for feature in [
        "_concurrency",
        "_invoke_queue_least_loaded",
        "_invoke_jump_consistent_hash",
        "_callee_targeting",
        "_force_reregister",
    ] {
        assert_eq!(features.get(feature), Some(&Value::Bool(true)), "{feature}");
    }
    assert_eq!(features.get("_invoke_all"), None, "invoke-all is not implemented");
    say_goodbye(client).await;
    assert_empty(&router).await;
}
