//! Reloading the configuration without a restart (SIGHUP re-reads the config file and calls
//! [`reload`] through [`crate::RouterHandle::reload`]).
//!
//! A reload is all or nothing: the new configuration is validated, every listener's certificates
//! and keys are read and checked, and every [`ReloadHook`] checks its part, before anything is
//! applied. Then each listener's TLS settings and Origin allowlist are swapped atomically for the
//! connections it accepts next (connections already open keep what they were accepted with), and
//! the hooks apply their parts. Keys a running router cannot change (addresses, limits, realms,
//! ...) are logged as needing a restart and keep their running values.

use std::sync::Arc;

use crate::config::{ConfigError, RealmConfig, RouterConfig};
use crate::router::RouterShared;
use crate::transport::listener::Live;

/// A part of the router that takes its share of a reloaded configuration, e.g. the security
/// state of the realms (principals, roles, permissions) for sessions that join from then on.
pub trait ReloadHook: Send + Sync {
    /// Checks the new configuration; an error refuses the whole reload, so nothing is applied.
    fn check(&self, new: &RouterConfig) -> Result<(), String>;
    /// Applies the new configuration; called only once every check passed.
    fn apply(&self, new: &RouterConfig);
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What was applied to new connections, e.g. `listener 127.0.0.1:8443: TLS certificate and key`.
    pub applied: Vec<String>,
    /// Keys whose new value needs a restart; they keep their running values.
    pub needs_restart: Vec<String>,
}

/// Validates `new`, then applies what a running router can change; see the module doc.
pub fn reload(shared: &RouterShared, new: RouterConfig) -> Result<ReloadReport, ConfigError> {
    new.validate()?;
    let wanted = new.listeners();
    let mut report = ReloadReport { needs_restart: needs_restart(&shared.config, &new), ..ReloadReport::default() };
    if wanted.len() != shared.listeners.len() {
        report.needs_restart.push("listener (listeners added or removed)".to_owned());
    }
    // Build everything first: a certificate that does not load refuses the whole reload.
    let mut swaps = Vec::new();
    for (state, config) in shared.listeners.iter().zip(&wanted) {
        let name = format!("listener {}", state.local_addr);
        if !state.bound.same_socket(config) {
            report.needs_restart.push(format!("{name} (address, transports, or TLS on/off)"));
            continue;
        }
        let live = Live::build(config).map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
        let running = state.live();
        if config.tls.is_some() {
            report.applied.push(format!("{name}: TLS certificate and key (re-read)"));
        }
        if running.config.allowed_origins != config.allowed_origins {
            report.applied.push(format!("{name}: allowed_origins"));
        }
        swaps.push((state.clone(), live));
    }
    let hooks: Vec<Arc<dyn crate::reload::ReloadHook>> = shared.reload_hooks.lock().clone();
    for hook in &hooks {
        hook.check(&new).map_err(ConfigError::Invalid)?;
    }
    // Procedure tables: compiled before anything is swapped (validate() checked them already).
    let mut procedures = Vec::new();
    for realm in &new.realms {
        let Some(running) = shared.realms.get(&realm.name) else { continue };
        let rules = crate::dealer::rule::ProcedureRules::compile(&realm.procedures)
            .map_err(|reason| ConfigError::Invalid(format!("realm '{}': {reason}", realm.name)))?;
        let changed = running.dealer.procedure_rules().rules() != rules.rules();
        procedures.push((running.clone(), rules, changed));
    }
    // The realms' principals, roles and permissions: all or nothing by itself, and the last step
    // that can refuse, so a refusal still leaves everything as it was.
    let security = crate::auth::apply_config(shared, &new).map_err(ConfigError::Invalid)?;
    for (realm, rules, changed) in procedures {
        if changed {
            tracing::info!(
                realm = realm.name,
                tables = rules.rules().len(),
                "procedure rules reloaded: registrations created from now on follow them; existing \
                 registrations keep their rule, concurrency and queue until their last member leaves"
            );
        }
        realm.dealer.set_procedure_rules(rules);
    }
    for (state, live) in swaps {
        state.swap(live);
    }
    for hook in &hooks {
        hook.apply(&new);
    }
    report.applied.extend(
        new.realms
            .iter()
            .filter(|realm| shared.realms.contains_key(&realm.name))
            .map(|realm| format!("realm {}: principals, roles, permissions and procedure rules", realm.name)),
    );
    // Realms added or removed are named by `needs_restart` already (the `realm` key).
    security.close_removed();
    Ok(report)
}

/// The keys whose values differ and that only a restart applies. The destructuring is
/// exhaustive on purpose: a new config key does not compile until it is sorted here.
fn needs_restart(running: &RouterConfig, new: &RouterConfig) -> Vec<String> {
    let mut changed = Vec::new();
    // One list of keys for both the exhaustive destructuring and the comparison.
    macro_rules! restart_only {
        ($($key:ident),* $(,)?) => {
            let RouterConfig {
                $($key,)*
                // Per listener, below and in `reload`: certificates and origins apply, the socket
                // does not.
                tls: _,
                allowed_origins: _,
                extra_listeners: _,
                // Compared below: only the realm set and each realm's restart-only keys.
                realms: _,
            } = new;
            $(
                if format!("{:?}", running.$key) != format!("{:?}", $key) {
                    changed.push(stringify!($key).to_owned());
                }
            )*
        };
    }
    restart_only!(
        listen,
        path,
        rawsocket_on_websocket_port,
        rawsocket_listen,
        max_message_size,
        read_buffer_size,
        write_buffer_size,
        max_outbound_bytes,
        slow_consumer_bytes,
        stuck_timeout_ms,
        handshake_timeout_ms,
        shutdown_timeout_ms,
        dealer_shards,
        max_pending_per_callee,
        max_pending_bytes_per_callee,
        max_registrations_per_session,
        max_subscriptions_per_session,
        max_testaments_per_session,
        max_testament_bytes,
        keepalive_interval_ms,
        idle_timeout_ms,
        rawsocket_keepalive,
        message_timeout_ms,
        tcp_keepalive_ms,
        worker_threads,
        max_connections,
        log_level,
        log_format,
        admin,
        metrics,
        cluster,
    );
    let realm_view = |realms: &[RealmConfig]| {
        realms
            .iter()
            // Principals, roles, anonymous admission, the authenticator and require_tls apply at
            // once (crate::auth::apply_config); procedure rules to registrations created after
            // the reload (Dealer::set_procedure_rules).
            .map(
                |RealmConfig {
                     name,
                     allow_disclose_caller,
                     anonymous: _,
                     anonymous_role: _,
                     principals: _,
                     authenticator: _,
                     require_tls: _,
                     roles: _,
                     procedures: _,
                 }| { format!("{name}:{allow_disclose_caller}") },
            )
            .collect::<Vec<_>>()
    };
    if realm_view(&running.realms) != realm_view(&new.realms) {
        changed.push("realm".to_owned());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_keys_that_need_a_restart_are_named() {
        let running = RouterConfig::default();
        assert!(needs_restart(&running, &running.clone()).is_empty());
        let new = RouterConfig {
            listen: "127.0.0.1:9999".parse().unwrap(),
            max_connections: 7,
            allowed_origins: vec!["https://example.com".into()],
            realms: vec![RealmConfig::named("other.realm")],
            ..RouterConfig::default()
        };
        assert_eq!(needs_restart(&running, &new), ["listen", "max_connections", "realm"]);
    }
}
