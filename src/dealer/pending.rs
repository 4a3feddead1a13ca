//! Calls in flight: routed but not yet written ([`InvocationRequest`] in the callee's queue),
//! written but not yet answered (the same request, in the callee's invocation table), and the
//! caller's view of each call ([`CallState`], in the caller's call table).
//!
//! There is no realm-wide table of calls. The callee's table is keyed by INVOCATION id, so YIELD
//! touches only its own session; the caller's table is keyed by CALL id, so CANCEL, timeouts and
//! a caller's departure find the call without searching. Whoever removes a call from the callee's
//! table owns its outcome: completion, cancel and teardown race only through that removal, so
//! every call gets exactly one RESULT or ERROR.

use std::sync::{Arc, Weak};

use smallvec::SmallVec;

use crate::error::{Refusal, WampError};
use crate::session::{Outbound, SessionHandle};
use crate::wire::{Dict, Message, MessageType, Payload, Value};

use super::timeout::Timeouts;
use super::{Callee, Registration};

/// How many times one call may be re-routed because its callee left between routing and delivery
/// before the caller gets an error; bounds the loop if members keep vanishing.
const MAX_ATTEMPTS: u32 = 16;

/// What the caller asked for in `CALL.Options`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// `receive_progress`: the caller accepts progressive results.
    pub receive_progress: bool,
    /// `disclose_me`: the caller wants the callee to learn who called.
    pub disclose_me: bool,
    /// `timeout` in milliseconds; 0 means none.
    pub timeout_ms: u64,
    /// `progress`: more CALL chunks with the same request id follow (progressive invocations).
    pub progress: bool,
}

/// A call routed to a callee: queued for its writer, then pending in its invocation table.
pub struct InvocationRequest {
    /// The registration it was routed through (re-routing picks again from it).
    pub registration: Arc<Registration>,
    /// The caller's session.
    pub caller: Arc<SessionHandle>,
    /// The caller's CALL request id.
    pub caller_request: u64,
    /// What the caller asked for.
    pub options: CallOptions,
    /// `INVOCATION.Details` for the callee it is routed to.
    pub details: Dict,
    /// The caller's arguments, passed through.
    pub payload: Payload,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Members that answered `wamp.error.unavailable` (call reroute).
    pub unavailable: SmallVec<[u64; 4]>,
    /// The progress the callee may send: the caller asked and the callee supports it.
    pub progress: bool,
    /// Where to start the call's timeout once its callee is known (unless that callee takes
    /// `forward_timeout`); `None` for calls without a timeout, or once started.
    pub timer: Option<Arc<Timeouts>>,
    /// The procedure called, when it reached a pattern registration (`INVOCATION.Details.procedure`).
    pub called: Option<Box<str>>,
}

/// The caller's view of one of its calls.
#[derive(Debug, Clone)]
pub enum CallState {
    /// Routed, waiting in a callee's queue; for a progressive invocation, the callee it went to.
    Queued {
        /// Where the following chunks of a progressive invocation must go.
        progressive: Option<Weak<SessionHandle>>,
    },
    /// Written to `callee` as INVOCATION `invocation`.
    Running {
        /// The callee serving it.
        callee: Weak<SessionHandle>,
        /// Its INVOCATION request id there.
        invocation: u64,
        /// The registration it was routed through.
        registration: u64,
        /// It is a progressive invocation still taking chunks.
        progressive: bool,
    },
}

impl CallState {
    /// The callee that takes the next chunk of a progressive invocation, if this is one.
    pub fn chunk_target(&self) -> Option<&Weak<SessionHandle>> {
        match self {
            CallState::Queued { progressive } => progressive.as_ref(),
            CallState::Running { callee, progressive: true, .. } => Some(callee),
            CallState::Running { .. } => None,
        }
    }
}

/// How a CANCEL (or a timeout, or the caller leaving) ends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    /// The caller gets its ERROR at once; the callee is not told.
    Skip,
    /// The callee gets INTERRUPT; the caller gets whatever the callee answers.
    Kill,
    /// The callee gets INTERRUPT and the caller its ERROR at once.
    KillNoWait,
}

