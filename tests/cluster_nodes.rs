//! Cluster membership through a real nats-server: nodes see each other join, leave, crash (the
//! real binary, SIGKILLed) and be cut off from NATS and come back; one reaper per lost node.

mod common;

use std::time::Duration;

use common::nats::{cluster_router, NatsServer, NodeProcess, TcpProxy, HEARTBEAT_MS, LEASE_MS};
use roundhouse::cluster::{Cluster, NodeEvent, NodeId};
use tokio::sync::broadcast;
use tokio::time::{timeout, Instant};

/// Waits for an event matching `wanted`, skipping others; fails after `within`.
async fn next_event(
    events: &mut broadcast::Receiver<NodeEvent>,
    within: Duration,
    wanted: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    timeout(within, async {
        loop {
            let event = events.recv().await.expect("node events keep coming");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no such node event within {within:?}"))
}

fn lost(name: &str) -> impl Fn(&NodeEvent) -> bool + '_ {
    move |event| matches!(event, NodeEvent::Lost(node) if &*node.name == name)
}

fn joined(name: &str) -> impl Fn(&NodeEvent) -> bool + '_ {
    move |event| matches!(event, NodeEvent::Joined(node) if &*node.name == name)
}

fn cluster_of(router: &roundhouse::RouterHandle) -> std::sync::Arc<Cluster> {
    router.shared().cluster.clone().expect("the router joined a cluster")
}

#[tokio::test]
async fn nodes_see_each_other_and_a_graceful_leave_at_once() {
    let Some(nats) = NatsServer::start() else { return };
    let a = cluster_router(&nats.url(), "c1", "a", |_| {}).await;
    let a_cluster = cluster_of(&a);
    let mut events = a_cluster.node_events();
    let b = cluster_router(&nats.url(), "c1", "b", |_| {}).await;
    let b_node = cluster_of(&b).node().clone();
    assert_eq!(next_event(&mut events, Duration::from_secs(5), joined("b")).await, NodeEvent::Joined(b_node.clone()));
    let mut names: Vec<String> = cluster_of(&b).live_nodes().iter().map(|n| n.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"], "a joining node reads who is there before it serves");
    assert!(a_cluster.is_live(&b_node));
    assert_ne!(a_cluster.node().incarnation, b_node.incarnation);

    let left = Instant::now();
    b.shutdown().await;
    assert_eq!(next_event(&mut events, Duration::from_secs(5), lost("b")).await, NodeEvent::Lost(b_node.clone()));
    assert!(left.elapsed() < Duration::from_millis(LEASE_MS), "a graceful leave is seen before the lease ends");
    assert!(!a_cluster.is_live(&b_node));
    a.shutdown().await;
}

#[tokio::test]
async fn a_killed_node_is_lost_when_its_lease_ends_and_reaped_once() {
    let Some(nats) = NatsServer::start() else { return };
    let a = cluster_router(&nats.url(), "c2", "a", |_| {}).await;
    let c = cluster_router(&nats.url(), "c2", "c", |_| {}).await;
    let mut events = cluster_of(&a).node_events();
    let mut process = NodeProcess::start(&nats.url(), "c2", "b");
    let NodeEvent::Joined(b) = next_event(&mut events, Duration::from_secs(10), joined("b")).await else {
        unreachable!()
    };

    process.kill();
    let killed = Instant::now();
    assert_eq!(next_event(&mut events, Duration::from_secs(5), lost("b")).await, NodeEvent::Lost(b.clone()));
    let seen = killed.elapsed();
    assert!(
        seen >= Duration::from_millis(LEASE_MS - HEARTBEAT_MS)
            && seen <= Duration::from_millis(LEASE_MS + 2 * HEARTBEAT_MS + 500),
        "lost {seen:?} after the kill; the lease is {LEASE_MS} ms"
    );
    // Both survivors try to reap; exactly one may.
    let (a_cluster, c_cluster) = (cluster_of(&a), cluster_of(&c));
    let (a_claim, c_claim) = tokio::join!(a_cluster.claim("test", &b), c_cluster.claim("test", &b));
    let (a_claim, c_claim) = (a_claim.unwrap(), c_claim.unwrap());
    assert!(a_claim ^ c_claim, "exactly one reaper per lost node and task");
    let (winner, loser) = if a_claim { (&a_cluster, &c_cluster) } else { (&c_cluster, &a_cluster) };
    assert!(!loser.claim("test", &b).await.unwrap(), "a claim is not granted to another node later");
    assert!(winner.claim("test", &b).await.unwrap(), "the holder asking again (a lost answer) still holds it");
    assert!(cluster_of(&a).claim("other", &b).await.unwrap(), "each task has its own claim");
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_node_cut_off_from_nats_is_reaped_and_rejoins_when_healed() {
    let Some(nats) = NatsServer::start() else { return };
    let proxy = TcpProxy::start(nats.port()).await;
    let a = cluster_router(&nats.url(), "c3", "a", |_| {}).await;
    let b = cluster_router(&proxy.url(), "c3", "b", |_| {}).await;
    let (a_cluster, b_cluster) = (cluster_of(&a), cluster_of(&b));
    let b_node: NodeId = b_cluster.node().clone();
    let mut a_events = a_cluster.node_events();
    let mut b_events = b_cluster.node_events();
    let mut b_connection = b_cluster.connection();

    proxy.cut();
    timeout(Duration::from_secs(5), b_connection.wait_for(|up| !*up)).await.expect("b sees NATS gone").unwrap();
    assert_eq!(next_event(&mut a_events, Duration::from_secs(5), lost("b")).await, NodeEvent::Lost(b_node.clone()));

    proxy.heal();
    timeout(Duration::from_secs(10), b_connection.wait_for(|up| *up)).await.expect("b reconnects").unwrap();
    // The same incarnation comes back: b learns it was reaped, and a sees it join again.
    assert_eq!(next_event(&mut b_events, Duration::from_secs(10), lost("b")).await, NodeEvent::Lost(b_node.clone()));
    assert_eq!(
        next_event(&mut a_events, Duration::from_secs(10), joined("b")).await,
        NodeEvent::Joined(b_node.clone())
    );
    assert!(a_cluster.is_live(&b_node));
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn no_cluster_section_means_no_nats_and_a_bad_one_is_refused() {
    let router = common::router().await;
    assert!(router.shared().cluster.is_none());
    router.shutdown().await;

    // Nothing listens there: the router does not start half-joined.
    let closed = common::nats::free_port();
    let refused = roundhouse::Router::start(roundhouse::RouterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster: Some(common::nats::cluster_config(&format!("nats://127.0.0.1:{closed}"), "c4", "a")),
        ..roundhouse::RouterConfig::default()
    })
    .await;
    let error = refused.err().expect("no NATS, no cluster node").to_string();
    assert!(error.contains("cannot connect to NATS"), "{error}");

    let text = "[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\"]\ncluster_name = \"prod\"\nnode_id = \"n1\"\non_isolation = \"fence\"\n";
    let config: roundhouse::RouterConfig = toml::from_str(text).unwrap();
    let cluster = config.cluster.clone().unwrap();
    assert_eq!(cluster.on_isolation, roundhouse::cluster::Isolation::Fence);
    assert_eq!(cluster.lease_ms, 3_000, "defaults fill what the section leaves out");
    let again: roundhouse::RouterConfig = toml::from_str(&config.to_toml()).unwrap();
    assert_eq!(again.cluster, config.cluster);
    let bad: roundhouse::RouterConfig = toml::from_str("[cluster]\nnode_id = \"a.b\"\n").unwrap();
    assert!(bad.validate().unwrap_err().to_string().contains("node_id"));
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_nats_that_is_gone() {
    let Some(mut nats) = NatsServer::start() else { return };
    let node = cluster_router(&nats.url(), "c5", "a", |_| {}).await;
    let mut connection = cluster_of(&node).connection();
    nats.kill();
    timeout(Duration::from_secs(5), connection.wait_for(|up| !*up)).await.expect("NATS seen gone").unwrap();
    // The node cannot delete its lease; it stops anyway, within the registry write timeout.
    timeout(Duration::from_secs(6), node.shutdown()).await.expect("shutdown ends without NATS");
}

/// Fails if any node is lost within `window` (joins, such as a node seen again after a
/// reconnect, are fine).
async fn assert_no_loss(events: &mut broadcast::Receiver<NodeEvent>, window: Duration, when: &str) {
    let _ = timeout(window, async {
        loop {
            if let Ok(NodeEvent::Lost(node)) = events.recv().await {
                panic!("{node} was lost {when}");
            }
        }
    })
    .await;
}

/// The lease of the three-server test: the shortest a replicated bucket allows.
const R3_LEASE_MS: u64 = roundhouse::cluster::MIN_REPLICATED_LEASE_MS;

/// Leases at three replicas: with one NATS server of three gone, writes go on (once JetStream
/// elected new leaders) and nobody is reaped; with two gone there is no quorum, writes fail with a
/// JetStream error and nobody is reaped either (a node is lost only by a lease the majority let
/// expire), while the nodes keep serving their own sessions.
#[tokio::test]
async fn a_three_server_nats_keeps_the_cluster_with_one_server_down_and_stops_writes_with_two() {
    let Some(mut nats) = common::nats::NatsCluster::start() else { return };
    let urls = nats.urls();
    let node = |name: &'static str, first: usize| {
        // Each node starts at a different server and knows them all.
        let mut ordered = urls.clone();
        ordered.rotate_left(first);
        cluster_router(&urls[first], "r3", name, move |config| {
            let cluster = config.cluster.as_mut().unwrap();
            cluster.nats_urls = ordered;
            cluster.kv_replicas = 3;
            cluster.heartbeat_ms = 500;
            cluster.lease_ms = R3_LEASE_MS;
            cluster.kv_timeout_ms = 12_000;
        })
    };
    // Started at once: one creates the buckets, the other finds them before their streams have
    // a leader, and waits for one rather than failing to start.
    let (a, b) = tokio::join!(node("a", 0), node("b", 1));
    let (a_cluster, b_cluster) = (cluster_of(&a), cluster_of(&b));
    let mut events = a_cluster.node_events();
    let someone = NodeId::new("gone", 1);

    nats.servers[2].kill();
    // Writes go on with two servers of three, once the streams that had their leader on the dead
    // server elected another.
    let deadline = Instant::now() + Duration::from_secs(20);
    let claimed = loop {
        match a_cluster.claim("one-down", &someone).await {
            Ok(claimed) => break claimed,
            Err(error) => assert!(Instant::now() < deadline, "no write with two servers of three: {error}"),
        }
    };
    assert!(claimed, "writes go on with two servers of three");
    assert!(!b_cluster.claim("one-down", &someone).await.unwrap());
    assert_no_loss(&mut events, Duration::from_millis(R3_LEASE_MS + 1_000), "while a majority serves").await;

    nats.servers[1].kill();
    let refused =
        timeout(Duration::from_secs(20), a_cluster.claim("two-down", &someone)).await.expect("a write fails in time");
    let error = refused.expect_err("no quorum, no write").to_string();
    assert!(error.contains("JetStream"), "{error}");
    assert_no_loss(&mut events, Duration::from_millis(R3_LEASE_MS + 1_000), "without a quorum (no lease expires)")
        .await;
    // Still a router: a session joins and the node answers its calls.
    let mut client = common::join(&a, roundhouse::wire::Serializer::Json).await;
    let count =
        timeout(Duration::from_secs(5), client.call("wamp.session.count", vec![])).await.expect("answered in time");
    assert!(count.is_ok(), "{count:?}");
    common::say_goodbye(client).await;
}
