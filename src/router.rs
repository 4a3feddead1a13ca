//! The router: listener, realms, sessions, and graceful shutdown.
//!
//! [`Router::start`] binds and returns at once with a [`RouterHandle`]; tests, benches and the
//! load generator embed the router this way, and `main.rs` does the same and waits for a signal.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RouterConfig;
use crate::realm::Realm;
use crate::session::{Outbound, SessionHandle};
use crate::transport::PeerLink;
use crate::transport::{rawsocket, websocket};
use crate::wire::message::MAX_ID;

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
    /// Router-wide counters (`/metrics`).
    pub metrics: crate::metrics::RouterMetrics,
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
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(id) {
                let (handle, queue) =
                    SessionHandle::connected(id, link.serializer, limits, link.transport, Some(link.peer));
                slot.insert(handle.clone());
                return (handle, queue);
            }
        }
    }
}

/// Entry point for starting a router.
pub struct Router;

impl Router {
    /// Binds the listener and starts serving. Returns once the port is bound.
    pub async fn start(config: RouterConfig) -> io::Result<RouterHandle> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = bind(config.listen, "listen").await?;
        let local_addr = listener.local_addr()?;
        let (limits, chunks) = (config.session_limits(), config.max_message_size);
        let realms = config
            .realms
            .iter()
            .map(|r| {
                let metrics = Arc::new(crate::metrics::RealmMetrics::new(&r.name, &config.metrics.procedures));
                (r.name.clone(), Arc::new(Realm::new(r, config.dealer_shards, limits, chunks, metrics)))
            })
            .collect();
        let shared = Arc::new(RouterShared {
            config,
            realms,
            sessions: DashMap::default(),
            shutdown: CancellationToken::new(),
            metrics: crate::metrics::RouterMetrics::default(),
        });
        let rawsocket = match shared.config.rawsocket_listen {
            Some(address) => Some(bind(address, "rawsocket_listen").await?),
            None => None,
        };
        let rawsocket_addr = rawsocket.as_ref().map(TcpListener::local_addr).transpose()?;
        let connections = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(shared.config.max_connections));
        let mut accept = vec![tokio::spawn(accept_loop(
            listener,
            Listener::Main,
            shared.clone(),
            connections.clone(),
            limit.clone(),
        ))];
        if let Some(listener) = rawsocket {
            let rawsocket = accept_loop(listener, Listener::RawSocket, shared.clone(), connections.clone(), limit);
            accept.push(tokio::spawn(rawsocket));
        }
        let rawsocket = rawsocket_addr.or(shared.config.rawsocket_on_websocket_port.then_some(local_addr));
        tracing::info!(
            url = %format!("ws://{local_addr}{}", shared.config.path),
            rawsocket = %rawsocket.map_or_else(|| "off".to_owned(), |a| format!("tcp://{a}")),
            realms = %shared.config.realms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(","),
            "router listening"
        );
        Ok(RouterHandle { local_addr, rawsocket_addr, shared, connections, accept })
    }
}

/// Binds a listener; the error names the address and the key that chose it.
async fn bind(address: SocketAddr, key: &str) -> io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {address} ({key}): {e}")))
}

/// What a listening socket serves.
#[derive(Clone, Copy)]
enum Listener {
    /// WebSocket, and RawSocket too when `rawsocket_on_websocket_port` is set.
    Main,
    /// RawSocket only.
    RawSocket,
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<RouterShared>,
    connections: TaskTracker,
    limit: Arc<Semaphore>,
) {
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
            // refusals at a time, so a flood of connections costs no more than that.
            if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                let timeout = shared.config.handshake_timeout().min(Duration::from_secs(2));
                tokio::spawn(async move {
                    let rawsocket_only = matches!(kind, Listener::RawSocket);
                    let _ = tokio::time::timeout(timeout, crate::transport::refuse(tcp, rawsocket_only)).await;
                    drop(refusing);
                });
            }
            continue;
        };
        shared.metrics.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        keepalive(&tcp, shared.config.tcp_keepalive_ms);
        let shared = shared.clone();
        connections.spawn(async move {
            serve(shared, tcp, peer, kind).await;
            drop(permit);
        });
    }
}

/// Connections being refused (at `max_connections`) at one time; beyond this they are dropped.
const MAX_REFUSALS: usize = 64;

/// Turns TCP keepalive on, so a peer whose host vanished is noticed by the kernel too.
fn keepalive(tcp: &TcpStream, idle_ms: u64) {
    if idle_ms == 0 {
        return;
    }
    let idle = Duration::from_millis(idle_ms);
    let probes = socket2::TcpKeepalive::new().with_time(idle).with_interval((idle / 6).max(Duration::from_secs(1)));
    if let Err(error) = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes) {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
}

/// Hands a connection to its transport; on the main port the first octet tells RawSocket (0x7F)
/// from an HTTP request.
async fn serve(shared: Arc<RouterShared>, tcp: TcpStream, peer: SocketAddr, kind: Listener) {
    let is_rawsocket = match kind {
        Listener::RawSocket => true,
        Listener::Main if shared.config.rawsocket_on_websocket_port => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(shared.config.handshake_timeout(), tcp.peek(&mut first)).await {
                Ok(Ok(1)) => first[0] == rawsocket::MAGIC,
                _ => return,
            }
        }
        Listener::Main => false,
    };
    if is_rawsocket {
        rawsocket::serve(shared, tcp, peer).await;
    } else {
        websocket::serve(shared, tcp, peer).await;
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

    /// The WebSocket URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.local_addr, self.shared.config.path)
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
        tracing::info!("router stopped");
    }
}
