//! Calls between cluster nodes that the callee's node lost, and the registration meta actions
//! across nodes, through a real nats-server and real sockets: a call the callee's node no longer
//! holds ends with exactly one `wamp.error.canceled` within a few heartbeats, while long calls
//! and answers crossing the liveness probes are left alone; `wamp.registration.remove_callee`
//! and `force_reregister` act on members of other nodes as on local ones.

mod common;

use std::time::Duration;

use common::nats::{cluster_router, NatsServer, TcpProxy, HEARTBEAT_MS};
use common::{assert_error, first_arg, unexpected, REALM};
use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Serializer, Value};
use roundhouse::RouterHandle;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_millis(HEARTBEAT_MS);

fn cluster_name() -> String {
    format!("l{}", fastrand::u32(..))
}

async fn nodes(nats: &NatsServer, cluster: &str, names: &[&str]) -> Vec<RouterHandle> {
    let mut routers = Vec::new();
    for name in names {
        routers.push(cluster_router(&nats.url(), cluster, name, common::grant_admin).await);
    }
    routers
}

async fn join(router: &RouterHandle, features: &[&str]) -> Client {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.expect("connects");
    client.hello_with_features(REALM, features).await.expect("joins");
    client
}

/// Waits until `router`'s view shows `procedure` with exactly the members `sessions`.
async fn wait_members(router: &RouterHandle, procedure: &str, sessions: &[u64]) {
    wait_members_in(router, REALM, procedure, sessions).await
}

/// The member session ids of `procedure` in `router`'s view of `realm`, in order.
fn members(router: &RouterHandle, realm: &str, procedure: &str) -> Vec<u64> {
    let realm = router.shared().realms.get(realm).unwrap().clone();
    realm.dealer.lookup(procedure).map_or(Vec::new(), |(r, _)| r.members().iter().map(|c| c.session.id).collect())
}

