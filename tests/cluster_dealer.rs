//! The dealer across a cluster, through a real nats-server: registrations shared by nodes and kept
//! exact (`single`, the rule check, member order), calls from one node to a callee on another
//! (results, progressive results, cancel in every mode, timeouts, disclosure, errors), and what
//! happens when a callee's node is lost or NATS restarts.

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
