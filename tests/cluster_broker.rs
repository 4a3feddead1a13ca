//! The broker and sessions across a cluster: events published on one node reach subscribers on
//! the others (exact, prefix, wildcard; once per matching subscription; in publisher order; with
//! the publisher's filters and disclosure), session meta sees the whole cluster, and a node that
//! dies has its testaments published exactly once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::nats::*;
use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, Payload, Serializer, Value};
use roundhouse::RouterHandle;

const WAIT: Duration = Duration::from_secs(10);

/// Lets realm1's anonymous sessions call every meta procedure (kill included) and subscribe to
/// the meta events.
fn grant_meta(config: &mut roundhouse::RouterConfig) {
    use roundhouse::auth::config::{Action, RuleConfig, RuleMatch};
    let realm = config.realms.iter_mut().find(|r| r.name == REALM).expect("realm1");
    let allow = vec![Action::Call, Action::Subscribe];
    let rule = RuleConfig { uri: "wamp.".into(), policy: RuleMatch::Prefix, allow, disclose: vec![] };
    realm.roles[0].permissions.push(rule);
}

fn cluster_name() -> String {
    format!("t{}", fastrand::u32(..))
}

async fn nodes(nats: &NatsServer, names: &[&str]) -> Vec<RouterHandle> {
    let cluster = cluster_name();
    let mut routers = Vec::new();
    for name in names {
        routers.push(cluster_router(&nats.url(), &cluster, name, grant_meta).await);
    }
    routers
}

async fn subscribe(client: &mut Client, topic: &str, policy: Option<&str>) -> u64 {
    let options = match policy {
        Some(policy) => Dict::new().with("match", policy),
        None => Dict::new(),
    };
    client.subscribe(topic, options).await.expect("SUBSCRIBED")
}

/// PUBLISH with `acknowledge`, waiting for PUBLISHED; returns the publication id.
async fn publish(client: &mut Client, topic: &str, options: Dict, args: Vec<Value>) -> u64 {
    let request = client.request_id();
    let options = options.with("acknowledge", true);
    let payload = Payload::args(args);
    client.send(&Message::Publish { request, options, topic: topic.into(), payload }).await.unwrap();
    match tokio::time::timeout(WAIT, client.recv()).await.expect("PUBLISHED in time").unwrap() {
        Message::Published { request: r, publication } if r == request => publication,
        other => panic!("expected PUBLISHED, got {other:?}"),
    }
}

/// The next EVENT: subscription, publication, details, first argument.
async fn event(client: &mut Client) -> (u64, u64, Dict, Value) {
    match tokio::time::timeout(WAIT, client.recv()).await.expect("an EVENT in time").unwrap() {
        Message::Event { subscription, publication, details, payload } => {
            let (args, _) = payload.to_values().unwrap();
            (subscription, publication, details, args.into_iter().next().unwrap_or(Value::Null))
        }
        other => panic!("expected EVENT, got {other:?}"),
    }
}

async fn expect_nothing(client: &mut Client, within: Duration) {
    client.rx.set_timeout(within);
    match client.recv().await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
    client.rx.set_timeout(Duration::from_secs(5));
}

