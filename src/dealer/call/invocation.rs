//! The routed call, an [`Invocation`], which carries the obligation to be answered, and a
//! callee's [`InvocationTable`] of the calls it is serving.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use super::CallOptions;
use crate::dealer::registry::{MemberLoad, Selected};
use crate::dealer::timeout::Timeouts;
use crate::dealer::{Callee, Registration};
use crate::error::{Refusal, WampError};
use crate::session::SessionHandle;
use crate::sync::Mutex;
use crate::wire::{Dict, Message, MessageType, Payload, RawPayload};

/// A call routed to a callee: queued for its writer, then pending in its invocation table until
/// answered. See the module docs for the obligation it carries.
pub struct Invocation {
    /// The registration it was routed through (routing again picks from it).
    pub registration: Arc<Registration>,
    /// The caller's session.
    pub caller: Arc<SessionHandle>,
    /// The caller's CALL request id.
    pub caller_request: u64,
    /// The call's token in the caller's table.
    pub(super) token: u64,
    /// What the caller asked for.
    pub options: CallOptions,
    /// `INVOCATION.Details` for the callee it is routed to.
    pub details: Dict,
    /// The caller's arguments, passed through (kept until the answer, for call reroute).
    pub payload: Payload,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Members that answered `wamp.error.unavailable`, or could not take the call.
    pub unavailable: SmallVec<[u64; 4]>,
    /// The callee may send progressive results: the caller asked and the callee supports it.
    pub progress: bool,
    /// Where to start the call's timeout once its callee is known (unless that callee takes
    /// `forward_timeout`); `None` for calls without a timeout, or once started.
    pub timer: Option<Arc<Timeouts>>,
    /// The procedure called, when it reached a pattern registration (`INVOCATION.Details.procedure`).
    pub called: Option<Box<str>>,
    /// The slot the call holds at the member it was routed to (see the module docs of
    /// [`super`]); given back when the call is dropped or moves on.
    pub(super) slot: Option<Arc<MemberLoad>>,
    /// Answered, handed on, or found ended: nothing left for `Drop` to do.
    pub(super) settled: bool,
    /// A call forwarded from another cluster node: the `INVOCATION.Details` that node made (it
    /// knows the caller, so it names it when disclosure is due). Such a call is the origin's to
    /// route again: `wamp.error.unavailable` goes back to it rather than to another member here.
    pub forwarded: Option<Box<Dict>>,
}

impl Invocation {
    /// A call to route through `registration`, opened in the caller's table with `token`.
    pub fn new(
        registration: Arc<Registration>,
        caller: Arc<SessionHandle>,
        caller_request: u64,
        token: u64,
        options: CallOptions,
        payload: Payload,
    ) -> Box<Self> {
        Box::new(Invocation {
            registration,
            caller,
            caller_request,
            token,
            options,
            details: Dict::new(),
            payload,
            attempts: 0,
            unavailable: SmallVec::new(),
            progress: false,
            timer: None,
            called: None,
            slot: None,
            settled: false,
            forwarded: None,
        })
    }

    /// Bytes this call pins while in flight.
    pub fn size(&self) -> usize {
        payload_size(&self.payload) + std::mem::size_of::<Self>()
    }

    /// The caller and its request id.
    pub fn caller_request(&self) -> (&Arc<SessionHandle>, u64, u64) {
        (&self.caller, self.caller_request, self.token)
    }

    /// Ends the call with `answer`, a final RESULT or ERROR for the caller (if it still waits).
    pub fn answer(mut self: Box<Self>, answer: Message) {
        self.settle(answer);
    }

    /// Ends the call with an ERROR.
    pub fn fail(mut self: Box<Self>, error: WampError, reason: &str) {
        self.settle(Refusal::new(error, reason).to_message(MessageType::Call, self.caller_request));
    }

    /// The one way a call ends: its slot is freed before the caller can see the answer (so its
    /// next call finds the slot free), then the answer goes to the caller, or, for a member of
    /// an invoke-all call, into that call's results.
    fn settle(&mut self, answer: Message) {
        self.settled = true;
        self.release_slot();
        if self.options.all {
            super::all::member_answered(self, answer);
        } else {
            super::end(&self.caller, self.caller_request, self.token, answer);
        }
    }

    /// Drops a call known to have ended already.
    pub fn discard(mut self: Box<Self>) {
        self.settled = true;
    }

    /// The member that serves the call, by its `_callee`, its `rkey` or the rule, with a slot
    /// taken on it.
    pub(super) fn select(&self) -> Selected<Callee> {
        match (self.options.callee, self.options.rkey) {
            (Some(target), _) => self.registration.select_target(target, &self.unavailable),
            (None, Some(key)) => self.registration.select_key(key, &self.unavailable),
            (None, None) => self.registration.select(&self.unavailable),
        }
    }

    /// Why no member may serve the call.
    pub(super) fn nobody(&self) -> (WampError, &'static str) {
        if self.options.all {
            (WampError::NoAvailableCallee, "the member left or could not take the call")
        } else if self.registration.members().is_empty() {
            (WampError::NoSuchProcedure, "no callee is registered for the procedure any more")
        } else if self.options.callee.is_some() {
            (WampError::NoAvailableCallee, "the session named by _callee is not a callee of the procedure")
        } else if self.options.rkey.is_some() {
            (WampError::NoAvailableCallee, "the callee the call's rkey goes to is unavailable")
        } else {
            (WampError::NoAvailableCallee, "every callee of the procedure is unavailable")
        }
    }