async fn wait_members_in(router: &RouterHandle, realm: &str, procedure: &str, sessions: &[u64]) {
    let realm = router.shared().realms.get(realm).unwrap().clone();
    timeout(WAIT, async {
        loop {
            let members: Vec<u64> = realm
                .dealer
                .lookup(procedure)
                .map_or(Vec::new(), |(r, _)| r.members().iter().map(|c| c.session.id).collect());
            if members == sessions {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{procedure} does not reach the members {sessions:?}"));
}

async fn recv(client: &mut Client) -> Message {
    timeout(WAIT, client.recv()).await.expect("a message in time").expect("the session is up")
}

/// Nothing reaches `client` for `quiet`.
async fn assert_quiet(client: &mut Client, quiet: Duration) {
    if let Ok(message) = timeout(quiet, client.recv()).await {
        panic!("nothing more expected, got {message:?}");
    }
}

fn call(request: u64, procedure: &str, args: Vec<Value>) -> Message {
    Message::Call { request, options: Dict::new(), procedure: procedure.into(), payload: Payload::args(args) }
}

fn yield_(invocation: u64, args: Vec<Value>) -> Message {
    Message::Yield { request: invocation, options: Dict::new(), payload: Payload::args(args) }
}

#[tokio::test]
async fn a_call_its_callee_node_forgot_ends_once_with_canceled() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    let mut callee = join(n2, &["call_canceling"]).await;
    callee.register("com.example.slow", Dict::new()).await.expect("registers");
    wait_members(n1, "com.example.slow", &[callee.session_id()]).await;
    let mut caller = join(n1, &[]).await;

    let request = caller.request_id();
    caller.send(&call(request, "com.example.slow", vec![])).await.unwrap();
    let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else {
        panic!("INVOCATION expected")
    };

    // n2 takes n1 for gone while n1 stays connected to NATS (as when n1's lease renewals do not
    // reach JetStream for a lease): the lease is deleted behind n1's back. n2 drops its stand-in
    // caller for n1, so the call and any answer to it are lost there; n1 never learns it from
    // the lease (it renews it again at once and is still live for n2 afterwards).
    let nats_client = async_nats::connect(nats.url()).await.expect("NATS");
    let leases = async_nats::jetstream::new(nats_client)
        .get_key_value(format!("RH_{cluster}_NODES"))
        .await
        .expect("the node bucket");
    leases.delete("n.n1").await.expect("lease deleted");
    let Message::Interrupt { request: interrupted, .. } = recv(&mut callee).await else {
        panic!("INTERRUPT expected: n2 dropped the call")
    };
    assert_eq!(interrupted, invocation);
    let dropped = Instant::now();
    // The callee's late answer goes nowhere.
    callee.send(&yield_(invocation, vec![Value::from("late")])).await.unwrap();

    let reply = recv(&mut caller).await;
    let took = dropped.elapsed();
    assert_error(&reply, MessageType::Call, "wamp.error.canceled");
    let Message::Error { request: got, payload, .. } = &reply else { unreachable!() };
    assert_eq!(*got, request);
    assert!(first_arg(payload).contains("lost the call"), "{payload:?}");
    // Probes go every heartbeat about calls a heartbeat old: two heartbeats and the round trip.
    eprintln!("canceled {took:?} after the callee's node dropped the call");
    assert!(took <= HEARTBEAT * 3 + Duration::from_millis(300), "canceled after {took:?}");
    // Exactly once: no second answer, not even once n2's probe answers repeat.
    assert_quiet(&mut caller, HEARTBEAT * 4).await;

    // The nodes still serve calls between them.
    let request = caller.request_id();
    caller.send(&call(request, "com.example.slow", vec![])).await.unwrap();
    let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else {
        panic!("INVOCATION expected")
    };
    callee.send(&yield_(invocation, vec![Value::from("ok")])).await.unwrap();
    let Message::Result { request: got, payload, .. } = recv(&mut caller).await else { panic!("RESULT expected") };
    assert_eq!((got, first_arg(&payload)), (request, "ok".to_owned()));
}

/// A callee node that crashes with calls in flight: NATS finds nobody at its inbox for two probe
/// rounds in a row, and its calls end with `wamp.error.canceled` then, long before its lease
/// (ten seconds here) ends and its member leaves the list.
#[tokio::test]
async fn calls_held_by_a_crashed_node_end_at_the_probes_not_at_its_lease() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    // The node bucket's entries live as long as the lease of the node that made it: n1's.
    let n1 = &cluster_router(&nats.url(), &cluster, "n1", |config| {
        config.cluster.as_mut().unwrap().lease_ms = 10_000;
    })
    .await;
    let mut process = common::nats::NodeProcess::start_with(&nats.url(), &cluster, "crashing", |section| {
        section.lease_ms = 10_000;
    });
    let mut callee = Client::join(&process.url, REALM, Serializer::Json).await.expect("joins the crashing node");
    callee.register("com.example.held", Dict::new()).await.expect("registers");
    let member = callee.session_id();
    wait_members(n1, "com.example.held", &[member]).await;
    let mut caller = join(n1, &[]).await;
    for request in 1..=3 {
        caller.send(&call(request, "com.example.held", vec![])).await.unwrap();
        assert!(matches!(recv(&mut callee).await, Message::Invocation { .. }), "the call reaches the callee");
    }
    // Older than a probe round, so the probes ask about them.
    tokio::time::sleep(HEARTBEAT * 2).await;
    process.kill();
    let killed = Instant::now();
    let mut ended = Vec::new();
    for _ in 0..3 {
        let reply = recv(&mut caller).await;
        assert_error(&reply, MessageType::Call, "wamp.error.canceled");
        let Message::Error { request, .. } = reply else { unreachable!() };
        ended.push(request);
    }
    let took = killed.elapsed();
    ended.sort_unstable();
    assert_eq!(ended, [1, 2, 3]);
    assert!(took < HEARTBEAT * 8, "ended {took:?} after the crash");
    assert_eq!(members(n1, REALM, "com.example.held"), [member], "the lease has not ended yet");
    assert_quiet(&mut caller, HEARTBEAT * 2).await;
    drop(callee);
}

/// The body sizes of the liveness probes `inbox` receives within `window`.
async fn probes(window: Duration, inbox: &mut async_nats::Subscriber) -> Vec<usize> {
    let until = Instant::now() + window;
    let mut bodies = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(until, futures_util::StreamExt::next(inbox)).await {
        let kind = message.headers.as_ref().and_then(|h| h.get("Rh-K")).map(|v| v.as_str().to_owned());
        if kind.as_deref() == Some("PRB") {
            bodies.push(message.payload.len());
        }
    }
    bodies
}

#[tokio::test]
async fn probes_go_only_for_calls_a_heartbeat_old_one_message_per_node() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    let mut callee = join(n2, &[]).await;
    callee.register("com.example.slow", Dict::new()).await.expect("registers");
    wait_members(n1, "com.example.slow", &[callee.session_id()]).await;
    let mut caller = join(n1, &[]).await;
    // A second subscriber of n2's inbox sees what n1 sends there.
    let nats_client = async_nats::connect(nats.url()).await.expect("NATS");
    let mut inbox = nats_client.subscribe(format!("rh.{cluster}.n.n2.i")).await.unwrap();
    nats_client.flush().await.unwrap();

    // Calls answered within a heartbeat, then none at all: no probe.
    for n in 0..20u64 {
        let request = caller.request_id();
        caller.send(&call(request, "com.example.slow", vec![Value::UInt(n)])).await.unwrap();
        let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else { panic!("INVOCATION") };
        callee.send(&yield_(invocation, vec![])).await.unwrap();
        assert!(matches!(recv(&mut caller).await, Message::Result { .. }));
    }
    assert_eq!(probes(HEARTBEAT * 4, &mut inbox).await, Vec::<usize>::new());

    // Twenty calls in flight for six heartbeats: one probe per heartbeat naming all twenty.
    let mut invocations = Vec::new();
    for n in 0..20u64 {
        let request = caller.request_id();
        caller.send(&call(request, "com.example.slow", vec![Value::UInt(n)])).await.unwrap();
        let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else { panic!("INVOCATION") };
        invocations.push(invocation);
    }
    let seen = probes(HEARTBEAT * 6, &mut inbox).await;
    assert!((3..=7).contains(&seen.len()), "{} probes in six heartbeats", seen.len());
    assert!(seen.iter().all(|bytes| *bytes == 20 * 16), "{seen:?}");
    for invocation in invocations {
        callee.send(&yield_(invocation, vec![])).await.unwrap();
        assert!(matches!(recv(&mut caller).await, Message::Result { .. }));
    }
    assert_quiet(&mut caller, HEARTBEAT).await;
}

/// The `(session, seq)` pairs of a probe or its answer.
fn pairs(body: &[u8]) -> Vec<(u64, u64)> {
    body.chunks_exact(16)
        .map(|p| (u64::from_be_bytes(p[..8].try_into().unwrap()), u64::from_be_bytes(p[8..].try_into().unwrap())))
        .collect()
}

/// The seq of the next INV `inbox` (a copy of a node's inbox) receives: the last token of its
/// reply subject.
async fn next_inv_seq(inbox: &mut async_nats::Subscriber) -> u64 {
    loop {
        let message = timeout(WAIT, futures_util::StreamExt::next(inbox)).await.expect("INV in time").expect("up");
        let kind = message.headers.as_ref().and_then(|h| h.get("Rh-K")).map(|v| v.as_str().to_owned());
        if kind.as_deref() == Some("INV") {
            let reply = message.reply.expect("an INV has a reply subject");
            return reply.rsplit('.').next().unwrap().parse().unwrap();
        }
    }
}

#[tokio::test]
async fn a_callee_node_names_only_the_calls_it_does_not_hold() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    let mut callee = join(n2, &[]).await;
    callee.register("com.example.slow", Dict::new()).await.expect("registers");
    wait_members(n1, "com.example.slow", &[callee.session_id()]).await;
    let mut caller = join(n1, &[]).await;
    let nats_client = async_nats::connect(nats.url()).await.expect("NATS");
    let mut inbox = nats_client.subscribe(format!("rh.{cluster}.n.n2.i")).await.unwrap();
    nats_client.flush().await.unwrap();

    // One call answered, one still served.
    let request = caller.request_id();
    caller.send(&call(request, "com.example.slow", vec![])).await.unwrap();
    let answered = next_inv_seq(&mut inbox).await;
    let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else { panic!("INVOCATION") };
    callee.send(&yield_(invocation, vec![])).await.unwrap();
    assert!(matches!(recv(&mut caller).await, Message::Result { .. }));
    let request = caller.request_id();
    caller.send(&call(request, "com.example.slow", vec![])).await.unwrap();
    let held = next_inv_seq(&mut inbox).await;
    let Message::Invocation { request: invocation, .. } = recv(&mut callee).await else { panic!("INVOCATION") };
    let never = held + 1_000;

    // Asked as n1 asks: the answered call and one never sent are named, the held one is not.
    let origin = n1.shared().cluster.as_ref().unwrap().node().to_string();
    let session = callee.session_id();
    let ask = |origin: String| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Rh-K", "PRB");
        headers.insert("Rh-O", origin.as_str());
        let body: Vec<u8> = [answered, held, never]
            .iter()
            .flat_map(|seq| session.to_be_bytes().into_iter().chain(seq.to_be_bytes()))
            .collect();
        let request = async_nats::Request::new().headers(headers).payload(body.into()).timeout(Some(WAIT));
        nats_client.send_request(format!("rh.{cluster}.n.n2.i"), request)
    };
    let answer = ask(origin).await.expect("n2 answers");
    assert_eq!(pairs(&answer.payload), vec![(session, answered), (session, never)]);
    // A node n2 holds no call for: every call is named.
    let answer = ask("n9/1".to_owned()).await.expect("n2 answers");
    assert_eq!(pairs(&answer.payload), vec![(session, answered), (session, held), (session, never)]);

    // The held call goes on and gets its answer, once.
    callee.send(&yield_(invocation, vec![Value::from("held")])).await.unwrap();
    let Message::Result { request: got, payload, .. } = recv(&mut caller).await else { panic!("RESULT expected") };
    assert_eq!((got, first_arg(&payload)), (request, "held".to_owned()));
    assert_quiet(&mut caller, HEARTBEAT * 2).await;
}

