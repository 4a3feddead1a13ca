//! Calls between cluster nodes that the callee's node lost, and the registration meta actions
//! across nodes, through a real nats-server and real sockets: a call the callee's node no longer
//! holds ends with exactly one `wamp.error.canceled` within a few heartbeats, while long calls
//! and answers crossing the liveness probes are left alone; `wamp.registration.remove_callee`
//! and `force_reregister` act on members of other nodes as on local ones.

mod common;

use std::time::Duration;

use common::nats::{cluster_router, NatsServer, HEARTBEAT_MS};
use common::{assert_error, first_arg, REALM};
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
    let realm = router.shared().realms.get(REALM).unwrap().clone();
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
