//! The listening sockets of a router: what each serves (WebSocket, RawSocket, both on one port),
//! and the settings a reload may change for the connections it accepts next (TLS certificates,
//! the Origin allowlist), swapped atomically.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

use super::origin::OriginPolicy;
use super::tls::TlsConfig;

/// One listening socket (a `[[listener]]` table; the top-level `listen` and `rawsocket_listen`
/// are listeners too, see [`crate::RouterConfig::listeners`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The address to bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Serve WebSocket (at the router's `path`). Default true.
    #[serde(default = "yes")]
    pub websocket: bool,
    /// Serve RawSocket; with `websocket` too, the first octet tells them apart. Default true.
    #[serde(default = "yes")]
    pub rawsocket: bool,
    /// TLS on this listener (`wss://`, RawSocket over TLS); default none (plain TCP).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Web origins allowed to open a WebSocket here (see [`super::origin`]); default: none but
    /// loopback origins on a loopback address.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn yes() -> bool {
    true
}

impl ListenerConfig {
    /// Checks what can be checked without touching files.
    pub fn validate(&self) -> Result<(), String> {
        if !self.websocket && !self.rawsocket {
            return Err(format!("listener {} serves neither websocket nor rawsocket", self.listen));
        }
        OriginPolicy::new(&self.allowed_origins, self.listen).map(drop)
    }

    /// Makes relative certificate paths relative to `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        if let Some(tls) = &mut self.tls {
            tls.resolve_paths(dir);
        }
    }

    /// The URL scheme of its WebSocket endpoint.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    /// Whether a reload can apply `new` to this listener, or only a restart can: the address,
    /// what it serves, and whether it speaks TLS at all are fixed; certificates and origins are not.
    pub fn same_socket(&self, new: &ListenerConfig) -> bool {
        self.listen == new.listen
            && self.websocket == new.websocket
            && self.rawsocket == new.rawsocket
            && self.tls.is_some() == new.tls.is_some()
    }
}

/// What a listener applies to each connection it accepts, as last loaded.
pub struct Live {
    /// The config it was built from.
    pub config: ListenerConfig,
    /// Present on a TLS listener.
    pub tls: Option<TlsAcceptor>,
    /// The `Origin` check of WebSocket handshakes.
    pub origins: OriginPolicy,
}

impl Live {
    /// Reads the certificates and builds the checks; the error names what is wrong.
    pub fn build(config: &ListenerConfig) -> Result<Self, String> {
        let origins = OriginPolicy::new(&config.allowed_origins, config.listen)?;
        let tls = config.tls.as_ref().map(TlsConfig::acceptor).transpose()?;
        Ok(Live { config: config.clone(), tls, origins })
    }
}

/// A bound listener.
pub struct ListenerState {
    /// The config it was bound with (a reload cannot change these: [`ListenerConfig::same_socket`]).
    pub bound: ListenerConfig,
    /// The address it is bound to.
    pub local_addr: SocketAddr,
    live: ArcSwap<Live>,
}

impl ListenerState {
    /// A listener bound at `local_addr`.
    pub fn new(live: Live, local_addr: SocketAddr) -> Self {
        ListenerState { bound: live.config.clone(), local_addr, live: ArcSwap::from_pointee(live) }
    }

    /// What applies to a connection accepted now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Applies `live` to the connections accepted from now on.
    pub fn swap(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    /// The listener's WebSocket URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.bound.scheme(), self.local_addr, path)
    }
}
