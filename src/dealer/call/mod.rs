//! Calls in flight: the one place that says how a call goes from its CALL to its one answer.
//!
//! # States
//! A call lives in its caller's [`CallTable`], keyed by the CALL's request id, from the CALL to
//! its final answer:
//!
//! ```text
//!            open            start (callee's writer)          end (RESULT / ERROR, once)
//!   CALL ──────────► Queued ─────────────────────► Running ─────────────────────────────► gone
//!                      ▲   │                         │
//!                      └───┘ requeue (callee left     └── requeue (callee answered
//!                             before taking it)            wamp.error.unavailable)
//! ```
//!
//! - **Queued**: routed to a callee's queue, or being routed again. Further chunks of a
//!   progressive invocation are kept with the call, in order, until a callee takes it.
//! - **Running**: written to a callee as INVOCATION `n`; further chunks go to that callee.
//! - **Gone**: the entry was removed by [`end`], which queues the final RESULT or ERROR for the
//!   caller in the same critical section. Removal is the only way out, so a call is answered
//!   exactly once, and nothing (a progressive RESULT, a late chunk, a reroute) can follow it.
//!
//! # Who holds what
//! The routed call itself, an [`Invocation`], is owned by exactly one place at a time: the task
//! routing it, the callee's queue, the callee's writer, or the callee's [`InvocationTable`] once
//! written. Owning it is an obligation: it must be answered, handed on, or found ended. An
//! [`Invocation`] dropped without that (a writer that panicked, a task dropped at shutdown) answers
//! its caller `wamp.error.canceled` from its `Drop`, which is harmless when the call has ended
//! already: the entry is gone, so nothing is sent twice.
//!
//! Entries carry a token unique in their session, so a late actor (a timer, a stale invocation)
//! can never end a newer call that reuses the same request id.
//!
//! The routed call and the callee's table of calls it serves are in [`invocation`]; routing a call
//! to a member, and again when it must move, in [`route`]; calls waiting for a member with a free
//! concurrency slot, in [`queue`]; a call sent to every member at once (`runmode: "all"`), in
//! [`all`].
//!
//! # Slots
//! A call routed to a member holds one of the member's slots (its `concurrency`, unlimited by
//! default) from the routing decision until the [`Invocation`] is dropped, or until it moves to
//! another member. Every way a call ends drops its invocation, so the slot is released by RAII,
//! never by a path that could be forgotten. A call parked in the queue holds none.
//!
//! Lock order: a session's invocation table before any caller's call table; neither is held
//! while waiting. Answers are queued without waiting ([`crate::session::outbox`]), which is what
//! makes sending them inside the call table's lock possible.

mod all;
mod invocation;
pub mod queue;
mod route;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use tokio::sync::Notify;

use crate::error::{Refusal, WampError};
use crate::metrics::CallTag;
use crate::session::{Outbound, SessionHandle};
use crate::sync::Mutex;
use crate::wire::{Dict, Message, MessageType, Payload, Value};

use super::timeout::{Timeouts, TimerKey};

pub use all::dispatch_all;
pub use invocation::{payload_size, AtLimit, Invocation, InvocationTable, Serving};
pub use queue::{CallQueue, CongestionSink, QueueBounds, QueueFull};
pub use route::{dispatch, reroute};

use crate::dealer::Registration;

/// How many ended progressive calls a session remembers, so that chunks its peer still sends for
/// them are dropped instead of starting new calls.
const ENDED_STREAMS: usize = 64;

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
    /// `_callee`: the session id of the member that must serve the call (a targeted call).
    pub callee: Option<u64>,
    /// `runmode: "partition"`: route by `rkey` whatever the registration's rule.
    pub partition: bool,
    /// The hash of `rkey` (see [`crate::dealer::rule::rkey_hash`]), kept only when the call is
    /// routed by it.
    pub rkey: Option<u64>,
    /// `runmode: "all"`: the call goes to every member (see [`all`]).
    pub all: bool,
}

/// How a CANCEL (or a timeout) ends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    /// The caller gets its ERROR at once; the callee is not told.
    Skip = 0,
    /// The callee gets INTERRUPT; the caller gets whatever the callee answers.
    Kill = 1,
    /// The callee gets INTERRUPT and the caller its ERROR at once.
    KillNoWait = 2,
}

