//! The router: listeners, realms, sessions, and graceful shutdown.
//!
//! [`Router::start`] binds and returns at once with a [`RouterHandle`]; tests, benches and the
//! load generator embed the router this way, and `main.rs` does the same and waits for a signal.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::RouterConfig;
use crate::realm::Realm;
use crate::reload::{ReloadHook, ReloadReport};
use crate::session::{Outbound, SessionHandle};
use crate::transport::listener::{ListenerState, Live};
use crate::transport::tls;
use crate::transport::PeerLink;
use crate::transport::{rawsocket, websocket, Connection, Socket};
use crate::wire::message::MAX_ID;
use crate::workers::Workers;

/// State every connection task shares.
pub struct RouterShared {
    /// The configuration the router was started with.
    pub config: RouterConfig,
    /// The realms, by name.
    pub realms: HashMap<String, Arc<Realm>>,
    /// Every open session (joined or not yet), by id; ids are unique router-wide.
    pub sessions: DashMap<u64, Arc<SessionHandle>, foldhash::fast::RandomState>,
    /// Fires when the router shuts down.
    pub shutdown: CancellationToken,
    /// The listeners, in the order of [`RouterConfig::listeners`].
    pub listeners: Vec<Arc<ListenerState>>,
    /// What a reload tells besides the listeners (see [`crate::reload`]).
    pub(crate) reload_hooks: parking_lot::Mutex<Vec<Arc<dyn ReloadHook>>>,
    /// Router-wide counters (`/metrics`).
    pub metrics: crate::metrics::RouterMetrics,
    /// The threads sessions run on.
    pub workers: Arc<Workers>,
    /// The cluster this node belongs to (`[cluster]`); `None` for a single-node router.
    pub cluster: Option<Arc<Cluster>>,
    /// Every node's sessions, in a cluster.
    pub cluster_sessions: Option<Arc<crate::cluster::sessions::Sessions>>,
}

impl RouterShared {
    /// What the router holds right now (see [`RouterHandle::census`]); readable after shutdown.
    pub fn census(&self) -> Census {
        let mut census = Census { sessions: self.sessions.len(), ..Census::default() };
        for session in self.sessions.iter() {
            census.calls += session.calls_in_flight();
            census.invocations += session.invocations_in_flight();
            census.queued_bytes += session.outbox().queued_bytes();
        }
        for realm in self.realms.values() {
            census.timers += realm.dealer.timeouts().len();
            census.registrations += realm.dealer.registration_count();
            census.subscriptions += realm.broker.subscription_count();
            census.joined += realm.sessions.len();
        }
        census
    }

    /// Creates a session with a fresh random id and registers it in the session table.
    pub(crate) fn new_session(&self, link: &PeerLink) -> (Arc<SessionHandle>, mpsc::UnboundedReceiver<Outbound>) {
        let limits = self.config.outbox_limits();
        loop {
            let id = fastrand::u64(1..=MAX_ID);
            // In a cluster, also unused on the other nodes as far as this one knows; the join
            // makes sure (see `crate::cluster::sessions`).
            if self.cluster_sessions.as_ref().is_some_and(|c| c.contains(id)) {
                continue;
            }
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(id) {
                let (handle, queue) = SessionHandle::connected(
                    id,
                    link.serializer,
                    limits,
                    link.transport,
                    Some(link.peer),
                    link.tls.clone(),
                );
                slot.insert(handle.clone());
                return (handle, queue);
            }
        }
    }
}

/// Entry point for starting a router.
pub struct Router;

