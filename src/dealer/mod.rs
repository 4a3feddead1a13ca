//! The dealer: the RPC role of one realm.
//!
//! [`registry`] holds who registered what (sharded, wait-free reads), [`rule`] decides which member
//! serves a call, [`pending`] tracks calls in flight. This module turns REGISTER, UNREGISTER,
//! CALL, YIELD and a callee's ERROR into operations on those.

pub mod pending;
pub mod registry;
pub mod rule;

use std::sync::Arc;

use crate::error::{Refusal, WampError};
use crate::session::SessionHandle;
use crate::wire::{uri, Dict, Message, MessageType, Payload};

use pending::InvocationRequest;
use registry::{RegisterError, Registry};
use rule::InvocationRule;

/// A registration whose members are sessions.
pub type Registration = registry::Registration<Arc<SessionHandle>>;

/// The features the dealer announces in `WELCOME.Details.roles.dealer.features`: exactly what is
/// implemented, nothing more.
pub const FEATURES: &[&str] = &["shared_registration"];

/// The RPC router of one realm.
pub struct Dealer {
    registry: Registry<Arc<SessionHandle>>,
}

impl Dealer {
    /// A dealer whose registry has `shards` shards.
    pub fn new(shards: usize) -> Self {
        Dealer {
            registry: Registry::new(shards),
        }
    }

    /// The registrations.
    pub fn registry(&self) -> &Registry<Arc<SessionHandle>> {
        &self.registry
    }

    /// REGISTER: adds `callee` to the registration of `procedure`, returning its id.
    pub fn register(&self, callee: &Arc<SessionHandle>, procedure: &str, options: &Dict) -> Result<u64, Refusal> {
        if !uri::is_valid(procedure) {
            return Err(Refusal::new(
                WampError::InvalidUri,
                format!("invalid procedure URI '{procedure}'"),
            ));
        }
        if uri::is_reserved(procedure) {
            return Err(Refusal::new(
                WampError::InvalidUri,
                format!("procedure URI '{procedure}' is in the reserved wamp. namespace"),
            ));
        }
        match options.get("match").map(|m| m.as_str()) {
            None | Some(Some("exact")) => {}
            Some(other) => {
                return Err(Refusal::new(
                    WampError::InvalidArgument,
                    format!("match policy {other:?} is not supported: registrations match exactly"),
                ))
            }
        }
        let rule = InvocationRule::from_option(options.get("invoke"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        match self.registry.register(procedure, rule, callee.clone()) {
            Ok(registered) => Ok(registered.id),
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

    /// UNREGISTER: removes the session from a registration it is a member of.
    pub fn unregister(&self, session: u64, registration: u64) -> Result<(), Refusal> {
        match self.registry.unregister(registration, session) {
            Some(_) => Ok(()),
            None => Err(Refusal::new(
                WampError::NoSuchRegistration,
                format!("session is not registered under registration {registration}"),
            )),
        }
    }

    /// CALL: routes the call by the registration's rule and queues the INVOCATION at the callee.
    /// Waits while the callee's queue is full.
    pub async fn call(
        &self,
        caller: &Arc<SessionHandle>,
        request: u64,
        procedure: &str,
        payload: Payload,
    ) -> Result<(), Refusal> {
        let Some(registration) = self.registry.lookup(procedure) else {
            let reason = if uri::is_valid(procedure) {
                Refusal::new(
                    WampError::NoSuchProcedure,
                    format!("no callee registered for procedure '{procedure}'"),
                )
            } else {
                Refusal::new(WampError::InvalidUri, format!("invalid procedure URI '{procedure}'"))
            };
            return Err(reason);
        };
        pending::dispatch(InvocationRequest {
            registration,
            caller: caller.clone(),
            caller_request: request,
            details: Dict::new(),
            payload,
            attempts: 0,
        })
        .await;
        Ok(())
    }

    /// YIELD or a callee's ERROR: forwards the outcome of invocation `request` to its caller. An
    /// unknown id (a call already cancelled by a leave) is dropped quietly.
    pub async fn complete(callee: &SessionHandle, request: u64, outcome: Outcome) {
        let Some(call) = callee.invocations.lock().remove(&request) else {
            tracing::debug!(
                session = callee.id,
                request,
                "outcome for an unknown invocation dropped"
            );
            return;
        };
        let message = match outcome {
            Outcome::Result(payload) => Message::Result {
                request: call.caller_request,
                details: Dict::new(),
                payload,
            },
            Outcome::Error { error, payload } => Message::Error {
                request_type: MessageType::Call as u64,
                request: call.caller_request,
                details: Dict::new(),
                error,
                payload,
            },
        };
        call.caller.send(message).await;
    }
}

/// How a callee answered an invocation.
pub enum Outcome {
    /// YIELD.
    Result(Payload),
    /// ERROR, with the callee's error URI.
    Error {
        /// The error URI, passed through unchanged.
        error: String,
        /// The callee's args/kwargs.
        payload: Payload,
    },
}
