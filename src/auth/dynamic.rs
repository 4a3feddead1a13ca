//! The dynamic authenticator: principals the config does not list, supplied by a procedure that a
//! trusted session registers (`[realm.authenticator]`), so users can keep them in their own
//! database.
//!
//! # The call
//! The router is the caller. It makes a caller session of its own (a [`SessionHandle`] without a
//! connection, whose queue the handshake reads) and routes an ordinary CALL through the realm's
//! dealer: the authenticator sees a normal INVOCATION, shared registrations, call reroute and
//! callee backpressure work as for any call, and the calls-in-flight table answers it exactly
//! once. Its one RESULT or ERROR lands in that queue; if the handshake stops waiting (deadline,
//! the joining peer gone), [`Asked`]'s drop ends the call as a caller that left does: the callee
//! is interrupted if it can be, and a late answer is dropped. Nothing blocks a worker thread: the
//! joining session's task awaits the answer, bounded by the handshake deadline.
//!
//! The procedure is called with `(realm, authid, authmethod, details)`; `authid` is null when
//! HELLO named none (cryptosign), `details` holds `authmethod`, `authid`, `authextra` (HELLO's),
//! `authrole` (if HELLO asked for one), `session`, `transport` (`type`, `peer`, `tls`, and the
//! verified `client_cert`'s `cn` and `sha256`), and for `ticket` the `ticket` itself, which the
//! authenticator checks.
//!
//! # The answer
//! A dictionary (the first positional result, or the keyword results), or just a role name:
//! - `role` (required): a role the joining realm defines;
//! - per method: `ticket`: nothing more (the answer accepts the ticket), `wampcra`: `secret`, or
//!   `derived_key` with `salt`, `iterations`, `keylen`; `cryptosign`: `pubkey` or `pubkeys`, which
//!   must hold the key HELLO named; `wamp-scram`: `kdf`, `salt`, `iterations`, `memory`,
//!   `stored_key`, `server_key`, as in the config;
//! - optional `authid` (the session's authid instead of HELLO's) and `authextra` (a dictionary
//!   for WELCOME).
//!
//! Refusing: ERROR `wamp.error.no_such_principal` (the authid is unknown) or
//! `wamp.error.authentication_denied` (wrong ticket; `wamp.error.not_authorized` is taken as
//! the same), or `allow: false` in the answer. Anything else (no authenticator registered, any
//! other ERROR, a malformed answer, the handshake deadline) is `wamp.error.authentication_failed`
//! with the reason, and a log line.

use std::sync::Arc;

use crate::error::{Refusal, WampError};
use crate::router::RouterShared;
use crate::session::{Outbound, SessionHandle};
use crate::wire::{uri, Dict, Message, Payload, Serializer, Value};

use super::config::{AuthenticatorConfig, DYNAMIC_METHODS};
use super::permissions::Role;

/// `authprovider` of the sessions a dynamic authenticator admitted.
pub const PROVIDER: &str = "dynamic";

/// A realm's `[realm.authenticator]`, checked.
#[derive(Debug, Clone)]
pub struct Authenticator {
    procedure: String,
    /// Where it is registered; `None`: the realm being joined.
    realm: Option<String>,
    methods: Vec<&'static str>,
}

impl Authenticator {
    /// Checks the config; the error says what is wrong.
    pub fn compile(config: &AuthenticatorConfig) -> Result<Self, String> {
        if !uri::is_valid(&config.procedure) || uri::is_reserved(&config.procedure) {
            return Err(format!(
                "authenticator.procedure '{}' must be a valid URI outside the reserved wamp. namespace",
                config.procedure
            ));
        }
        if config.realm.as_deref().is_some_and(|r| !uri::is_valid(r)) {
            return Err("authenticator.realm must be a realm name".into());
        }
        let mut methods = Vec::new();
        for method in &config.methods {
            match DYNAMIC_METHODS.iter().find(|m| **m == method.as_str()) {
                Some(known) => methods.push(*known),
                None => {
                    return Err(format!(
                        "authenticator.methods names '{method}'; an authenticator answers for {}",
                        DYNAMIC_METHODS.join(", ")
                    ))
                }
            }
        }
        if methods.is_empty() {
            return Err("authenticator.methods is empty".into());
        }
        Ok(Authenticator { procedure: config.procedure.clone(), realm: config.realm.clone(), methods })
    }