#[tokio::test]
async fn long_calls_and_answers_crossing_the_probes_are_left_alone() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let routers = nodes(&nats, &cluster, &["n1", "n2"]).await;
    let (n1, n2) = (&routers[0], &routers[1]);
    let mut callee = join(n2, &[]).await;
    callee.register("com.example.slow", Dict::new()).await.expect("registers");
    wait_members(n1, "com.example.slow", &[callee.session_id()]).await;
    let mut caller = join(n1, &[]).await;

    // One call answered after six probe intervals, and many answered at random moments over
    // four intervals, so that answers cross probes in flight both ways.
    const CALLS: u64 = 150;
    let mut requests = std::collections::HashMap::new();
    for n in 0..=CALLS {
        let request = caller.request_id();
        caller.send(&call(request, "com.example.slow", vec![Value::UInt(n)])).await.unwrap();
        requests.insert(request, n);
    }
    let (mut sender, mut receiver) = callee.split();
    let answering = tokio::spawn(async move {
        let started = Instant::now();
        let mut answers = Vec::new();
        for _ in 0..=CALLS {
            let message = timeout(WAIT, receiver.recv()).await.expect("INVOCATION in time").expect("up");
            let Message::Invocation { request, payload, .. } = message else { panic!("INVOCATION expected") };
            let n = payload.to_values().unwrap().0[0].as_u64().unwrap();
            let delay = if n == CALLS { HEARTBEAT * 6 } else { HEARTBEAT * 4 * fastrand::u32(0..=100) / 100 };
            answers.push((started + delay, request, n));
        }
        answers.sort();
        for (at, request, n) in answers {
            tokio::time::sleep_until(at).await;
            sender.send(&yield_(request, vec![Value::UInt(n)])).await.unwrap();
        }
        receiver
    });
    let mut seen = std::collections::HashSet::new();
    while seen.len() as u64 <= CALLS {
        let reply = timeout(HEARTBEAT * 6 + WAIT, caller.recv()).await.expect("answer in time").expect("up");
        let Message::Result { request, payload, .. } = reply else { panic!("RESULT expected, got {reply:?}") };
        let n = requests[&request];
        assert_eq!(payload.to_values().unwrap().0, vec![Value::UInt(n)]);
        assert!(seen.insert(request), "a second answer to call {n}");
    }
    let _receiver = answering.await.unwrap();
    assert_quiet(&mut caller, HEARTBEAT * 3).await;
}

