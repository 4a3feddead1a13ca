//! Authentication and authorization: who may join a realm, as whom, and what each session may do.
//!
//! - [`config`]: the realm's `anonymous`, `[[realm.principal]]`, `[realm.authenticator]`,
//!   `require_tls` and `[[realm.role]]` keys.
//! - [`RealmAuth`]: that config compiled (hashes parsed, keys decoded, rules indexed). Each realm
//!   holds its `RealmAuth` in an `ArcSwap` ([`crate::realm::Realm::auth`]): a handshake loads the
//!   current one, [`apply`] swaps in a new one (config reload) and names the sessions whose
//!   principal is gone. Sessions keep the role they joined with.
//! - [`handshake`]: HELLO → CHALLENGE → AUTHENTICATE → WELCOME or ABORT, per method:
//!   `anonymous`, [`ticket`], [`wampcra`], [`cryptosign`], [`scram`] (`wamp-scram`) and `tls`
//!   (a client certificate verified by the listener, mapped to a principal).
//! - [`dynamic`]: principals the config does not list, asked of a procedure (the dynamic
//!   authenticator) through the dealer as an internal caller.
//! - [`permissions`]: roles' rules and each session's decision cache.

pub mod config;
pub mod cryptosign;
pub mod dynamic;
pub mod handshake;
pub mod permissions;
pub mod scram;
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
    scram: Option<scram::ScramKey>,
}

