//! Authentication and authorization: who may join a realm, as whom, and what each session may do.
//!
//! - [`config`]: the realm's `anonymous`, `[[realm.principal]]` and `[[realm.role]]` keys.
//! - [`RealmAuth`]: that config compiled (hashes parsed, keys decoded, rules indexed). Each realm
//!   holds its `RealmAuth` in an `ArcSwap` ([`crate::realm::Realm::auth`]): a handshake loads the
//!   current one, [`apply`] swaps in a new one (config reload) and names the sessions whose
//!   principal is gone. Sessions keep the role they joined with.
//! - [`handshake`]: HELLO → CHALLENGE → AUTHENTICATE → WELCOME or ABORT, per method:
//!   `anonymous`, [`ticket`], [`wampcra`], [`cryptosign`].
//! - [`permissions`]: roles' rules and each session's decision cache.
//!
//! A future `tls` method (a verified client certificate mapped to an authid) belongs beside the
//! others: the transport would hand the session its certificate's identity, [`handshake::hello`]
//! would admit it without a CHALLENGE as it admits `anonymous`, and principals would gain a
//! `tls` credential (a certificate fingerprint or subject) here.

pub mod config;
pub mod cryptosign;
pub mod handshake;
pub mod permissions;
pub mod ticket;
pub mod wampcra;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::RealmConfig;
use crate::realm::Realm;
use crate::session::SessionHandle;
use permissions::Role;

/// One principal as the router holds it.
#[derive(Debug)]
pub(crate) struct Principal {
    role: Arc<Role>,
    ticket: Option<ticket::TicketHash>,
    wampcra: Option<wampcra::CraKey>,
}

/// A realm's security state, compiled from its config.
#[derive(Debug, Default)]
pub struct RealmAuth {
    /// The role of anonymous sessions; `None` when the realm admits none.
    anonymous: Option<Arc<Role>>,
    principals: HashMap<String, Principal>,
    /// Which authids hold each cryptosign key (clients may leave `authid` out).
    keys: HashMap<[u8; 32], Vec<String>>,
    /// Methods at least one principal can use.
    ticket: bool,
    wampcra: bool,
}