/// Lets realm1's anonymous sessions call and subscribe the meta API.
fn grant_meta(config: &mut roundhouse::RouterConfig) {
    use roundhouse::auth::config::{Action, RuleConfig, RuleMatch};
    let realm = config.realms.iter_mut().find(|r| r.name == REALM).expect("realm1");
    let allow = vec![Action::Call, Action::Subscribe];
    realm.roles[0].permissions.push(RuleConfig {
        uri: "wamp.".into(),
        policy: RuleMatch::Prefix,
        allow,
        disclose: vec![],
    });
}

/// Calls `wamp.registration.remove_callee` from `admin`: its answer.
async fn remove_callee(admin: &mut Client, registration: u64, callee: u64, reason: &str) -> Message {
    let request = admin.request_id();
    let payload =
        Payload::Values(vec![Value::UInt(registration), Value::UInt(callee)], Some(Dict::new().with("reason", reason)));
    let procedure = "wamp.registration.remove_callee".to_owned();
    admin.send(&Message::Call { request, options: Dict::new(), procedure, payload }).await.unwrap();
    recv(admin).await
}

/// Asserts `message` is the revocation `UNREGISTERED [0, {registration, reason}]`.
fn assert_revoked(message: Message, registration: u64, reason: impl Fn(&str) -> bool) {
    match message {
        Message::Unregistered { request: 0, details: Some(details) } => {
            assert_eq!(details.get("registration").and_then(Value::as_u64), Some(registration));
            let why = details.get("reason").and_then(Value::as_str).unwrap_or_default();
            assert!(reason(why), "reason {why:?}");
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
}

#[tokio::test]
async fn remove_callee_revokes_a_member_on_another_node() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let n1 = cluster_router(&nats.url(), &cluster, "n1", grant_meta).await;
    // n2 reaches NATS through a proxy the test cuts.
    let proxy = TcpProxy::start(nats.port()).await;
    let n2 = cluster_router(&proxy.url(), &cluster, "n2", grant_meta).await;
    let procedure = "com.example.p";
    let mut near = join(&n1, &["registration_revocation"]).await;
    let mut far = join(&n2, &["registration_revocation"]).await;
    let registration = near.register(procedure, common::rule("roundrobin")).await.expect("registers");
    wait_members(&n2, procedure, &[near.session_id()]).await;
    far.register(procedure, common::rule("roundrobin")).await.expect("registers");
    let both = [near.session_id(), far.session_id()];
    wait_members(&n1, procedure, &both).await;
    let mut admin = join(&n1, &[]).await;
    admin.subscribe("wamp.registration.on_unregister", Dict::new()).await.expect("subscribes");

    // The meta event comes as the view changes, before or after the RESULT (as on one node).
    let mut event = None;
    let mut reply = remove_callee(&mut admin, registration, far.session_id(), "com.example.maintenance").await;
    if matches!(reply, Message::Event { .. }) {
        event = Some(reply);
        reply = recv(&mut admin).await;
    }
    assert!(matches!(reply, Message::Result { .. }), "{reply:?}");
    // Answered once the cluster's record, and the view of the asking node, no longer hold it.
    assert_eq!(members(&n1, REALM, procedure), [near.session_id()]);
    assert_revoked(recv(&mut far).await, registration, |r| r == "com.example.maintenance");
    let event = match event {
        Some(event) => event,
        None => recv(&mut admin).await,
    };
    let Message::Event { payload, .. } = event else { panic!("on_unregister expected, got {event:?}") };
    assert_eq!(payload.to_values().unwrap().0, vec![Value::UInt(far.session_id()), Value::UInt(registration)]);
    assert_quiet(&mut admin, HEARTBEAT).await;
    wait_members(&n2, procedure, &[near.session_id()]).await;
    // Calls from either node now reach the remaining member only.
    for caller_node in [&n1, &n2] {
        let mut caller = join(caller_node, &[]).await;
        let request = caller.request_id();
        caller.send(&call(request, procedure, vec![])).await.unwrap();
        let Message::Invocation { request: invocation, .. } = recv(&mut near).await else { panic!("INVOCATION") };
        near.send(&yield_(invocation, vec![Value::from("near")])).await.unwrap();
        let Message::Result { payload, .. } = recv(&mut caller).await else { panic!("RESULT expected") };
        assert_eq!(first_arg(&payload), "near");
    }
    assert_quiet(&mut far, HEARTBEAT).await;
    // Not a member any more: refused as on one node.
    let reply = remove_callee(&mut admin, registration, far.session_id(), "again").await;
    assert_error(&reply, MessageType::Call, "wamp.error.no_such_registration");

    // A member whose node cannot be reached (cut off from NATS, not yet taken for lost): the
    // meta call fails with network_failure and nothing changes.
    far.register(procedure, common::rule("roundrobin")).await.expect("registers again");
    wait_members(&n1, procedure, &both).await;
    proxy.cut();
    let request = admin.request_id();
    let payload = Payload::Values(vec![Value::UInt(registration), Value::UInt(far.session_id())], None);
    let meta = "wamp.registration.remove_callee".to_owned();
    admin.send(&Message::Call { request, options: Dict::new(), procedure: meta, payload }).await.unwrap();
    // NATS answers at once that nobody listens, unless the request beat nats-server to seeing
    // n2's connection closed: then n1 waits until n2 is taken for lost (its member leaving
    // every view: on_unregister).
    let deadline = Instant::now() + Duration::from_secs(3 * 2 + 5);
    let reply = loop {
        match timeout(deadline - Instant::now(), admin.recv()).await.expect("an answer in time") {
            Ok(Message::Event { .. }) | Err(roundhouse::client::ClientError::Timeout) => continue,
            Ok(reply) => break reply,
            Err(error) => panic!("{error}"),
        }
    };
    assert_error(&reply, MessageType::Call, "wamp.error.network_failure");
    let Message::Error { payload, .. } = &reply else { unreachable!() };
    let why = first_arg(payload);
    assert!(why.contains("did not answer") || why.contains("was lost"), "{why}");

    // A member of the asking node itself: revoked there, answered once the record is written.
    let mut reply = remove_callee(&mut admin, registration, near.session_id(), "com.example.local").await;
    while matches!(reply, Message::Event { .. }) {
        reply = recv(&mut admin).await;
    }
    assert!(matches!(reply, Message::Result { .. }), "{reply:?}");
    assert!(!members(&n1, REALM, procedure).contains(&near.session_id()));
    assert_revoked(recv(&mut near).await, registration, |r| r == "com.example.local");
}

const AUTH: &str = "auth";

/// A session of `authid` (ticket `<authid>-ticket`) in the auth realm, announcing
/// `registration_revocation`, and its session id.
async fn principal(router: &RouterHandle, authid: &str) -> (Client, u64) {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    let features = Value::Dict(Dict::new().with("features", Dict::new().with("registration_revocation", true)));
    let roles = Dict::new().with("callee", features).with("caller", Value::Dict(Dict::new()));
    let details = Dict::new()
        .with("roles", roles)
        .with("authmethods", Value::List(vec![Value::from("ticket")]))
        .with("authid", authid);
    client.send(&Message::Hello { realm: AUTH.into(), details }).await.unwrap();
    loop {
        match recv(&mut client).await {
            Message::Welcome { session, .. } => return (client, session),
            Message::Challenge { .. } => {
                let signature = format!("{authid}-ticket");
                client.send(&Message::Authenticate { signature, extra: Dict::new() }).await.unwrap();
            }
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn force_reregister_takes_over_a_registration_held_on_another_node() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let mut routers = Vec::new();
    for name in ["n1", "n2"] {
        routers.push(cluster_router(&nats.url(), &cluster, name, |c| c.realms.push(common::ticket_realm(AUTH))).await);
    }
    let (n1, n2) = (&routers[0], &routers[1]);
    const P: &str = "com.app.service";
    let forced = || Dict::new().with("force_reregister", true);

    let (mut stale, stale_id) = principal(n2, "joe").await;
    let old = stale.register(P, Dict::new()).await.expect("registers");
    wait_members_in(n1, AUTH, P, &[stale_id]).await;
    // Another principal cannot take it over from another node, nor can joe without the option.
    let (mut ann, _) = principal(n1, "ann").await;
    assert_error(
        &unexpected(ann.register(P, forced()).await),
        MessageType::Register,
        "wamp.error.procedure_already_exists",
    );
    let (mut fresh, fresh_id) = principal(n1, "joe").await;
    assert_error(
        &unexpected(fresh.register(P, Dict::new()).await),
        MessageType::Register,
        "wamp.error.procedure_already_exists",
    );
    assert_quiet(&mut stale, HEARTBEAT).await;

    let new = fresh.register(P, forced()).await.expect("takes the registration over");
    assert_ne!(new, old, "a new registration");
    assert_revoked(recv(&mut stale).await, old, |r| r.contains("force_reregister"));
    assert_eq!(members(n1, AUTH, P), [fresh_id]);
    wait_members_in(n2, AUTH, P, &[fresh_id]).await;
    // Calls from the stale session's node reach the new session.
    let (mut caller, _) = principal(n2, "ann").await;
    let request = caller.request_id();
    caller.send(&call(request, P, vec![])).await.unwrap();
    let Message::Invocation { request: invocation, registration, .. } = recv(&mut fresh).await else {
        panic!("the new session serves")
    };
    assert_eq!(registration, new);
    fresh.send(&yield_(invocation, vec![Value::from("fresh")])).await.unwrap();
    let Message::Result { request: got, payload, .. } = recv(&mut caller).await else { panic!("RESULT expected") };
    assert_eq!((got, first_arg(&payload)), (request, "fresh".to_owned()));
}