/// A realm's security state, compiled from its config.
#[derive(Debug, Default)]
pub struct RealmAuth {
    /// The role of anonymous sessions; `None` when the realm admits none.
    anonymous: Option<Arc<Role>>,
    principals: HashMap<String, Principal>,
    /// Which authids hold each cryptosign key (clients may leave `authid` out).
    keys: HashMap<[u8; 32], Vec<String>>,
    /// `tls`: the authid of each client certificate fingerprint, and of each subject CN.
    tls_fingerprints: HashMap<[u8; 32], String>,
    tls_cns: HashMap<String, String>,
    /// Methods at least one principal can use.
    ticket: bool,
    wampcra: bool,
    scram: bool,
    /// Every role, by name: a dynamic authenticator names one.
    roles: HashMap<String, Arc<Role>>,
    /// The dynamic authenticator, if the realm has one.
    authenticator: Option<dynamic::Authenticator>,
    /// Methods offered over TLS only.
    require_tls: Vec<&'static str>,
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
            let scram = match &p.scram {
                Some(scram) => Some(scram::ScramKey::from_config(scram).map_err(|e| format!("{whose}: scram: {e}"))?),
                None => None,
            };
            let has_tls = p.tls_cn.is_some() || p.tls_fingerprint.is_some();
            if ticket.is_none() && wampcra.is_none() && cryptosign.is_empty() && scram.is_none() && !has_tls {
                return Err(format!(
                    "{whose} has no credential (ticket, wampcra, cryptosign, scram, tls_cn or tls_fingerprint)"
                ));
            }
            for key in &cryptosign {
                auth.keys.entry(key.to_bytes()).or_default().push(p.authid.clone());
            }
            if let Some(fingerprint) = &p.tls_fingerprint {
                let bytes = parse_fingerprint(fingerprint).map_err(|e| format!("{whose}: {e}"))?;
                if let Some(other) = auth.tls_fingerprints.insert(bytes, p.authid.clone()) {
                    return Err(format!("{whose}: tls_fingerprint is principal '{other}''s too"));
                }
            }
            if let Some(cn) = &p.tls_cn {
                if let Some(other) = auth.tls_cns.insert(cn.clone(), p.authid.clone()) {
                    return Err(format!("{whose}: tls_cn '{cn}' is principal '{other}''s too"));
                }
            }
            auth.ticket |= ticket.is_some();
            auth.wampcra |= wampcra.is_some();
            auth.scram |= scram.is_some();
            let principal = Principal { role: role_of(&p.role, &whose)?, ticket, wampcra, scram };
            if auth.principals.insert(p.authid.clone(), principal).is_some() {
                return Err(format!("{whose} is defined twice"));
            }
        }
        if let Some(authenticator) = &config.authenticator {
            auth.authenticator = Some(dynamic::Authenticator::compile(authenticator)?);
        }
        for method in &config.require_tls {
            match config::METHODS.iter().find(|m| **m == method.as_str()) {
                Some(known) => auth.require_tls.push(*known),
                None => {
                    return Err(format!(
                        "require_tls names '{method}', which is not a method ({})",
                        config::METHODS.join(", ")
                    ))
                }
            }
        }
        auth.roles = roles.into_iter().map(|(name, role)| (name.to_owned(), role)).collect();
        Ok(auth)
    }

    /// The role named `name`, if the realm defines it.
    pub(crate) fn role(&self, name: &str) -> Option<&Arc<Role>> {
        self.roles.get(name)
    }

    /// Whether the dynamic authenticator answers for `method`.
    fn dynamic(&self, method: &str) -> Option<&dynamic::Authenticator> {
        self.authenticator.as_ref().filter(|a| a.answers(method))
    }

    /// Whether `method` may only be used over TLS.
    fn requires_tls(&self, method: &str) -> bool {
        self.require_tls.contains(&method)
    }

    /// The authentication methods this realm offers, in the order the router names them.
    pub fn methods(&self) -> Vec<&'static str> {
        config::METHODS.iter().copied().filter(|method| self.offers(method)).collect()
    }

    /// Whether the realm offers `method` (one of [`config::METHODS`]) to a HELLO.
    pub fn offers(&self, method: &str) -> bool {
        match method {
            "anonymous" => self.anonymous.is_some(),
            "ticket" => self.ticket || self.dynamic("ticket").is_some(),
            "wampcra" => self.wampcra || self.dynamic("wampcra").is_some(),
            "cryptosign" => !self.keys.is_empty() || self.dynamic("cryptosign").is_some(),
            "wamp-scram" => self.scram || self.dynamic("wamp-scram").is_some(),
            "tls" => !self.tls_fingerprints.is_empty() || !self.tls_cns.is_empty(),
            _ => false,
        }
    }

    /// How many principals the realm knows.
    pub fn principal_count(&self) -> usize {
        self.principals.len()
    }

    /// Whether a session that joined as `identity` still has a principal: for one the dynamic
    /// authenticator vouched for, whether the realm still asks it for that method.
    fn still_admits(&self, identity: &crate::session::Identity) -> bool {
        match (identity.authmethod, identity.authprovider) {
            ("anonymous", _) => self.anonymous.is_some(),
            (method, dynamic::PROVIDER) => self.dynamic(method).is_some(),
            _ => self.principals.contains_key(&identity.authid),
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
        .filter(|s| s.identity().is_some_and(|i| !next.still_admits(i)))
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
    check_authenticator_realms(&config.realms)?;
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

/// Checks that every realm's authenticator lives in a realm the config has.
pub fn check_authenticator_realms(realms: &[RealmConfig]) -> Result<(), String> {
    for realm in realms {
        let Some(home) = realm.authenticator.as_ref().and_then(|a| a.realm.as_deref()) else { continue };
        if !realms.iter().any(|r| r.name == home) {
            return Err(format!("realm '{}': authenticator.realm '{home}' is not a configured realm", realm.name));
        }
    }
    Ok(())
}

/// A certificate fingerprint: 64 hex digits, colons between bytes allowed (as `openssl x509
/// -fingerprint -sha256` prints it).
fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    hex::decode(digits.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "tls_fingerprint must be a SHA-256 fingerprint: 64 hex digits (colons allowed)".to_owned())
}

/// HMAC-SHA256 of `data` under `key` (WAMP-CRA's signature, SCRAM's proofs).
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the operating system: {e}"))?;
    Ok(bytes)
}