impl RealmAuth {
    /// Compiles a realm's security config; the error names what is wrong (never a secret).
    pub fn compile(config: &RealmConfig) -> Result<Self, String> {
        let mut roles: HashMap<&str, Arc<Role>> = HashMap::new();
        for role in &config.roles {
            if roles.insert(&role.name, Arc::new(Role::compile(role))).is_some() {
                return Err(format!("role '{}' is defined twice", role.name));
            }
            if let Some(rule) = role
                .permissions
                .iter()
                .find(|r| r.policy == config::RuleMatch::Exact && !crate::wire::uri::is_valid(&r.uri))
            {
                return Err(format!("role '{}': exact rule '{}' is not a valid URI", role.name, rule.uri));
            }
        }
        let role_of = |name: &str, whose: &str| {
            roles
                .get(name)
                .cloned()
                .ok_or_else(|| format!("{whose} has role '{name}', which no [[realm.role]] defines"))
        };
        let mut auth = RealmAuth::default();
        if config.anonymous {
            auth.anonymous = Some(role_of(&config.anonymous_role, "anonymous")?);
        }
        for p in &config.principals {
            let whose = format!("principal '{}'", p.authid);
            if p.authid.is_empty() {
                return Err("a principal has an empty authid".into());
            }
            let ticket = match &p.ticket {
                Some(phc) => Some(ticket::TicketHash::parse(phc).map_err(|e| format!("{whose}: ticket: {e}"))?),
                None => None,
            };
            let wampcra = match &p.wampcra {
                Some(cra) => Some(wampcra::CraKey::from_config(cra).map_err(|e| format!("{whose}: {e}"))?),
                None => None,
            };
            let cryptosign: Vec<ed25519_dalek::VerifyingKey> = p
                .cryptosign
                .iter()
                .map(|k| cryptosign::parse_public_key(k).map_err(|e| format!("{whose}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if ticket.is_none() && wampcra.is_none() && cryptosign.is_empty() {
                return Err(format!("{whose} has no credential (ticket, wampcra or cryptosign)"));
            }
            for key in &cryptosign {
                auth.keys.entry(key.to_bytes()).or_default().push(p.authid.clone());
            }
            auth.ticket |= ticket.is_some();
            auth.wampcra |= wampcra.is_some();
            let principal = Principal { role: role_of(&p.role, &whose)?, ticket, wampcra };
            if auth.principals.insert(p.authid.clone(), principal).is_some() {
                return Err(format!("{whose} is defined twice"));
            }
        }
        Ok(auth)
    }

    /// The authentication methods this realm offers, in the order the router names them.
    pub fn methods(&self) -> Vec<&'static str> {
        let offered = [
            ("anonymous", self.anonymous.is_some()),
            ("ticket", self.ticket),
            ("wampcra", self.wampcra),
            ("cryptosign", !self.keys.is_empty()),
        ];
        offered.iter().filter(|(_, on)| *on).map(|(m, _)| *m).collect()
    }

    /// How many principals the realm knows.
    pub fn principal_count(&self) -> usize {
        self.principals.len()
    }

    /// Whether a session that authenticated as `authid` with `authmethod` still has a principal.
    fn still_admits(&self, authmethod: &str, authid: &str) -> bool {
        match authmethod {
            "anonymous" => self.anonymous.is_some(),
            _ => self.principals.contains_key(authid),
        }
    }
}

/// Swaps a realm's security state for the one `config` describes (a config reload) and returns
/// the joined sessions whose principal it no longer has, for the caller to close. New sessions
/// see the new state at once; existing ones keep their role. Nothing changes if `config` is
/// invalid.
pub fn apply(realm: &Realm, config: &RealmConfig) -> Result<Vec<Arc<SessionHandle>>, String> {
    let next = RealmAuth::compile(config)?;
    let gone = realm
        .sessions
        .iter()
        .filter(|s| s.identity().is_some_and(|i| !next.still_admits(i.authmethod, &i.authid)))
        .map(|s| s.clone())
        .collect();
    realm.auth.store(Arc::new(next));
    Ok(gone)
}

/// What applying a reloaded config's security did ([`apply_config`]).
#[derive(Default)]
pub struct Applied {
    /// Joined sessions whose principal the new config no longer has; [`Applied::close_removed`]
    /// ends them.
    pub removed: Vec<Arc<SessionHandle>>,
    /// Realms added or dropped by the new config: the running router keeps its realms until a
    /// restart, so each of these is something the reload did not apply.
    pub needs_restart: Vec<String>,
}

impl Applied {
    /// Ends every session in [`Applied::removed`] with GOODBYE `wamp.close.close_realm` and a reason
    /// (their calls are answered by their teardown, as for any session that leaves).
    pub fn close_removed(&self) {
        for session in &self.removed {
            tracing::info!(
                session = session.id,
                authid = session.identity().map_or("", |i| i.authid.as_str()),
                "closing a session whose principal the reloaded config removed"
            );
            let details =
                crate::wire::Dict::new().with("message", "the session's principal was removed from the configuration");
            let message =
                crate::wire::Message::Goodbye { details, reason: crate::error::WampError::CloseRealm.uri().to_owned() };
            let closing = crate::session::Closing { message, code: crate::transport::CloseCode::Policy };
            if session.push(crate::session::Outbound::Close(Box::new(closing))).is_err() {
                session.kill();
            }
        }
    }
}

/// Applies the security part of a reloaded config to a running router: every realm's principals,
/// roles and permissions, all or nothing (an invalid realm changes none). New sessions see the new
/// state at once; existing ones keep their role unless their principal is gone.
pub fn apply_config(
    router: &crate::router::RouterShared,
    config: &crate::config::RouterConfig,
) -> Result<Applied, String> {
    for realm in &config.realms {
        RealmAuth::compile(realm).map_err(|reason| format!("realm '{}': {reason}", realm.name))?;
    }
    let mut applied = Applied::default();
    for realm in &config.realms {
        match router.realms.get(&realm.name) {
            Some(running) => applied.removed.extend(apply(running, realm)?),
            None => applied.needs_restart.push(format!("realm '{}' is new: it is served after a restart", realm.name)),
        }
    }
    for name in router.realms.keys().filter(|name| !config.realms.iter().any(|r| &r.name == *name)) {
        applied.needs_restart.push(format!("realm '{name}' was removed: it is served until a restart"));
    }
    Ok(applied)
}

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the operating system: {e}"))?;
    Ok(bytes)
}
