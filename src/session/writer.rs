//! A session's writer: drains the outbound queue in batches, turns routed calls into numbered
//! INVOCATIONs, encodes in the session's serializer and flushes once per batch.
//!
//! The writer also keeps the order a callee must see. A registration is published before its
//! REGISTERED is queued (the id only exists once published), so a call can be routed to a new
//! member before that member has been told it is registered. The writer therefore tracks which
//! registrations it has confirmed (REGISTERED written, UNREGISTERED not yet) and holds back
//! INVOCATIONs for an unconfirmed one until its REGISTERED is written. An INVOCATION for a
//! registration the session has already left is routed to another member instead.
//!
//! A message larger than the peer accepts (RawSocket peers announce a limit) is never written:
//! a call too large for its callee is answered to its caller with `wamp.error.payload_size_exceeded`,
//! a result or error too large for its caller is replaced by that error, an event is dropped, and
//! any other message (a WELCOME for a peer announcing a tiny limit) ends the session with ABORT.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{Chunk, Outbound, SessionHandle};
use crate::dealer::pending::{self, CallState, InvocationRequest};
use crate::error::WampError;
use crate::transport::OutFrame;
use crate::wire::{Dict, Message, MessageType, Payload, Value};

/// Most items taken from the queue per write batch (and so per flush).
const BATCH: usize = 128;

/// What the writer leaves behind for the teardown: its queue, and items it took but did not send.
pub struct WriterExit {
    /// The queue, still open: the teardown closes and drains it.
    pub queue: tokio::sync::mpsc::Receiver<Outbound>,
    /// Items taken from the queue but not written.
    pub unsent: Vec<Outbound>,
}

/// Whether the writer goes on after an item.
#[derive(PartialEq, Eq)]
enum Step {
    Continue,
    Stop,
}

/// Runs until the session closes: a `Close` item is written, the socket fails, or `closing` fires.
/// `max_outgoing` is the largest message the peer accepts, `max_pending` the most calls it may
/// have in flight as callee.
pub async fn run<S>(
    sink: S,
    mut queue: tokio::sync::mpsc::Receiver<Outbound>,
    handle: Arc<SessionHandle>,
    max_outgoing: usize,
    max_pending: usize,
) -> WriterExit
where
    S: Sink<OutFrame> + Unpin,
    S::Error: std::fmt::Display,
{
    let mut writer = Writer {
        sink,
        closed: Box::pin(handle.closing.clone().cancelled_owned()),
        handle,
        max_outgoing,
        max_pending,
        last_invocation: 0,
        confirmed: HashSet::new(),
        held: Vec::new(),
        unsent: Vec::new(),
    };
    let mut batch = Vec::new();
    'run: loop {
        let received = tokio::select! {
            biased;
            _ = writer.closed.as_mut() => break,
            n = queue.recv_many(&mut batch, BATCH) => n,
        };
        if received == 0 {
            break;
        }
        if received > 1 && received < BATCH {
            // A burst is under way: let the tasks filling the queue run once more before writing,
            // so many small writes become one batched write (a syscall each, and on loopback the
            // peer's receive work too). A lone message (sequential calls) is written at once.
            tokio::task::yield_now().await;
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        let mut items = batch.drain(..);
        while let Some(item) = items.next() {
            if writer.item(item).await == Step::Stop {
                writer.unsent.extend(items);
                break 'run;
            }
        }
        drop(items);
        if !writer.guarded("flush", |sink| sink.flush()).await {
            break;
        }
    }
    writer.handle.closing.cancel();
    let Writer { mut unsent, held, .. } = writer;
    unsent.extend(held.into_iter().map(Outbound::Invocation));
    WriterExit { queue, unsent }
}

struct Writer<S> {
    sink: S,
    /// Fires when the session closes; made once, since every socket operation waits on it.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    handle: Arc<SessionHandle>,
    max_outgoing: usize,
    max_pending: usize,
    /// INVOCATION request ids are sequential in this session, in the order they hit the wire.
    last_invocation: u64,
    /// Registrations whose REGISTERED was written (and UNREGISTERED not yet).
    confirmed: HashSet<u64>,
    /// Calls waiting for their registration's REGISTERED to be written. They arrive and leave
    /// boxed (`Outbound::Invocation`), so they stay boxed here rather than move twice.
    #[allow(clippy::vec_box)]
    held: Vec<Box<InvocationRequest>>,
    /// Items taken but not written, for the teardown.
    unsent: Vec<Outbound>,
}

