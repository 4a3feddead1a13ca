//! Invoke-all (`CALL.Options.runmode: "all"`): one call sent to every member of its registration,
//! each member's answer reaching the caller as a progressive RESULT, then one final empty RESULT.
//!
//! The call is one entry in its caller's table, as any call is; it carries a [`Fanout`] counting
//! the members that still owe an answer. Each member gets its own [`Invocation`], targeted at it
//! (as `_callee` targets one), holding that member's concurrency slot. A member's invocation
//! answers exactly once by the usual paths (YIELD, ERROR, the member leaving, `Drop`), and
//! [`member_answered`] turns that answer into the member's progressive RESULT; the last one also
//! ends the call, in the same critical section, with the final RESULT. So the answer-once rule of
//! [`super::end`] holds: one final answer, no progress after it.
//!
//! Rules where no spec exists (the contract is in the README's dealer rules section):
//! - The caller must accept progressive results (`receive_progress: true`); a progressive CALL
//!   (`progress: true`) and `_callee` cannot be combined with it.
//! - A member's result: `RESULT.Details {progress: true, callee}` with the member's YIELD args.
//!   A member's error: the same, with `Details.error` the error URI and the ERROR's args.
//!   `callee` (the member's session id) is disclosed when the realm discloses callers
//!   (`allow_disclose_caller`), the analogous rule.
//! - A member at its concurrency limit does not make the call wait: its result is
//!   `wamp.error.no_available_callee`. A member answering `wamp.error.unavailable` is not rerouted
//!   (every member gets the call already); that error is its result. A member leaving mid-call:
//!   `wamp.error.canceled`.
//! - Members are not offered `receive_progress`: a member's own progressive YIELDs are dropped.
//! - Members get their INVOCATIONs side by side: one whose outbound queue is full (it stopped
//!   reading) delays only its own, never the others'.
//! - CANCEL (any mode; `kill` acts as `killnowait`, since the caller could otherwise wait on
//!   every member) and the call's `timeout` end the call at once with their ERROR; members still
//!   running are interrupted when they support call canceling.

use std::sync::{Arc, Weak};

use super::{end_locked, interrupt, CallOptions, CancelMode, Invocation};
use crate::dealer::timeout::Timeouts;
use crate::dealer::Registration;
use crate::error::{Refusal, WampError};
use crate::session::{Outbound, SessionHandle};
use crate::wire::{Dict, Message, MessageType, Payload};

/// What an invoke-all call owes its caller: how many members still have to answer, and where the
/// members that took it run (to interrupt them when the call ends early).
pub(super) struct Fanout {
    outstanding: usize,
    /// Members whose writer wrote the INVOCATION and that have not answered yet: session id,
    /// session, invocation id.
    running: Vec<(u64, Weak<SessionHandle>, u64)>,
    disclose: bool,
}

impl Fanout {
    /// A member's writer wrote its INVOCATION `invocation`.
    pub(super) fn started(&mut self, callee: &Arc<SessionHandle>, invocation: u64) {
        self.running.push((callee.id, Arc::downgrade(callee), invocation));
    }

    /// The call ended before every member answered: the invocations still pending at members are
    /// dropped (their answers would find nothing), and members that can be told are interrupted.
    pub(super) fn abandon(self, mode: CancelMode, error: WampError) {
        for (_, callee, invocation) in self.running {
            let Some(callee) = callee.upgrade() else { continue };
            let Some(call) = callee.invocations.remove(invocation) else { continue };
            call.discard();
            if mode != CancelMode::Skip && callee.identity().is_some_and(|i| i.features.call_canceling) {
                interrupt(&callee, invocation, CancelMode::KillNoWait, error);
            }
        }
    }
}

