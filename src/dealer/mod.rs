//! The dealer: the RPC role of one realm.
//!
//! [`registry`] holds who registered what (sharded, wait-free reads), [`rule`] decides which member
//! serves a call, [`pending`] tracks calls in flight and ends them (results, cancels, callee or
//! caller leaving), [`timeout`] expires calls that asked for a timeout. This module turns REGISTER,
//! UNREGISTER, CALL, CANCEL, YIELD and a callee's ERROR into operations on those.

pub mod patterns;
pub mod pending;
pub mod registry;
pub mod rule;
pub mod timeout;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{Refusal, WampError};
use crate::session::{Chunk, Outbound, SessionHandle};
use crate::wire::uri::{self, MatchPolicy};
use crate::wire::{Dict, Message, MessageType, Payload, Value};

use patterns::{PatternIndex, PatternKind};
use pending::{CallOptions, CallState, CancelMode, InvocationRequest};
use registry::{Member, RegisterError, Registry};
use rule::InvocationRule;

/// The features the dealer announces in `WELCOME.Details.roles.dealer.features`: exactly what is
/// implemented, nothing more.
pub const FEATURES: &[&str] = &[
    "shared_registration",
    "progressive_call_results",
    "call_canceling",
    "call_timeout",
    "caller_identification",
    "call_reroute",
    "pattern_based_registration",
    "registration_meta_api",
    "session_meta_api",
    "testament_meta_api",
    "registration_revocation",
    "progressive_call_invocations",
];

/// What a callee asked for in `REGISTER.Options`, kept with its membership.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalleeOptions {
    /// `disclose_caller`: calls to this callee name their caller.
    pub disclose_caller: bool,
    /// `forward_timeout`: the callee enforces `CALL.Options.timeout` itself.
    pub forward_timeout: bool,
    /// `max_reroutes`: how many times a call this callee answers `wamp.error.unavailable` may be
    /// handed on; `None` means every member once.
    pub max_reroutes: Option<u64>,
}

/// A member of a registration: a callee session and its options.
#[derive(Clone)]
pub struct Callee {
    /// The callee's session.
    pub session: Arc<SessionHandle>,
    /// Its REGISTER options.
    pub options: CalleeOptions,
}

impl Member for Callee {
    fn member_id(&self) -> u64 {
        self.session.id
    }
}

/// A registration whose members are callee sessions.
pub type Registration = registry::Registration<Callee>;

/// The RPC router of one realm.
///
/// Registrations live in two tables: exact URIs in the sharded [`Registry`] (the hot path: one
/// lookup per CALL), prefix and wildcard patterns in the [`PatternIndex`], which a CALL asks only
/// when no exact registration matches. Both are read through snapshots: routing never waits.
pub struct Dealer {
    exact: Registry<Callee>,
    patterns: PatternIndex<Callee>,
    timeouts: Arc<timeout::Timeouts>,
    allow_disclose_caller: bool,
}

impl Dealer {
    /// A dealer whose registry has `shards` shards. Starts the realm's timeout sweeper, so it must
    /// be created inside a tokio runtime.
    pub fn new(shards: usize, allow_disclose_caller: bool) -> Self {
        Dealer {
            exact: Registry::new(shards),
            patterns: PatternIndex::new(shards),
            timeouts: timeout::Timeouts::start(),
            allow_disclose_caller,
        }
    }

    /// The exact-match registrations.
    pub fn registry(&self) -> &Registry<Callee> {
        &self.exact
    }

    /// The registration a CALL to `procedure` goes to, per the spec's selection: an exact match,
    /// else the most specific prefix match, else the most specific wildcard match. The flag says
    /// whether it is a pattern registration.
    ///
    /// Patterns never capture a procedure in the reserved `wamp.` namespace, nor an invalid URI
    /// (which then gets `wamp.error.invalid_uri`, not a callee). Nothing invalid can have been
    /// registered exactly, so that check is paid on the pattern path only.
    pub fn lookup(&self, procedure: &str) -> Option<(Arc<Registration>, bool)> {
        if let Some(exact) = self.exact.lookup(procedure) {
            return Some((exact, false));
        }
        if self.patterns.is_empty() || uri::is_reserved(procedure) || !uri::is_valid(procedure) {
            return None;
        }
        self.patterns.best_match(procedure).map(|registration| (registration, true))
    }

    /// The registration with this id, and its match policy.
    pub fn get(&self, id: u64) -> Option<(Arc<Registration>, MatchPolicy)> {
        match self.exact.get(id) {
            Some(exact) => Some((exact, MatchPolicy::Exact)),
            None => self.patterns.get(id).map(|(registration, kind)| (registration, kind.policy())),
        }
    }

