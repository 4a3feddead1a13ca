//! The dealer across a cluster, through a real nats-server: registrations shared by nodes and kept
//! exact (`single`, the rule check, member order, every rule), calls from one node to a callee on
//! another (results, progressive results and invocations, cancel in every mode, timeouts,
//! disclosure, errors, reroute, invoke-all, patterns, meta events), and what happens when a
//! callee's node crashes, a node is cut off from NATS (rejoin or fence), NATS restarts, or two of
//! three NATS servers are lost.

mod common;

use std::time::Duration;

use common::nats::{cluster_router, NatsServer, LEASE_MS};
use common::{assert_error, first_arg, rule, Behavior, Callee, REALM};
use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};
use roundhouse::RouterHandle;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(5);

fn cluster_name() -> String {
    format!("d{}", fastrand::u32(..))
}

async fn nodes(nats: &NatsServer, cluster: &str, names: &[&str]) -> Vec<RouterHandle> {
    let mut routers = Vec::new();
    for name in names {
        routers.push(cluster_router(&nats.url(), cluster, name, |_| {}).await);
    }
    routers
}

async fn join(router: &RouterHandle, features: &[&str]) -> Client {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.expect("connects");
    client.hello_with_features(REALM, features).await.expect("joins");
    client
}

/// Waits until `router`'s view shows `procedure` with `members` members.
async fn wait_members(router: &RouterHandle, procedure: &str, members: usize) {
    let realm = router.shared().realms.get(REALM).unwrap().clone();
    timeout(WAIT, async {
        loop {
            let count = realm.dealer.lookup(procedure).map_or(0, |(r, _)| r.members().len());
            if count == members {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{procedure} does not reach {members} members"));
}

/// The member session ids of `procedure` in `router`'s view, in order.
fn members(router: &RouterHandle, procedure: &str) -> Vec<u64> {
    let realm = router.shared().realms.get(REALM).unwrap().clone();
    realm.dealer.lookup(procedure).map_or(Vec::new(), |(r, _)| r.members().iter().map(|c| c.session.id).collect())
}

async fn recv(client: &mut Client) -> Message {
    timeout(WAIT, client.recv()).await.expect("a message in time").expect("the session is up")
}

fn args(payload: &Payload) -> Vec<Value> {
    payload.to_values().expect("payload decodes").0
}

#[tokio::test]
async fn a_call_reaches_a_callee_on_another_node_and_its_answers_come_back() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);

    let features = ["progressive_call_results", "call_canceling"];
    let mut callee = join(n2, &features).await;
    let registration =
        callee.register("com.example.work", Dict::new().with("disclose_caller", true)).await.expect("registers");
    wait_members(n1, "com.example.work", 1).await;
    let mut caller = join(n1, &features).await;

    // A plain call, with the caller disclosed (the callee asked) and the arguments passed through.
    let request = caller.request_id();
    let call = Message::Call {
        request,
        options: Dict::new().with("receive_progress", true),
        procedure: "com.example.work".into(),
        payload: Payload::Values(vec![Value::from("x"), Value::UInt(7)], None),
    };
    caller.send(&call).await.unwrap();
    let Message::Invocation { request: invocation, registration: r, details, payload } = recv(&mut callee).await else {
        panic!("INVOCATION expected")
    };
    assert_eq!(r, registration);
    assert_eq!(args(&payload), vec![Value::from("x"), Value::UInt(7)]);
    assert_eq!(details.get("caller").and_then(Value::as_u64), Some(caller.session_id()));
    assert_eq!(details.get("receive_progress").and_then(Value::as_bool), Some(true));
    // Two progressive results, then the final one.
    for step in 0..2u64 {
        let options = Dict::new().with("progress", true);
        let payload = Payload::args(vec![Value::UInt(step)]);
        callee.send(&Message::Yield { request: invocation, options, payload }).await.unwrap();
        let Message::Result { request: got, details, payload } = recv(&mut caller).await else { panic!() };
        assert_eq!((got, details.get("progress").and_then(Value::as_bool)), (request, Some(true)));
        assert_eq!(args(&payload), vec![Value::UInt(step)]);
    }
    callee
        .send(&Message::Yield {
            request: invocation,
            options: Dict::new(),
            payload: Payload::args(vec![Value::from("done")]),
        })
        .await
        .unwrap();
    let Message::Result { request: got, details, payload } = recv(&mut caller).await else { panic!() };
    assert_eq!(got, request);
    assert!(details.get("progress").is_none());
    assert_eq!(first_arg(&payload), "done");

    // The callee's error, passed through with its arguments.
    let request = caller.request_id();
    let call =
        Message::Call { request, options: Dict::new(), procedure: "com.example.work".into(), payload: Payload::Empty };
    caller.send(&call).await.unwrap();
    let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else { panic!() };
    let error = Message::Error {
        request_type: MessageType::Invocation as u64,
        request: invocation,
        details: Dict::new(),
        error: "com.example.error.bad".into(),
        payload: Payload::args(vec![Value::from("why")]),
    };
    callee.send(&error).await.unwrap();
    let reply = recv(&mut caller).await;
    assert_error(&reply, MessageType::Call, "com.example.error.bad");
    let Message::Error { payload, .. } = reply else { unreachable!() };
    assert_eq!(first_arg(&payload), "why");

    drop((caller, callee));
    for router in routers {
        router.shutdown().await;
    }
}

/// Sends a CALL and returns its request id.
async fn send_call(client: &mut Client, procedure: &str, options: Dict) -> u64 {
    let request = client.request_id();
    let call = Message::Call { request, options, procedure: procedure.into(), payload: Payload::Empty };
    client.send(&call).await.unwrap();
    request
}

async fn cancel(client: &mut Client, request: u64, mode: &str) {
    client.send(&Message::Cancel { request, options: Dict::new().with("mode", mode) }).await.unwrap();
}

#[tokio::test]
async fn cancels_and_timeouts_work_across_nodes() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    let mut callee = join(n2, &["call_canceling"]).await;
    callee.register("com.example.slow", Dict::new()).await.expect("registers");
    wait_members(n1, "com.example.slow", 1).await;
    let mut caller = join(n1, &[]).await;

    // skip: the caller is answered at once; the callee is not told.
    let request = send_call(&mut caller, "com.example.slow", Dict::new()).await;
    let Message::Invocation { request: skipped, .. } = recv(&mut callee).await else { panic!() };
    cancel(&mut caller, request, "skip").await;
    assert_error(&recv(&mut caller).await, MessageType::Call, "wamp.error.canceled");

    // killnowait: the caller is answered at once, the callee interrupted.
    let request = send_call(&mut caller, "com.example.slow", Dict::new()).await;
    let invocation = match recv(&mut callee).await {
        Message::Invocation { request, .. } => request,
        other => panic!("skip must not interrupt the callee; got {other:?}"),
    };
    assert_ne!(invocation, skipped);
    cancel(&mut caller, request, "killnowait").await;
    assert_error(&recv(&mut caller).await, MessageType::Call, "wamp.error.canceled");
    let Message::Interrupt { request: interrupted, options } = recv(&mut callee).await else { panic!() };
    assert_eq!((interrupted, options.get("mode").and_then(Value::as_str)), (invocation, Some("killnowait")));

    // kill: the callee is interrupted and its answer is the caller's.
    let request = send_call(&mut caller, "com.example.slow", Dict::new()).await;
    let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else { panic!() };
    cancel(&mut caller, request, "kill").await;
    let Message::Interrupt { request: interrupted, options } = recv(&mut callee).await else { panic!() };
    assert_eq!((interrupted, options.get("mode").and_then(Value::as_str)), (invocation, Some("kill")));
    let error = Message::Error {
        request_type: MessageType::Invocation as u64,
        request: invocation,
        details: Dict::new(),
        error: "wamp.error.canceled".into(),
        payload: Payload::args(vec![Value::from("stopped by the callee")]),
    };
    callee.send(&error).await.unwrap();
    let reply = recv(&mut caller).await;
    assert_error(&reply, MessageType::Call, "wamp.error.canceled");
    let Message::Error { payload, .. } = reply else { unreachable!() };
    assert_eq!(first_arg(&payload), "stopped by the callee");

    // A timeout is kept by the caller's node, which interrupts the callee.
    let started = Instant::now();
    send_call(&mut caller, "com.example.slow", Dict::new().with("timeout", 200u64)).await;
    let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else { panic!() };
    assert_error(&recv(&mut caller).await, MessageType::Call, "wamp.error.timeout");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let Message::Interrupt { request: interrupted, .. } = recv(&mut callee).await else { panic!() };
    assert_eq!(interrupted, invocation);

    // The callee leaving mid-call ends the call at once, not at a lease.
    let request = send_call(&mut caller, "com.example.slow", Dict::new()).await;
    let Message::Invocation { .. } = recv(&mut callee).await else { panic!() };
    let left = Instant::now();
    drop(callee);
    let reply = recv(&mut caller).await;
    assert_error(&reply, MessageType::Call, "wamp.error.canceled");
    assert!(matches!(reply, Message::Error { request: r, .. } if r == request));
    assert!(left.elapsed() < Duration::from_millis(LEASE_MS), "canceled at once: {:?}", left.elapsed());

    drop(caller);
    for router in routers {
        router.shutdown().await;
    }
}

#[tokio::test]
async fn single_and_the_rule_check_are_exact_across_nodes() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let mut a = join(&routers[0], &[]).await;
    let mut b = join(&routers[1], &[]).await;
    let mut wins = [0usize; 2];
    for round in 0..100 {
        let procedure = format!("com.example.race{round}");
        // Round 0 mod 4 races two different rules; the others race `single` against `single`.
        let (rule_a, rule_b, loser) = match round % 4 {
            0 => (rule("roundrobin"), rule("first"), "wamp.error.procedure_exists_with_different_invocation_policy"),
            _ => (rule("single"), rule("single"), "wamp.error.procedure_already_exists"),
        };
        let (ra, rb) = tokio::join!(a.register(&procedure, rule_a), b.register(&procedure, rule_b));
        match (ra, rb) {
            (Ok(_), Err(e)) => {
                wins[0] += 1;
                assert_error(&common::unexpected(Err::<u64, _>(e)), MessageType::Register, loser);
            }
            (Err(e), Ok(_)) => {
                wins[1] += 1;
                assert_error(&common::unexpected(Err::<u64, _>(e)), MessageType::Register, loser);
            }
            other => panic!("round {round}: exactly one REGISTER must win, got {other:?}"),
        }
    }
    assert_eq!(wins[0] + wins[1], 100);
    // A loser may register a shared procedure under its rule.
    a.register("com.example.shared", rule("last")).await.expect("registers");
    let refused = b.register("com.example.shared", rule("random")).await;
    assert_error(
        &common::unexpected(refused),
        MessageType::Register,
        "wamp.error.procedure_exists_with_different_invocation_policy",
    );
    let joined = b.register("com.example.shared", rule("last")).await.expect("joins");
    assert_eq!(joined, a.register("com.example.shared", rule("last")).await.expect("already in"), "one id");
    drop((a, b));
    for router in routers {
        router.shutdown().await;
    }
}

