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
//! Lock order: a session's invocation table before any caller's call table; neither is held
//! while waiting. Answers are queued without waiting ([`crate::session::outbox`]), which is what
//! makes sending them inside the call table's lock possible.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use smallvec::SmallVec;
use tokio::sync::Notify;

use crate::error::{Refusal, WampError};
use crate::session::{Outbound, SessionHandle};
use crate::sync::Mutex;
use crate::wire::{Dict, Message, MessageType, Payload, RawPayload, Value};

use super::timeout::{Timeouts, TimerKey};
use super::{Callee, Registration};

/// How many times one call may be handed to another member because its callee left before
/// taking it; bounds the loop if members keep vanishing.
const MAX_ATTEMPTS: u32 = 16;

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
}

/// How a CANCEL (or a timeout) ends a call.
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
        match value {
            None => Ok(CancelMode::KillNoWait),
            Some(value) => match value.as_str() {
                Some("killnowait") => Ok(CancelMode::KillNoWait),
                Some("kill") => Ok(CancelMode::Kill),
                Some("skip") => Ok(CancelMode::Skip),
                _ => Err(format!("unknown cancel mode {} (expected skip, kill or killnowait)", describe(value))),
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

/// A short description of a value a peer sent, for error texts (never Rust's debug form).
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) if s.chars().count() <= 40 => format!("'{s}'"),
        Value::Str(_) => "a long string".to_owned(),
        Value::Bytes(_) => "binary".to_owned(),
        Value::List(_) => "a list".to_owned(),
        Value::Dict(_) => "a dictionary".to_owned(),
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
                slot.insert(Entry { token: calls.next_token, stage, streaming, timer: None });
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
    let Some(entry) = calls.entries.remove(&request) else { return false };
    finish(&mut calls, &caller.calls.started, request, entry);
    // A caller that stopped reading is closed as a slow consumer by the push; its calls are
    // gone with it, so there is nobody left to answer.
    let _ = caller.push(Outbound::Message(Box::new(answer)));
    true
}

