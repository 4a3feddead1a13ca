//! Calls in flight: routed but not yet written ([`InvocationRequest`], in the callee's queue) and
//! written but not yet answered ([`PendingCall`], in the callee's invocation table).
//!
//! There is no realm-wide table of calls: each callee session owns the calls it serves, so YIELD
//! touches only its own session's table, and the only shared state a call touches on the way is
//! the two sessions' queues.

use std::sync::Arc;

use crate::error::WampError;
use crate::session::{Outbound, SessionHandle};
use crate::wire::{Dict, Message, MessageType, Payload, Value};

use super::Registration;

/// How many times one call may be re-routed (its callee left between routing and delivery)
/// before the caller gets an error; bounds the loop if members keep vanishing.
const MAX_ATTEMPTS: u32 = 16;

/// A call routed to a callee and waiting in its queue.
pub struct InvocationRequest {
    /// The registration it was routed through (re-routing picks again from it).
    pub registration: Arc<Registration>,
    /// The caller's session.
    pub caller: Arc<SessionHandle>,
    /// The caller's CALL request id.
    pub caller_request: u64,
    /// `INVOCATION.Details`.
    pub details: Dict,
    /// The caller's arguments, passed through.
    pub payload: Payload,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// A call whose INVOCATION the callee has been sent.
pub struct PendingCall {
    /// The caller's session.
    pub caller: Arc<SessionHandle>,
    /// The caller's CALL request id.
    pub caller_request: u64,
}

/// Routes `call` to a member of its registration and queues it there, waiting for room when the
/// callee is saturated. If the chosen member turns out to be gone, picks again.
pub async fn dispatch(mut call: InvocationRequest) {
    loop {
        let Some(callee) = call.registration.pick() else {
            return answer_error(
                call,
                WampError::NoSuchProcedure,
                "no callee is registered for the procedure any more",
            )
            .await;
        };
        match callee.deliver(Outbound::Invocation(call)).await {
            Ok(()) => return,
            Err(Outbound::Invocation(back)) => call = back,
            Err(_) => unreachable!("deliver returns the item it was given"),
        }
        call.attempts += 1;
        if call.attempts >= MAX_ATTEMPTS {
            return answer_error(
                call,
                WampError::Canceled,
                "every callee tried left before taking the call",
            )
            .await;
        }
    }
}

/// Answers a routed call that could not be delivered.
pub async fn answer_error(call: InvocationRequest, error: WampError, reason: &str) {
    let payload = Payload::args(vec![Value::from(reason)]);
    call.caller
        .send(Message::error(
            MessageType::Call,
            call.caller_request,
            error.uri(),
            payload,
        ))
        .await;
}

impl PendingCall {
    /// Tells the caller its call ended because the callee went away.
    pub async fn cancel(self) {
        let payload = Payload::args(vec![Value::from("the callee left while the call was in flight")]);
        let error = Message::error(
            MessageType::Call,
            self.caller_request,
            WampError::Canceled.uri(),
            payload,
        );
        self.caller.send(error).await;
    }
}

/// Routes again a call whose callee left before the call reached it. Runs as its own task: the
/// writer or teardown that found the call must not wait on another session's queue.
pub fn reroute(mut call: InvocationRequest) {
    call.attempts += 1;
    tokio::spawn(async move {
        if call.attempts >= MAX_ATTEMPTS {
            answer_error(
                call,
                WampError::Canceled,
                "every callee tried left before taking the call",
            )
            .await
        } else {
            dispatch(call).await
        }
    });
}