#[tokio::test]
async fn exact_prefix_and_wildcard_subscriptions_get_events_from_other_nodes() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b"]).await;
    let mut subscriber = join(&routers[1], Serializer::Json).await;
    let exact = subscribe(&mut subscriber, "com.ex.a.b", None).await;
    let prefix = subscribe(&mut subscriber, "com.ex.a.b", Some("prefix")).await;
    let wildcard = subscribe(&mut subscriber, "com.ex..b", Some("wildcard")).await;
    let odd = subscribe(&mut subscriber, "com.ex.we*ird>.$x~", None).await;
    let mut publisher = join(&routers[0], Serializer::MsgPack).await;

    // One topic matching three subscriptions: one EVENT for each, none twice.
    let publication = publish(&mut publisher, "com.ex.a.b", Dict::new(), vec![Value::UInt(1)]).await;
    let mut got = HashMap::new();
    for _ in 0..3 {
        let (subscription, p, details, arg) = event(&mut subscriber).await;
        assert_eq!((p, arg), (publication, Value::UInt(1)));
        let topic = details.get("topic").and_then(Value::as_str).map(str::to_owned);
        assert!(got.insert(subscription, topic).is_none(), "one EVENT per subscription");
    }
    assert_eq!(got[&exact], None, "an exact subscription's EVENT names no topic");
    assert_eq!(got[&prefix].as_deref(), Some("com.ex.a.b"));
    assert_eq!(got[&wildcard].as_deref(), Some("com.ex.a.b"));

    // A prefix ends inside a component: `com.ex.a.b` matches `com.ex.a.bc`, not `com.ex.a.c`.
    publish(&mut publisher, "com.ex.a.c", Dict::new(), vec![Value::UInt(2)]).await;
    publish(&mut publisher, "com.ex.a.bc", Dict::new(), vec![Value::UInt(3)]).await;
    let (subscription, _, details, arg) = event(&mut subscriber).await;
    assert_eq!((subscription, arg), (prefix, Value::UInt(3)));
    assert_eq!(details.get("topic").and_then(Value::as_str), Some("com.ex.a.bc"));
    // The wildcard takes any one component, and only one.
    publish(&mut publisher, "com.ex.zz.b", Dict::new(), vec![Value::UInt(4)]).await;
    publish(&mut publisher, "com.ex.zz.y.b", Dict::new(), vec![Value::UInt(5)]).await;
    let (subscription, _, _, arg) = event(&mut subscriber).await;
    assert_eq!((subscription, arg), (wildcard, Value::UInt(4)));
    // Components NATS gives a meaning to travel escaped.
    publish(&mut publisher, "com.ex.we*ird>.$x~", Dict::new(), vec![Value::UInt(6)]).await;
    publish(&mut publisher, "com.ex.we.ird", Dict::new(), vec![Value::UInt(7)]).await;
    let (subscription, _, _, arg) = event(&mut subscriber).await;
    assert_eq!((subscription, arg), (odd, Value::UInt(6)));
    expect_nothing(&mut subscriber, Duration::from_millis(300)).await;

    // The last subscriber leaving closes the subscription on NATS too: nothing arrives after.
    let request = subscriber.request_id();
    subscriber.send(&Message::Unsubscribe { request, subscription: exact }).await.unwrap();
    assert!(matches!(subscriber.recv().await.unwrap(), Message::Unsubscribed { .. }));
    let events = routers[1].shared().realms[REALM].broker.cluster().cloned().expect("in a cluster");
    assert_eq!(events.listening(), 3, "one NATS subscription per remaining subscription");
    publish(&mut publisher, "com.ex.a.b", Dict::new(), vec![Value::UInt(8)]).await;
    let mut after: Vec<u64> = vec![event(&mut subscriber).await.0, event(&mut subscriber).await.0];
    after.sort_unstable();
    let mut expected = vec![prefix, wildcard];
    expected.sort_unstable();
    assert_eq!(after, expected);
    expect_nothing(&mut subscriber, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn events_keep_the_publishers_order_across_nodes() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b"]).await;
    const N: u64 = 10_000;
    let mut remote = join(&routers[1], Serializer::MsgPack).await;
    let mut local = join(&routers[0], Serializer::MsgPack).await;
    subscribe(&mut remote, "com.ex.seq", None).await;
    subscribe(&mut local, "com.ex.seq", None).await;
    let publisher = join(&routers[0], Serializer::MsgPack).await;
    let (mut tx, _rx) = publisher.split();
    let sending = tokio::spawn(async move {
        for i in 0..N {
            let request = tx.request_id();
            let payload = Payload::args(vec![Value::UInt(i)]);
            let publish = Message::Publish { request, options: Dict::new(), topic: "com.ex.seq".into(), payload };
            tx.feed(&publish).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    for (name, client) in [("remote", &mut remote), ("local", &mut local)] {
        for i in 0..N {
            let (_, _, _, arg) = event(client).await;
            assert_eq!(arg, Value::UInt(i), "{name} subscriber: event {i} out of order or lost");
        }
    }
    let _tx = sending.await.unwrap();
    expect_nothing(&mut remote, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn filters_and_disclosure_apply_on_the_subscribers_node() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b"]).await;
    let mut s1 = join(&routers[1], Serializer::Json).await;
    let mut s2 = join(&routers[1], Serializer::Cbor).await;
    let mut publisher = join(&routers[0], Serializer::Json).await;
    let topic = "com.ex.filtered";
    for client in [&mut s1, &mut s2, &mut publisher] {
        subscribe(client, topic, None).await;
    }
    let id1 = s1.session_id();
    let ids = |ids: &[u64]| Value::List(ids.iter().map(|i| Value::UInt(*i)).collect());

    publish(&mut publisher, topic, Dict::new().with("exclude", ids(&[id1])), vec![Value::UInt(1)]).await;
    assert_eq!(event(&mut s2).await.3, Value::UInt(1));
    publish(&mut publisher, topic, Dict::new().with("eligible", ids(&[id1])), vec![Value::UInt(2)]).await;
    assert_eq!(event(&mut s1).await.3, Value::UInt(2));
    // By authid, read from the other node's session through the cluster-wide meta API.
    let everyone = [id1, s2.session_id(), publisher.session_id()];
    wait_for_sessions(&mut publisher, &everyone).await;
    let Value::Dict(details) = meta(&mut publisher, "wamp.session.get", vec![Value::UInt(id1)]).await else {
        panic!("session details")
    };
    let authid1 = details.get("authid").cloned().expect("an authid");
    let only = Value::List(vec![authid1]);
    publish(&mut publisher, topic, Dict::new().with("eligible_authid", only.clone()), vec![Value::UInt(10)]).await;
    assert_eq!(event(&mut s1).await.3, Value::UInt(10));
    publish(&mut publisher, topic, Dict::new().with("exclude_authid", only), vec![Value::UInt(11)]).await;
    assert_eq!(event(&mut s2).await.3, Value::UInt(11));
    let nobody = Value::List(vec![Value::from("nobody")]);
    publish(&mut publisher, topic, Dict::new().with("eligible_authrole", nobody), vec![Value::UInt(3)]).await;
    let anonymous = Value::List(vec![Value::from("anonymous")]);
    publish(&mut publisher, topic, Dict::new().with("exclude_authrole", anonymous), vec![Value::UInt(4)]).await;
    // exclude_me (the default) keeps it from the publisher, disclose_me names it elsewhere.
    let disclosed = publish(&mut publisher, topic, Dict::new().with("disclose_me", true), vec![Value::UInt(5)]).await;
    for client in [&mut s1, &mut s2] {
        let (_, publication, details, arg) = event(client).await;
        assert_eq!((publication, arg), (disclosed, Value::UInt(5)), "events 3 and 4 reached nobody");
        assert_eq!(details.get("publisher").and_then(Value::as_u64), Some(publisher.session_id()));
        assert!(details.get("publisher_authrole").is_some());
    }
    // The publisher's own EVENT comes before its PUBLISHED (local dispatch first).
    let request = publisher.request_id();
    let options = Dict::new().with("exclude_me", false).with("acknowledge", true);
    let payload = Payload::args(vec![Value::UInt(6)]);
    publisher.send(&Message::Publish { request, options, topic: topic.into(), payload }).await.unwrap();
    let (_, _, _, arg) = event(&mut publisher).await;
    assert_eq!(arg, Value::UInt(6));
    assert!(matches!(publisher.recv().await.unwrap(), Message::Published { .. }));
    for client in [&mut s1, &mut s2] {
        let (_, _, details, arg) = event(client).await;
        assert_eq!(arg, Value::UInt(6));
        assert!(details.get("publisher").is_none(), "not disclosed unless asked");
    }
    for client in [&mut s1, &mut s2, &mut publisher] {
        expect_nothing(client, Duration::from_millis(200)).await;
    }
}

/// Calls a meta procedure, returning its first result argument.
async fn meta(client: &mut Client, procedure: &str, args: Vec<Value>) -> Value {
    let payload = tokio::time::timeout(WAIT, client.call(procedure, args)).await.expect("meta answers").unwrap();
    payload.to_values().unwrap().0.into_iter().next().unwrap_or(Value::Null)
}

/// Polls `wamp.session.list` until it holds exactly `expected`.
async fn wait_for_sessions(client: &mut Client, expected: &[u64]) {
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    let deadline = Instant::now() + WAIT;
    loop {
        let Value::List(list) = meta(client, "wamp.session.list", vec![]).await else { panic!("a list") };
        let mut ids: Vec<u64> = list.iter().filter_map(Value::as_u64).collect();
        ids.sort_unstable();
        if ids == expected {
            return;
        }
        assert!(Instant::now() < deadline, "session list {ids:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn session_meta_sees_the_whole_cluster() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b", "c"]).await;
    let mut asker = join(&routers[0], Serializer::Json).await;
    let b = join(&routers[1], Serializer::MsgPack).await;
    let c = join(&routers[2], Serializer::Cbor).await;
    let all = [asker.session_id(), b.session_id(), c.session_id()];
    wait_for_sessions(&mut asker, &all).await;
    assert_eq!(meta(&mut asker, "wamp.session.count", vec![]).await, Value::UInt(3));
    let Value::Dict(details) = meta(&mut asker, "wamp.session.get", vec![Value::UInt(all[2])]).await else {
        panic!("details")
    };
    assert_eq!(details.get("session").and_then(Value::as_u64), Some(all[2]));
    assert_eq!(details.get("authrole").and_then(Value::as_str), Some("anonymous"));
    assert_eq!(details.get("serializer").and_then(Value::as_str), Some("wamp.2.cbor"));
    assert_eq!(details.get("node").and_then(Value::as_str), Some("c"));
    // A session of the node asked is described the same way.
    let Value::Dict(own) = meta(&mut asker, "wamp.session.get", vec![Value::UInt(all[0])]).await else {
        panic!("details")
    };
    let keys = |d: &Dict| d.0.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&own), keys(&details));
    assert_eq!(own.get("node").and_then(Value::as_str), Some("a"));
    // A session of another node is killed there.
    let payload = Payload::args(vec![Value::UInt(all[2])]);
    let request = asker.request_id();
    asker
        .send(&Message::Call { request, options: Dict::new(), procedure: "wamp.session.kill".into(), payload })
        .await
        .unwrap();
    assert!(matches!(asker.recv().await.unwrap(), Message::Result { .. }));
    let mut c = c;
    match tokio::time::timeout(WAIT, c.recv()).await.expect("killed in time") {
        Ok(Message::Goodbye { reason, .. }) => assert_eq!(reason, "wamp.close.killed"),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    drop(c);
    wait_for_sessions(&mut asker, &all[..2]).await;
    say_goodbye(b).await;
    wait_for_sessions(&mut asker, &all[..1]).await;
}

/// `wamp.subscription.remove_subscriber` for a subscriber on another node: that node removes it
/// (by the subscription id the subscriber was given there), the events stop, and the node's
/// refusals come back as they are.
#[tokio::test]
async fn a_subscriber_on_another_node_is_removed_there() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b"]).await;
    let mut admin = join(&routers[0], Serializer::Json).await;
    let mut subscriber = join(&routers[1], Serializer::MsgPack).await;
    let subscription = subscribe(&mut subscriber, "com.example.removed", None).await;
    let kept = subscribe(&mut subscriber, "com.example.kept", None).await;
    let both = [admin.session_id(), subscriber.session_id()];
    wait_for_sessions(&mut admin, &both).await;
    publish(&mut admin, "com.example.removed", Dict::new(), vec![Value::UInt(1)]).await;
    assert_eq!(event(&mut subscriber).await.0, subscription);

    let remove = |subscription: u64| vec![Value::UInt(subscription), Value::UInt(both[1])];
    assert_eq!(meta(&mut admin, "wamp.subscription.remove_subscriber", remove(subscription)).await, Value::Null);
    publish(&mut admin, "com.example.removed", Dict::new(), vec![Value::UInt(2)]).await;
    publish(&mut admin, "com.example.kept", Dict::new(), vec![Value::UInt(3)]).await;
    let (arrived, _, _, value) = event(&mut subscriber).await;
    assert_eq!((arrived, value), (kept, Value::UInt(3)), "only the subscription kept delivers");
    // Asked again, the subscriber's node answers that it holds no such subscription any more.
    let again = tokio::time::timeout(WAIT, admin.call("wamp.subscription.remove_subscriber", remove(subscription)))
        .await
        .expect("answered");
    match again {
        Err(ClientError::Unexpected(reply)) => match *reply {
            Message::Error { error, .. } => assert_eq!(error, "wamp.error.no_such_subscription"),
            other => panic!("expected ERROR, got {other:?}"),
        },
        other => panic!("expected wamp.error.no_such_subscription, got {other:?}"),
    }
    expect_nothing(&mut subscriber, Duration::from_millis(200)).await;
    say_goodbye(subscriber).await;
    say_goodbye(admin).await;
}

/// The session ids of the `on_join` (true) and `on_leave` (false) events a client received
/// within `within`.
async fn meta_events(client: &mut Client, joins: u64, leaves: u64, within: Duration) -> Vec<(bool, u64)> {
    client.rx.set_timeout(within);
    let mut seen = Vec::new();
    while let Ok(message) = client.recv().await {
        match message {
            Message::Event { subscription, payload, .. } => {
                let first = payload.to_values().unwrap().0.into_iter().next().unwrap();
                let id = match first {
                    Value::Dict(details) => details.get("session").and_then(Value::as_u64).unwrap(),
                    other => other.as_u64().unwrap(),
                };
                seen.push((subscription == joins, id));
                assert!(subscription == joins || subscription == leaves);
            }
            other => panic!("{other:?}"),
        }
    }
    client.rx.set_timeout(Duration::from_secs(5));
    seen
}

#[tokio::test]
async fn join_and_leave_events_reach_each_subscriber_once() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b"]).await;
    let mut clients = Vec::new();
    for router in &routers {
        clients.push(join(router, Serializer::Json).await);
    }
    // Each node sees the other's watcher before the counting starts.
    let ids: Vec<u64> = clients.iter().map(Client::session_id).collect();
    for client in &mut clients {
        wait_for_sessions(client, &ids).await;
    }
    let mut watchers = Vec::new();
    for mut watcher in clients {
        let joins = subscribe(&mut watcher, "wamp.session.on_join", None).await;
        let leaves = subscribe(&mut watcher, "wamp.session.on_leave", None).await;
        watchers.push((watcher, joins, leaves));
    }
    let visitor = join(&routers[1], Serializer::MsgPack).await;
    let id = visitor.session_id();
    say_goodbye(visitor).await;
    for (watcher, joins, leaves) in &mut watchers {
        let seen = meta_events(watcher, *joins, *leaves, Duration::from_millis(700)).await;
        assert_eq!(seen, vec![(true, id), (false, id)], "one on_join then one on_leave");
    }
}

#[tokio::test]
async fn testaments_of_a_node_that_dies_are_published_once() {
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let a = cluster_router(&nats.url(), &cluster, "a", grant_meta).await;
    let c = cluster_router(&nats.url(), &cluster, "c", grant_meta).await;
    let mut doomed = NodeProcess::start(&nats.url(), &cluster, "b");
    let mut listeners = Vec::new();
    for router in [&a, &c] {
        let mut listener = join(router, Serializer::Json).await;
        let will = subscribe(&mut listener, "com.ex.will", None).await;
        let leaves = subscribe(&mut listener, "wamp.session.on_leave", None).await;
        listeners.push((listener, will, leaves));
    }
    let mut dying = Client::join(&doomed.url, REALM, Serializer::MsgPack).await.unwrap();
    let args = vec![Value::from("com.ex.will"), Value::List(vec![Value::from("bye")])];
    dying.call("wamp.session.add_testament", args).await.expect("testament added");
    let id = dying.session_id();
    // The testament is stored with the session's record before the node dies.
    let mut asker = join(&a, Serializer::Json).await;
    let mut ids: Vec<u64> = listeners.iter().map(|(l, _, _)| l.session_id()).collect();
    ids.extend([id, asker.session_id()]);
    wait_for_sessions(&mut asker, &ids).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    doomed.kill();
    let killed = Instant::now();
    for (listener, will, leaves) in &mut listeners {
        // Two NATS paths (the event, the session bucket's watch): their order on arrival is
        // likely, not certain.
        let mut got = vec![event(listener).await, event(listener).await];
        got.sort_by_key(|(subscription, ..)| *subscription != *will);
        let got: Vec<(u64, Value)> = got.into_iter().map(|(s, _, _, arg)| (s, arg)).collect();
        assert_eq!(got, vec![(*will, Value::from("bye")), (*leaves, Value::UInt(id))]);
    }
    assert!(killed.elapsed() < Duration::from_millis(LEASE_MS * 4), "within the lease: {:?}", killed.elapsed());
    for (listener, _, _) in &mut listeners {
        expect_nothing(listener, Duration::from_millis(500)).await;
    }
    drop(dying);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Serial publish-to-EVENT latency from `publisher` to `subscriber`, over `n` events.
async fn latencies(publisher: &mut Client, subscriber: &mut Client, topic: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let request = publisher.request_id();
        let payload = Payload::args(vec![Value::UInt(i as u64)]);
        let started = Instant::now();
        publisher
            .send(&Message::Publish { request, options: Dict::new(), topic: topic.into(), payload })
            .await
            .unwrap();
        let (_, _, _, arg) = event(subscriber).await;
        times.push(started.elapsed());
        assert_eq!(arg, Value::UInt(i as u64));
    }
    times.sort_unstable();
    times
}

/// Event latency on one node and across nodes, and cross-node event throughput. Run with
/// `cargo test --release --test cluster_broker -- --ignored --nocapture event_figures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn event_figures() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b"]).await;
    let mut publisher = join(&routers[0], Serializer::MsgPack).await;
    let mut local = join(&routers[0], Serializer::MsgPack).await;
    let mut remote = join(&routers[1], Serializer::MsgPack).await;
    subscribe(&mut local, "com.ex.local", None).await;
    subscribe(&mut remote, "com.ex.remote", None).await;
    const N: usize = 5_000;
    latencies(&mut publisher, &mut local, "com.ex.local", 500).await;
    latencies(&mut publisher, &mut remote, "com.ex.remote", 500).await;
    for (name, subscriber, topic) in
        [("local", &mut local, "com.ex.local"), ("across nodes", &mut remote, "com.ex.remote")]
    {
        let times = latencies(&mut publisher, subscriber, topic, N).await;
        println!(
            "event latency {name}: p50 {:?} p99 {:?} (n = {N})",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    // A join reserves its session id in JetStream: the cost of that, against a router alone.
    let alone = router().await;
    for (name, url) in [("alone", alone.url()), ("in a cluster", routers[0].url())] {
        let mut times = Vec::with_capacity(300);
        for _ in 0..300 {
            let started = Instant::now();
            let client = Client::join(&url, REALM, Serializer::MsgPack).await.unwrap();
            times.push(started.elapsed());
            drop(client);
        }
        times.sort_unstable();
        println!(
            "join {name}: p50 {:?} p99 {:?} (connect + HELLO/WELCOME)",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    const M: u64 = 100_000;
    let (mut tx, _rx) = publisher.split();
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        for i in 0..M {
            let request = tx.request_id();
            let payload = Payload::args(vec![Value::UInt(i)]);
            let publish = Message::Publish { request, options: Dict::new(), topic: "com.ex.remote".into(), payload };
            tx.feed(&publish).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    let mut received = 0u64;
    remote.rx.set_timeout(Duration::from_secs(2));
    while let Ok(Message::Event { .. }) = remote.recv().await {
        received += 1;
        if received == M {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _tx = sending.await.unwrap();
    println!(
        "cross-node throughput: {received} of {M} events in {elapsed:?} = {:.0} events/s",
        received as f64 / elapsed.as_secs_f64()
    );
}

/// A node cut off from NATS for longer than a lease: the others publish its sessions'
/// testaments once and see the sessions leave; when NATS is back, the node writes its sessions'
/// records again (`rejoin`: the others see them join again) or closes them (`fence`).
async fn cut_off_node(fence: bool) {
    let Some(nats) = NatsServer::start() else { return };
    let proxy = TcpProxy::start(nats.port()).await;
    let cluster = cluster_name();
    let a = cluster_router(&nats.url(), &cluster, "a", grant_meta).await;
    let b = cluster_router(&proxy.url(), &cluster, "b", move |c| {
        grant_meta(c);
        if fence {
            c.cluster.as_mut().unwrap().on_isolation = roundhouse::cluster::Isolation::Fence;
        }
    })
    .await;
    let mut asker = join(&a, Serializer::Json).await;
    let mut watcher = join(&a, Serializer::Json).await;
    let mut cut = join(&b, Serializer::MsgPack).await;
    let args = vec![Value::from("com.ex.will"), Value::List(vec![Value::from("cut")])];
    cut.call("wamp.session.add_testament", args).await.expect("testament added");
    let everyone = [asker.session_id(), watcher.session_id(), cut.session_id()];
    wait_for_sessions(&mut asker, &everyone).await;
    let will = subscribe(&mut watcher, "com.ex.will", None).await;
    let joins = subscribe(&mut watcher, "wamp.session.on_join", None).await;
    let leaves = subscribe(&mut watcher, "wamp.session.on_leave", None).await;
    // The record must hold the testament before the cut (it is written after the call returns).
    tokio::time::sleep(Duration::from_millis(200)).await;

    proxy.cut();
    let mut got = vec![event(&mut watcher).await, event(&mut watcher).await];
    got.sort_by_key(|(subscription, ..)| *subscription != will);
    let got: Vec<(u64, Value)> = got.into_iter().map(|(s, _, _, arg)| (s, arg)).collect();
    assert_eq!(got, vec![(will, Value::from("cut")), (leaves, Value::UInt(everyone[2]))]);
    wait_for_sessions(&mut asker, &everyone[..2]).await;
    // Cut off, a node's publishers are not held up; their events stay on the node.
    let started = Instant::now();
    publish(&mut cut, "com.ex.will", Dict::new(), vec![Value::from("during")]).await;
    assert!(started.elapsed() < Duration::from_secs(1), "PUBLISHED took {:?}", started.elapsed());
    // Nor are joins: they are checked against the node's own view.
    let started = Instant::now();
    let late = join(&b, Serializer::Json).await;
    assert!(started.elapsed() < Duration::from_secs(1), "the join took {:?}", started.elapsed());

    proxy.heal();
    if fence {
        match tokio::time::timeout(WAIT, cut.recv()).await.expect("closed in time") {
            Ok(Message::Goodbye { reason, .. }) => assert_eq!(reason, "wamp.close.system_shutdown"),
            other => panic!("expected GOODBYE, got {other:?}"),
        }
        // Its testament went with the reaper and is not published again. The session that
        // joined while cut off may have its record written once NATS is back, and then deleted
        // as it is closed: a join and a leave, in that order, or nothing.
        let seen = meta_events(&mut watcher, joins, leaves, Duration::from_millis(700)).await;
        let late = late.session_id();
        assert!(seen.is_empty() || seen == vec![(true, late), (false, late)], "{seen:?}");
        wait_for_sessions(&mut asker, &everyone[..2]).await;
    } else {
        // Both of its sessions join the cluster again, the one that joined while cut off too.
        let mut joined = Vec::new();
        for _ in 0..2 {
            let (subscription, _, _, arg) = event(&mut watcher).await;
            assert_eq!(subscription, joins);
            let Value::Dict(details) = arg else { panic!("on_join details") };
            joined.extend(details.get("session").and_then(Value::as_u64));
        }
        joined.sort_unstable();
        let mut expected = vec![everyone[2], late.session_id()];
        expected.sort_unstable();
        assert_eq!(joined, expected);
        let mut everyone = everyone.to_vec();
        everyone.push(late.session_id());
        wait_for_sessions(&mut asker, &everyone).await;
        // And the node that was cut off sees the whole cluster again, and sends it events.
        wait_for_sessions(&mut cut, &everyone).await;
        publish(&mut cut, "com.ex.will", Dict::new(), vec![Value::from("after")]).await;
        assert_eq!(event(&mut watcher).await.3, Value::from("after"));
        // Its testament was published by the reaper: leaving now does not publish it again.
        say_goodbye(cut).await;
        let (subscription, _, _, arg) = event(&mut watcher).await;
        assert_eq!((subscription, arg), (leaves, Value::UInt(everyone[2])));
        expect_nothing(&mut watcher, Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_node_cut_off_rejoins_its_sessions_when_nats_is_back() {
    cut_off_node(false).await;
}

#[tokio::test]
async fn a_fenced_node_closes_its_sessions_when_nats_is_back() {
    cut_off_node(true).await;
}

#[tokio::test]
async fn a_session_id_held_on_another_node_is_not_given_twice() {
    use roundhouse::cluster::sessions::{Reserved, Sessions};
    use roundhouse::cluster::Cluster;
    use roundhouse::session::SessionHandle;
    let Some(nats) = NatsServer::start() else { return };
    let cluster = cluster_name();
    let limits = roundhouse::RouterConfig::default().outbox_limits();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let node = Cluster::join(&cluster_config(&nats.url(), &cluster, name)).await.expect("joins");
        let sessions = Sessions::open(&node).await.expect("bucket opens");
        sessions.start(HashMap::new(), tokio_util::sync::CancellationToken::new()).await;
        nodes.push((node, sessions));
    }
    let id = fastrand::u64(1..=1 << 53);
    let (first, _queue) = SessionHandle::new(id, Serializer::Json, limits);
    assert_eq!(nodes[0].1.reserve(&first, REALM).await, Reserved::Yes);
    let (twin, _queue) = SessionHandle::new(id, Serializer::Json, limits);
    assert_eq!(nodes[1].1.reserve(&twin, REALM).await, Reserved::Taken, "the same id joining on another node");
    // The other node's view has it, so its next draws avoid it.
    let deadline = Instant::now() + WAIT;
    while !nodes[1].1.contains(id) {
        assert!(Instant::now() < deadline, "b never saw a's session");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(nodes[1].1.get(id).map(|r| r.node.clone()).as_deref(), Some("a"));
    // Once it left, the id is free again.
    nodes[0].1.left(id, Vec::new());
    nodes[0].1.flush(WAIT).await;
    assert_eq!(nodes[1].1.reserve(&twin, REALM).await, Reserved::Yes);
}

#[tokio::test]
async fn testaments_of_sessions_closed_by_a_graceful_shutdown_reach_other_nodes_once() {
    let Some(nats) = NatsServer::start() else { return };
    let routers = nodes(&nats, &["a", "b"]).await;
    let mut routers = routers.into_iter();
    let (a, b) = (routers.next().unwrap(), routers.next().unwrap());
    let mut listener = join(&a, Serializer::Json).await;
    let will = subscribe(&mut listener, "com.ex.will", None).await;
    let mut leaving = join(&b, Serializer::Json).await;
    let args = vec![Value::from("com.ex.will"), Value::List(vec![Value::from("shutdown")])];
    leaving.call("wamp.session.add_testament", args).await.expect("testament added");
    b.shutdown().await;
    let (subscription, _, _, arg) = event(&mut listener).await;
    assert_eq!((subscription, arg), (will, Value::from("shutdown")));
    // b left the cluster: a reaps it at once, and finds nothing left to publish.
    expect_nothing(&mut listener, Duration::from_millis(LEASE_MS + 500)).await;
    drop(leaving);
}