/// Starts callees concurrently on the given routers (one each), registered to `procedure`.
async fn callees(routers: &[&RouterHandle], procedure: &str, invoke: &str) -> Vec<Callee> {
    let starts = routers.iter().enumerate().map(|(i, router)| {
        let name = format!("c{i}");
        async move { Callee::start(router, Serializer::MsgPack, &name, procedure, rule(invoke), Behavior::Name).await }
    });
    futures_util::future::join_all(starts).await
}

#[tokio::test]
async fn member_order_is_the_same_on_every_node_and_the_rules_use_it() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2", "n3"]).await;
    let (n1, n2, n3) = (&routers[0], &routers[1], &routers[2]);
    let spread = [n1, n2, n3, n1, n2, n3];

    let rr = callees(&spread, "com.example.rr", "roundrobin").await;
    let first = callees(&spread, "com.example.first", "first").await;
    let last = callees(&spread, "com.example.last", "last").await;
    let random = callees(&spread[..3], "com.example.random", "random").await;
    for procedure in ["com.example.rr", "com.example.first", "com.example.last"] {
        for router in &routers {
            wait_members(router, procedure, 6).await;
        }
        let order = members(n1, procedure);
        assert_eq!(order, members(n2, procedure), "{procedure}: n1 and n2 agree");
        assert_eq!(order, members(n3, procedure), "{procedure}: n1 and n3 agree");
    }
    for router in &routers {
        wait_members(router, "com.example.random", 3).await;
    }
    let name_of =
        |callees: &[Callee], session: u64| callees.iter().find(|c| c.session == session).unwrap().name.clone();

    let mut clients = Vec::new();
    for router in &routers {
        clients.push(join(router, &[]).await);
    }
    // first and last: the same member from every node.
    let first_name = name_of(&first, members(n1, "com.example.first")[0]);
    let last_name = name_of(&last, *members(n1, "com.example.last").last().unwrap());
    for client in &mut clients {
        assert_eq!(common::call_names(client, "com.example.first", 3).await, vec![first_name.clone(); 3]);
        assert_eq!(common::call_names(client, "com.example.last", 3).await, vec![last_name.clone(); 3]);
    }
    // roundrobin from one node cycles through the cluster's list, in its order.
    let order: Vec<String> = members(n1, "com.example.rr").iter().map(|s| name_of(&rr, *s)).collect();
    let got = common::call_names(&mut clients[1], "com.example.rr", 12).await;
    let start = order.iter().position(|n| *n == got[0]).unwrap();
    let expected: Vec<String> = (0..12).map(|i| order[(start + i) % 6].clone()).collect();
    assert_eq!(got, expected);
    // random reaches every member, on every node.
    let got = common::call_names(&mut clients[2], "com.example.random", 300).await;
    for callee in &random {
        let n = got.iter().filter(|name| **name == callee.name).count();
        assert!(n >= 50, "{} got {n} of 300 random calls", callee.name);
    }
    // The meta API of any node sees the whole cluster.
    let id = routers[0].shared().realms.get(REALM).unwrap().dealer.lookup("com.example.rr").unwrap().0.id;
    let listed = clients[2].call("wamp.registration.list_callees", vec![Value::UInt(id)]).await.expect("meta call");
    let Value::List(listed) = &args(&listed)[0] else { panic!("a list of callees") };
    let listed: Vec<u64> = listed.iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(listed, members(n1, "com.example.rr"));

    drop(clients);
    for callee in rr.into_iter().chain(first).chain(last).chain(random) {
        callee.stop().await;
    }
    for router in routers {
        router.shutdown().await;
    }
}

