//! A session's writer: drains the outbound queue in batches, turns routed calls into numbered
//! INVOCATIONs, encodes in the session's serializer and flushes once per batch.
//!
//! The writer also keeps the order a callee must see. A registration is published before its
//! REGISTERED is queued (the id only exists once published), so a call can be routed to a new
//! member before that member has been told it is registered. The writer therefore tracks which
//! registrations it has confirmed (REGISTERED written, UNREGISTERED not yet) and holds back
//! INVOCATIONs for an unconfirmed one until its REGISTERED is written. An INVOCATION for a
//! registration the session has already left is routed to another member instead.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};

use super::{Outbound, SessionHandle};
use crate::dealer::pending::{self, InvocationRequest, PendingCall};
use crate::wire::Message;

/// Most items taken from the queue per write batch (and so per flush).
const BATCH: usize = 128;

/// What the writer leaves behind for the teardown: its queue, and items it took but did not send.
pub struct WriterExit {
    /// The queue, still open: the teardown closes and drains it.
    pub queue: tokio::sync::mpsc::Receiver<Outbound>,
    /// Items taken from the queue but not written.
    pub unsent: Vec<Outbound>,
}

/// Runs until the session closes: a `Close` item is written, the socket fails, or `closing` fires.
pub async fn run<S>(
    mut sink: S,
    mut queue: tokio::sync::mpsc::Receiver<Outbound>,
    handle: Arc<SessionHandle>,
) -> WriterExit
where
    S: Sink<Bytes> + Unpin,
    S::Error: std::fmt::Display,
{
    let mut batch = Vec::with_capacity(BATCH);
    let mut unsent = Vec::new();
    // INVOCATION request ids are sequential in this session, in the order they hit the wire.
    let mut last_invocation = 0u64;
    let mut confirmed: HashSet<u64> = HashSet::new();
    let mut held: Vec<InvocationRequest> = Vec::new();
    'run: loop {
        let received = tokio::select! {
            biased;
            _ = handle.closing.cancelled() => break,
            n = queue.recv_many(&mut batch, BATCH) => n,
        };
        if received == 0 {
            break;
        }
        let mut items = batch.drain(..);
        while let Some(item) = items.next() {
            let mut released = Vec::new();
            let (message, last) = match item {
                Outbound::Message(message) => {
                    if let Message::Registered { registration, .. } = message {
                        confirmed.insert(registration);
                        let (now, later) = held.drain(..).partition(|c| c.registration.id == registration);
                        (released, held) = (now, later);
                    }
                    (message, false)
                }
                Outbound::Unregistered { request, registration } => {
                    confirmed.remove(&registration);
                    (Message::Unregistered { request, details: None }, false)
                }
                Outbound::Frame(frame) => {
                    if !write_frame(&mut sink, &handle, frame).await {
                        unsent.extend(items);
                        break 'run;
                    }
                    continue;
                }
                Outbound::Close(message) => (message, true),
                Outbound::Invocation(call) => {
                    if !call.registration.has_member(handle.id) {
                        pending::reroute(call);
                        continue;
                    }
                    if !confirmed.contains(&call.registration.id) {
                        held.push(call);
                        continue;
                    }
                    (invocation(&handle, &mut last_invocation, call), false)
                }
            };
            let mut written = write(&mut sink, &handle, &message).await;
            let mut released = released.into_iter();
            while written {
                let Some(call) = released.next() else { break };
                if call.registration.has_member(handle.id) {
                    let message = invocation(&handle, &mut last_invocation, call);
                    written = write(&mut sink, &handle, &message).await;
                } else {
                    pending::reroute(call);
                }
            }
            if !written {
                unsent.extend(released.map(Outbound::Invocation));
                unsent.extend(items);
                break 'run;
            }
            if last {
                let _ = guarded(&handle, "close", sink.close()).await;
                unsent.extend(items);
                break 'run;
            }
        }
        drop(items);
        if !guarded(&handle, "flush", sink.flush()).await {
            break;
        }
    }
    handle.closing.cancel();
    unsent.extend(held.into_iter().map(Outbound::Invocation));
    WriterExit { queue, unsent }
}

/// Numbers a call, records it as pending at this callee, and makes its INVOCATION.
fn invocation(handle: &SessionHandle, last_invocation: &mut u64, call: InvocationRequest) -> Message {
    *last_invocation += 1;
    let request = *last_invocation;
    let pending = PendingCall {
        caller: call.caller,
        caller_request: call.caller_request,
    };
    handle.invocations.lock().insert(request, pending);
    Message::Invocation {
        request,
        registration: call.registration.id,
        details: call.details,
        payload: call.payload,
    }
}

/// Encodes and queues one frame on the socket; `false` when the connection failed.
async fn write<S>(sink: &mut S, handle: &SessionHandle, message: &Message) -> bool
where
    S: Sink<Bytes> + Unpin,
    S::Error: std::fmt::Display,
{
    let mut frame = Vec::with_capacity(128);
    handle.serializer.encode(message, &mut frame);
    write_frame(sink, handle, Bytes::from(frame)).await
}

async fn write_frame<S>(sink: &mut S, handle: &SessionHandle, frame: Bytes) -> bool
where
    S: Sink<Bytes> + Unpin,
    S::Error: std::fmt::Display,
{
    guarded(handle, "write", sink.feed(frame)).await
}

/// Runs one socket operation unless the session closes meanwhile: a peer that stopped reading
/// must not hold its writer, and with it the session's teardown, forever. `false` on failure.
async fn guarded<E: std::fmt::Display>(
    handle: &SessionHandle,
    what: &str,
    operation: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    tokio::select! {
        biased;
        _ = handle.closing.cancelled() => false,
        result = operation => match result {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(session = handle.id, %error, "{what} failed; closing session");
                false
            }
        },
    }
}
