//! Router configuration: defaults, the TOML file format, and validation.
//!
//! Every key is optional; `roundhouse.toml` at the repository root documents each one. Command-line
//! flags override the file (see `src/main.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::config::{default_roles, PrincipalConfig, RoleConfig, ANONYMOUS_ROLE};
use crate::transport::listener::{ListenerConfig, Live};
use crate::transport::tls::TlsConfig;

/// Everything the router needs to run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Address the WebSocket listener binds (default `127.0.0.1:8080`; port 0 picks a free port).
    /// A host name (`localhost:8080`) is resolved once, at start.
    #[serde(deserialize_with = "de_addr")]
    pub listen: SocketAddr,
    /// HTTP path of the WebSocket endpoint (default `/ws`).
    pub path: String,
    /// Also accept RawSocket connections on the WebSocket port, told apart by their first octet
    /// (0x7F, which never starts an HTTP request). Default true.
    pub rawsocket_on_websocket_port: bool,
    /// A separate address for RawSocket only (default: none).
    #[serde(deserialize_with = "de_opt_addr", skip_serializing_if = "Option::is_none")]
    pub rawsocket_listen: Option<SocketAddr>,
    /// TLS on the `listen` listener: `wss://`, and RawSocket over TLS (default: none).
    pub tls: Option<TlsConfig>,
    /// Web origins allowed to open a WebSocket on the `listen` listener (default: none but
    /// loopback origins on a loopback address; see [`crate::transport::origin`]).
    pub allowed_origins: Vec<String>,
    /// Largest WAMP message accepted, in bytes (default 16 MiB). Larger ones abort the session.
    pub max_message_size: usize,
    /// Read buffer reserved per connection, in bytes (default 4 KiB; grows only for large frames).
    pub read_buffer_size: usize,
    /// Bytes of outgoing frames buffered before a write is forced (default 64 KiB).
    pub write_buffer_size: usize,
    /// Bytes a session's outbound queue holds before calls routed to it wait (backpressure) and
    /// events to it are dropped (default 1 MiB). Answers and replies never wait.
    pub max_outbound_bytes: usize,
    /// Bytes a session's outbound queue may reach before the session is closed as a slow consumer
    /// (default 64 MiB; at least `max_outbound_bytes`).
    pub slow_consumer_bytes: usize,
    /// How long a session may leave its queue full, or a socket write pending, before it is
    /// closed as stuck, in milliseconds (default 10000).
    pub stuck_timeout_ms: u64,
    /// How long a new connection may take to finish its WebSocket handshake and send HELLO, in
    /// milliseconds (default 10000).
    pub handshake_timeout_ms: u64,
    /// How long shutdown waits for sessions to take their GOODBYE, in milliseconds (default 2000).
    pub shutdown_timeout_ms: u64,
    /// Shards of each realm's registration and subscription tables, and of their pattern indexes'
    /// edge tables, rounded up to a power of two (default 4096). Creating or deleting a procedure
    /// or pattern copies one shard (entries / shards); each shard costs about 80 bytes per table.
    pub dealer_shards: usize,
    /// Calls one callee may have in flight (sent, not yet answered) before further calls go to
    /// another member of the registration, or fail with `wamp.error.no_available_callee` when
    /// there is none (default 65536). Bounds the memory a callee that stops answering can pin.
    pub max_pending_per_callee: usize,
    /// Payload bytes the calls in flight at one callee may pin (they are kept for call reroute)
    /// before further calls go to another member, as for `max_pending_per_callee` (default 64 MiB).
    pub max_pending_bytes_per_callee: usize,
    /// Registrations one session may hold; more get `wamp.error.invalid_argument` (default 10000).
    pub max_registrations_per_session: usize,
    /// Subscriptions one session may hold; more get `wamp.error.invalid_argument` (default 10000).
    pub max_subscriptions_per_session: usize,
    /// Testaments one session may hold (`wamp.session.add_testament`; default 64).
    pub max_testaments_per_session: usize,
    /// Bytes one session's testaments may hold in all (default 1 MiB).
    pub max_testament_bytes: usize,
    /// How often the router pings each peer (WebSocket ping, RawSocket PING), in milliseconds;
    /// 0 turns pings off (default 30000).
    pub keepalive_interval_ms: u64,
    /// A peer that sends nothing (not even a PONG) for this long is closed, its calls answered and
    /// its registrations gone, in milliseconds; 0 turns this off (default 90000).
    pub idle_timeout_ms: u64,
    /// Ping RawSocket peers too, and close them when silent (default false: autobahn-python's
    /// RawSocket client, among others, does not implement PING and would drop its connection).
    /// WebSocket peers are always pinged: RFC 6455 makes every peer answer.
    pub rawsocket_keepalive: bool,
    /// Once the first bytes of a message have arrived, the whole message must arrive within this
    /// time, in milliseconds (default 30000); a peer that announces a large frame and stalls is
    /// closed.
    pub message_timeout_ms: u64,
    /// TCP keepalive on accepted connections: idle time before the first probe, in milliseconds;
    /// 0 turns it off (default 60000).
    pub tcp_keepalive_ms: u64,
    /// Session workers: threads that each run whole sessions (reader and writer) on a
    /// single-threaded runtime of their own; connections are handed to them in turn. 0 (the
    /// default) means one per CPU less one, at least one (see [`crate::workers::default_count`]).
    pub worker_threads: usize,
    /// Most concurrent connections; further ones are refused (default 100000).
    pub max_connections: usize,
    /// Log filter when neither `--log-level` nor `RUST_LOG` is given (default `info`).
    pub log_level: String,
    /// Log format: `text` or `json` (default `text`).
    pub log_format: LogFormat,
    /// The admin listener: health and readiness probes, `/metrics`, the status page.
    pub admin: AdminConfig,
    /// What `/metrics` shows beyond its fixed series.
    pub metrics: MetricsConfig,
    /// `[cluster]`: join a Roundhouse cluster on NATS; absent, the router is a single node and
    /// opens no NATS connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Further listeners (`[[listener]]`), each with its own address, transports, TLS and origins.
    /// (Tables come last: TOML writes plain keys first.)
    #[serde(rename = "listener")]
    pub extra_listeners: Vec<ListenerConfig>,
    /// The realms served; sessions asking for any other realm are aborted with
    /// `wamp.error.no_such_realm`.
    #[serde(rename = "realm")]
    pub realms: Vec<RealmConfig>,
}

