//! The five invocation rules, asserted exactly over real sockets, for both serializers.

mod common;

use common::*;
use roundhouse::wire::{MessageType, Serializer};

async fn callees(router: &roundhouse::RouterHandle, ser: Serializer, rule_name: &str, names: &[&str]) -> Vec<Callee> {
    let mut out = Vec::new();
    for name in names {
        out.push(Callee::start(router, ser, name, "com.example.work", rule(rule_name), Behavior::Name).await);
    }
    out
}

async fn stop(callees: Vec<Callee>) {
    for callee in callees {
        callee.stop().await;
    }
}

#[tokio::test]
async fn roundrobin_rotates_in_registration_order() {
    for ser in SERIALIZERS {
        let router = router().await;
        let cs = callees(&router, ser, "roundrobin", &["A", "B", "C"]).await;
        assert!(cs.iter().all(|c| c.registration == cs[0].registration), "one shared registration id");
        let mut caller = join(&router, ser).await;
        assert_eq!(call_names(&mut caller, "com.example.work", 7).await, ["A", "B", "C", "A", "B", "C", "A"]);
        say_goodbye(caller).await;
        stop(cs).await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn roundrobin_continues_after_a_join() {
    for ser in SERIALIZERS {
        let router = router().await;
        let mut cs = callees(&router, ser, "roundrobin", &["A", "B"]).await;
        let mut caller = join(&router, ser).await;
        assert_eq!(call_names(&mut caller, "com.example.work", 3).await, ["A", "B", "A"]);
        cs.extend(callees(&router, ser, "roundrobin", &["C"]).await);
        assert_eq!(call_names(&mut caller, "com.example.work", 4).await, ["B", "C", "A", "B"]);
        say_goodbye(caller).await;
        stop(cs).await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn roundrobin_continues_after_each_kind_of_leave() {
    for how in [Leave::Unregister, Leave::Goodbye, Leave::Drop] {
        let router = router().await;
        let cs = callees(&router, Serializer::Json, "roundrobin", &["A", "B", "C"]).await;
        let mut caller = join(&router, Serializer::Json).await;
        assert_eq!(call_names(&mut caller, "com.example.work", 4).await, ["A", "B", "C", "A"]);
        cs[2].leave(how).await;
        wait_members(&router, "com.example.work", 2).await;
        assert_eq!(call_names(&mut caller, "com.example.work", 3).await, ["B", "A", "B"], "{how:?}");
        say_goodbye(caller).await;
        stop(cs).await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn first_fails_over_to_the_next_in_order() {
    for how in [Leave::Unregister, Leave::Goodbye, Leave::Drop] {
        for ser in SERIALIZERS {
            let router = router().await;
            let cs = callees(&router, ser, "first", &["A", "B", "C"]).await;
            let mut caller = join(&router, ser).await;
            assert_eq!(call_names(&mut caller, "com.example.work", 3).await, ["A", "A", "A"]);
            cs[0].leave(how).await;
            wait_members(&router, "com.example.work", 2).await;
            assert_eq!(call_names(&mut caller, "com.example.work", 2).await, ["B", "B"], "{how:?}");
            let newcomer = callees(&router, ser, "first", &["D"]).await;
            assert_eq!(call_names(&mut caller, "com.example.work", 1).await, ["B"], "newcomers are appended");
            cs[1].leave(how).await;
            wait_members(&router, "com.example.work", 2).await;
            assert_eq!(call_names(&mut caller, "com.example.work", 1).await, ["C"]);
            say_goodbye(caller).await;
            stop(newcomer).await;
            stop(cs).await;
            assert_empty(&router).await;
        }
    }
}

#[tokio::test]
async fn last_fails_over_to_the_previous_in_order() {
    for how in [Leave::Unregister, Leave::Goodbye, Leave::Drop] {
        for ser in SERIALIZERS {
            let router = router().await;
            let cs = callees(&router, ser, "last", &["A", "B", "C"]).await;
            let mut caller = join(&router, ser).await;
            assert_eq!(call_names(&mut caller, "com.example.work", 2).await, ["C", "C"]);
            cs[2].leave(how).await;
            wait_members(&router, "com.example.work", 2).await;
            assert_eq!(call_names(&mut caller, "com.example.work", 2).await, ["B", "B"], "{how:?}");
            let d = callees(&router, ser, "last", &["D"]).await;
            assert_eq!(call_names(&mut caller, "com.example.work", 1).await, ["D"], "the newcomer is last");
            say_goodbye(caller).await;
            stop(d).await;
            stop(cs).await;
            assert_empty(&router).await;
        }
    }
}

#[tokio::test]
async fn random_spreads_over_every_member() {
    for ser in SERIALIZERS {
        let router = router().await;
        let cs = callees(&router, ser, "random", &["A", "B", "C"]).await;
        let mut caller = join(&router, ser).await;
        let names = call_names(&mut caller, "com.example.work", 600).await;
        for name in ["A", "B", "C"] {
            let n = names.iter().filter(|x| *x == name).count();
            // Binomial(600, 1/3): mean 200, sd 11.5; 120..280 is ~7 sd either way.
            assert!((120..280).contains(&n), "{name} served {n} of 600");
        }
        say_goodbye(caller).await;
        stop(cs).await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn single_serves_its_only_callee_and_refuses_a_second() {
    for ser in SERIALIZERS {
        let router = router().await;
        let a =
            Callee::start(&router, ser, "A", "com.example.one", roundhouse::wire::Dict::new(), Behavior::Name).await;
        let mut other = join(&router, ser).await;
        let refused = unexpected(other.register("com.example.one", rule("single")).await);
        assert_error(&refused, MessageType::Register, "wamp.error.procedure_already_exists");
        let refused = unexpected(other.register("com.example.one", rule("roundrobin")).await);
        assert_error(&refused, MessageType::Register, "wamp.error.procedure_already_exists");
        let mut caller = join(&router, ser).await;
        assert_eq!(call_names(&mut caller, "com.example.one", 2).await, ["A", "A"]);
        say_goodbye(caller).await;
        say_goodbye(other).await;
        a.stop().await;
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn a_different_rule_on_a_shared_registration_is_refused() {
    let router = router().await;
    let a = Callee::start(&router, Serializer::Json, "A", "com.example.p", rule("roundrobin"), Behavior::Name).await;
    let mut other = join(&router, Serializer::MsgPack).await;
    for options in [rule("first"), rule("single"), roundhouse::wire::Dict::new()] {
        let refused = unexpected(other.register("com.example.p", options).await);
        assert_error(&refused, MessageType::Register, "wamp.error.procedure_exists_with_different_invocation_policy");
        let roundhouse::wire::Message::Error { payload, .. } = refused else { unreachable!() };
        assert!(first_arg(&payload).contains("'roundrobin'"), "the error says which rule exists");
    }
    say_goodbye(other).await;
    a.stop().await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn an_unknown_rule_is_an_invalid_argument_and_registers_nothing() {
    let router = router().await;
    let mut callee = join(&router, Serializer::Json).await;
    let refused = unexpected(callee.register("com.example.p", rule("bogus")).await);
    assert_error(&refused, MessageType::Register, "wamp.error.invalid_argument");
    let refused = unexpected(callee.call("com.example.p", vec![]).await);
    assert_error(&refused, MessageType::Call, "wamp.error.no_such_procedure");
    say_goodbye(callee).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn registering_twice_in_a_shared_registration_keeps_one_place() {
    let router = router().await;
    let mut a = join(&router, Serializer::Json).await;
    let first = a.register("com.example.p", rule("roundrobin")).await.unwrap();
    let second = a.register("com.example.p", rule("roundrobin")).await.unwrap();
    assert_eq!(first, second);
    let reg = router.shared().realms[REALM].dealer.registry().get(first).unwrap();
    assert_eq!(reg.members().len(), 1);
    drop(reg);
    say_goodbye(a).await;
    assert_empty(&router).await;
}

/// Waits until the router shows `n` members (a drop is noticed asynchronously).
async fn wait_members(router: &roundhouse::RouterHandle, procedure: &str, n: usize) {
    let registry = router.shared().realms[REALM].dealer.registry();
    for _ in 0..500 {
        if registry.lookup(procedure).map_or(0, |r| r.members().len()) == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{procedure} never got to {n} members");
}
