//! The bounded queue of a registration's calls that wait for a free slot.
//!
//! When every member a call may go to is at its `concurrency` limit, the call is *parked* here,
//! first in, first out, instead of being refused. Whoever may have made room hands waiting calls
//! on, oldest first, passing over calls whose only members are full ([`drain`]): a slot released
//! (YIELD, ERROR, cancel, timeout, the callee leaving — see [`super::Invocation`]'s `Drop`), a
//! member joining or leaving, and the parking call itself
//! (which closes the race with a slot freed while it was being parked). Both sides change their
//! state first and drain under the queue's lock after, so no call waits beside a free slot.
//!
//! A parked call stays Queued in its caller's table and is marked there as parked, so that its
//! end by any other path (cancel, its own timeout, the queue's time limit, its caller leaving)
//! takes it out of the queue at once ([`remove`]). A parked call holds no slot.
//!
//! Lock order: the queue before a caller's call table (parking marks the call under the queue's
//! lock); ending a call releases the call table before it takes the queue's lock.
//!
//! # Congestion reports
//! A call refused because the queue is full is counted, and reported through the
//! [`CongestionSink`] the realm installs (which publishes `wamp.registration.on_queue_full`), at
//! most once per [`REPORT_INTERVAL`] per registration: the first refusal after a quiet interval
//! is reported at once; refusals within the interval that follows are added up and reported
//! together when it ends, by a timer the first of them starts. So every refusal reaches exactly
//! one report, none is hidden by the rate limit, and the count is exact. Only refused calls touch
//! this state: a call that is parked or routed pays nothing for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{mark_parked, unmark_parked, Invocation};
use crate::dealer::registry::Selected;
use crate::dealer::timeout::Timeouts;
use crate::dealer::Registration;
use crate::error::WampError;
use crate::sync::Mutex;

/// How many calls a registration's queue holds, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    /// Calls the queue holds at most; a call that finds it full gets
    /// `wamp.error.no_available_callee` (`REGISTER.Options._max_queued_calls`).
    pub max_calls: usize,
    /// Milliseconds a call may wait in the queue before it ends with `wamp.error.timeout`; 0
    /// means only the call's own `timeout` bounds the wait (`REGISTER.Options._max_queue_ms`).
    pub max_wait_ms: u64,
}

impl QueueBounds {
    /// The default number of calls a queue holds.
    pub const DEFAULT_MAX_CALLS: usize = 1000;
}

impl Default for QueueBounds {
    fn default() -> Self {
        QueueBounds { max_calls: Self::DEFAULT_MAX_CALLS, max_wait_ms: 0 }
    }
}

/// The shortest time between two congestion reports of one registration.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What a registration's full queue refused since its previous report: the payload of
/// `wamp.registration.on_queue_full`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull {
    /// The registration id.
    pub registration: u64,
    /// Its procedure URI (or pattern).
    pub procedure: Arc<str>,
    /// Calls refused with `wamp.error.no_available_callee` since the previous report.
    pub refused: u64,
    /// The queue's bound (`max_queued_calls`).
    pub max_queued_calls: usize,
}

/// Where queues report the calls they refused; the realm installs one that publishes the meta
/// event, so the dealer does not depend on the broker.
pub type CongestionSink = Arc<dyn Fn(QueueFull) + Send + Sync>;

/// The calls of one registration waiting for a free slot, in arrival order.
pub struct CallQueue {
    calls: Mutex<VecDeque<Box<Invocation>>>,
    /// `calls.len()`, readable without the lock: a released slot checks it to skip draining an
    /// empty queue.
    len: AtomicUsize,
    bounds: QueueBounds,
    /// The realm's timeouts, which enforce `max_wait_ms`.
    timeouts: Option<Arc<Timeouts>>,
    /// Where refusals are reported, if anywhere.
    sink: Option<CongestionSink>,
    /// Refusals not reported yet (see the module docs).
    congestion: Mutex<Congestion>,
}

/// The rate limit of one queue's congestion reports.
#[derive(Default)]
struct Congestion {
    /// When the last report went out.
    reported: Option<Instant>,
    /// Refusals since then.
    refused: u64,
    /// A timer will report `refused` when the interval ends.
    flush_due: bool,
}