/// The admin listener's address; its own port, never the WAMP one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve it (default true).
    pub enabled: bool,
    /// Its address (default `127.0.0.1:8090`: loopback only, next to WAMP's 8080).
    #[serde(deserialize_with = "de_addr")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 8090)) }
    }
}

/// Per-procedure metrics.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Registration URIs (as registered, patterns included) that get series of their own:
    /// `roundhouse_procedure_calls_total` and `roundhouse_procedure_call_duration_seconds`. Opt-in,
    /// so the number of series stays what the operator chose (at most 1000).
    pub procedures: Vec<String>,
}

/// Parses a listen address: `IP:PORT`, `[IPv6]:PORT`, or `HOST:PORT` (resolved now; the first
/// address found, IPv4 preferred).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let found: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|error| format!("'{text}' is not an address (IP:PORT or HOST:PORT): {error}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("'{text}' resolves to no address"))
}

fn de_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_addr(&text).map_err(serde::de::Error::custom)
}

fn de_opt_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    de_addr(deserializer).map(Some)
}

/// One realm.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// The realm's name (a WAMP URI).
    pub name: String,
    /// Whether callers may ask to be disclosed to callees (`CALL.Options.disclose_me`); when
    /// false such calls get `wamp.error.option_disallowed.disclose_me`. Default true.
    #[serde(default = "yes")]
    pub allow_disclose_caller: bool,
    /// Admit sessions that offer `anonymous` authentication (or offer none). Default true.
    #[serde(default = "yes")]
    pub anonymous: bool,
    /// The role anonymous sessions get (default `anonymous`).
    #[serde(default = "anonymous_role")]
    pub anonymous_role: String,
    /// Methods offered only to sessions that came over TLS (e.g. `["ticket"]`: a ticket travels
    /// in clear text). Over plain TCP such a method is as good as not offered.
    #[serde(default)]
    pub require_tls: Vec<String>,
    /// The principals that may authenticate with `ticket`, `wampcra`, `cryptosign`,
    /// `wamp-scram` or `tls`.
    #[serde(default, rename = "principal")]
    pub principals: Vec<PrincipalConfig>,
    /// A procedure that supplies principals the config does not list (dynamic authenticator).
    #[serde(default)]
    pub authenticator: Option<crate::auth::config::AuthenticatorConfig>,
    /// The realm's roles and their permissions. Default: the `anonymous` role, which may call,
    /// register, publish and subscribe everywhere except the meta API's admin procedures.
    #[serde(default = "default_roles", rename = "role")]
    pub roles: Vec<RoleConfig>,
    /// Invocation rules and limits the router applies to registrations whose URI a table matches
    /// (`[[realm.procedure]]`), whatever their REGISTER asks for; see [`ProcedureConfig`].
    #[serde(default, rename = "procedure", skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<ProcedureConfig>,
}

