//! A session's writer: drains the outbound queue in batches, turns routed calls into numbered
//! INVOCATIONs, encodes in the session's serializer and flushes once per batch. The writer never
//! waits on another session: everything it does to another session (answering a call it cannot
//! deliver, routing one elsewhere) is queued without waiting or spawned.
//!
//! The writer also keeps the order a callee must see. A registration is published before its
//! REGISTERED is queued (the id only exists once published), so a call can be routed to a new
//! member before that member has been told it is registered. The writer therefore tracks which
//! registrations it has confirmed (REGISTERED written, UNREGISTERED not yet) and holds back
//! INVOCATIONs for an unconfirmed one until its REGISTERED is written. An INVOCATION for a
//! registration the session has already left is routed to another member instead.
//!
//! A message the peer cannot take is never written: a call too large for its callee, or whose
//! arguments cannot be converted to the callee's serializer, is answered to its caller with
//! `wamp.error.payload_size_exceeded` or `wamp.error.invalid_argument`; a result or error that
//! cannot go to its caller is replaced by such an ERROR; an event is dropped; and any other
//! message (a WELCOME for a peer announcing a tiny limit) ends the session with ABORT.
//!
//! Every socket operation has a deadline (`stuck_timeout`): a peer that stops reading is a slow
//! consumer and its session is closed, so its teardown can answer the calls it holds.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{Closing, Outbound, SessionHandle};
use crate::dealer::call::{self, Chunk, ChunkDelivery, Invocation};
use crate::error::WampError;
use crate::transport::{CloseCode, OutFrame};
use crate::wire::{Dict, Message, MessageType, Payload, Value};

/// Most items taken from the queue per write batch (and so per flush).
const BATCH: usize = 128;

/// What the writer needs to know about its peer and the router's limits.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// The largest message the peer accepts.
    pub max_outgoing: usize,
    /// Most calls the session may have in flight as callee.
    pub max_pending: usize,
    /// Most payload bytes those calls may pin.
    pub max_pending_bytes: usize,
    /// How long one socket write or flush may take before the peer counts as a slow consumer.
    pub write_timeout: Duration,
}