    /// The registration of `procedure` under exactly this match policy (no pattern selection).
    pub fn lookup_exactly(&self, procedure: &str, policy: MatchPolicy) -> Option<Arc<Registration>> {
        match PatternKind::of(policy) {
            None => self.exact.lookup(procedure),
            Some(kind) => self.patterns.find(procedure, kind),
        }
    }

    /// The ids of all registrations under `policy`.
    pub fn ids(&self, policy: MatchPolicy) -> Vec<u64> {
        match PatternKind::of(policy) {
            None => {
                let mut ids = Vec::new();
                self.exact.for_each(|r| ids.push(r.id));
                ids
            }
            Some(kind) => self.patterns.ids(kind),
        }
    }

    /// REGISTER: adds `callee` to the registration of `procedure`, returning its id and whether
    /// this created it.
    pub fn register(
        &self,
        callee: &Arc<SessionHandle>,
        procedure: &str,
        options: &Dict,
    ) -> Result<registry::Registered, Refusal> {
        let policy = MatchPolicy::from_option(options.get("match"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        if !policy.accepts(procedure) {
            return Err(Refusal::new(WampError::InvalidUri, format!("invalid procedure URI '{procedure}'")));
        }
        if uri::is_reserved(procedure) {
            return Err(Refusal::new(
                WampError::InvalidUri,
                format!("procedure URI '{procedure}' is in the reserved wamp. namespace"),
            ));
        }
        let rule = InvocationRule::from_option(options.get("invoke"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        let flag = |key: &str| options.get(key).and_then(Value::as_bool).unwrap_or(false);
        let options = CalleeOptions {
            disclose_caller: flag("disclose_caller"),
            forward_timeout: flag("forward_timeout"),
            max_reroutes: options.get("max_reroutes").and_then(Value::as_u64),
        };
        let callee = Callee { session: callee.clone(), options };
        let registered = match PatternKind::of(policy) {
            None => self.exact.register(procedure, rule, callee),
            Some(kind) => self.patterns.register(procedure, kind, rule, callee),
        };
        match registered {
            Ok(registered) => Ok(registered),
            Err(RegisterError::AlreadyExists) => Err(Refusal::new(
                WampError::ProcedureAlreadyExists,
                format!("register for already registered procedure '{procedure}'"),
            )),
            Err(RegisterError::DifferentRule(existing)) => Err(Refusal::new(
                WampError::ProcedureExistsWithDifferentInvocationPolicy,
                format!("procedure '{procedure}' is registered with invocation rule '{existing}', not '{rule}'"),
            )),
        }
    }

    /// UNREGISTER: removes the session from a registration it is a member of; `Ok(true)` when
    /// that deleted the registration (its last member left).
    pub fn unregister(&self, session: u64, registration: u64) -> Result<bool, Refusal> {
        let left = self.exact.unregister(registration, session);
        if let Some((_, deleted)) = left.or_else(|| self.patterns.unregister(registration, session)) {
            return Ok(deleted);
        }
        Err(Refusal::new(
            WampError::NoSuchRegistration,
            format!("session is not registered under registration {registration}"),
        ))
    }

    /// CALL: routes the call by the registration's rule and queues the INVOCATION at the callee.
    /// Waits while the callee's queue is full.
    pub async fn call(
        &self,
        caller: &Arc<SessionHandle>,
        request: u64,
        procedure: &str,
        options: &Dict,
        payload: Payload,
    ) -> Result<(), Refusal> {
        if caller.progressive_calls.load(Ordering::Relaxed) > 0 {
            // A further chunk of a progressive invocation goes where its first chunk went.
            let target = caller.calls.lock().get(&request).and_then(|s| s.chunk_target().cloned());
            if let Some(callee) = target {
                let progress = options.get("progress").and_then(Value::as_bool) == Some(true);
                if !progress {
                    caller.progressive_calls.fetch_sub(1, Ordering::Relaxed);
                }
                if let Some(callee) = callee.upgrade() {
                    let chunk = Chunk { caller: caller.clone(), caller_request: request, progress, payload };
                    let chunk = Outbound::InvocationChunk(Box::new(chunk));
                    let _ = callee.deliver(chunk).await;
                }
                return Ok(());
            }
        }
        let Some((registration, pattern)) = self.lookup(procedure) else {
            let reason = if uri::is_valid(procedure) {
                Refusal::new(WampError::NoSuchProcedure, format!("no callee registered for procedure '{procedure}'"))
            } else {
                Refusal::new(WampError::InvalidUri, format!("invalid procedure URI '{procedure}'"))
            };
            return Err(reason);
        };
        let options = call_options(options)?;
        if options.disclose_me && !self.allow_disclose_caller {
            return Err(Refusal::new(
                WampError::OptionDisallowedDiscloseMe,
                "this realm does not disclose callers to callees",
            ));
        }
        caller.calls.lock().insert(request, CallState::Queued { progressive: None });
        if options.progress {
            caller.progressive_calls.fetch_add(1, Ordering::Relaxed);
        }
        let call = Box::new(InvocationRequest {
            registration,
            caller: caller.clone(),
            caller_request: request,
            options,
            details: Dict::new(),
            payload,
            attempts: 0,
            unavailable: Default::default(),
            progress: false,
            timer: (options.timeout_ms > 0).then(|| self.timeouts.clone()),
            called: pattern.then(|| procedure.into()),
        });
        pending::dispatch(call).await;
        Ok(())
    }

    /// CANCEL: ends the caller's call `request` in the mode it asks for.
    pub async fn cancel(caller: &SessionHandle, request: u64, options: &Dict) -> Result<(), Refusal> {
        let mode = CancelMode::from_option(options.get("mode"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        pending::cancel(caller, request, mode, WampError::Canceled).await;
        Ok(())
    }

    /// YIELD or a callee's ERROR: forwards the outcome of invocation `request` to its caller. A
    /// progressive result keeps the call open; `wamp.error.unavailable` sends the call to another
    /// member (call reroute). An unknown id (a call already ended) is dropped quietly.
    pub async fn complete(callee: &SessionHandle, request: u64, outcome: Outcome) {
        if let Outcome::Progress(payload) = outcome {
            let target =
                callee.invocations.lock().get(&request).map(|c| (c.caller.clone(), c.caller_request, c.progress));
            if let Some((caller, caller_request, true)) = target {
                let details = Dict::new().with("progress", true);
                caller.send(Message::Result { request: caller_request, details, payload }).await;
            }
            return;
        }
        let Some(mut call) = callee.invocations.lock().remove(&request) else {
            tracing::debug!(session = callee.id, request, "outcome for an unknown or ended invocation dropped");
            return;
        };
        let message = match outcome {
            Outcome::Error { error, .. } if error == WampError::Unavailable.uri() => {
                call.unavailable.push(callee.id);
                let members = call.registration.members();
                let limit = members.iter().find(|c| c.session.id == callee.id).and_then(|c| c.options.max_reroutes);
                if limit.is_some_and(|max| call.unavailable.len() as u64 > max) {
                    let reason = "the call was rerouted max_reroutes times";
                    return pending::answer_error(call, WampError::NoAvailableCallee, reason).await;
                }
                return pending::reroute(call);
            }
            Outcome::Result(payload) => Message::Result { request: call.caller_request, details: Dict::new(), payload },
            Outcome::Error { error, payload } => Message::Error {
                request_type: MessageType::Call as u64,
                request: call.caller_request,
                details: Dict::new(),
                error,
                payload,
            },
            Outcome::Progress(_) => unreachable!("handled above"),
        };
        call.caller.calls.lock().remove(&call.caller_request);
        call.caller.send(message).await;
    }
}

fn call_options(options: &Dict) -> Result<CallOptions, Refusal> {
    let flag = |key: &str| match options.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Refusal::new(WampError::InvalidArgument, format!("{key} must be a boolean, got {other:?}"))),
    };
    let timeout_ms = match options.get("timeout") {
        None => 0,
        Some(Value::UInt(ms)) => *ms,
        Some(Value::Float(ms)) if *ms >= 0.0 && ms.is_finite() => *ms as u64,
        Some(other) => {
            return Err(Refusal::new(
                WampError::InvalidArgument,
                format!("timeout must be a non-negative number of milliseconds, got {other:?}"),
            ))
        }
    };
    Ok(CallOptions {
        receive_progress: flag("receive_progress")?,
        disclose_me: flag("disclose_me")?,
        timeout_ms,
        progress: flag("progress")?,
    })
}

/// How a callee answered an invocation.
pub enum Outcome {
    /// YIELD.
    Result(Payload),
    /// YIELD with `Options.progress`: one progressive result, more to come.
    Progress(Payload),
    /// ERROR, with the callee's error URI.
    Error {
        /// The error URI, passed through unchanged.
        error: String,
        /// The callee's args/kwargs.
        payload: Payload,
    },
}