/// One `[[realm.procedure]]` table: how calls to the registrations it matches are invoked. The
/// config wins over the callee: a key set here replaces the REGISTER option of the same meaning
/// (a REGISTER asking for another `invoke` is not refused, it gets this one); keys left out keep
/// what the REGISTER asked. Tables are ranked as pattern registrations are (exact, then the
/// longest prefix, then the best wildcard; equal ones to the earliest) and the one winner applies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureConfig {
    /// The registration URI (or prefix, or wildcard pattern) the table is for; matched against
    /// the URI a REGISTER names.
    pub uri: String,
    /// How `uri` matches: `exact` (default), `prefix` or `wildcard`.
    #[serde(default, rename = "match")]
    pub policy: crate::auth::config::RuleMatch,
    /// The invocation rule: any name `REGISTER.Options.invoke` takes, extensions included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke: Option<String>,
    /// Calls each member may have in flight (at least 1); more wait in the registration's queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    /// Calls the registration's queue holds (as `REGISTER.Options._max_queued_calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_calls: Option<u64>,
    /// Milliseconds a call may wait in the queue (as `REGISTER.Options._max_queue_ms`; 0: no bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_ms: Option<u64>,
    /// With `invoke = "jump_consistent_hash"`: where a call's key comes from, `"option"`
    /// (`CALL.Options.rkey`, the default), or a path into the call's payload, `"kwargs.NAME"` or
    /// `"args.N"` followed by up to seven more `.KEY`/`.INDEX` steps into objects and lists
    /// (`"kwargs.user.id"`, `"args.0.tenant"`, `"kwargs.items.2"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rkey: Option<String>,
}

fn yes() -> bool {
    true
}

fn anonymous_role() -> String {
    ANONYMOUS_ROLE.to_owned()
}