/// What the writer leaves behind for the teardown: its queue, and items it took but did not send.
pub struct WriterExit {
    /// The queue, still open: the teardown closes and drains it.
    pub queue: UnboundedReceiver<Outbound>,
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
pub async fn run<S>(
    sink: S,
    mut queue: UnboundedReceiver<Outbound>,
    handle: Arc<SessionHandle>,
    limits: WriterLimits,
    router: Arc<crate::router::RouterShared>,
) -> WriterExit
where
    S: Sink<OutFrame> + Unpin,
    S::Error: std::fmt::Display,
{
    let mut writer = Writer {
        sink,
        closed: Box::pin(handle.closing.clone().cancelled_owned()),
        handle,
        limits,
        router,
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
        let size: usize = batch.iter().map(Outbound::size).sum();
        let mut items = batch.drain(..);
        while let Some(item) = items.next() {
            if writer.item(item).await == Step::Stop {
                writer.unsent.extend(items);
                break 'run;
            }
        }
        drop(items);
        let flushed = writer.guarded("flush", |sink| sink.flush()).await;
        // Counted as queued until written out, so a peer that reads slowly holds its senders back.
        writer.handle.outbox().taken(size);
        if !flushed {
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
    limits: WriterLimits,
    /// For its counters.
    router: Arc<crate::router::RouterShared>,
    /// INVOCATION request ids are sequential in this session, in the order they hit the wire.
    last_invocation: u64,
    /// Registrations whose REGISTERED was written (and UNREGISTERED not yet).
    confirmed: HashSet<u64>,
    /// Calls waiting for their registration's REGISTERED to be written. They arrive and leave
    /// boxed (`Outbound::Invocation`), so they stay boxed here rather than move twice.
    #[allow(clippy::vec_box)]
    held: Vec<Box<Invocation>>,
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
                self.handle.invocations.forget(registration);
                let details =
                    reason.map(|reason| Dict::new().with("registration", registration).with("reason", reason));
                self.message(&Message::Unregistered { request, details }).await
            }
            Outbound::Invocation(call) => self.invocation(call).await,
            Outbound::InvocationChunk(delivery) => {
                let ChunkDelivery { invocation, registration, chunk, .. } = *delivery;
                // A chunk for a call that has ended (answered, canceled, timed out) is dropped.
                if !self.handle.invocations.contains(invocation) {
                    return Step::Continue;
                }
                self.chunk(invocation, registration, chunk).await
            }
            Outbound::Frame(frame) if frame.len() > self.limits.max_outgoing => {
                tracing::warn!(
                    session = self.handle.id,
                    size = frame.len(),
                    "event larger than the peer accepts; dropped"
                );
                Step::Continue
            }
            Outbound::Frame(frame) => {
                self.count(MessageType::Event, frame.len());
                self.frame(OutFrame::Message(frame)).await
            }
            Outbound::Pong(payload) => self.frame(OutFrame::Pong(payload)).await,
            Outbound::Ping => self.frame(OutFrame::Ping(Bytes::new())).await,
            Outbound::Close(closing) => {
                let Closing { message, code } = *closing;
                if self.message(&message).await == Step::Continue
                    && self.frame(OutFrame::Close(code)).await == Step::Continue
                {
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
        let mut ready: std::vec::IntoIter<Box<Invocation>> = ready.into_iter();
        while let Some(call) = ready.next() {
            if self.invocation(call).await == Step::Stop {
                self.unsent.extend(ready.map(Outbound::Invocation));
                return Step::Stop;
            }
        }
        Step::Continue
    }

    async fn invocation(&mut self, mut call: Box<Invocation>) -> Step {
        // The callee may have unregistered (and been sent UNREGISTERED) after the call was routed
        // here: then it must not get the call; another member will.
        if !call.registration.has_member(self.handle.id) {
            call::reroute(call);
            return Step::Continue;
        }
        if !self.confirmed.contains(&call.registration.id) {
            self.held.push(call);
            return Step::Continue;
        }
        let request = self.last_invocation + 1;
        let registration = call.registration.id;
        let details = std::mem::take(&mut call.details);
        let message = Message::Invocation { request, registration, details, payload: call.payload.clone() };
        let frame = match self.encode(&message) {
            Ok(frame) if frame.len() <= self.limits.max_outgoing => frame,
            Ok(frame) => {
                tracing::info!(session = self.handle.id, size = frame.len(), "call larger than the callee accepts");
                let max = self.limits.max_outgoing;
                call.fail(
                    WampError::PayloadSizeExceeded,
                    &format!("the call is {} bytes; the callee accepts at most {max}", frame.len()),
                );
                return Step::Continue;
            }
            Err(error) => {
                tracing::info!(session = self.handle.id, %error, "call arguments cannot be sent to the callee");
                call.fail(
                    WampError::InvalidArgument,
                    &format!("the call's arguments cannot be sent to the callee: {error}"),
                );
                return Step::Continue;
            }
        };
        let (caller, caller_request, token) = {
            let (caller, request, token) = call.caller_request();
            (caller.clone(), request, token)
        };
        // Pending at this callee first, then running for the caller: a cancel that sees the call
        // running finds it here. A callee at its limit is unavailable for this call.
        let limits = (self.limits.max_pending, self.limits.max_pending_bytes);
        if let Err((limit, mut call)) = self.handle.invocations.insert(request, call, limits.0, limits.1) {
            tracing::debug!(
                session = self.handle.id,
                limit = match limit {
                    call::AtLimit::Calls => "calls",
                    call::AtLimit::Bytes => "bytes",
                },
                "callee at its pending limit; call handed on"
            );
            call.unavailable.push(self.handle.id);
            call::reroute(call);
            return Step::Continue;
        }
        let Some(chunks) = call::start(&caller, caller_request, token, &self.handle, request, registration) else {
            // Ended (canceled, timed out, its caller gone) while it waited in the queue.
            if let Some(call) = self.handle.invocations.remove(request) {
                call.discard();
            }
            return Step::Continue;
        };
        self.last_invocation = request;
        self.count(MessageType::Invocation, frame.len());
        if self.frame(OutFrame::Message(frame)).await == Step::Stop {
            return Step::Stop;
        }
        for chunk in chunks {
            if self.chunk(request, registration, chunk).await == Step::Stop {
                return Step::Stop;
            }
        }
        Step::Continue
    }

    /// A further chunk of a progressive invocation, sent with its first chunk's INVOCATION id.
    async fn chunk(&mut self, request: u64, registration: u64, chunk: Chunk) -> Step {
        let Chunk { progress, payload } = chunk;
        let details = if progress { Dict::new().with("progress", true) } else { Dict::new() };
        let (error, reason) = match self.encode(&Message::Invocation { request, registration, details, payload }) {
            Ok(frame) if frame.len() <= self.limits.max_outgoing => {
                self.count(MessageType::Invocation, frame.len());
                return self.frame(OutFrame::Message(frame)).await;
            }
            Ok(_) => {
                let max = self.limits.max_outgoing;
                (
                    WampError::PayloadSizeExceeded,
                    format!("a chunk of the call exceeds the {max} bytes the callee accepts"),
                )
            }
            Err(error) => {
                (WampError::InvalidArgument, format!("a chunk of the call cannot be sent to the callee: {error}"))
            }
        };
        // The call cannot go on: it ends for its caller, and the callee is told to stop.
        let Some(call) = self.handle.invocations.remove(request) else { return Step::Continue };
        call.fail(error, &reason);
        let options = Dict::new().with("mode", "killnowait").with("reason", WampError::Canceled.uri());
        self.message(&Message::Interrupt { request, options }).await
    }

    /// Writes a message, or what stands in for it when the peer cannot take it (see the module
    /// docs): a RESULT or ERROR becomes an ERROR saying why; anything else ends the session.
    async fn message(&mut self, message: &Message) -> Step {
        let max = self.limits.max_outgoing;
        let (error, reason) = match self.encode(message) {
            Ok(frame) if frame.len() <= max => {
                self.count(message.message_type(), frame.len());
                return self.frame(OutFrame::Message(frame)).await;
            }
            Ok(frame) => (
                WampError::PayloadSizeExceeded,
                format!("the message is {} bytes; this peer accepts {max}", frame.len()),
            ),
            Err(error) => {
                (WampError::InvalidArgument, format!("the message cannot be sent in this peer's serializer: {error}"))
            }
        };
        tracing::info!(session = self.handle.id, reason, "message replaced: the peer cannot take it");
        if let Some(frame) = stand_in(message, error, &reason).and_then(|m| self.encode(&m).ok()) {
            self.count(MessageType::Error, frame.len());
            return self.frame(OutFrame::Message(frame)).await;
        }
        // A session message (WELCOME, ...) the peer cannot take: the session cannot go on.
        let reason = format!("a {} this peer cannot take: {reason}", message.message_type());
        let abort = Message::Abort { details: Dict::new().with("message", reason), reason: error.uri().to_owned() };
        if let Ok(frame) = self.encode(&abort) {
            if self.frame(OutFrame::Message(frame)).await == Step::Continue
                && self.frame(OutFrame::Close(CloseCode::TooBig)).await == Step::Continue
            {
                self.guarded("close", |sink| sink.close()).await;
            }
        }
        Step::Stop
    }

    /// Counts a message written.
    #[inline]
    fn count(&self, kind: MessageType, bytes: usize) {
        self.router.metrics.message(crate::metrics::Direction::Out, kind as u8, bytes);
    }

    fn encode(&self, message: &Message) -> Result<Bytes, crate::wire::EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.handle.serializer.try_encode(message, &mut out)?;
        Ok(Bytes::from(out))
    }

    async fn frame(&mut self, frame: OutFrame) -> Step {
        if self.guarded("write", |sink| sink.feed(frame)).await {
            Step::Continue
        } else {
            Step::Stop
        }
    }

    /// Runs one socket operation unless the session closes meanwhile or the operation outlives
    /// the write deadline: a peer that stopped reading must not hold its writer, and with it the
    /// session's teardown and the calls it holds. `false` on failure.
    async fn guarded<'a, F, Fut>(&'a mut self, what: &str, operation: F) -> bool
    where
        F: FnOnce(&'a mut S) -> Fut,
        Fut: std::future::Future<Output = Result<(), S::Error>> + 'a,
    {
        let session = self.handle.id;
        let deadline = self.limits.write_timeout;
        let outcome = |result: Result<(), S::Error>| match result {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(session, %error, "{what} failed; closing session");
                false
            }
        };
        let Writer { sink, closed, .. } = self;
        let operation = operation(sink);
        tokio::pin!(operation);
        // Most writes complete at once (the sink has room): those need no timer.
        if let Poll::Ready(result) = std::future::poll_fn(|cx| Poll::Ready(operation.as_mut().poll(cx))).await {
            return outcome(result);
        }
        tokio::select! {
            biased;
            _ = closed.as_mut() => false,
            result = tokio::time::timeout(deadline, operation) => match result {
                Ok(result) => outcome(result),
                Err(_) => {
                    tracing::warn!(session, timeout_ms = deadline.as_millis() as u64, "slow consumer: a {what} did not complete in time; closing the session");
                    self.handle.outbox().mark(crate::metrics::CloseCause::Stuck);
                    false
                }
            },
        }
    }
}

/// What to send instead of a message the peer cannot take (too large, or not representable in
/// its serializer): an ERROR with `error` and `reason` for a RESULT or an ERROR; `None` for
/// messages that have no stand-in (WELCOME and the like), which end the session.
fn stand_in(message: &Message, error: WampError, reason: &str) -> Option<Message> {
    let (request_type, request) = match message {
        Message::Result { request, .. } => (MessageType::Call as u64, *request),
        Message::Error { request_type, request, .. } => (*request_type, *request),
        _ => return None,
    };
    Some(Message::Error {
        request_type,
        request,
        details: Dict::new(),
        error: error.uri().to_owned(),
        payload: Payload::args(vec![Value::from(reason)]),
    })
}