/// Sends the call `request` (opened with `token`) to every member of `registration`. Refuses, as
/// the call's one answer, what invoke-all cannot do. `disclose` says whether each result names
/// its member. `timeouts` is set when the call has a timeout.
#[allow(clippy::too_many_arguments)]
pub async fn dispatch_all(
    registration: Arc<Registration>,
    caller: &Arc<SessionHandle>,
    request: u64,
    token: u64,
    mut options: CallOptions,
    payload: Payload,
    timeouts: Option<Arc<Timeouts>>,
    called: Option<Box<str>>,
    disclose: bool,
) {
    let refused = if !options.receive_progress {
        Some("runmode \"all\" answers with one progressive RESULT per member: the CALL needs receive_progress")
    } else if options.progress {
        Some("runmode \"all\" cannot be combined with a progressive CALL (Options.progress)")
    } else if options.callee.is_some() {
        Some("runmode \"all\" cannot be combined with CALL.Options._callee")
    } else {
        None
    };
    if let Some(reason) = refused {
        tracing::debug!(session = caller.id, request, reason, "invoke-all call refused");
        super::fail(caller, request, token, WampError::InvalidArgument, reason);
        return;
    }
    let members = registration.members();
    if members.is_empty() {
        super::fail(caller, request, token, WampError::NoSuchProcedure, "no callee is registered for the procedure");
        return;
    }
    {
        let mut calls = caller.calls.calls.lock();
        let Some(entry) = calls.entries.get_mut(&request).filter(|e| e.token == token) else { return };
        entry.all = Some(Fanout { outstanding: members.len(), running: Vec::new(), disclose });
    }
    options.rkey = None;
    options.partition = false;
    // Delivered side by side: a member whose outbox is full (delivery waits for room there, up to
    // `stuck_timeout_ms`) delays only its own INVOCATION. Members with room get theirs at the
    // first poll; the caller's reader still waits for the slow ones, as any CALL waits for its
    // callee's room (backpressure).
    let deliveries = members.into_iter().map(|member| {
        let mut options = options;
        options.callee = Some(member.session.id);
        let mut invocation =
            Invocation::new(registration.clone(), caller.clone(), request, token, options, payload.clone());
        invocation.timer = timeouts.clone();
        invocation.called = called.clone();
        super::dispatch(invocation)
    });
    futures_util::future::join_all(deliveries).await;
}

/// Member `call.options.callee` answered `answer` (a RESULT or an ERROR, from it or made for it):
/// the caller gets it as a progressive RESULT, and, when it was the last member to answer, the
/// final empty RESULT. Nothing is sent when the call has ended.
pub(super) fn member_answered(call: &Invocation, answer: Message) {
    let (caller, request, token) = (&call.caller, call.caller_request, call.token);
    let mut calls = caller.calls.calls.lock();
    let Some(entry) = calls.entries.get_mut(&request).filter(|e| e.token == token) else { return };
    let Some(fanout) = entry.all.as_mut() else { return };
    let member = call.options.callee.unwrap_or_default();
    let mut details = Dict::new().with("progress", true);
    if fanout.disclose {
        details.insert("callee", member);
    }
    let payload = match answer {
        Message::Result { payload, .. } => payload,
        Message::Error { error, payload, .. } => {
            details.insert("error", error.as_str());
            payload
        }
        other => {
            tracing::warn!(kind = ?other.message_type(), "unexpected answer for an invoke-all member");
            Payload::Empty
        }
    };
    fanout.running.retain(|(session, ..)| *session != member);
    fanout.outstanding -= 1;
    let last = fanout.outstanding == 0;
    let progress = Message::Result { request, details, payload };
    // A caller that stopped reading is closed as a slow consumer by the push.
    if caller.push(Outbound::Message(Box::new(progress))).is_err() || !last {
        return;
    }
    // In the same critical section, so nothing (a CANCEL, the timeout) can come between the last
    // member's result and the final RESULT. An invoke-all call is never parked in a queue.
    let last = Message::Result { request, details: Dict::new(), payload: Payload::Empty };
    end_locked(caller, &mut calls, request, last);
}

/// CANCEL or the timeout of an invoke-all call: it ends at once with `error`, and members still
/// running are interrupted (see the module docs).
pub(super) fn cancel(
    caller: &SessionHandle,
    request: u64,
    token: u64,
    mode: CancelMode,
    error: WampError,
    reason: &str,
) {
    // The fanout is taken in the critical section that ends the call, so a member's writer either
    // recorded its INVOCATION in it before, or finds the call ended and drops the INVOCATION.
    let fanout = {
        let mut calls = caller.calls.calls.lock();
        let Some(entry) = calls.entries.get_mut(&request).filter(|e| e.token == token) else { return };
        let fanout = entry.all.take();
        end_locked(caller, &mut calls, request, Refusal::new(error, reason).to_message(MessageType::Call, request));
        fanout
    };
    if error == WampError::Timeout {
        super::count_timeout(caller);
    }
    if let Some(fanout) = fanout {
        fanout.abandon(mode, error);
    }
}