    /// Whether it answers for `method`.
    pub fn answers(&self, method: &str) -> bool {
        self.methods.contains(&method)
    }

    /// The procedure's URI.
    pub fn procedure(&self) -> &str {
        &self.procedure
    }
}

/// What the router asks the authenticator about one login.
#[derive(Debug, Clone)]
pub struct Question {
    authenticator: Authenticator,
    /// The realm being joined.
    pub realm: String,
    /// HELLO's authid, if it named one.
    pub authid: Option<String>,
    /// The method.
    pub authmethod: &'static str,
    /// The `details` argument.
    pub details: Dict,
}

impl Question {
    /// A question for `authenticator` about a HELLO to `realm` by `session`.
    pub fn new(
        authenticator: &Authenticator,
        realm: &str,
        authmethod: &'static str,
        hello: &Dict,
        session: &SessionHandle,
    ) -> Self {
        let authid = hello.get("authid").and_then(Value::as_str).map(str::to_owned);
        let mut transport = Dict::new()
            .with("type", session.transport().as_str())
            .with("peer", session.peer().map_or(String::new(), |p| p.to_string()))
            .with("tls", session.tls().is_some());
        if let Some(cert) = session.client_cert() {
            let cn = cert.subject_cn.as_deref().map_or(Value::Null, Value::from);
            transport.insert("client_cert", Dict::new().with("cn", cn).with("sha256", cert.fingerprint_hex()));
        }
        let mut details = Dict::new()
            .with("authmethod", authmethod)
            .with("authid", authid.as_deref().map_or(Value::Null, Value::from))
            .with("authextra", hello.get("authextra").and_then(Value::as_dict).cloned().unwrap_or_default())
            .with("session", session.id)
            .with("transport", transport);
        if let Some(role) = hello.get("authrole").and_then(Value::as_str) {
            details.insert("authrole", role);
        }
        Question { authenticator: authenticator.clone(), realm: realm.to_owned(), authid, authmethod, details }
    }

    /// The authenticator asked.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }
}

/// The authenticator's answer: who the session is, and the method's credential fields.
#[derive(Debug)]
pub struct Answer {
    /// The role it gets.
    pub role: Arc<Role>,
    /// The authid: the answer's, else HELLO's.
    pub authid: Option<String>,
    /// `authextra` for WELCOME.
    pub authextra: Option<Dict>,
    /// The whole answer, for the method's fields.
    pub fields: Dict,
}

impl Answer {
    /// A string field.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// A non-negative integer field that fits 32 bits.
    pub fn uint(&self, key: &str) -> Option<u32> {
        self.fields.get(key).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok())
    }
}