#[tokio::test]
async fn calls_to_a_killed_node_end_canceled_and_the_survivors_serve() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n3"]).await;
    let (n1, n3) = (&routers[0], &routers[1]);
    let mut process = common::nats::NodeProcess::start(&nats.url(), &cluster, "b");
    // The callee on the node that will crash is first; the survivor's is second.
    let mut doomed = Client::join(&process.url, REALM, Serializer::Json).await.expect("joins b");
    doomed.register("com.example.first", rule("first")).await.expect("registers on b");
    wait_members(n1, "com.example.first", 1).await;
    let survivor =
        Callee::start(n3, Serializer::Json, "survivor", "com.example.first", rule("first"), Behavior::Name).await;
    wait_members(n1, "com.example.first", 2).await;

    let mut caller = join(n1, &[]).await;
    let mut requests = Vec::new();
    for _ in 0..3 {
        requests.push(send_call(&mut caller, "com.example.first", Dict::new()).await);
    }
    for _ in 0..3 {
        assert!(matches!(recv(&mut doomed).await, Message::Invocation { .. }), "the calls reach b");
    }
    process.kill();
    let killed = Instant::now();
    // A call sent to b now finds no subscriber: NATS says so at once, long before b's lease ends
    // (which ends the three calls b had taken), and the call goes to the next member: the hot
    // standby serves at once.
    let fast = send_call(&mut caller, "com.example.first", Dict::new()).await;
    let reply = recv(&mut caller).await;
    match &reply {
        Message::Result { request, payload, .. } if *request == fast => {
            assert_eq!(args(payload), vec![Value::from("survivor")])
        }
        other => panic!("expected the survivor's RESULT for the call after the crash, got {other:?}"),
    }
    assert!(killed.elapsed() < Duration::from_millis(LEASE_MS / 2), "no-responders: {:?}", killed.elapsed());
    let mut canceled = Vec::new();
    for _ in 0..3 {
        let reply = timeout(Duration::from_millis(LEASE_MS + 2_000), caller.recv()).await.expect("answered").unwrap();
        assert_error(&reply, MessageType::Call, "wamp.error.canceled");
        let Message::Error { request, .. } = reply else { unreachable!() };
        canceled.push(request);
    }
    canceled.sort_unstable();
    assert_eq!(canceled, requests);
    assert!(killed.elapsed() < Duration::from_millis(LEASE_MS + 1_500), "{:?}", killed.elapsed());
    // b's member is gone from every view; the survivor serves.
    wait_members(n1, "com.example.first", 1).await;
    wait_members(n3, "com.example.first", 1).await;
    assert_eq!(common::call_names(&mut caller, "com.example.first", 2).await, ["survivor", "survivor"]);
    // And the reaper removed it from the registry: a node joining now sees one member.
    let late = cluster_router(&nats.url(), &cluster, "n4", |_| {}).await;
    wait_members(&late, "com.example.first", 1).await;
    assert_eq!(members(&late, "com.example.first"), vec![survivor.session]);

    drop(caller);
    survivor.stop().await;
    late.shutdown().await;
    for router in routers {
        router.shutdown().await;
    }
}