impl RealmConfig {
    /// A realm with default settings: anonymous sessions only, in the default `anonymous` role.
    pub fn named(name: &str) -> Self {
        RealmConfig {
            name: name.to_owned(),
            allow_disclose_caller: true,
            anonymous: true,
            anonymous_role: anonymous_role(),
            principals: Vec::new(),
            authenticator: None,
            require_tls: Vec::new(),
            roles: default_roles(),
            procedures: Vec::new(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/ws".to_owned(),
            rawsocket_on_websocket_port: true,
            rawsocket_listen: None,
            tls: None,
            allowed_origins: Vec::new(),
            extra_listeners: Vec::new(),
            realms: vec![RealmConfig::named("realm1")],
            max_message_size: 16 * 1024 * 1024,
            read_buffer_size: 4096,
            write_buffer_size: 64 * 1024,
            max_outbound_bytes: 1024 * 1024,
            slow_consumer_bytes: 64 * 1024 * 1024,
            stuck_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            shutdown_timeout_ms: 2_000,
            dealer_shards: 4096,
            worker_threads: 0,
            max_pending_per_callee: 65_536,
            max_pending_bytes_per_callee: 64 * 1024 * 1024,
            max_registrations_per_session: 10_000,
            max_subscriptions_per_session: 10_000,
            max_testaments_per_session: 64,
            max_testament_bytes: 1024 * 1024,
            keepalive_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            rawsocket_keepalive: false,
            message_timeout_ms: 30_000,
            tcp_keepalive_ms: 60_000,
            max_connections: 100_000,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            admin: AdminConfig::default(),
            metrics: MetricsConfig::default(),
            cluster: None,
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl RouterConfig {
    /// Reads a TOML file; absent keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let mut config: RouterConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: shown, source: Box::new(source) })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.validate()?;
        Ok(config)
    }

    /// Every listener: `listen` (WebSocket, and RawSocket with `rawsocket_on_websocket_port`),
    /// `rawsocket_listen` if set (RawSocket only, plain), then each `[[listener]]`, in this order.
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        let main = ListenerConfig {
            listen: self.listen,
            websocket: true,
            rawsocket: self.rawsocket_on_websocket_port,
            tls: self.tls.clone(),
            allowed_origins: self.allowed_origins.clone(),
        };
        let rawsocket = self.rawsocket_listen.map(|listen| ListenerConfig {
            listen,
            websocket: false,
            rawsocket: true,
            tls: None,
            allowed_origins: Vec::new(),
        });
        std::iter::once(main).chain(rawsocket).chain(self.extra_listeners.iter().cloned()).collect()
    }

    /// Makes the relative paths in the file (certificates, keys) relative to its directory.
    fn resolve_paths(&mut self, dir: &Path) {
        if let Some(tls) = &mut self.tls {
            tls.resolve_paths(dir);
        }
        self.extra_listeners.iter_mut().for_each(|listener| listener.resolve_paths(dir));
    }

    /// Reads what the config names on disk (certificates, keys) and checks it is usable; one
    /// [`Live`] per listener of [`RouterConfig::listeners`].
    pub fn load_listeners(&self) -> Result<Vec<Live>, ConfigError> {
        self.listeners().iter().map(|l| Live::build(l).map_err(ConfigError::Invalid)).collect()
    }

    /// Checks values a router cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.realms.is_empty() {
            return invalid("at least one [[realm]] is needed");
        }
        if let Some(bad) = self.realms.iter().find(|r| !crate::wire::uri::is_valid(&r.name)) {
            return Err(ConfigError::Invalid(format!("realm name '{}' is not a valid URI", bad.name)));
        }
        for realm in &self.realms {
            crate::auth::RealmAuth::compile(realm)
                .map_err(|reason| ConfigError::Invalid(format!("realm '{}': {reason}", realm.name)))?;
        }
        crate::auth::check_authenticator_realms(&self.realms).map_err(ConfigError::Invalid)?;
        for realm in &self.realms {
            crate::dealer::rule::ProcedureRules::compile(&realm.procedures)
                .map_err(|reason| ConfigError::Invalid(format!("realm '{}': {reason}", realm.name)))?;
        }
        if let Some(twice) =
            self.realms.iter().enumerate().find(|(i, r)| self.realms[..*i].iter().any(|o| o.name == r.name))
        {
            return Err(ConfigError::Invalid(format!("realm '{}' is configured twice", twice.1.name)));
        }
        if !self.path.starts_with('/') {
            return invalid("path must start with '/'");
        }
        if self.max_message_size < 1024 {
            return invalid("max_message_size must be at least 1024 bytes");
        }
        if self.max_outbound_bytes < 1024 || self.slow_consumer_bytes < self.max_outbound_bytes {
            return invalid("max_outbound_bytes must be at least 1024 bytes, and slow_consumer_bytes at least that");
        }
        if self.max_connections == 0 || self.dealer_shards == 0 || self.max_pending_per_callee == 0 {
            return invalid("max_connections, dealer_shards and max_pending_per_callee must be positive");
        }
        if self.stuck_timeout_ms == 0 || self.handshake_timeout_ms == 0 || self.message_timeout_ms == 0 {
            return invalid("stuck_timeout_ms, handshake_timeout_ms and message_timeout_ms must be positive");
        }
        for listener in self.listeners() {
            listener.validate().map_err(ConfigError::Invalid)?;
        }
        if self.metrics.procedures.len() > 1000 {
            return invalid("[metrics] procedures lists at most 1000 URIs");
        }
        if self.admin.enabled
            && (self.admin.listen == self.listen || Some(self.admin.listen) == self.rawsocket_listen)
            && self.admin.listen.port() != 0
        {
            return invalid("[admin] listen must differ from listen and rawsocket_listen");
        }
        if let Err(error) = crate::config::check_log_level(&self.log_level) {
            return Err(ConfigError::Invalid(format!("log_level: {error}")));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate().map_err(ConfigError::Invalid)?;
        }
        if self.idle_timeout_ms > 0 && self.keepalive_interval_ms >= self.idle_timeout_ms {
            return invalid(
                "keepalive_interval_ms must be shorter than idle_timeout_ms, or pings cannot keep a peer alive",
            );
        }
        Ok(())
    }