impl Router {
    /// Binds the listeners and starts serving. Returns once every port is bound.
    pub async fn start(config: RouterConfig) -> io::Result<RouterHandle> {
        let invalid = |e: crate::config::ConfigError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        config.validate().map_err(invalid)?;
        let lives = config.load_listeners().map_err(invalid)?;
        let mut sockets = Vec::with_capacity(lives.len());
        let mut listeners = Vec::with_capacity(lives.len());
        for live in lives {
            let socket = bind(live.config.listen, config.tcp_keepalive_ms)?;
            listeners.push(Arc::new(ListenerState::new(live, socket.local_addr()?)));
            sockets.push(socket);
        }
        let (workers, stop_workers) = Workers::start(config.worker_threads)?;
        // The workers end with the runtime that started the router (a test's, a bench's, main's),
        // as the router's own tasks on it do.
        tokio::spawn(async move {
            let _stop = stop_workers;
            std::future::pending::<()>().await
        });
        let cluster = match &config.cluster {
            Some(cluster) => Some(Cluster::join(cluster).await.map_err(|e| io::Error::other(e.to_string()))?),
            None => None,
        };
        let cluster_sessions = match &cluster {
            Some(cluster) => Some(
                crate::cluster::sessions::Sessions::open(cluster).await.map_err(|e| io::Error::other(e.to_string()))?,
            ),
            None => None,
        };
        let (limits, chunks) = (config.session_limits(), config.max_message_size);
        let realms = config
            .realms
            .iter()
            .map(|r| {
                let metrics = Arc::new(crate::metrics::RealmMetrics::new(&r.name, &config.metrics.procedures));
                (
                    r.name.clone(),
                    Arc::new(
                        Realm::new(r, config.dealer_shards, limits, chunks, metrics, cluster.clone())
                            .with_sessions(cluster_sessions.clone()),
                    ),
                )
            })
            .collect();
        let shared = Arc::new(RouterShared {
            config,
            realms,
            sessions: DashMap::default(),
            shutdown: CancellationToken::new(),
            listeners,
            reload_hooks: parking_lot::Mutex::default(),
            metrics: crate::metrics::RouterMetrics::default(),
            workers,
            cluster,
            cluster_sessions,
        });
        if let Some(sessions) = &shared.cluster_sessions {
            sessions.start(shared.realms.clone(), shared.shutdown.clone()).await;
        }
        if let Some(cluster) = &shared.cluster {
            // Registrations across the cluster: in place before the first session can REGISTER.
            crate::dealer::cluster::Replica::start(&shared, cluster.clone())
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        let connections = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(shared.config.max_connections));
        // Every listener accepts on worker 0 and hands connections round-robin to the workers.
        let home = shared.workers.handle(0).clone();
        let accept = sockets
            .into_iter()
            .zip(shared.listeners.clone())
            .map(|(socket, state)| {
                home.spawn(accept_loop(socket, 0, state, shared.clone(), connections.clone(), limit.clone()))
            })
            .collect();
        let main = &shared.listeners[0];
        let rawsocket_addr = shared.config.rawsocket_listen.map(|_| shared.listeners[1].local_addr);
        tracing::info!(
            url = %main.url(&shared.config.path),
            rawsocket = %rawsocket_addr
                .or(shared.config.rawsocket_on_websocket_port.then_some(main.local_addr))
                .map_or_else(|| "off".to_owned(), |a| format!("tcp://{a}")),
            realms = %shared.config.realms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(","),
            "router listening"
        );
        let extra = shared.listeners.len() - shared.config.extra_listeners.len();
        for listener in &shared.listeners[extra..] {
            let config = &listener.bound;
            tracing::info!(
                url = %listener.url(&shared.config.path),
                websocket = config.websocket,
                rawsocket = config.rawsocket,
                tls = config.tls.is_some(),
                "listener"
            );
        }
        Ok(RouterHandle { local_addr: main.local_addr, rawsocket_addr, shared, connections, accept })
    }
}

/// Binds a listener; the error names the address. Bound outside any runtime: the worker that
/// accepts on it registers it with its own.
///
/// `TCP_NODELAY` and TCP keepalive (`keepalive_ms`, 0: off) are set here, once: Linux copies a
/// listening socket's options to every connection it accepts, which saves four system calls per
/// connection.
fn bind(address: SocketAddr, keepalive_ms: u64) -> io::Result<std::net::TcpListener> {
    let bound = std::net::TcpListener::bind(address).and_then(|listener| {
        listener.set_nonblocking(true)?;
        let socket = socket2::SockRef::from(&listener);
        socket.set_tcp_nodelay(true)?;
        if let Some(probes) = keepalive(keepalive_ms) {
            socket.set_tcp_keepalive(&probes)?;
        }
        Ok(listener)
    });
    bound.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))
}