#[tokio::test]
async fn routing_and_registering_go_on_after_nats_restarts() {
    let Some(mut nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    let callee = Callee::start(n2, Serializer::Json, "callee", "com.example.echo", Dict::new(), Behavior::Name).await;
    wait_members(n1, "com.example.echo", 1).await;
    let mut caller = join(n1, &[]).await;
    assert_eq!(common::call_names(&mut caller, "com.example.echo", 1).await, ["callee"]);

    nats.restart();
    // Calls across nodes work again once the nodes are back on NATS.
    timeout(Duration::from_secs(15), async {
        loop {
            // A call lost with the connection ends at its timeout; the loop tries again.
            let request = send_call(&mut caller, "com.example.echo", Dict::new().with("timeout", 1_000u64)).await;
            match recv(&mut caller).await {
                Message::Result { request: r, payload, .. } if r == request => {
                    assert_eq!(first_arg(&payload), "callee");
                    return;
                }
                reply => assert!(matches!(reply, Message::Error { request: r, .. } if r == request), "{reply:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("remote calls work again after NATS restarted");
    // A new REGISTER on the other node reaches the registry and every view.
    let mut later = join(n1, &[]).await;
    let registered = timeout(Duration::from_secs(15), async {
        loop {
            match later.register("com.example.later", Dict::new()).await {
                Ok(id) => return id,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("REGISTER works again after NATS restarted");
    wait_members(n2, "com.example.later", 1).await;
    assert_eq!(n2.shared().realms.get(REALM).unwrap().dealer.lookup("com.example.later").unwrap().0.id, registered);
    // The registration survived (a node the others took for lost while NATS was away puts its
    // members back).
    wait_members(n1, "com.example.echo", 1).await;
    assert_eq!(members(n1, "com.example.echo"), vec![callee.session]);

    drop((caller, later));
    callee.stop().await;
    for router in routers {
        router.shutdown().await;
    }
}

#[tokio::test]
async fn patterns_progressive_invocations_and_meta_events_across_nodes() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    // A meta subscriber on n1 sees registrations made on n2.
    let mut watcher = join(n1, &[]).await;
    let mut topics = std::collections::HashMap::new();
    for topic in [
        "wamp.registration.on_create",
        "wamp.registration.on_register",
        "wamp.registration.on_unregister",
        "wamp.registration.on_delete",
    ] {
        topics.insert(watcher.subscribe(topic, Dict::new()).await.expect("subscribes"), topic);
    }
    let mut callee = join(n2, &["progressive_call_invocations"]).await;
    let registration = callee.register("com.example", Dict::new().with("match", "prefix")).await.expect("registers");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let Message::Event { subscription, payload, .. } = recv(&mut watcher).await else { panic!("EVENT expected") };
        seen.push((topics[&subscription], args(&payload)));
    }
    let session = Value::UInt(callee.session_id());
    assert_eq!(seen[0].0, "wamp.registration.on_create");
    assert_eq!(seen[0].1[0], session);
    assert_eq!(seen[1], ("wamp.registration.on_register", vec![session.clone(), Value::UInt(registration)]));

    // A call that matches the prefix, sent in two chunks from n1.
    let mut caller = join(n1, &[]).await;
    let request = caller.request_id();
    let chunk = |progress: bool, arg: &str| Message::Call {
        request,
        options: if progress { Dict::new().with("progress", true) } else { Dict::new() },
        procedure: "com.example.deep.name".into(),
        payload: Payload::args(vec![Value::from(arg)]),
    };
    caller.send(&chunk(true, "one")).await.unwrap();
    caller.send(&chunk(false, "two")).await.unwrap();
    let Message::Invocation { request: invocation, details, payload, .. } = recv(&mut callee).await else { panic!() };
    assert_eq!(details.get("procedure").and_then(Value::as_str), Some("com.example.deep.name"));
    assert_eq!(details.get("progress").and_then(Value::as_bool), Some(true));
    assert_eq!(first_arg(&payload), "one");
    let Message::Invocation { request: next, details, payload, .. } = recv(&mut callee).await else { panic!() };
    assert_eq!(next, invocation, "the second chunk continues the same invocation");
    assert!(details.get("progress").is_none());
    assert_eq!(first_arg(&payload), "two");
    callee
        .send(&Message::Yield {
            request: invocation,
            options: Dict::new(),
            payload: Payload::args(vec![Value::from("both")]),
        })
        .await
        .unwrap();
    let Message::Result { request: got, payload, .. } = recv(&mut caller).await else { panic!() };
    assert_eq!((got, first_arg(&payload)), (request, "both".to_owned()));

    // UNREGISTER on n2: n1's subscriber sees the member leave and the registration go.
    callee.unregister(registration).await.expect("unregisters");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let Message::Event { subscription, payload, .. } = recv(&mut watcher).await else { panic!("EVENT expected") };
        seen.push((topics[&subscription], args(&payload)));
    }
    let expected = vec![session, Value::UInt(registration)];
    assert_eq!(
        seen,
        [("wamp.registration.on_unregister", expected.clone()), ("wamp.registration.on_delete", expected)]
    );
    wait_members(n1, "com.example.deep.name", 0).await;
    let request = send_call(&mut caller, "com.example.deep.name", Dict::new()).await;
    let reply = recv(&mut caller).await;
    assert_error(&reply, MessageType::Call, "wamp.error.no_such_procedure");
    assert!(matches!(reply, Message::Error { request: r, .. } if r == request));

    drop((caller, callee, watcher));
    for router in routers {
        router.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_cut_off_from_nats_fails_remote_calls_serves_local_ones_and_comes_back() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let proxy = common::nats::TcpProxy::start(nats.port()).await;
    let n1 = cluster_router(&proxy.url(), &cluster, "n1", |_| {}).await;
    let n2 = cluster_router(&nats.url(), &cluster, "n2", |_| {}).await;
    let mut remote = join(&n2, &[]).await;
    remote.register("com.example.remote", Dict::new()).await.expect("registers on n2");
    let local = Callee::start(&n1, Serializer::Json, "local", "com.example.local", Dict::new(), Behavior::Name).await;
    wait_members(&n1, "com.example.remote", 1).await;
    let mut caller = join(&n1, &[]).await;
    let request = send_call(&mut caller, "com.example.remote", Dict::new()).await;
    assert!(matches!(recv(&mut remote).await, Message::Invocation { .. }));

    proxy.cut();
    let cut = Instant::now();
    let reply = recv(&mut caller).await;
    assert_error(&reply, MessageType::Call, "wamp.error.canceled");
    assert!(matches!(reply, Message::Error { request: r, .. } if r == request));
    assert!(
        cut.elapsed() < Duration::from_millis(LEASE_MS),
        "the call to n2 ends when NATS is lost: {:?}",
        cut.elapsed()
    );
    // Local calls go on; a REGISTER that cannot reach the registry is refused, not left waiting.
    assert_eq!(common::call_names(&mut caller, "com.example.local", 2).await, ["local", "local"]);
    let refused =
        timeout(Duration::from_secs(10), caller.register("com.example.new", Dict::new())).await.expect("answered");
    assert_error(&common::unexpected(refused), MessageType::Register, "wamp.error.network_failure");

    proxy.heal();
    // Back on NATS (after the others reaped it, it puts its members back): calls work both ways.
    let mut other = join(&n2, &[]).await;
    timeout(Duration::from_secs(15), async {
        loop {
            let request = send_call(&mut other, "com.example.local", Dict::new().with("timeout", 1_000u64)).await;
            match recv(&mut other).await {
                Message::Result { request: r, payload, .. } if r == request => {
                    assert_eq!(first_arg(&payload), "local");
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("n2 reaches n1's callee again after the cut healed");
    timeout(Duration::from_secs(15), async {
        while caller.register("com.example.new", Dict::new()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("REGISTER works again after the cut healed");
    wait_members(&n2, "com.example.new", 1).await;

    drop((caller, other, remote));
    local.stop().await;
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn invoke_all_and_call_reroute_span_nodes() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    let all = callees(&[n1, n2], "com.example.all", "roundrobin").await;
    // A member on n2 that is always unavailable, registered first; the one on n1 serves.
    let mut busy = join(n2, &[]).await;
    busy.register("com.example.busy", rule("first")).await.expect("registers");
    wait_members(n1, "com.example.busy", 1).await;
    let server = Callee::start(n1, Serializer::Json, "server", "com.example.busy", rule("first"), Behavior::Name).await;
    wait_members(n1, "com.example.all", 2).await;
    wait_members(n1, "com.example.busy", 2).await;
    let mut caller = join(n1, &[]).await;

    let options = Dict::new().with("runmode", "all").with("receive_progress", true);
    let request = send_call(&mut caller, "com.example.all", options).await;
    let mut names = Vec::new();
    loop {
        let Message::Result { request: got, details, payload } = recv(&mut caller).await else { panic!() };
        assert_eq!(got, request);
        if details.get("progress").and_then(Value::as_bool) != Some(true) {
            break;
        }
        names.push(first_arg(&payload));
    }
    names.sort();
    assert_eq!(names, ["c0", "c1"], "every member, on either node, answered once");

    let request = send_call(&mut caller, "com.example.busy", Dict::new()).await;
    let Message::Invocation { request: invocation, .. } = recv(&mut busy).await else { panic!() };
    let unavailable = Message::Error {
        request_type: MessageType::Invocation as u64,
        request: invocation,
        details: Dict::new(),
        error: "wamp.error.unavailable".into(),
        payload: Payload::Empty,
    };
    busy.send(&unavailable).await.unwrap();
    let Message::Result { request: got, payload, .. } = recv(&mut caller).await else { panic!() };
    assert_eq!((got, first_arg(&payload)), (request, "server".to_owned()), "rerouted to the next member");

    drop((caller, busy));
    server.stop().await;
    for callee in all {
        callee.stop().await;
    }
    for router in routers {
        router.shutdown().await;
    }
}

#[tokio::test]
async fn a_burst_of_registers_to_one_procedure_from_two_nodes_all_join() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let spread: Vec<&RouterHandle> = (0..24).map(|i| &routers[i % 2]).collect();
    let burst = callees(&spread, "com.example.burst", "roundrobin").await;
    for router in &routers {
        wait_members(router, "com.example.burst", 24).await;
    }
    assert_eq!(members(&routers[0], "com.example.burst"), members(&routers[1], "com.example.burst"));
    for callee in burst {
        callee.stop().await;
    }
    // Every member left: the registration is gone everywhere.
    for router in &routers {
        wait_members(router, "com.example.burst", 0).await;
    }
    for router in routers {
        router.shutdown().await;
    }
}

#[tokio::test]
async fn a_fenced_node_cut_off_past_its_lease_closes_its_sessions() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let proxy = common::nats::TcpProxy::start(nats.port()).await;
    let fenced = cluster_router(&proxy.url(), &cluster, "n1", |c| {
        c.cluster.as_mut().unwrap().on_isolation = roundhouse::cluster::Isolation::Fence;
    })
    .await;
    let other = cluster_router(&nats.url(), &cluster, "n2", |_| {}).await;
    let mut callee = join(&fenced, &[]).await;
    callee.register("com.example.fenced", Dict::new()).await.expect("registers");
    wait_members(&other, "com.example.fenced", 1).await;

    proxy.cut();
    // The others take n1 for lost when its lease ends, and drop its member.
    wait_members(&other, "com.example.fenced", 0).await;
    proxy.heal();
    // Back on NATS, n1 learns it was reaped and closes its sessions.
    let closed = timeout(Duration::from_secs(15), callee.recv()).await.expect("n1 closes its sessions");
    match closed {
        Ok(Message::Goodbye { reason, .. }) => assert_eq!(reason, "wamp.close.system_shutdown"),
        other => panic!("expected GOODBYE wamp.close.system_shutdown, got {other:?}"),
    }
    drop(callee);
    fenced.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn with_three_nats_servers_registers_go_on_with_one_down_and_fail_cleanly_with_two() {
    let Some(mut nats) = common::nats::NatsCluster::start() else { return };
    let cluster = cluster_name();
    let urls = nats.urls();
    let mut routers = Vec::new();
    for (name, first) in [("a", 0), ("b", 1)] {
        let mut ordered = urls.clone();
        ordered.rotate_left(first);
        routers.push(
            cluster_router(&urls[first], &cluster, name, move |config| {
                let section = config.cluster.as_mut().unwrap();
                section.nats_urls = ordered;
                section.kv_replicas = 3;
                section.lease_ms = roundhouse::cluster::MIN_REPLICATED_LEASE_MS;
                // Long enough for the NATS servers left to elect the bucket's new leader (JetStream
                // waits 4 to 9 s after the last heartbeat of the one that died).
                section.kv_timeout_ms = 12_000;
            })
            .await,
        );
    }
    let (a, b) = (&routers[0], &routers[1]);
    let remote = Callee::start(b, Serializer::Json, "remote", "com.example.remote", Dict::new(), Behavior::Name).await;
    let local = Callee::start(a, Serializer::Json, "local", "com.example.local", Dict::new(), Behavior::Name).await;
    wait_members(a, "com.example.remote", 1).await;
    let mut caller = join(a, &[]).await;
    assert_eq!(common::call_names(&mut caller, "com.example.remote", 1).await, ["remote"]);

    nats.servers[2].kill();
    // The servers left elect new leaders for the buckets: the REGISTER may wait for that.
    let (mut tx, mut rx) = join(a, &[]).await.split();
    rx.set_timeout(Duration::from_secs(20));
    let register = Message::Register { request: 1, options: Dict::new(), procedure: "com.example.one_down".into() };
    tx.send(&register).await.unwrap();
    let reply = rx.recv().await.expect("answered");
    assert!(matches!(reply, Message::Registered { request: 1, .. }), "a REGISTER with two servers of three: {reply:?}");
    // The other node's view follows once its registry consumer is made again on a server left
    // (seconds when that consumer was on the server lost).
    timeout(Duration::from_secs(20), async {
        while members(b, "com.example.one_down").len() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the other node sees the REGISTER");

    nats.servers[1].kill();
    let started = Instant::now();
    let register = Message::Register { request: 2, options: Dict::new(), procedure: "com.example.two_down".into() };
    tx.send(&register).await.unwrap();
    let refused = rx.recv().await.expect("the REGISTER is answered");
    assert_error(&refused, MessageType::Register, "wamp.error.network_failure");
    assert!(started.elapsed() < Duration::from_secs(16), "{:?}", started.elapsed());
    // Calls within the node go on.
    assert_eq!(common::call_names(&mut caller, "com.example.local", 2).await, ["local", "local"]);

    drop((caller, tx, rx));
    remote.stop().await;
    local.stop().await;
    for router in routers {
        router.shutdown().await;
    }
}

/// Percentiles of `samples` (sorted here), in microseconds.
fn percentiles(samples: &mut [Duration]) -> (u128, u128) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_micros();
    (at(0.50), at(0.99))
}

/// Serial call latency, a caller and a callee on one node and on two, and REGISTER latency on a
/// single-node router and on a cluster node. Prints figures; asserts nothing about them (run with
/// `cargo test --release --test cluster_dealer -- --ignored --nocapture latency`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn latency_of_local_and_remote_calls_and_of_register() {
    const CALLS: usize = 5_000;
    const REGISTERS: usize = 300;
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let single = common::router().await;
    let callee =
        Callee::start(&routers[1], Serializer::MsgPack, "callee", "com.example.echo", Dict::new(), Behavior::Echo)
            .await;
    wait_members(&routers[0], "com.example.echo", 1).await;
    for (label, router) in
        [("local (caller and callee on one node)", &routers[1]), ("remote (caller on n1, callee on n2)", &routers[0])]
    {
        let mut caller = Client::join(&router.url(), REALM, Serializer::MsgPack).await.unwrap();
        for _ in 0..200 {
            caller.call("com.example.echo", vec![Value::UInt(1)]).await.unwrap();
        }
        let mut samples = Vec::with_capacity(CALLS);
        for i in 0..CALLS {
            let started = Instant::now();
            caller.call("com.example.echo", vec![Value::UInt(i as u64)]).await.unwrap();
            samples.push(started.elapsed());
        }
        let (p50, p99) = percentiles(&mut samples);
        println!("call, {label}: p50 {p50} µs, p99 {p99} µs ({CALLS} serial calls)");
    }
    for (label, router) in [("single-node router", &single), ("cluster node", &routers[0])] {
        let mut client = Client::join(&router.url(), REALM, Serializer::MsgPack).await.unwrap();
        let mut samples = Vec::with_capacity(REGISTERS);
        for i in 0..REGISTERS {
            let started = Instant::now();
            client.register(&format!("com.example.reg{i}"), Dict::new()).await.unwrap();
            samples.push(started.elapsed());
        }
        let (p50, p99) = percentiles(&mut samples);
        println!("REGISTER, {label}: p50 {p50} µs, p99 {p99} µs ({REGISTERS} in sequence)");
    }
    callee.stop().await;
    single.shutdown().await;
    for router in routers {
        router.shutdown().await;
    }
}