    /// The configuration as TOML, every key with its value (`roundhouse print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serializes")
    }

    /// `stuck_timeout_ms` as a duration.
    pub fn stuck_timeout(&self) -> Duration {
        Duration::from_millis(self.stuck_timeout_ms)
    }

    /// `handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// `shutdown_timeout_ms` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// `message_timeout_ms` as a duration.
    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }

    /// How a session's outbound queue is bounded.
    pub fn outbox_limits(&self) -> crate::session::outbox::OutboxLimits {
        crate::session::outbox::OutboxLimits {
            max_bytes: self.max_outbound_bytes,
            slow_consumer_bytes: self.slow_consumer_bytes,
            stuck_timeout: self.stuck_timeout(),
        }
    }

    /// What one session may hold, as the realms enforce it.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_registrations: self.max_registrations_per_session,
            max_subscriptions: self.max_subscriptions_per_session,
            max_testaments: self.max_testaments_per_session,
            max_testament_bytes: self.max_testament_bytes,
        }
    }
}

/// Checks a log filter: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or tracing
/// directives such as `roundhouse=debug,info`. A bare word that is no level (`verbose`) is refused
/// rather than taken as a target name that silences every log.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level,
            None if directive.contains(['[', ':', ':']) => continue,
            None => directive,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("unknown log level '{level}' in '{filter}' (expected error, warn, info, debug, trace or off, or TARGET=LEVEL)"));
        }
    }
    if filter.trim().is_empty() {
        return Err("empty log filter".to_owned());
    }
    Ok(())
}

/// What one session may hold in a realm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Registrations.
    pub max_registrations: usize,
    /// Subscriptions.
    pub max_subscriptions: usize,
    /// Testaments.
    pub max_testaments: usize,
    /// Bytes of testaments in all.
    pub max_testament_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("roundhouse.toml");
        let config = RouterConfig::from_file(&path).unwrap();
        let defaults = RouterConfig::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.realms, vec![RealmConfig::named("realm1")]);
        assert_eq!(config.max_message_size, defaults.max_message_size);
        assert_eq!(config.to_toml(), defaults.to_toml(), "roundhouse.toml shows every default");
    }

    #[test]
    fn printed_defaults_parse_back_and_addresses_resolve() {
        let printed = RouterConfig::default().to_toml();
        let parsed: RouterConfig = toml::from_str(&printed).unwrap();
        assert_eq!(parsed.to_toml(), printed);
        let config: RouterConfig = toml::from_str("listen = \"localhost:9000\"").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert!(config.listen.ip().is_loopback());
        assert!(toml::from_str::<RouterConfig>("listen = \"nowhere\"").is_err());
        assert!(check_log_level("verbose").is_err());
        assert!(check_log_level("roundhouse=debug,warn").is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<RouterConfig>("lissten = \"x\"").is_err());
        let config: RouterConfig = toml::from_str("realm = []").unwrap();
        assert!(config.validate().is_err());
        let config: RouterConfig = toml::from_str("[[realm]]\nname = \"bad realm\"").unwrap();
        assert!(config.validate().is_err());
        let config: RouterConfig = toml::from_str("allowed_origins = [\"example.com\"]").unwrap();
        assert!(config.validate().is_err(), "an origin needs its scheme");
        let listener = "[[listener]]\nlisten = \"127.0.0.1:0\"\nwebsocket = false\nrawsocket = false\n";
        assert!(toml::from_str::<RouterConfig>(listener).unwrap().validate().is_err());
        assert!(toml::from_str::<RouterConfig>("[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nclient = 1").is_err());
    }

    #[test]
    fn tls_paths_are_relative_to_the_config_file_and_unreadable_certificates_are_refused() {
        let dir = std::env::temp_dir().join(format!("roundhouse-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("router.toml");
        let text = "[tls]\ncert = \"certs/r.pem\"\nkey = \"/abs/r.key\"\n\n[[listener]]\nlisten = \"127.0.0.1:0\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n";
        std::fs::write(&file, text).unwrap();
        let config = RouterConfig::from_file(&file).unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(
            (tls.cert.clone(), tls.key.clone()),
            (dir.join("certs/r.pem"), std::path::PathBuf::from("/abs/r.key"))
        );
        assert_eq!(config.extra_listeners[0].tls.as_ref().unwrap().cert, dir.join("c.pem"));
        let listeners = config.listeners();
        assert_eq!(listeners.len(), 2);
        assert!(listeners[0].tls.is_some() && listeners[0].rawsocket);
        let error = config.load_listeners().err().expect("the files do not exist").to_string();
        assert!(error.contains("certs/r.pem"), "{error}");
        std::fs::remove_dir_all(dir).ok();
    }
}