/// Bookkeeping of an entry leaving the table.
fn finish(calls: &mut Calls, started: &Notify, request: u64, entry: Entry) {
    if let Some((timeouts, key)) = entry.timer {
        timeouts.cancel(key);
    }
    if entry.streaming {
        if calls.ended_streams.len() == ENDED_STREAMS {
            calls.ended_streams.pop_front();
        }
        calls.ended_streams.push_back(request);
    }
    if let Stage::Queued { bytes, .. } = entry.stage {
        release(calls, started, bytes);
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
            if matches!(entry.stage, Stage::Running { .. }) {
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
    token: u64,
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
    /// Answered, handed on, or found ended: nothing left for `Drop` to do.
    settled: bool,
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
            settled: false,
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
        self.settled = true;
        end(&self.caller, self.caller_request, self.token, answer);
    }

    /// Ends the call with an ERROR.
    pub fn fail(mut self: Box<Self>, error: WampError, reason: &str) {
        self.settled = true;
        fail(&self.caller, self.caller_request, self.token, error, reason);
    }

    /// Drops a call known to have ended already.
    pub fn discard(mut self: Box<Self>) {
        self.settled = true;
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        if !self.settled {
            tracing::debug!(session = self.caller.id, request = self.caller_request, "call dropped unanswered");
            fail(&self.caller, self.caller_request, self.token, WampError::Canceled, "the call was lost in the router");
        }
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

    /// Where a progressive result for INVOCATION `id` goes, if the caller accepts one.
    fn progress_target(&self, id: u64) -> Option<(Arc<SessionHandle>, u64, u64)> {
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

    /// Calls in flight here.
    pub fn len(&self) -> usize {
        self.pending.lock().calls.len()
    }

    /// True when no call is in flight here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Routes `call` to a member of its registration and queues it there, waiting for room while the
/// callee's queue is full. If the chosen member turns out to be gone, picks again.
pub async fn dispatch(mut call: Box<Invocation>) {
    loop {
        let Some(callee) = call.registration.pick_excluding(&call.unavailable) else {
            let (error, reason) = if call.registration.members().is_empty() {
                (WampError::NoSuchProcedure, "no callee is registered for the procedure any more")
            } else {
                (WampError::NoAvailableCallee, "every callee of the procedure is unavailable")
            };
            return call.fail(error, reason);
        };
        if !prepare(&mut call, &callee) {
            return call
                .fail(WampError::FeatureNotSupported, "the callee does not support progressive call invocations");
        }
        if let Some(timeouts) = call.timer.take() {
            if !callee.options.forward_timeout {
                set_timer(&call.caller, call.caller_request, call.token, &timeouts, call.options.timeout_ms);
            }
        }
        let session = callee.session;
        match session.deliver(Outbound::Invocation(call)).await {
            Ok(()) => return,
            Err(refused) => match refused.into_item() {
                Outbound::Invocation(back) => call = back,
                _ => unreachable!("deliver gives back the item it was given"),
            },
        }
        call.attempts += 1;
        call.unavailable.push(session.id);
        if call.attempts >= MAX_ATTEMPTS {
            return call.fail(WampError::Canceled, "every callee tried left before taking the call");
        }
    }
}

/// Fills in what depends on the chosen callee: `INVOCATION.Details` and whether progress is on.
/// `false` when the call needs a feature the callee did not announce.
fn prepare(call: &mut Invocation, callee: &Callee) -> bool {
    let features = callee.session.identity().map(|i| i.features).unwrap_or_default();
    let mut details = Dict::new();
    if call.options.progress {
        if !features.progressive_call_invocations {
            return false;
        }
        details.insert("progress", true);
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

/// Routes again a call whose callee left before taking it, could not take it, or answered it
/// with `wamp.error.unavailable`. Runs as its own task: whoever found the call must not wait on
/// another session's queue. A call that has ended meanwhile is dropped.
pub fn reroute(mut call: Box<Invocation>) {
    if !requeue(&call) {
        return call.discard();
    }
    call.attempts += 1;
    tokio::spawn(async move {
        if call.attempts >= MAX_ATTEMPTS {
            call.fail(WampError::Canceled, "every callee tried left before taking the call")
        } else {
            dispatch(call).await
        }
    });
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
    if let Outcome::Progress(payload) = outcome {
        if let Some((caller, request, token)) = callee.invocations.progress_target(invocation) {
            progress(&caller, request, token, payload);
        }
        return;
    }
    let Some(mut call) = callee.invocations.remove(invocation) else {
        tracing::debug!(session = callee.id, invocation, "answer for an unknown or ended invocation dropped");
        return;
    };
    let request = call.caller_request;
    match outcome {
        Outcome::Error { error, .. } if error == WampError::Unavailable.uri() && !call.options.progress => {
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
        Outcome::Result(payload) => call.answer(Message::Result { request, details: Dict::new(), payload }),
        Outcome::Error { error, payload } => call.answer(Message::Error {
            request_type: MessageType::Call as u64,
            request,
            details: Dict::new(),
            error,
            payload,
        }),
        Outcome::Progress(_) => unreachable!("handled above"),
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
    let entries: Vec<Entry> = {
        let mut calls = caller.calls.calls.lock();
        calls.buffered = 0;
        calls.waiting = false;
        calls.entries.drain().map(|(_, entry)| entry).collect()
    };
    caller.calls.started.notify_waiters();
    for entry in entries {
        if let Some((timeouts, key)) = entry.timer {
            timeouts.cancel(key);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dealer::registry::Registry;
    use crate::dealer::rule::InvocationRule;
    use crate::session::outbox::OutboxLimits;
    use tokio::sync::mpsc::UnboundedReceiver;

    fn session(id: u64) -> (Arc<SessionHandle>, UnboundedReceiver<Outbound>) {
        let limits =
            OutboxLimits { max_bytes: 1 << 30, slow_consumer_bytes: 1 << 31, stuck_timeout: Duration::from_secs(5) };
        SessionHandle::new(id, crate::wire::Serializer::Json, limits)
    }

    fn registration(callee: &Arc<SessionHandle>) -> Arc<Registration> {
        let registry = Registry::new(1);
        let member = Callee { session: callee.clone(), options: Default::default() };
        let id = registry.register("com.example.p", InvocationRule::Single, member).unwrap().id;
        registry.get(id).unwrap()
    }

    /// Messages queued for a session so far.
    fn sent(rx: &mut UnboundedReceiver<Outbound>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            match item {
                Outbound::Message(message) => out.push(*message),
                Outbound::Close(closing) => out.push(closing.message),
                _ => {}
            }
        }
        out
    }

    fn is_final(message: &Message) -> bool {
        match message {
            Message::Result { details, .. } => details.get("progress").is_none(),
            Message::Error { .. } => true,
            _ => false,
        }
    }

    fn open(
        caller: &Arc<SessionHandle>,
        callee: &Arc<SessionHandle>,
        request: u64,
        streaming: bool,
    ) -> Box<Invocation> {
        let Opened::New(token) = caller.calls.open(request, streaming) else { panic!("not a new call") };
        let options = CallOptions { progress: streaming, ..Default::default() };
        Invocation::new(registration(callee), caller.clone(), request, token, options, Payload::Empty)
    }

    use std::time::Duration;

    #[test]
    fn a_call_dropped_unanswered_answers_canceled_once() {
        let (caller, mut rx) = session(1);
        let (callee, _crx) = session(2);
        let call = open(&caller, &callee, 7, false);
        drop(call);
        let got = sent(&mut rx);
        assert_eq!(got.len(), 1);
        match &got[0] {
            Message::Error { request: 7, error, .. } => assert_eq!(error, "wamp.error.canceled"),
            other => panic!("{other:?}"),
        }
        assert!(caller.calls.is_empty());
    }

    #[test]
    fn an_answered_call_is_never_answered_again() {
        let (caller, mut rx) = session(1);
        let (callee, _crx) = session(2);
        let call = open(&caller, &callee, 7, false);
        let token = call.token;
        call.answer(Message::Result { request: 7, details: Dict::new(), payload: Payload::Empty });
        assert!(!fail(&caller, 7, token, WampError::Timeout, "late"));
        assert!(!progress(&caller, 7, token, Payload::Empty));
        assert_eq!(sent(&mut rx).len(), 1);
    }

    #[test]
    fn a_call_canceled_while_queued_is_dropped_by_the_writer() {
        let (caller, mut rx) = session(1);
        let (callee, _crx) = session(2);
        let call = open(&caller, &callee, 7, false);
        cancel(&caller, 7, None, CancelMode::KillNoWait, WampError::Canceled);
        assert!(start(&caller, 7, call.token, &callee, 1, call.registration.id).is_none());
        call.discard();
        let got = sent(&mut rx);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(matches!(&got[0], Message::Error { error, .. } if error == "wamp.error.canceled"));
    }

    #[test]
    fn a_timer_never_ends_a_newer_call_with_the_same_request_id() {
        let (caller, mut rx) = session(1);
        let (callee, _crx) = session(2);
        let first = open(&caller, &callee, 7, false);
        let stale = first.token;
        first.answer(Message::Result { request: 7, details: Dict::new(), payload: Payload::Empty });
        let _second = open(&caller, &callee, 7, false);
        cancel(&caller, 7, Some(stale), CancelMode::KillNoWait, WampError::Timeout);
        assert_eq!(sent(&mut rx).len(), 1, "only the first call's RESULT");
        assert_eq!(caller.calls.len(), 1, "the second call is still open");
        drop(_second);
    }

    #[test]
    fn request_ids_in_flight_and_ended_streams_are_told_apart() {
        let (caller, _rx) = session(1);
        let (callee, _crx) = session(2);
        let call = open(&caller, &callee, 7, true);
        assert!(matches!(caller.calls.open(7, true), Opened::Chunk));
        call.fail(WampError::Canceled, "gone");
        assert!(matches!(caller.calls.open(7, true), Opened::Stray), "a chunk of the ended stream");
        assert!(matches!(caller.calls.open(7, false), Opened::Stray), "its last chunk");
        let again = open(&caller, &callee, 7, false);
        assert!(matches!(caller.calls.open(7, false), Opened::Reused));
        again.discard();
    }

    /// One step of the in-flight model: what a peer, the writer, a timer or a teardown does.
    #[derive(Debug, Clone)]
    enum Step {
        Call { streaming: bool },
        Start(usize),
        Yield(usize),
        Progress(usize),
        CalleeError(usize),
        Cancel(usize, u8),
        Timeout(usize),
        CalleeGone,
        CallerGone,
        WriterLost(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => any::<bool>().prop_map(|streaming| Step::Call { streaming }),
            3 => (0..8usize).prop_map(Step::Start),
            2 => (0..8usize).prop_map(Step::Yield),
            2 => (0..8usize).prop_map(Step::Progress),
            1 => (0..8usize).prop_map(Step::CalleeError),
            2 => (0..8usize, 0..3u8).prop_map(|(c, m)| Step::Cancel(c, m)),
            1 => (0..8usize).prop_map(Step::Timeout),
            1 => Just(Step::CalleeGone),
            1 => Just(Step::CallerGone),
            1 => (0..8usize).prop_map(Step::WriterLost),
        ]
    }

    proptest::proptest! {
        /// Whatever happens to calls in flight, in whatever order, each CALL a caller still
        /// waits for gets exactly one final answer, and nothing for it after that; a caller that
        /// left gets nothing more.
        #[test]
        fn every_call_is_answered_exactly_once(steps in proptest::collection::vec(step(), 1..60)) {
            let (caller, mut rx) = session(1);
            let features = crate::session::CalleeFeatures { progressive_call_results: true, call_canceling: true, ..Default::default() };
            let (callee, _crx) = session(2);
            callee.set_identity(crate::session::Identity { authid: "c".into(), authrole: "r".into(), features });
            let mut queued: Vec<Option<Box<Invocation>>> = Vec::new();
            let mut requests: Vec<u64> = Vec::new();
            let mut invocation_ids: Vec<Option<u64>> = Vec::new();
            let mut next_invocation = 0;
            let mut caller_left = false;
            let mut answers: std::collections::HashMap<u64, (usize, bool)> = Default::default();
            for step in steps {
                match step {
                    Step::Call { streaming } if !caller_left => {
                        let request = requests.len() as u64 + 1;
                        let mut call = open(&caller, &callee, request, streaming);
                        call.progress = true;
                        requests.push(request);
                        queued.push(Some(call));
                        invocation_ids.push(None);
                    }
                    Step::Call { .. } => {}
                    Step::Start(i) => {
                        if let Some(call) = queued.get_mut(i).and_then(Option::take) {
                            next_invocation += 1;
                            let (request, token, registration) = (call.caller_request, call.token, call.registration.id);
                            callee.invocations.insert(next_invocation, call, usize::MAX, usize::MAX).ok().unwrap();
                            if start(&caller, request, token, &callee, next_invocation, registration).is_some() {
                                invocation_ids[i] = Some(next_invocation);
                            } else if let Some(call) = callee.invocations.remove(next_invocation) {
                                call.discard();
                            }
                        }
                    }
                    Step::Yield(i) | Step::Progress(i) | Step::CalleeError(i) => {
                        let Some(Some(id)) = invocation_ids.get(i).copied() else { continue };
                        let outcome = match step {
                            Step::Yield(_) => Outcome::Result(Payload::Empty),
                            Step::Progress(_) => Outcome::Progress(Payload::Empty),
                            _ => Outcome::Error { error: "com.example.failed".into(), payload: Payload::Empty },
                        };
                        complete(&callee, id, outcome);
                    }
                    Step::Cancel(i, mode) => {
                        let Some(&request) = requests.get(i) else { continue };
                        let mode = [CancelMode::Skip, CancelMode::Kill, CancelMode::KillNoWait][mode as usize];
                        cancel(&caller, request, None, mode, WampError::Canceled);
                    }
                    Step::Timeout(i) => {
                        let Some(&request) = requests.get(i) else { continue };
                        let token = caller.calls.token(request);
                        cancel(&caller, request, token, CancelMode::KillNoWait, WampError::Timeout);
                    }
                    Step::CalleeGone => callee_gone(&callee),
                    Step::CallerGone => {
                        caller_left = true;
                        caller_gone(&caller);
                    }
                    Step::WriterLost(i) => {
                        if let Some(slot) = queued.get_mut(i) {
                            slot.take();
                        }
                    }
                }
                for message in sent(&mut rx) {
                    let request = match &message {
                        Message::Result { request, .. } | Message::Error { request, .. } => *request,
                        _ => continue,
                    };
                    let entry = answers.entry(request).or_default();
                    proptest::prop_assert!(!entry.1, "a message for call {} after its final answer: {:?}", request, message);
                    if is_final(&message) {
                        entry.0 += 1;
                        entry.1 = true;
                    }
                }
            }
            // Whatever is still queued is lost with its writer, and the callee leaves.
            queued.clear();
            callee_gone(&callee);
            for message in sent(&mut rx) {
                if let Message::Result { request, .. } | Message::Error { request, .. } = &message {
                    let entry = answers.entry(*request).or_default();
                    proptest::prop_assert!(!entry.1, "after the final answer: {:?}", message);
                    if is_final(&message) {
                        entry.0 += 1;
                        entry.1 = true;
                    }
                }
            }
            proptest::prop_assert!(caller.calls.is_empty() || caller_left);
            proptest::prop_assert!(callee.invocations.is_empty());
            for request in &requests {
                let finals = answers.get(request).map_or(0, |a| a.0);
                if caller_left {
                    proptest::prop_assert!(finals <= 1);
                } else {
                    proptest::prop_assert_eq!(finals, 1, "call {} got {} final answers", request, finals);
                }
            }
        }
    }

    /// Model checks of the races between everything that can end one call, under `shuttle`'s
    /// scheduler (`cargo test --features shuttle --lib shuttle`): whichever way the threads
    /// interleave at the tables' locks, the caller gets exactly one final answer.
    #[cfg(feature = "shuttle")]
    mod shuttle_model {
        use super::*;

        const ITERATIONS: usize = 3_000;

        fn finals(rx: &mut UnboundedReceiver<Outbound>) -> (usize, bool) {
            let messages = sent(rx);
            let finals = messages.iter().filter(|m| is_final(m)).count();
            let after = messages.iter().position(is_final).is_some_and(|end| end + 1 < messages.len());
            (finals, after)
        }

        fn interruptible(callee: &SessionHandle) {
            let features = crate::session::CalleeFeatures {
                progressive_call_results: true,
                call_canceling: true,
                ..Default::default()
            };
            callee.set_identity(crate::session::Identity { authid: "c".into(), authrole: "r".into(), features });
        }

        #[test]
        fn shuttle_a_running_call_raced_by_answer_cancel_timeout_and_teardown() {
            shuttle::check_random(
                || {
                    let (caller, mut rx) = session(1);
                    let (callee, _crx) = session(2);
                    interruptible(&callee);
                    let mut call = open(&caller, &callee, 7, false);
                    call.progress = true;
                    let (token, registration) = (call.token, call.registration.id);
                    callee.invocations.insert(1, call, usize::MAX, usize::MAX).ok().unwrap();
                    start(&caller, 7, token, &callee, 1, registration).unwrap();
                    let threads = vec![
                        {
                            let callee = callee.clone();
                            shuttle::thread::spawn(move || {
                                complete(&callee, 1, Outcome::Progress(Payload::Empty));
                                complete(&callee, 1, Outcome::Result(Payload::Empty));
                            })
                        },
                        {
                            let caller = caller.clone();
                            shuttle::thread::spawn(move || {
                                cancel(&caller, 7, None, CancelMode::KillNoWait, WampError::Canceled)
                            })
                        },
                        {
                            let caller = caller.clone();
                            shuttle::thread::spawn(move || {
                                cancel(&caller, 7, Some(token), CancelMode::KillNoWait, WampError::Timeout)
                            })
                        },
                        {
                            let callee = callee.clone();
                            shuttle::thread::spawn(move || callee_gone(&callee))
                        },
                    ];
                    threads.into_iter().for_each(|t| t.join().unwrap());
                    assert_eq!(finals(&mut rx), (1, false), "exactly one final answer, nothing after it");
                    assert!(caller.calls.is_empty() && callee.invocations.is_empty());
                },
                ITERATIONS,
            );
        }

        #[test]
        fn shuttle_a_queued_call_raced_by_its_writer_a_cancel_and_its_caller_leaving() {
            shuttle::check_random(
                || {
                    let (caller, mut rx) = session(1);
                    let (callee, _crx) = session(2);
                    let call = open(&caller, &callee, 7, true);
                    let writer = {
                        let (caller, callee) = (caller.clone(), callee.clone());
                        shuttle::thread::spawn(move || {
                            let (token, registration) = (call.token, call.registration.id);
                            callee.invocations.insert(1, call, usize::MAX, usize::MAX).ok().unwrap();
                            if start(&caller, 7, token, &callee, 1, registration).is_none() {
                                if let Some(call) = callee.invocations.remove(1) {
                                    call.discard();
                                }
                            }
                        })
                    };
                    let canceler = {
                        let caller = caller.clone();
                        shuttle::thread::spawn(move || cancel(&caller, 7, None, CancelMode::Skip, WampError::Canceled))
                    };
                    let teardown = {
                        let callee = callee.clone();
                        shuttle::thread::spawn(move || callee_gone(&callee))
                    };
                    for thread in [writer, canceler, teardown] {
                        thread.join().unwrap();
                    }
                    callee_gone(&callee);
                    assert_eq!(finals(&mut rx), (1, false));
                    assert!(caller.calls.is_empty() && callee.invocations.is_empty());
                    assert!(matches!(caller.calls.open(7, true), Opened::Stray), "its chunks are dropped");
                },
                ITERATIONS,
            );
        }

        #[test]
        fn shuttle_a_caller_leaving_races_its_callees_answer() {
            shuttle::check_random(
                || {
                    let (caller, mut rx) = session(1);
                    let (callee, _crx) = session(2);
                    interruptible(&callee);
                    let call = open(&caller, &callee, 7, false);
                    let (token, registration) = (call.token, call.registration.id);
                    callee.invocations.insert(1, call, usize::MAX, usize::MAX).ok().unwrap();
                    start(&caller, 7, token, &callee, 1, registration).unwrap();
                    let answer = {
                        let callee = callee.clone();
                        shuttle::thread::spawn(move || complete(&callee, 1, Outcome::Result(Payload::Empty)))
                    };
                    let leave = {
                        let caller = caller.clone();
                        shuttle::thread::spawn(move || caller_gone(&caller))
                    };
                    answer.join().unwrap();
                    leave.join().unwrap();
                    let (finals, after) = finals(&mut rx);
                    assert!(finals <= 1 && !after, "at most one answer to a caller that left");
                    assert!(caller.calls.is_empty() && callee.invocations.is_empty(), "nothing left behind");
                },
                ITERATIONS,
            );
        }
    }
}