impl CallQueue {
    /// An empty queue with these bounds, whose waits `timeouts` bound (`None`: only by the calls'
    /// own timeouts), reporting refusals to `sink` when given.
    pub fn new(bounds: QueueBounds, timeouts: Option<Arc<Timeouts>>, sink: Option<CongestionSink>) -> Self {
        CallQueue {
            calls: Mutex::default(),
            len: AtomicUsize::new(0),
            bounds,
            timeouts,
            sink,
            congestion: Mutex::default(),
        }
    }

    /// Calls waiting.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// True when no call waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's bounds.
    pub fn bounds(&self) -> QueueBounds {
        self.bounds
    }
}

/// The registration's queue. The REGISTER that brings a concurrency limit makes it (see
/// [`crate::dealer::Dealer::register`]) before its member is published, and only a limited member
/// can make a call wait, so a parking call always finds it; the default made here is a fallback
/// for registrations built without the dealer (unit tests).
fn of(registration: &Registration) -> &CallQueue {
    registration.queue.get_or_init(|| Box::new(CallQueue::new(QueueBounds::default(), None, None)))
}

/// The queue of `registration` refused a call: counts it, and reports now or when the current
/// interval ends (see the module docs).
fn refused(queue: &CallQueue, registration: &Arc<Registration>) {
    let Some(sink) = &queue.sink else { return };
    let now = Instant::now();
    let report = {
        let mut congestion = queue.congestion.lock();
        congestion.refused += 1;
        match congestion.reported {
            // The timer reports this one with the others; nothing else reports until it has.
            _ if congestion.flush_due => None,
            Some(last) if now < last + REPORT_INTERVAL && schedule_flush(registration, last + REPORT_INTERVAL) => {
                congestion.flush_due = true;
                None
            }
            _ => {
                congestion.reported = Some(now);
                Some(std::mem::take(&mut congestion.refused))
            }
        }
    };
    if let Some(refused) = report {
        sink(queue_full(queue, registration, refused));
    }
}

fn queue_full(queue: &CallQueue, registration: &Registration, refused: u64) -> QueueFull {
    QueueFull {
        registration: registration.id,
        procedure: registration.uri.clone(),
        refused,
        max_queued_calls: queue.bounds.max_calls,
    }
}

/// Reports, at `at`, the refusals counted since the last report. Keeps the registration alive
/// until then, so the refusals of a registration deleted meanwhile are still reported. `false`
/// without a runtime to wait in (the router is shutting down): then the caller reports at once.
fn schedule_flush(registration: &Arc<Registration>, at: Instant) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
    let registration = registration.clone();
    drop(runtime.spawn(async move {
        tokio::time::sleep_until(at.into()).await;
        let Some(queue) = registration.queue.get() else { return };
        let Some(sink) = &queue.sink else { return };
        let refused = {
            let mut congestion = queue.congestion.lock();
            congestion.flush_due = false;
            congestion.reported = Some(Instant::now());
            std::mem::take(&mut congestion.refused)
        };
        sink(queue_full(queue, &registration, refused));
    }));
    true
}

/// Parks `call`, none of whose members has a free slot, at the tail of its registration's queue;
/// a full queue refuses it. The call's own timeout starts now if it has not (it counts from the
/// CALL, not from when a callee takes it).
pub(super) fn park(mut call: Box<Invocation>) {
    let registration = call.registration.clone();
    let queue = of(&registration);
    {
        let mut calls = queue.calls.lock();
        if calls.len() >= queue.bounds.max_calls {
            drop(calls);
            let max = queue.bounds.max_calls;
            call.fail(
                WampError::NoAvailableCallee,
                &format!("every callee is at its concurrency limit and the queue of {max} calls is full"),
            );
            return refused(queue, &registration);
        }
        if let Some(timeouts) = call.timer.take() {
            super::set_timer(&call.caller, call.caller_request, call.token, &timeouts, call.options.timeout_ms);
        }
        let wait = queue.bounds.max_wait_ms;
        let queue_timer = queue.timeouts.as_ref().filter(|_| wait > 0).cloned();
        if !mark_parked(&call, &registration, queue_timer.map(|t| (t, wait))) {
            // Ended while it was being routed.
            return call.discard();
        }
        calls.push_back(call);
        queue.len.store(calls.len(), Ordering::SeqCst);
    }
    // Pairs with the fence of a released slot (see `Invocation::release_slot`).
    std::sync::atomic::fence(Ordering::SeqCst);
    drain(&registration);
}