/// Accepts connections on worker `home` and starts each one's session on the next worker.
async fn accept_loop(
    listener: std::net::TcpListener,
    home: usize,
    state: Arc<ListenerState>,
    shared: Arc<RouterShared>,
    connections: TaskTracker,
    limit: Arc<Semaphore>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => return tracing::error!(%error, "cannot watch the listening socket; not accepting on it"),
    };
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.refused("any", "max_connections");
            tracing::warn!(%peer, limit = shared.config.max_connections, "connection refused: max_connections reached");
            // Say why, so a client backs off instead of retrying blindly; a bounded number of
            // refusals at a time, so a flood of connections costs no more than that. A TLS
            // listener cannot say it in plain text, and a handshake would cost what the limit saves:
            // its connection is just closed.
            let plain = state.bound.tls.is_none();
            if let (true, Ok(refusing)) = (plain, refusals.clone().try_acquire_owned()) {
                let timeout = shared.config.handshake_timeout().min(Duration::from_secs(2));
                let rawsocket_only = !state.bound.websocket;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(timeout, crate::transport::refuse(tcp, rawsocket_only)).await;
                    drop(refusing);
                });
            }
            continue;
        };
        shared.metrics.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (shared, state) = (shared.clone(), state.clone());
        let worker = shared.workers.next_index();
        if worker == home {
            connections.spawn(async move {
                serve(shared, tcp, peer, &state).await;
                drop(permit);
            });
            continue;
        }
        // The socket leaves this worker's reactor and joins the other's, so its readiness
        // wakes the thread its session runs on.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                continue;
            }
        };
        let handle = shared.workers.handle(worker).clone();
        connections.spawn_on(
            async move {
                match TcpStream::from_std(tcp) {
                    Ok(tcp) => serve(shared, tcp, peer, &state).await,
                    Err(error) => tracing::debug!(%peer, %error, "worker cannot take the connection"),
                }
                drop(permit);
            },
            &handle,
        );
    }
}

/// Most octets read at once to tell RawSocket from WebSocket on a listener that serves both: a
/// typical upgrade request whole (the transport reads the rest, if any, from the socket).
const PREFIX: usize = 1024;

/// Connections being refused (at `max_connections`) at one time; beyond this they are dropped.
const MAX_REFUSALS: usize = 64;

/// TCP keepalive after `idle_ms` of silence (`None` for 0: off), so a peer whose host vanished
/// is noticed by the kernel too.
fn keepalive(idle_ms: u64) -> Option<socket2::TcpKeepalive> {
    let idle = Duration::from_millis(idle_ms);
    (idle_ms > 0)
        .then(|| socket2::TcpKeepalive::new().with_time(idle).with_interval((idle / 6).max(Duration::from_secs(1))))
}

/// Hands a connection to its transport, after TLS on a TLS listener. On a listener that serves
/// both transports, the first octet tells RawSocket (0x7F) from an HTTP request. TLS and the
/// transport's handshake share one deadline.
async fn serve(shared: Arc<RouterShared>, mut tcp: TcpStream, peer: SocketAddr, state: &ListenerState) {
    let deadline = Instant::now() + shared.config.handshake_timeout();
    let live = state.live();
    let connection = Connection { peer, deadline, prefix: Vec::new(), tls: None };
    match &live.tls {
        None => {
            let (is_rawsocket, prefix) = match (live.config.websocket, live.config.rawsocket) {
                (true, true) => {
                    // On the heap, not in this task's state, which every open session keeps.
                    let mut prefix = Vec::with_capacity(PREFIX);
                    match tokio::time::timeout_at(deadline, tcp.read_buf(&mut prefix)).await {
                        Ok(Ok(1..)) => (prefix[0] == rawsocket::MAGIC, prefix),
                        _ => return,
                    }
                }
                (websocket, _) => (!websocket, Vec::new()),
            };
            dispatch(shared, tcp, Connection { prefix, ..connection }, is_rawsocket, &live).await;
        }
        // Boxed: a TLS connection's state is far larger than a plain one's, and a plain
        // connection's task must not carry room for it.
        Some(acceptor) => Box::pin(serve_tls(shared, tcp, connection, acceptor, &live)).await,
    }
}

async fn serve_tls(
    shared: Arc<RouterShared>,
    tcp: TcpStream,
    connection: Connection,
    acceptor: &TlsAcceptor,
    live: &Live,
) {
    let (peer, deadline) = (connection.peer, connection.deadline);
    let Some((mut tls, peer_tls)) = tls::accept(acceptor, tcp, peer, deadline).await else { return };
    let connection = Connection { tls: Some(peer_tls), ..connection };
    match (live.config.websocket, live.config.rawsocket) {
        (true, true) => {
            // No peeking inside TLS: the octet read is handed on with the stream.
            let mut first = [0u8; 1];
            match tokio::time::timeout_at(deadline, tls.read_exact(&mut first)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let is_rawsocket = first[0] == rawsocket::MAGIC;
            dispatch(shared, tls, Connection { prefix: first.to_vec(), ..connection }, is_rawsocket, live).await
        }
        (websocket, _) => dispatch(shared, tls, connection, !websocket, live).await,
    }
}

async fn dispatch<S: Socket>(
    shared: Arc<RouterShared>,
    socket: S,
    connection: Connection,
    is_rawsocket: bool,
    live: &Live,
) {
    if is_rawsocket {
        rawsocket::serve(shared, socket, connection).await;
    } else {
        websocket::serve(shared, socket, connection, &live.origins).await;
    }
}

/// What a router holds at one moment (see [`RouterHandle::census`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Open sessions, joined or not.
    pub sessions: usize,
    /// Sessions joined to a realm.
    pub joined: usize,
    /// Calls in flight, as their callers see them.
    pub calls: usize,
    /// INVOCATIONs sent to callees and not yet answered.
    pub invocations: usize,
    /// Call timeouts pending.
    pub timers: usize,
    /// Registrations with members.
    pub registrations: usize,
    /// Subscriptions with subscribers.
    pub subscriptions: usize,
    /// Bytes queued for sessions' writers.
    pub queued_bytes: usize,
}

