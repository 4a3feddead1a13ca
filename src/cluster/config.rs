//! The `[cluster]` section of the config file: how a node reaches NATS and who it is there.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a node does when the cluster has reaped it (it was cut off from NATS for longer than its
/// lease, so the other nodes removed its registrations and sessions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Publish its local registrations and sessions again (appended to each registration's member
    /// list, so `first`/`last` order changes) and go on serving.
    #[default]
    Rejoin,
    /// Close every local session with `wamp.close.system_shutdown`, so clients reconnect through
    /// the load balancer to a node that is still in the cluster.
    Fence,
}

/// The shortest lease for replicated buckets: JetStream's longest wait before it elects a new
/// stream leader (9 s after the last heartbeat of one that died, heartbeats every second), plus
/// the election itself and a few of this node's heartbeats on a loaded machine.
pub const MIN_REPLICATED_LEASE_MS: u64 = 15_000;

/// `[cluster]`: present, the node joins a Roundhouse cluster on NATS JetStream; absent, the router
/// is a single node with no NATS connection at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers to connect to (`nats://host:port`, `tls://host:port`); any one of them is
    /// enough, the client learns the rest of a NATS cluster from it.
    pub nats_urls: Vec<String>,
    /// The cluster's name: nodes with the same name on the same NATS system form one router.
    /// Letters, digits, `-` and `_`.
    pub cluster_name: String,
    /// This node's name, unique in the cluster. Letters, digits, `-` and `_`.
    pub node_id: String,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// NATS user name (with `password`).
    pub user: Option<String>,
    /// NATS password (with `user`).
    pub password: Option<String>,
    /// NATS authentication token.
    pub token: Option<String>,
    /// PEM file of the CA certificates that sign the NATS servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for NATS (with `tls_key_file`), for servers that verify clients.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    pub tls_required: bool,
    /// How often the node renews its lease.
    pub heartbeat_ms: u64,
    /// How long after its last heartbeat a node counts as lost and is reaped.
    pub lease_ms: u64,
    /// Replicas of the cluster's JetStream buckets: 1 for one NATS server, 3 for a three-server
    /// NATS cluster (writes then go on while one server is down, after JetStream elected new
    /// leaders for the buckets that server led). Above 1, `lease_ms` must be at least
    /// [`MIN_REPLICATED_LEASE_MS`], and a `kv_timeout_ms` of 12000 or more lets REGISTER wait out
    /// such an election instead of failing with `wamp.error.network_failure`.
    pub kv_replicas: usize,
    /// What the node does when the cluster reaped it after it was cut off from NATS.
    pub on_isolation: Isolation,
    /// How long a registry write (REGISTER, UNREGISTER) waits for JetStream before it fails.
    pub kv_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_urls: vec!["nats://127.0.0.1:4222".to_owned()],
            cluster_name: "roundhouse".to_owned(),
            node_id: String::new(),
            credentials_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            heartbeat_ms: 1_000,
            lease_ms: 3_000,
            kv_replicas: 1,
            on_isolation: Isolation::Rejoin,
            kv_timeout_ms: 5_000,
        }
    }
}

impl ClusterConfig {
    /// Checks what `Cluster::join` relies on; the error says which key is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats_urls.is_empty() {
            return Err("[cluster] nats_urls needs at least one NATS server".to_owned());
        }
        for (key, value) in [("cluster_name", &self.cluster_name), ("node_id", &self.node_id)] {
            if !is_token(value) {
                return Err(format!("[cluster] {key} must be 1 to 64 letters, digits, '-' or '_' (got '{value}')"));
            }
        }
        if self.heartbeat_ms == 0 || self.lease_ms < 2 * self.heartbeat_ms {
            return Err("[cluster] heartbeat_ms must be positive and lease_ms at least twice as long".to_owned());
        }
        if !matches!(self.kv_replicas, 1..=5) {
            return Err("[cluster] kv_replicas must be between 1 and 5".to_owned());
        }
        if self.kv_replicas > 1 && self.lease_ms < MIN_REPLICATED_LEASE_MS {
            return Err(format!(
                "[cluster] with kv_replicas above 1, lease_ms must be at least {MIN_REPLICATED_LEASE_MS}: when the \
                 NATS server leading a bucket dies, JetStream elects another leader after 4 to 9 s and no lease \
                 is renewed meanwhile, so a shorter lease would expire every node's at once"
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("[cluster] user and password go together".to_owned());
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("[cluster] tls_cert_file and tls_key_file go together".to_owned());
        }
        if self.kv_timeout_ms == 0 {
            return Err("[cluster] kv_timeout_ms must be positive".to_owned());
        }
        Ok(())
    }

    /// [`ClusterConfig::heartbeat_ms`] as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// [`ClusterConfig::lease_ms`] as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// [`ClusterConfig::kv_timeout_ms`] as a duration.
    pub fn kv_timeout(&self) -> Duration {
        Duration::from_millis(self.kv_timeout_ms)
    }
}

/// True for a name that is one NATS subject token and part of a JetStream bucket name.
fn is_token(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(node: &str) -> ClusterConfig {
        ClusterConfig { node_id: node.to_owned(), ..ClusterConfig::default() }
    }

    #[test]
    fn names_must_be_single_subject_tokens() {
        assert!(named("node-1_a").validate().is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "é", &"x".repeat(65)] {
            let error = named(bad).validate().unwrap_err();
            assert!(error.contains("node_id"), "{bad}: {error}");
        }
    }

    #[test]
    fn lease_must_outlast_two_heartbeats() {
        let config = ClusterConfig { lease_ms: 1_500, ..named("a") };
        assert!(config.validate().unwrap_err().contains("lease_ms"));
        assert!(ClusterConfig { lease_ms: 2_000, ..named("a") }.validate().is_ok());
    }

    #[test]
    fn replicated_buckets_need_a_lease_that_outlasts_a_jetstream_election() {
        let config = ClusterConfig { kv_replicas: 3, ..named("a") };
        assert!(config.validate().unwrap_err().contains("lease_ms must be at least 15000"));
        assert!(ClusterConfig { kv_replicas: 3, lease_ms: 15_000, ..named("a") }.validate().is_ok());
    }

    #[test]
    fn paired_credentials_must_come_together() {
        let config = ClusterConfig { user: Some("u".into()), ..named("a") };
        assert!(config.validate().unwrap_err().contains("user and password"));
        let config = ClusterConfig { tls_cert_file: Some("c.pem".into()), ..named("a") };
        assert!(config.validate().unwrap_err().contains("tls_cert_file"));
    }
}