    /// Gives the member's slot back, and lets a call waiting in the queue have it.
    pub(super) fn release_slot(&mut self) {
        let Some(load) = self.slot.take() else { return };
        load.release();
        // Only a limited member's slot can be what a queued call waits for. The fence orders the
        // release before the read of the queue's length, as parking orders its push before its
        // own look at the slots: one of the two sides sees the other.
        if load.is_limited() {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if self.registration.queued() > 0 {
                super::queue::drain(&self.registration);
            }
        }
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        if self.settled {
            return self.release_slot();
        }
        tracing::debug!(session = self.caller.id, request = self.caller_request, "call dropped unanswered");
        let reason = "the call was lost in the router";
        self.settle(Refusal::new(WampError::Canceled, reason).to_message(MessageType::Call, self.caller_request));
    }
}

/// Bytes a payload occupies (its encoded bytes, or an estimate for router-made values).
pub fn payload_size(payload: &Payload) -> usize {
    match payload {
        Payload::Empty => 0,
        Payload::Raw(RawPayload { args, kwargs, .. }) => {
            args.as_ref().map_or(0, |b| b.len()) + kwargs.as_ref().map_or(0, |b| b.len())
        }
        Payload::Values(args, kwargs) => 16 * (args.len() + kwargs.as_ref().map_or(0, |k| k.0.len())),
    }
}

/// Calls a callee is serving, by INVOCATION id, with the bytes they pin.
#[derive(Default)]
pub struct InvocationTable {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, Box<Invocation>, foldhash::fast::RandomState>,
    bytes: usize,
    /// INVOCATIONs written so far, by registration (the status page's served counts).
    served: HashMap<u64, u64, foldhash::fast::RandomState>,
}

/// What a callee is doing for one registration, for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Serving {
    /// INVOCATIONs written so far.
    pub served: u64,
    /// Of those, still waiting for their answer.
    pub in_flight: u64,
}

/// Why a callee cannot take another call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtLimit {
    /// It has `max_pending_per_callee` calls in flight.
    Calls,
    /// Its calls in flight pin `max_pending_bytes_per_callee` bytes.
    Bytes,
}

impl InvocationTable {
    /// Records that INVOCATION `id` was sent, unless the callee is at one of its limits.
    pub fn insert(
        &self,
        id: u64,
        call: Box<Invocation>,
        max_calls: usize,
        max_bytes: usize,
    ) -> Result<(), (AtLimit, Box<Invocation>)> {
        let mut pending = self.pending.lock();
        if pending.calls.len() >= max_calls {
            return Err((AtLimit::Calls, call));
        }
        let size = call.size();
        if pending.bytes > 0 && pending.bytes + size > max_bytes {
            return Err((AtLimit::Bytes, call));
        }
        pending.bytes += size;
        *pending.served.entry(call.registration.id).or_default() += 1;
        pending.calls.insert(id, call);
        Ok(())
    }

    /// Takes INVOCATION `id` out: its answer came, or it was canceled.
    pub fn remove(&self, id: u64) -> Option<Box<Invocation>> {
        let mut pending = self.pending.lock();
        let call = pending.calls.remove(&id)?;
        pending.bytes -= call.size();
        Some(call)
    }

    /// True while INVOCATION `id` waits for its answer.
    pub fn contains(&self, id: u64) -> bool {
        self.pending.lock().calls.contains_key(&id)
    }

    /// The INVOCATION ids up to `bound` still waiting for their answer (a cluster node asks the
    /// callee's node whether it still holds these calls).
    pub fn ids_up_to(&self, bound: u64) -> Vec<u64> {
        self.pending.lock().calls.keys().copied().filter(|id| *id <= bound).collect()
    }

    /// Where a progressive result for INVOCATION `id` goes, if the caller accepts one.
    pub(super) fn progress_target(&self, id: u64) -> Option<(Arc<SessionHandle>, u64, u64)> {
        let pending = self.pending.lock();
        let call = pending.calls.get(&id).filter(|c| c.progress)?;
        Some((call.caller.clone(), call.caller_request, call.token))
    }

    /// Takes every call out (the callee is leaving).
    pub fn drain(&self) -> Vec<Box<Invocation>> {
        let mut pending = self.pending.lock();
        pending.bytes = 0;
        pending.calls.drain().map(|(_, call)| call).collect()
    }

    /// Drops the served count of a registration the session left.
    pub fn forget(&self, registration: u64) {
        self.pending.lock().served.remove(&registration);
    }

    /// Served and in-flight counts by registration id.
    pub fn serving(&self) -> Vec<(u64, Serving)> {
        let pending = self.pending.lock();
        let mut out: HashMap<u64, Serving, foldhash::fast::RandomState> =
            pending.served.iter().map(|(r, n)| (*r, Serving { served: *n, in_flight: 0 })).collect();
        for call in pending.calls.values() {
            out.entry(call.registration.id).or_default().in_flight += 1;
        }
        out.into_iter().collect()
    }

    /// Calls in flight here.
    pub fn len(&self) -> usize {
        self.pending.lock().calls.len()
    }

    /// True when no call is in flight here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