impl Census {
    /// True when nothing is left: no session, call, invocation, timer, registration, subscription.
    pub fn is_empty(&self) -> bool {
        *self == Census::default()
    }
}

/// A running router.
pub struct RouterHandle {
    local_addr: SocketAddr,
    rawsocket_addr: Option<SocketAddr>,
    shared: Arc<RouterShared>,
    connections: TaskTracker,
    accept: Vec<JoinHandle<()>>,
}

impl RouterHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the RawSocket-only listener, if one is configured (RawSocket is also
    /// served on [`RouterHandle::local_addr`] unless `rawsocket_on_websocket_port` is off).
    pub fn rawsocket_addr(&self) -> Option<SocketAddr> {
        self.rawsocket_addr
    }

    /// The WebSocket URL clients connect to (`wss://` when the `listen` listener has TLS).
    pub fn url(&self) -> String {
        self.shared.listeners[0].url(&self.shared.config.path)
    }

    /// The bound address of every listener, in the order of [`RouterConfig::listeners`]:
    /// `listen`, `rawsocket_listen` if set, then each `[[listener]]`.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.shared.listeners.iter().map(|l| l.local_addr).collect()
    }

    /// Applies a new configuration to new connections and sessions (what SIGHUP does with the
    /// re-read config file); see [`crate::reload`]. On an error nothing changed.
    pub fn reload(&self, config: RouterConfig) -> Result<ReloadReport, crate::config::ConfigError> {
        crate::reload::reload(&self.shared, config)
    }

    /// Adds a part of the router that a reload must tell about the new configuration.
    pub fn on_reload(&self, hook: Arc<dyn ReloadHook>) {
        self.shared.reload_hooks.lock().push(hook);
    }

    /// Sessions currently open.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// What the router holds right now; all zero once every client has gone.
    pub fn census(&self) -> Census {
        self.shared.census()
    }

    /// The shared state (realms, sessions), for inspection.
    pub fn shared(&self) -> &Arc<RouterShared> {
        &self.shared
    }

    /// Stops accepting, ends every call in flight with `wamp.error.canceled`, sends every session
    /// GOODBYE `wamp.close.system_shutdown` (after those errors), and waits up to
    /// `shutdown_timeout_ms` for them to close before dropping the rest.
    pub async fn shutdown(mut self) {
        tracing::info!(sessions = self.session_count(), "shutting down");
        self.shared.shutdown.cancel();
        for accept in &mut self.accept {
            let _ = accept.await;
        }
        self.connections.close();
        if tokio::time::timeout(self.shared.config.shutdown_timeout(), self.connections.wait()).await.is_err() {
            tracing::warn!(
                sessions = self.session_count(),
                "sessions still open after the shutdown timeout; dropping them"
            );
            for session in self.shared.sessions.iter() {
                session.kill();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.connections.wait()).await;
        }
        // Every session is gone: the worker threads end here, not only when the runtime that
        // started the router does.
        self.shared.workers.stop();
        // Last: the sessions' registrations and subscriptions left the cluster as they closed.
        if let Some(sessions) = &self.shared.cluster_sessions {
            // Records of sessions that left must be gone before the lease, or a reaper would
            // publish their testaments a second time.
            sessions.flush(self.shared.config.shutdown_timeout()).await;
        }
        if let Some(cluster) = &self.shared.cluster {
            cluster.leave().await;
        }
        tracing::info!("router stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`bind`] sets on the listener, every accepted connection has without a call of its own.
    #[test]
    fn accepted_connections_inherit_nodelay_and_keepalive() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 60_000).unwrap();
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));

        let off = bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        off.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(off.local_addr().unwrap()).unwrap();
        let (accepted, _) = off.accept().unwrap();
        assert!(!socket2::SockRef::from(&accepted).keepalive().unwrap());
    }
}