impl<S> Writer<S>
where
    S: Sink<OutFrame> + Unpin,
    S::Error: std::fmt::Display,
{
    async fn item(&mut self, item: Outbound) -> Step {
        match item {
            Outbound::Message(message) => {
                let registered = match *message {
                    Message::Registered { registration, .. } => Some(registration),
                    _ => None,
                };
                if self.message(&message).await == Step::Stop {
                    return Step::Stop;
                }
                match registered {
                    Some(registration) => self.confirm(registration).await,
                    None => Step::Continue,
                }
            }
            Outbound::Unregistered { request, registration, reason } => {
                self.confirmed.remove(&registration);
                let details =
                    reason.map(|reason| Dict::new().with("registration", registration).with("reason", reason));
                self.message(&Message::Unregistered { request, details }).await
            }
            Outbound::Invocation(call) => self.invocation(call).await,
            Outbound::InvocationChunk(chunk) => {
                let Chunk { caller, caller_request, progress, payload } = *chunk;
                self.chunk(&caller, caller_request, progress, payload).await
            }
            Outbound::Frame(frame) if frame.len() > self.max_outgoing => {
                tracing::warn!(
                    session = self.handle.id,
                    size = frame.len(),
                    "event larger than the peer accepts; dropped"
                );
                Step::Continue
            }
            Outbound::Frame(frame) => self.frame(OutFrame::Message(frame)).await,
            Outbound::Pong(payload) => self.frame(OutFrame::Pong(payload)).await,
            Outbound::Close(message) => {
                if self.message(&message).await == Step::Continue {
                    self.guarded("close", |sink| sink.close()).await;
                }
                Step::Stop
            }
        }
    }

    /// REGISTERED for `registration` is written: calls held for it may go now.
    async fn confirm(&mut self, registration: u64) -> Step {
        self.confirmed.insert(registration);
        let (ready, waiting) =
            std::mem::take(&mut self.held).into_iter().partition(|c| c.registration.id == registration);
        self.held = waiting;
        let mut ready: std::vec::IntoIter<Box<InvocationRequest>> = ready.into_iter();
        while let Some(call) = ready.next() {
            if self.invocation(call).await == Step::Stop {
                self.unsent.extend(ready.map(Outbound::Invocation));
                return Step::Stop;
            }
        }
        Step::Continue
    }

    async fn invocation(&mut self, mut call: Box<InvocationRequest>) -> Step {
        // The callee may have unregistered (and been sent UNREGISTERED) after the call was routed
        // here: then it must not get the call; another member will.
        if !call.registration.has_member(self.handle.id) {
            pending::reroute(call);
            return Step::Continue;
        }
        if !self.confirmed.contains(&call.registration.id) {
            self.held.push(call);
            return Step::Continue;
        }
        let request = self.last_invocation + 1;
        let details = std::mem::take(&mut call.details);
        let message =
            Message::Invocation { request, registration: call.registration.id, details, payload: call.payload.clone() };
        let frame = self.encode(&message);
        if frame.len() > self.max_outgoing {
            tracing::info!(session = self.handle.id, size = frame.len(), "call larger than the callee accepts");
            let reason = format!("the call is {} bytes; the callee accepts at most {}", frame.len(), self.max_outgoing);
            tokio::spawn(async move { pending::answer_error(call, WampError::PayloadSizeExceeded, &reason).await });
            return Step::Continue;
        }
        let (caller, caller_request) = (call.caller.clone(), call.caller_request);
        let (registration_id, progressive_call) = (call.registration.id, call.options.progress);
        // Pending at this callee first, then running for the caller: a cancel that sees the call
        // running will find it here. A callee at its limit is treated as unavailable for it.
        {
            let mut pending = self.handle.invocations.lock();
            if pending.len() >= self.max_pending {
                drop(pending);
                tracing::debug!(session = self.handle.id, "callee at max_pending_per_callee; call handed on");
                call.unavailable.push(self.handle.id);
                pending::reroute(call);
                return Step::Continue;
            }
            pending.insert(request, call);
        }
        match caller.calls.lock().get_mut(&caller_request) {
            Some(state) => {
                *state = CallState::Running {
                    callee: Arc::downgrade(&self.handle),
                    invocation: request,
                    registration: registration_id,
                    progressive: progressive_call,
                }
            }
            None => {
                // Canceled (or the caller left) while the call waited in the queue.
                self.handle.invocations.lock().remove(&request);
                return Step::Continue;
            }
        }
        self.last_invocation = request;
        self.frame(OutFrame::Message(frame)).await
    }

    /// A further chunk of a progressive invocation, sent with its first chunk's INVOCATION id.
    /// Dropped when the call has ended (answered, canceled, timed out).
    async fn chunk(&mut self, caller: &SessionHandle, caller_request: u64, progress: bool, payload: Payload) -> Step {
        let target = match caller.calls.lock().get_mut(&caller_request) {
            Some(CallState::Running { invocation, registration, progressive, .. }) if *progressive => {
                *progressive = progress;
                Some((*invocation, *registration))
            }
            _ => None,
        };
        let Some((request, registration)) = target else { return Step::Continue };
        let details = if progress { Dict::new().with("progress", true) } else { Dict::new() };
        self.message(&Message::Invocation { request, registration, details, payload }).await
    }

    async fn message(&mut self, message: &Message) -> Step {
        let mut frame = self.encode(message);
        if frame.len() > self.max_outgoing {
            tracing::info!(session = self.handle.id, size = frame.len(), "message larger than the peer accepts");
            match too_large(message, frame.len(), self.max_outgoing) {
                Some(replacement) => frame = self.encode(&replacement),
                None => {
                    // A session message (WELCOME, ...) the peer cannot take: the session cannot go on.
                    let reason = format!(
                        "a {:?} of {} bytes exceeds what this peer accepts",
                        message.message_type(),
                        frame.len()
                    );
                    let details = Dict::new().with("message", reason);
                    let abort = Message::Abort { details, reason: WampError::PayloadSizeExceeded.uri().to_owned() };
                    let frame = self.encode(&abort);
                    if self.frame(OutFrame::Message(frame)).await == Step::Continue {
                        self.guarded("close", |sink| sink.close()).await;
                    }
                    return Step::Stop;
                }
            }
        }
        self.frame(OutFrame::Message(frame)).await
    }

    fn encode(&self, message: &Message) -> Bytes {
        let mut out = Vec::with_capacity(128);
        self.handle.serializer.encode(message, &mut out);
        Bytes::from(out)
    }

    async fn frame(&mut self, frame: OutFrame) -> Step {
        if self.guarded("write", |sink| sink.feed(frame)).await {
            Step::Continue
        } else {
            Step::Stop
        }
    }

    /// Runs one socket operation unless the session closes meanwhile: a peer that stopped reading
    /// must not hold its writer, and with it the session's teardown, forever. `false` on failure.
    async fn guarded<'a, F, Fut>(&'a mut self, what: &str, operation: F) -> bool
    where
        F: FnOnce(&'a mut S) -> Fut,
        Fut: std::future::Future<Output = Result<(), S::Error>> + 'a,
    {
        let session = self.handle.id;
        let Writer { sink, closed, .. } = self;
        tokio::select! {
            biased;
            _ = closed.as_mut() => false,
            result = operation(sink) => match result {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(session, %error, "{what} failed; closing session");
                    false
                }
            },
        }
    }
}

/// What to send instead of a message too large for the peer; `None` for messages that have no
/// smaller stand-in (WELCOME and the like), which end the session.
fn too_large(message: &Message, size: usize, limit: usize) -> Option<Message> {
    let reason = || Payload::args(vec![Value::from(format!("the message is {size} bytes; this peer accepts {limit}"))]);
    let uri = WampError::PayloadSizeExceeded.uri();
    match message {
        Message::Result { request, .. } => Some(Message::error(MessageType::Call, *request, uri, reason())),
        Message::Error { request_type, request, .. } => Some(Message::Error {
            request_type: *request_type,
            request: *request,
            details: Default::default(),
            error: uri.to_owned(),
            payload: reason(),
        }),
        _ => None,
    }
}