/// How many waiting calls [`drain`] looks at past calls that must stay (their only members are
/// full): bounds the work of one freed slot, under the queue's lock.
pub const MAX_SCAN: usize = 64;

/// Hands waiting calls, oldest first, to members with a free slot; a call no member may serve
/// any more ends with an error.
///
/// A call that can only go to certain members (`_callee`, a key, members it was rerouted away
/// from) and finds them full stays where it is, and the calls behind it are looked at: the first
/// one that finds a free slot takes it, so one busy member does not hold up calls that other
/// members could serve. At most [`MAX_SCAN`] such calls are passed over. A call that may go to
/// any member and finds every member full ends the scan: nothing behind it can run either, so
/// calls that may go anywhere keep their exact arrival order.
pub(crate) fn drain(registration: &Arc<Registration>) {
    let Some(queue) = registration.queue.get() else { return };
    let mut ready = Vec::new();
    let mut refused = Vec::new();
    // Calls that ended meanwhile; dropped after the lock, since giving back a slot drains again.
    let mut ended = Vec::new();
    {
        let mut calls = queue.calls.lock();
        let mut at = 0;
        while let Some(next) = calls.get(at) {
            let selected = next.select();
            if matches!(selected, Selected::Full) {
                let anywhere =
                    next.options.callee.is_none() && next.options.rkey.is_none() && next.unavailable.is_empty();
                if anywhere || at == MAX_SCAN {
                    break;
                }
                at += 1;
                continue;
            }
            let Some(mut call) = calls.remove(at) else { break };
            let live = unmark_parked(&call);
            let chosen = match selected {
                Selected::Member(callee) => {
                    call.slot = Some(callee.load.clone());
                    Some(callee)
                }
                Selected::Unmetered(callee) => Some(callee),
                Selected::Full | Selected::Nobody => None,
            };
            match chosen {
                Some(callee) if live => ready.push((call, callee)),
                None if live => refused.push(call),
                _ => ended.push(call),
            }
        }
        queue.len.store(calls.len(), Ordering::SeqCst);
    }
    ended.into_iter().for_each(|call| call.discard());
    for call in refused {
        let (error, reason) = call.nobody();
        call.fail(error, reason);
    }
    for (call, callee) in ready {
        // Delivering may wait for room in the callee's queue; whoever freed the slot must not.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(super::route::resume(call, callee))),
            Err(_) => call.fail(WampError::Canceled, "the router is shutting down"),
        }
    }
}

/// Takes the call `(caller, request, token)` out of the queue: it ended while parked.
pub(super) fn remove(registration: &Registration, caller: u64, request: u64, token: u64) {
    let Some(queue) = registration.queue.get() else { return };
    let removed = {
        let mut calls = queue.calls.lock();
        let at = calls.iter().position(|c| c.caller.id == caller && c.caller_request == request && c.token == token);
        let removed = at.and_then(|at| calls.remove(at));
        queue.len.store(calls.len(), Ordering::SeqCst);
        removed
    };
    if let Some(call) = removed {
        call.discard();
    }
}

/// Ends every parked call with `wamp.error.no_such_procedure`: the registration's last member
/// left.
pub(crate) fn fail_all(registration: &Registration) {
    let Some(queue) = registration.queue.get() else { return };
    let parked: Vec<Box<Invocation>> = {
        let mut calls = queue.calls.lock();
        queue.len.store(0, Ordering::SeqCst);
        calls.drain(..).collect()
    };
    for call in parked {
        unmark_parked(&call);
        call.fail(WampError::NoSuchProcedure, "no callee is registered for the procedure any more");
    }
}
