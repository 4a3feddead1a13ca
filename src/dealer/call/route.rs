//! Routing a call to a member of its registration: the first time, and again when its callee
//! left before taking it, could not take it, or answered `wamp.error.unavailable`.

use super::{queue, requeue, set_timer, Invocation};
use crate::dealer::registry::Selected;
use crate::dealer::Callee;
use crate::error::WampError;
use crate::session::Outbound;
use crate::wire::Dict;

/// How many times one call may be handed to another member because its callee left before
/// taking it; bounds the loop if members keep vanishing.
const MAX_ATTEMPTS: u32 = 16;

/// Routes `call` to a member of its registration and queues it there, waiting for room while the
/// callee's queue is full. If the chosen member turns out to be gone, picks again. When every
/// member it may go to is at its concurrency limit, the call waits in the registration's queue.
pub async fn dispatch(call: Box<Invocation>) {
    route(call, None).await
}

/// Delivers a call taken from the registration's queue to `callee`, on which it holds a slot;
/// routes it again if that callee is gone.
pub(super) async fn resume(call: Box<Invocation>, callee: Callee) {
    route(call, Some(callee)).await
}

async fn route(mut call: Box<Invocation>, mut chosen: Option<Callee>) {
    loop {
        let callee = match chosen.take() {
            Some(callee) => callee,
            None => match call.select() {
                Selected::Member(callee) => {
                    call.slot = Some(callee.load.clone());
                    callee
                }
                Selected::Unmetered(callee) => callee,
                // Invoke-all waits for nobody: a member at its limit answers for itself.
                Selected::Full if call.options.all => {
                    return call.fail(WampError::NoAvailableCallee, "the member is at its concurrency limit")
                }
                Selected::Full => return queue::park(call),
                Selected::Nobody => {
                    let (error, reason) = call.nobody();
                    return call.fail(error, reason);
                }
            },
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
        let session = &callee.session;
        match session.deliver(Outbound::Invocation(call)).await {
            Ok(()) => return,
            Err(refused) => {
                // The outbox gives back the item it was given.
                let Outbound::Invocation(back) = refused.into_item() else { return };
                call = back;
            }
        }
        call.release_slot();
        call.attempts += 1;
        call.unavailable.push(session.id);
        if let Some(metrics) = call.caller.metrics() {
            metrics.reroutes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if call.attempts >= MAX_ATTEMPTS {
            return call.fail(WampError::Canceled, "every callee tried left before taking the call");
        }
    }
}

/// Fills in what depends on the chosen callee: `INVOCATION.Details` and whether progress is on.
/// `false` when the call needs a feature the callee did not announce.
fn prepare(call: &mut Invocation, callee: &Callee) -> bool {
    let features = callee.session.identity().map(|i| i.features).unwrap_or_default();
    if let Some(forwarded) = &call.forwarded {
        if call.options.progress && !features.progressive_call_invocations {
            return false;
        }
        call.progress = call.options.receive_progress && features.progressive_call_results;
        call.details = Dict::clone(forwarded);
        return true;
    }
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
    // A member of an invoke-all call answers once: its results are the caller's progress already.
    call.progress = call.options.receive_progress && features.progressive_call_results && !call.options.all;
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
    call.release_slot();
    if !requeue(&call) {
        return call.discard();
    }
    if let Some(metrics) = call.caller.metrics() {
        metrics.reroutes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