impl CancelMode {
    /// Reads `CANCEL.Options.mode`; absent means `killnowait`.
    pub fn from_option(value: Option<&Value>) -> Result<Self, String> {
        match value.map(|v| v.as_str()) {
            None | Some(Some("killnowait")) => Ok(CancelMode::KillNoWait),
            Some(Some("kill")) => Ok(CancelMode::Kill),
            Some(Some("skip")) => Ok(CancelMode::Skip),
            Some(other) => Err(format!("unknown cancel mode {other:?} (expected skip, kill or killnowait)")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            CancelMode::Skip => "skip",
            CancelMode::Kill => "kill",
            CancelMode::KillNoWait => "killnowait",
        }
    }
}

/// Routes `call` to a member of its registration and queues it there, waiting for room when the
/// callee is saturated. If the chosen member turns out to be gone, picks again.
pub async fn dispatch(mut call: Box<InvocationRequest>) {
    loop {
        let Some(callee) = call.registration.pick_excluding(&call.unavailable) else {
            let (error, reason) = if call.unavailable.is_empty() {
                (WampError::NoSuchProcedure, "no callee is registered for the procedure any more")
            } else {
                (WampError::NoAvailableCallee, "every callee of the procedure is unavailable")
            };
            return answer_error(call, error, reason).await;
        };
        if !prepare(&mut call, &callee) {
            let reason = "the callee does not support progressive call invocations";
            return answer_error(call, WampError::FeatureNotSupported, reason).await;
        }
        if let Some(timeouts) = call.timer.take() {
            if !callee.options.forward_timeout {
                timeouts.schedule(call.options.timeout_ms, &call.caller, call.caller_request);
            }
        }
        let session = callee.session;
        match session.deliver(Outbound::Invocation(call)).await {
            Ok(()) => return,
            Err(Outbound::Invocation(back)) => call = back,
            Err(_) => unreachable!("deliver returns the item it was given"),
        }
        call.attempts += 1;
        if call.attempts >= MAX_ATTEMPTS {
            return answer_error(call, WampError::Canceled, "every callee tried left before taking the call").await;
        }
    }
}

/// Fills in what depends on the chosen callee: `INVOCATION.Details` and whether progress is on.
/// `false` when the call needs a feature the callee did not announce.
fn prepare(call: &mut InvocationRequest, callee: &Callee) -> bool {
    let features = callee.session.identity().map(|i| i.features).unwrap_or_default();
    let mut details = Dict::new();
    if call.options.progress {
        if !features.progressive_call_invocations {
            return false;
        }
        details.insert("progress", true);
        let target = Some(Arc::downgrade(&callee.session));
        call.caller.calls.lock().insert(call.caller_request, CallState::Queued { progressive: target });
    }
    if let Some(procedure) = &call.called {
        details.insert("procedure", &**procedure);
    }
    call.progress = call.options.receive_progress && features.progressive_call_results;
    if call.progress {
        details.insert("receive_progress", true);
    }
    if call.options.timeout_ms > 0 && callee.options.forward_timeout {
        details.insert("timeout", call.options.timeout_ms);
    }
    if call.options.disclose_me || callee.options.disclose_caller {
        details.insert("caller", call.caller.id);
        if let Some(identity) = call.caller.identity() {
            details.insert("caller_authid", identity.authid.as_str());
            details.insert("caller_authrole", identity.authrole.as_str());
        }
    }
    call.details = details;
    true
}

/// Ends a call with an ERROR for its caller, if the caller still waits for it: a call already
/// ended (canceled, timed out, its caller gone) is never answered twice.
pub async fn fail(caller: &SessionHandle, request: u64, error: WampError, reason: &str) {
    if caller.calls.lock().remove(&request).is_some() {
        caller.send(Refusal::new(error, reason).to_message(MessageType::Call, request)).await;
    }
}

/// Answers a routed call that could not be delivered.
pub async fn answer_error(call: Box<InvocationRequest>, error: WampError, reason: &str) {
    fail(&call.caller, call.caller_request, error, reason).await;
}

/// Routes again a call whose callee left before the call reached it, or answered it with
/// `wamp.error.unavailable`. Runs as its own task: the writer or teardown that found the call
/// must not wait on another session's queue.
pub fn reroute(mut call: Box<InvocationRequest>) {
    call.attempts += 1;
    if let Some(state) = call.caller.calls.lock().get_mut(&call.caller_request) {
        let progressive = state.chunk_target().cloned();
        *state = CallState::Queued { progressive };
    }
    tokio::spawn(async move {
        if call.attempts >= MAX_ATTEMPTS {
            answer_error(call, WampError::Canceled, "every callee tried left before taking the call").await
        } else {
            dispatch(call).await
        }
    });
}

/// Ends the caller's call `request` as `mode` says, answering the caller with `error` when the
/// mode answers at once. Used by CANCEL, by timeouts (with `wamp.error.timeout`), and by a caller
/// leaving (no answer goes to a caller that left). A call already answered is left alone.
pub async fn cancel(caller: &SessionHandle, request: u64, mode: CancelMode, error: WampError) {
    let running = {
        let mut calls = caller.calls.lock();
        match calls.get(&request) {
            None => return,
            Some(CallState::Running { callee, invocation, .. }) => Some((callee.clone(), *invocation)),
            Some(CallState::Queued { .. }) => {
                // Still queued: the callee's writer drops it when it finds the caller's entry gone.
                calls.remove(&request);
                None
            }
        }
    };
    let Some((callee, invocation)) = running else { return answer(caller, request, error).await };
    let Some(callee) = callee.upgrade() else {
        caller.calls.lock().remove(&request);
        return answer(caller, request, error).await;
    };
    let interruptible = callee.identity().is_some_and(|i| i.features.call_canceling);
    if mode == CancelMode::Kill && interruptible {
        // The call stays open: the callee's answer (usually ERROR wamp.error.canceled) ends it.
        return interrupt(&callee, invocation, CancelMode::Kill, error).await;
    }
    if callee.invocations.lock().remove(&invocation).is_none() {
        return; // the callee answered first; that answer is on its way
    }
    caller.calls.lock().remove(&request);
    if mode != CancelMode::Skip && interruptible {
        interrupt(&callee, invocation, CancelMode::KillNoWait, error).await;
    }
    answer(caller, request, error).await;
}

async fn interrupt(callee: &SessionHandle, invocation: u64, mode: CancelMode, reason: WampError) {
    let options = Dict::new().with("mode", mode.as_str()).with("reason", reason.uri());
    callee.send(Message::Interrupt { request: invocation, options }).await;
}

async fn answer(caller: &SessionHandle, request: u64, error: WampError) {
    let reason = match error {
        WampError::Timeout => "the call timed out",
        WampError::Canceled => "the call was canceled",
        _ => "the call ended",
    };
    caller.send(Refusal::new(error, reason).to_message(MessageType::Call, request)).await;
}

/// The caller of a call the callee will never answer (it left) gets `wamp.error.canceled`.
pub async fn callee_gone(call: Box<InvocationRequest>) {
    fail(&call.caller, call.caller_request, WampError::Canceled, "the callee left while the call was in flight").await;
}

/// A caller left: its calls running at callees that support canceling are interrupted
/// (`killnowait`); the rest are forgotten, and late results for them are dropped.
pub async fn caller_gone(caller: &SessionHandle) {
    let calls: Vec<_> = caller.calls.lock().drain().collect();
    for (_, state) in calls {
        let CallState::Running { callee, invocation, .. } = state else { continue };
        let Some(callee) = callee.upgrade() else { continue };
        if callee.invocations.lock().remove(&invocation).is_some()
            && callee.identity().is_some_and(|i| i.features.call_canceling)
        {
            interrupt(&callee, invocation, CancelMode::KillNoWait, WampError::Canceled).await;
        }
    }
}