/// Calls the authenticator with `question` and waits for its answer (the caller bounds the wait
/// by the handshake deadline). `roles` resolves the role it names.
pub async fn ask(
    router: &RouterShared,
    question: &Question,
    session: u64,
    roles: impl Fn(&str) -> Option<Arc<Role>>,
) -> Result<Answer, Refusal> {
    let procedure = question.authenticator.procedure.as_str();
    let home = question.authenticator.realm.as_deref().unwrap_or(&question.realm);
    let failed = |reason: String| {
        tracing::warn!(
            procedure,
            realm = question.realm,
            authmethod = question.authmethod,
            reason,
            "dynamic authentication failed"
        );
        Refusal::new(WampError::AuthenticationFailed, reason)
    };
    let Some(realm) = router.realms.get(home) else {
        return Err(failed(format!("the authenticator's realm '{home}' is not served by this router")));
    };
    let args = vec![
        Value::from(question.realm.as_str()),
        question.authid.as_deref().map_or(Value::Null, Value::from),
        Value::from(question.authmethod),
        Value::Dict(question.details.clone()),
    ];
    let asked = Asked::new(session, router.config.outbox_limits());
    let (outcome, payload) = asked.call(&realm.dealer, procedure, Payload::args(args)).await.map_err(failed)?;
    let (values, kwargs) =
        payload.to_values().map_err(|e| failed(format!("the authenticator's answer cannot be read: {e}")))?;
    let message = values.first().and_then(Value::as_str).map(str::to_owned);
    if let Err(error) = outcome {
        let said = |default: &str| message.clone().unwrap_or_else(|| default.to_owned());
        return Err(match error.as_str() {
            "wamp.error.no_such_principal" => {
                Refusal::new(WampError::NoSuchPrincipal, said("the authenticator knows no such principal"))
            }
            "wamp.error.authentication_denied" | "wamp.error.not_authorized" => {
                Refusal::new(WampError::AuthenticationDenied, said("the authenticator denied the login"))
            }
            "wamp.error.no_such_procedure" => {
                failed(format!("no authenticator is registered for '{procedure}' in realm '{home}'"))
            }
            "wamp.error.canceled" => failed("the authenticator left before it answered".into()),
            other => failed(format!("the authenticator answered ERROR {other}")),
        });
    }
    let fields = match (values.into_iter().next(), kwargs.is_empty()) {
        (Some(Value::Dict(fields)), _) => fields,
        (Some(Value::Str(role)), _) => Dict::new().with("role", role),
        (None, false) => kwargs,
        _ => return Err(failed("the authenticator's answer is neither a dictionary nor a role name".into())),
    };
    if fields.get("allow").and_then(Value::as_bool) == Some(false) {
        return Err(Refusal::new(WampError::AuthenticationDenied, "the authenticator denied the login"));
    }
    let Some(role_name) = fields.get("role").and_then(Value::as_str) else {
        return Err(failed("the authenticator's answer has no `role`".into()));
    };
    let Some(role) = roles(role_name) else {
        return Err(failed(format!(
            "the authenticator named role '{role_name}', which realm '{}' does not define",
            question.realm
        )));
    };
    let authid = match fields.get("authid") {
        None | Some(Value::Null) => question.authid.clone(),
        Some(Value::Str(authid)) if !authid.is_empty() => Some(authid.clone()),
        Some(_) => return Err(failed("the authenticator's `authid` must be a non-empty string".into())),
    };
    let authextra = match fields.get("authextra") {
        None | Some(Value::Null) => None,
        Some(Value::Dict(extra)) => Some(extra.clone()),
        Some(_) => return Err(failed("the authenticator's `authextra` must be a dictionary".into())),
    };
    Ok(Answer { role, authid, authextra, fields })
}

/// The router's own caller for one question: a session without a connection, whose queue is
/// read here instead of by a writer. Dropping it before the answer ends the call as a caller
/// leaving does.
struct Asked {
    caller: Arc<SessionHandle>,
    queue: tokio::sync::mpsc::UnboundedReceiver<Outbound>,
}

/// The request id of the one call an [`Asked`] makes.
const REQUEST: u64 = 1;

impl Asked {
    fn new(session: u64, limits: crate::session::outbox::OutboxLimits) -> Self {
        // The joining session's id: a callee that asks for caller disclosure sees who is
        // logging in (that session has not joined, so the id names nobody else).
        let (caller, queue) = SessionHandle::new(session, Serializer::Json, limits);
        Asked { caller, queue }
    }

    /// Routes the CALL and waits for its one answer: `Ok(())` with RESULT's payload, or the
    /// ERROR's URI with its payload. `Err` when the call could not be made at all.
    async fn call(
        mut self,
        dealer: &crate::dealer::Dealer,
        procedure: &str,
        args: Payload,
    ) -> Result<(Result<(), String>, Payload), String> {
        dealer.call(&self.caller, REQUEST, procedure, &Dict::new(), args, false).await?;
        while let Some(item) = self.queue.recv().await {
            let Outbound::Message(message) = item else { continue };
            match *message {
                Message::Result { request: REQUEST, payload, .. } => return Ok((Ok(()), payload)),
                Message::Error { request: REQUEST, error, payload, .. } => return Ok((Err(error), payload)),
                _ => continue,
            }
        }
        // Not reached while `caller` holds the queue's sender: every call gets exactly one answer
        // (the dealer's `Invocation` answers even when dropped), and the handshake deadline bounds
        // the wait for it. Kept so the function says what it would mean.
        Err("the authentication call ended without an answer".into())
    }
}

impl Drop for Asked {
    fn drop(&mut self) {
        // A call still in flight is abandoned the way a departed caller's is.
        crate::dealer::call::caller_gone(&self.caller);
    }
}