impl CancelMode {
    /// Reads `CANCEL.Options.mode`; absent means `killnowait`.
    pub fn from_option(value: Option<&Value>) -> Result<Self, String> {
        match value {
            None => Ok(CancelMode::KillNoWait),
            Some(value) => match value.as_str() {
                Some("killnowait") => Ok(CancelMode::KillNoWait),
                Some("kill") => Ok(CancelMode::Kill),
                Some("skip") => Ok(CancelMode::Skip),
                _ => Err(format!("unknown cancel mode {} (expected skip, kill or killnowait)", value.describe())),
            },
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

/// One chunk of a progressive invocation that follows the first.
pub struct Chunk {
    /// More chunks follow.
    pub progress: bool,
    /// The chunk's arguments.
    pub payload: Payload,
}

/// A further chunk on its way to the callee running the call.
pub struct ChunkDelivery {
    /// The caller.
    pub caller: Arc<SessionHandle>,
    /// The caller's CALL request id.
    pub caller_request: u64,
    /// The INVOCATION id the chunk continues.
    pub invocation: u64,
    /// The registration it was routed through.
    pub registration: u64,
    /// The chunk.
    pub chunk: Chunk,
}

enum Stage {
    /// Routed (or being routed) to a callee that has not written it yet.
    Queued {
        /// Chunks that arrived meanwhile, sent right after the INVOCATION.
        chunks: Vec<Chunk>,
        /// Their payload bytes.
        bytes: usize,
    },
    /// Written to `callee` as INVOCATION `invocation`.
    Running { callee: Weak<SessionHandle>, invocation: u64, registration: u64 },
}

struct Entry {
    token: u64,
    stage: Stage,
    /// A progressive invocation whose caller has not sent its last chunk.
    streaming: bool,
    timer: Option<(Arc<Timeouts>, TimerKey)>,
    /// What counting the call's end needs: its rule, and when it was opened.
    tag: CallTag,
    /// Parked in this registration's queue (with the deadline of its wait there, if any).
    parked: Option<Parked>,
    /// A call sent to every member (`runmode: "all"`): the members that still owe an answer.
    all: Option<all::Fanout>,
}

struct Parked {
    registration: Arc<Registration>,
    timer: Option<(Arc<Timeouts>, TimerKey)>,
}

#[derive(Default)]
struct Calls {
    entries: HashMap<u64, Entry, foldhash::fast::RandomState>,
    next_token: u64,
    /// Request ids of progressive calls that ended before their caller sent the last chunk.
    ended_streams: VecDeque<u64>,
    /// Payload bytes of chunks kept with queued calls, all calls together.
    buffered: usize,
    /// The session's reader waits for `buffered` to go down.
    waiting: bool,
}

/// A caller's calls in flight, by CALL request id.
#[derive(Default)]
pub struct CallTable {
    calls: Mutex<Calls>,
    /// Signalled when a queued call with chunks starts or ends while the reader waits for room.
    started: Notify,
}

/// What a CALL is, given the calls its session has in flight.
pub enum Opened {
    /// A new call, with its token.
    New(u64),
    /// The next chunk of a progressive invocation in flight.
    Chunk,
    /// A chunk of a progressive invocation that has ended already: dropped.
    Stray,
    /// The request id belongs to a call in flight: a protocol violation.
    Reused,
}

impl CallTable {
    /// Classifies a CALL with request id `request`, and opens it as a new call in the Queued
    /// state when it is one. `streaming` is its `Options.progress`.
    pub fn open(&self, request: u64, streaming: bool) -> Opened {
        self.open_tagged(request, streaming, CallTag::NONE)
    }

    /// Like [`CallTable::open`], with what counting the call's end needs.
    pub fn open_tagged(&self, request: u64, streaming: bool, tag: CallTag) -> Opened {
        let mut calls = self.calls.lock();
        let calls = &mut *calls;
        match calls.entries.entry(request) {
            std::collections::hash_map::Entry::Occupied(entry) if entry.get().streaming => Opened::Chunk,
            std::collections::hash_map::Entry::Occupied(_) => Opened::Reused,
            std::collections::hash_map::Entry::Vacant(slot) => {
                if let Some(at) = calls.ended_streams.iter().position(|r| *r == request) {
                    if !streaming {
                        calls.ended_streams.remove(at);
                    }
                    return Opened::Stray;
                }
                calls.next_token += 1;
                let stage = Stage::Queued { chunks: Vec::new(), bytes: 0 };
                slot.insert(Entry {
                    token: calls.next_token,
                    stage,
                    streaming,
                    timer: None,
                    tag,
                    parked: None,
                    all: None,
                });
                Opened::New(calls.next_token)
            }
        }
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.calls.lock().entries.len()
    }

    /// True when no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls in flight that no callee has taken yet (queued), and calls running at a callee.
    pub fn stages(&self) -> (usize, usize) {
        let calls = self.calls.lock();
        let queued = calls.entries.values().filter(|e| matches!(e.stage, Stage::Queued { .. })).count();
        (queued, calls.entries.len() - queued)
    }

    /// The token of call `request`, while it is in flight.
    pub fn token(&self, request: u64) -> Option<u64> {
        self.calls.lock().entries.get(&request).map(|e| e.token)
    }
}

/// Ends call `request` (if it is still the call `token`) with `answer`, a final RESULT or ERROR,
/// queued for the caller in the same critical section that removes the call. `false` when the
/// call had ended already; then nothing is sent.
pub fn end(caller: &SessionHandle, request: u64, token: u64, answer: Message) -> bool {
    let mut calls = caller.calls.calls.lock();
    let Some(entry) = calls.entries.get(&request) else { return false };
    if entry.token != token {
        return false;
    }
    let parked = end_locked(caller, &mut calls, request, answer);
    drop(calls);
    if let Some(registration) = parked {
        queue::remove(&registration, caller.id, request, token);
    }
    true
}

/// [`end`] with the caller's table locked already (the entry is known to be the call); returns
/// the registration whose queue still holds the call.
fn end_locked(caller: &SessionHandle, calls: &mut Calls, request: u64, answer: Message) -> Option<Arc<Registration>> {
    let entry = calls.entries.remove(&request)?;
    let tag = entry.tag;
    let parked = finish(calls, &caller.calls.started, request, entry);
    if let Some(metrics) = caller.metrics() {
        metrics.call_ended(&tag, &answer);
    }
    // A caller that stopped reading is closed as a slow consumer by the push; its calls are
    // gone with it, so there is nobody left to answer.
    let _ = caller.push(Outbound::Message(Box::new(answer)));
    parked
}

/// Bookkeeping of an entry leaving the table; returns the registration whose queue still holds
/// the call, for the caller to take it out once the table is unlocked.
fn finish(calls: &mut Calls, started: &Notify, request: u64, entry: Entry) -> Option<Arc<Registration>> {
    if let Some((timeouts, key)) = entry.timer {
        timeouts.cancel(key);
    }
    let parked = entry.parked.map(|parked| {
        if let Some((timeouts, key)) = parked.timer {
            timeouts.cancel(key);
        }
        parked.registration
    });
    if entry.streaming {
        if calls.ended_streams.len() == ENDED_STREAMS {
            calls.ended_streams.pop_front();
        }
        calls.ended_streams.push_back(request);
    }
    if let Stage::Queued { bytes, .. } = entry.stage {
        release(calls, started, bytes);
    }
    parked
}

/// Marks the call as parked in `registration`'s queue, with a deadline `(timeouts, ms)` for its
/// wait there when the queue has one. `false` when the call has ended. Called under the queue's
/// lock.
fn mark_parked(call: &Invocation, registration: &Arc<Registration>, wait: Option<(Arc<Timeouts>, u64)>) -> bool {
    let mut calls = call.caller.calls.calls.lock();
    let Some(entry) = calls.entries.get_mut(&call.caller_request).filter(|e| e.token == call.token) else {
        return false;
    };
    let timer = wait.map(|(timeouts, ms)| {
        let key = timeouts.schedule_queue_wait(ms, &call.caller, call.caller_request, call.token);
        (timeouts, key)
    });
    entry.parked = Some(Parked { registration: registration.clone(), timer });
    true
}

/// The call left its queue to be routed: no longer parked. `false` when it has ended. Called under
/// the queue's lock.
fn unmark_parked(call: &Invocation) -> bool {
    let mut calls = call.caller.calls.calls.lock();
    let Some(entry) = calls.entries.get_mut(&call.caller_request).filter(|e| e.token == call.token) else {
        return false;
    };
    if let Some(Parked { timer: Some((timeouts, key)), .. }) = entry.parked.take() {
        timeouts.cancel(key);
    }
    true
}

/// The call waited in its registration's queue as long as the queue allows: it ends with
/// `wamp.error.timeout`, unless a member took it meanwhile.
pub fn queue_wait_expired(caller: &SessionHandle, request: u64, token: u64) {
    let parked = {
        let calls = caller.calls.calls.lock();
        calls.entries.get(&request).is_some_and(|e| e.token == token && e.parked.is_some())
    };
    if parked && fail(caller, request, token, WampError::Timeout, "the call waited in the queue longer than allowed") {
        count_timeout(caller);
    }
}

/// Chunks of `bytes` left the buffer: a reader waiting for room may go on.
fn release(calls: &mut Calls, started: &Notify, bytes: usize) {
    calls.buffered -= bytes;
    if calls.waiting && bytes > 0 {
        calls.waiting = false;
        started.notify_waiters();
    }
}

/// Ends call `request` with an ERROR carrying `reason` (see [`end`]).
pub fn fail(caller: &SessionHandle, request: u64, token: u64, error: WampError, reason: &str) -> bool {
    end(caller, request, token, Refusal::new(error, reason).to_message(MessageType::Call, request))
}

/// Counts a call of `caller` ended by its timeout (or its wait in a queue running out).
fn count_timeout(caller: &SessionHandle) {
    if let Some(metrics) = caller.metrics() {
        metrics.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends a progressive RESULT for call `request`, unless it has ended: under the table's lock, so
/// it can never follow the final answer.
pub fn progress(caller: &SessionHandle, request: u64, token: u64, payload: Payload) -> bool {
    let calls = caller.calls.calls.lock();
    match calls.entries.get(&request) {
        Some(entry) if entry.token == token && matches!(entry.stage, Stage::Running { .. }) => {
            let details = Dict::new().with("progress", true);
            let result = Message::Result { request, details, payload };
            caller.push(Outbound::Message(Box::new(result))).is_ok()
        }
        _ => false,
    }
}

/// Starts the call's timeout clock; a call that has ended meanwhile gets no timer.
pub fn set_timer(caller: &Arc<SessionHandle>, request: u64, token: u64, timeouts: &Arc<Timeouts>, timeout_ms: u64) {
    let mut calls = caller.calls.calls.lock();
    if let Some(entry) = calls.entries.get_mut(&request).filter(|e| e.token == token && e.timer.is_none()) {
        let key = timeouts.schedule(timeout_ms, caller, request, token);
        entry.timer = Some((timeouts.clone(), key));
    }
}

/// The callee's writer is about to write INVOCATION `invocation` for the caller's call `request`:
/// the call becomes Running there, and the chunks that arrived meanwhile are handed over to be
/// written right after it. `None` when the call ended while it was queued; the writer then drops
/// it.
pub fn start(
    caller: &SessionHandle,
    request: u64,
    token: u64,
    callee: &Arc<SessionHandle>,
    invocation: u64,
    registration: u64,
) -> Option<Vec<Chunk>> {
    let mut calls = caller.calls.calls.lock();
    let entry = calls.entries.get_mut(&request).filter(|e| e.token == token)?;
    if let Some(fanout) = &mut entry.all {
        fanout.started(callee, invocation);
    }
    let running = Stage::Running { callee: Arc::downgrade(callee), invocation, registration };
    match std::mem::replace(&mut entry.stage, running) {
        Stage::Queued { chunks, bytes } => {
            release(&mut calls, &caller.calls.started, bytes);
            Some(chunks)
        }
        Stage::Running { .. } => Some(Vec::new()),
    }
}

/// The call goes back to Queued to be routed again; `false` when it has ended.
fn requeue(call: &Invocation) -> bool {
    let mut calls = call.caller.calls.calls.lock();
    match calls.entries.get_mut(&call.caller_request).filter(|e| e.token == call.token) {
        Some(entry) => {
            if matches!(entry.stage, Stage::Running { .. }) && entry.all.is_none() {
                entry.stage = Stage::Queued { chunks: Vec::new(), bytes: 0 };
            }
            true
        }
        None => false,
    }
}

/// Where a further chunk of a progressive invocation goes.
enum Next {
    /// Kept with the queued call.
    Kept,
    /// To the callee running the call.
    Deliver(Arc<SessionHandle>, u64, u64),
    /// The queued call holds as many chunk bytes as it may: wait for it to start.
    Full,
    /// The call has ended (or its callee is gone): the chunk is dropped.
    Gone,
}

/// Takes a further chunk of the progressive invocation `request` (its CALL matched
/// [`Opened::Chunk`]). Waits, as any CALL does, while its callee's queue is full, or while the
/// session's queued calls keep `max_buffered` bytes of chunks between them.
pub async fn chunk(caller: &Arc<SessionHandle>, request: u64, chunk: Chunk, max_buffered: usize) {
    let mut chunk = Some(chunk);
    loop {
        let started = caller.calls.started.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        let next = {
            let mut calls = caller.calls.calls.lock();
            let calls = &mut *calls;
            match calls.entries.get_mut(&request) {
                None => Next::Gone,
                Some(entry) => {
                    let streaming = chunk.as_ref().is_some_and(|c| c.progress);
                    match &mut entry.stage {
                        Stage::Queued { .. } if calls.buffered > max_buffered => {
                            calls.waiting = true;
                            Next::Full
                        }
                        Stage::Queued { chunks, bytes } => {
                            if let Some(chunk) = chunk.take() {
                                let size = payload_size(&chunk.payload);
                                *bytes += size;
                                calls.buffered += size;
                                chunks.push(chunk);
                            }
                            entry.streaming = streaming;
                            Next::Kept
                        }
                        Stage::Running { callee, invocation, registration } => match callee.upgrade() {
                            Some(callee) => {
                                entry.streaming = streaming;
                                Next::Deliver(callee, *invocation, *registration)
                            }
                            None => Next::Gone,
                        },
                    }
                }
            }
        };
        match next {
            Next::Kept | Next::Gone => return,
            Next::Full => started.await,
            Next::Deliver(callee, invocation, registration) => {
                let Some(chunk) = chunk.take() else { return };
                let delivery =
                    ChunkDelivery { caller: caller.clone(), caller_request: request, invocation, registration, chunk };
                // A callee that is gone ends the call through its own teardown.
                let _ = callee.deliver(Outbound::InvocationChunk(Box::new(delivery))).await;
                return;
            }
        }
    }
}

/// Ends the caller's call `request` as `mode` says, answering the caller with `error` when the
/// mode answers at once. Used by CANCEL and, with `token` set, by timeouts (`wamp.error.timeout`).
/// A call that has ended is left alone.
pub fn cancel(caller: &SessionHandle, request: u64, token: Option<u64>, mode: CancelMode, error: WampError) {
    let reason = match error {
        WampError::Timeout => "the call timed out",
        _ => "the call was canceled",
    };
    let calls = caller.calls.calls.lock();
    let Some(entry) = calls.entries.get(&request).filter(|e| token.is_none_or(|t| t == e.token)) else { return };
    if entry.all.is_some() {
        let token = entry.token;
        drop(calls);
        return all::cancel(caller, request, token, mode, error, reason);
    }
    let running = match &entry.stage {
        Stage::Queued { .. } => None,
        Stage::Running { callee, invocation, .. } => callee.upgrade().map(|c| (c, *invocation)),
    };
    let interruptible = running.as_ref().is_some_and(|(c, _)| c.identity().is_some_and(|i| i.features.call_canceling));
    if mode == CancelMode::Kill && interruptible {
        drop(calls);
        // The call stays open: the callee's answer (usually ERROR wamp.error.canceled) ends it.
        if let Some((callee, invocation)) = running {
            interrupt(&callee, invocation, CancelMode::Kill, error);
        }
        return;
    }
    let token = entry.token;
    drop(calls);
    if !fail(caller, request, token, error, reason) {
        return;
    }
    if error == WampError::Timeout {
        count_timeout(caller);
    }
    // A queued call is dropped by its callee's writer when it finds the call ended.
    if let Some((callee, invocation)) = running {
        if let Some(call) = callee.invocations.remove(invocation) {
            call.discard();
        }
        if mode != CancelMode::Skip && interruptible {
            interrupt(&callee, invocation, CancelMode::KillNoWait, error);
        }
    }
}

fn interrupt(callee: &SessionHandle, invocation: u64, mode: CancelMode, reason: WampError) {
    let options = Dict::new().with("mode", mode.as_str()).with("reason", reason.uri());
    let _ = callee.push(Outbound::Message(Box::new(Message::Interrupt { request: invocation, options })));
}

/// A callee's answer to INVOCATION `invocation`: forwarded to the caller, or (for
/// `wamp.error.unavailable`) the call is routed to another member. An answer for an invocation
/// that has ended is dropped.
pub fn complete(callee: &SessionHandle, invocation: u64, outcome: Outcome) {
    let (error, payload) = match outcome {
        Outcome::Progress(payload) => {
            if let Some((caller, request, token)) = callee.invocations.progress_target(invocation) {
                progress(&caller, request, token, payload);
            }
            return;
        }
        Outcome::Result(payload) => (None, payload),
        Outcome::Error { error, payload } => (Some(error), payload),
    };
    let Some(mut call) = callee.invocations.remove(invocation) else {
        tracing::debug!(session = callee.id, invocation, "answer for an unknown or ended invocation dropped");
        return;
    };
    let request = call.caller_request;
    match error {
        // A call already sent in chunks cannot move: its new callee would miss the first ones.
        Some(error)
            if error == WampError::Unavailable.uri()
                && !call.options.progress
                && !call.options.all
                && call.forwarded.is_none() =>
        {
            call.unavailable.push(callee.id);
            let limit = call
                .registration
                .members()
                .iter()
                .find(|c| c.session.id == callee.id)
                .and_then(|c| c.options.max_reroutes);
            if limit.is_some_and(|max| call.unavailable.len() as u64 > max) {
                return call.fail(WampError::NoAvailableCallee, "the call was rerouted max_reroutes times");
            }
            reroute(call)
        }
        None => call.answer(Message::Result { request, details: Dict::new(), payload }),
        Some(error) => call.answer(Message::Error {
            request_type: MessageType::Call as u64,
            request,
            details: Dict::new(),
            error,
            payload,
        }),
    }
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

/// The callee left: the calls it was serving end with `wamp.error.canceled` for their callers.
pub fn callee_gone(callee: &SessionHandle) {
    let in_flight = callee.invocations.drain();
    if !in_flight.is_empty() {
        tracing::debug!(
            session = callee.id,
            calls = in_flight.len(),
            "callee left with calls in flight; canceling them"
        );
    }
    for call in in_flight {
        call.fail(WampError::Canceled, "the callee left while the call was in flight");
    }
}

/// The caller left: its calls running at callees that support canceling are interrupted
/// (`killnowait`); the rest are forgotten, and late results for them are dropped.
pub fn caller_gone(caller: &SessionHandle) {
    let entries: Vec<(u64, Entry)> = {
        let mut calls = caller.calls.calls.lock();
        calls.buffered = 0;
        calls.waiting = false;
        calls.entries.drain().collect()
    };
    caller.calls.started.notify_waiters();
    for (request, entry) in entries {
        if let Some((timeouts, key)) = entry.timer {
            timeouts.cancel(key);
        }
        if let Some(Parked { registration, timer }) = entry.parked {
            if let Some((timeouts, key)) = timer {
                timeouts.cancel(key);
            }
            queue::remove(&registration, caller.id, request, entry.token);
        }
        if let Some(fanout) = entry.all {
            fanout.abandon(CancelMode::KillNoWait, WampError::Canceled);
            continue;
        }
        let Stage::Running { callee, invocation, .. } = entry.stage else { continue };
        let Some(callee) = callee.upgrade() else { continue };
        if let Some(call) = callee.invocations.remove(invocation) {
            call.discard();
            if callee.identity().is_some_and(|i| i.features.call_canceling) {
                interrupt(&callee, invocation, CancelMode::KillNoWait, WampError::Canceled);
            }
        }
    }
}

/// Ends every call `caller` has in flight with `wamp.error.canceled` and `reason` (shutdown).
pub fn cancel_all(caller: &SessionHandle, reason: &str) {
    let calls: Vec<(u64, u64)> = caller.calls.calls.lock().entries.iter().map(|(r, e)| (*r, e.token)).collect();
    for (request, token) in calls {
        fail(caller, request, token, WampError::Canceled, reason);
    }
}
