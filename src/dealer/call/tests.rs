//! Unit, property and model tests of the in-flight state machine on in-memory sessions.

use super::*;
use crate::dealer::registry::Registry;
use crate::dealer::rule::InvocationRule;
use crate::dealer::{Callee, Registration};
use crate::session::outbox::OutboxLimits;
use tokio::sync::mpsc::UnboundedReceiver;

fn session(id: u64) -> (Arc<SessionHandle>, UnboundedReceiver<Outbound>) {
    let limits =
        OutboxLimits { max_bytes: 1 << 30, slow_consumer_bytes: 1 << 31, stuck_timeout: Duration::from_secs(5) };
    SessionHandle::new(id, crate::wire::Serializer::Json, limits)
}

fn registration(callee: &Arc<SessionHandle>) -> Arc<Registration> {
    let registry = Registry::new(1);
    let member = Callee::new(callee.clone(), Default::default(), None);
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

fn open(caller: &Arc<SessionHandle>, callee: &Arc<SessionHandle>, request: u64, streaming: bool) -> Box<Invocation> {
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
        callee.set_identity(crate::session::Identity {
            authid: "c".into(),
            authrole: "r".into(),
            authmethod: "anonymous",
            authprovider: "static",
            features,
        });
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
        callee.set_identity(crate::session::Identity {
            authid: "c".into(),
            authrole: "r".into(),
            authmethod: "anonymous",
            authprovider: "static",
            features,
        });
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
