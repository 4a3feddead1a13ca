//! Chaos callers. A healthy caller joins over a random transport, pipelines calls (up to the
//! window in flight, paced) with a random mix of ops, timeouts, CANCELs in all three modes,
//! `receive_progress` and chunked calls, for a random while; then it stops calling, waits for its
//! answers and says GOODBYE. It checks every answer:
//!
//! - exactly one final answer (RESULT or ERROR) per call, no progressive RESULT it did not ask for
//!   and none after the final one, no answer for a request it never sent or had answered;
//! - within a bound: its timeout (or deliberate delay) plus the grace period;
//! - that fits the call: a RESULT carries back the call's own identity and bytes (and for a
//!   chunked call, every chunk), an ERROR's URI is one that what happened explains (its own
//!   CANCEL, its timeout, its callee's requested error, a callee that left or froze meanwhile, a
//!   procedure without members or with reluctant ones);
//! - and that the router never closes its session.
//!
//! A dropper joins, sends a few calls (some held, some chunked, some canceled) and drops its
//! connection mid-flight; nothing is checked for it but the router's state at the end.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use roundhouse::wire::{Dict, Message, MessageType, Payload, Value};
use tokio::time::{sleep_until, Instant};

use super::callee::MAX_DELAY;
use super::ledger::Snapshot;
use super::peer::{Peer, Transport};
use super::script::{Answer, Ask, Op, INTERRUPTED, PROCEDURES, REQUESTED_ERROR, STREAM};
use super::Ctx;

/// Features callers announce (for the caller role; harmless for the others).
const FEATURES: &[&str] =
    &["call_canceling", "call_timeout", "progressive_call_results", "progressive_call_invocations"];

/// How early a `wamp.error.timeout` may come (timer granularity).
const TIMEOUT_SLACK: Duration = Duration::from_millis(5);

/// The longest a caller waits between two chunks of a chunked call.
const CHUNK_GAP_MS: u64 = 50;

/// Latest point of a planned CANCEL after its CALL.
const CANCEL_WITHIN_MS: u64 = 400;

/// The CANCEL modes.
const MODES: [&str; 3] = ["skip", "kill", "killnowait"];

/// Runs healthy callers one after another in slot `slot` until the run stops.
pub async fn slot(ctx: Arc<Ctx>, slot: u64, mut rng: fastrand::Rng) {
    let mut n = 0;
    while !ctx.stop.is_cancelled() {
        n += 1;
        let transport = Transport::random(&mut rng);
        let name = format!("caller {slot}.{n} {}", transport.name());
        let life_ms = ctx.max_life.as_millis().max(1000) as u64;
        let lifetime = Duration::from_millis(rng.u64(life_ms / 4..=life_ms));
        let seed = rng.u64(..);
        healthy(&ctx, name, transport, lifetime, fastrand::Rng::with_seed(seed)).await;
    }
}

/// Runs droppers one after another in slot `slot` until the run stops.
pub async fn dropper_slot(ctx: Arc<Ctx>, slot: u64, mut rng: fastrand::Rng) {
    let mut n = 0;
    while !ctx.stop.is_cancelled() {
        n += 1;
        let transport = Transport::random(&mut rng);
        let name = format!("dropper {slot}.{n} {}", transport.name());
        match Peer::join(&ctx.endpoints, transport, FEATURES, ctx.grace).await {
            Ok(mut peer) => {
                ctx.ledger.case("caller drops mid-flight");
                let no = ctx.caller_number();
                let mut requests = Vec::new();
                for _ in 0..rng.u64(1..=6) {
                    let request = peer.tx.request_id();
                    let call = Plan::random(&mut rng, Instant::now()).call(no, request);
                    if peer.tx.feed(&call).await.is_err() {
                        break;
                    }
                    requests.push(request);
                }
                if rng.bool() {
                    if let Some(&request) = requests.first() {
                        let options = Dict::new().with("mode", MODES[rng.usize(..MODES.len())]);
                        let _ = peer.tx.feed(&Message::Cancel { request, options }).await;
                    }
                }
                let _ = peer.tx.flush().await;
                tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
                peer.drop_connection();
            }
            Err(e) => ctx.ledger.violation(&name, format!("could not join: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
    }
}

/// What one call will do, chosen before it is sent.
#[derive(Debug, Clone, Copy)]
struct Plan {
    procedure: usize,
    op: Op,
    timeout_ms: u64,
    cancel: Option<(&'static str, Instant)>,
    receive_progress: bool,
    blob: usize,
}

impl Plan {
    fn random(rng: &mut fastrand::Rng, now: Instant) -> Plan {
        let procedure = if rng.f64() < 0.15 { STREAM } else { rng.usize(..STREAM) };
        let op = if procedure == STREAM {
            Op::Chunk { index: 0, total: rng.u64(2..=6) }
        } else {
            match rng.u32(..100) {
                0..=44 => Op::Echo,
                45..=54 => Op::Fail,
                55..=66 => Op::Slow(rng.u64(10..=1500)),
                67..=79 => Op::Progress(rng.u64(1..=4)),
                _ => Op::Hold,
            }
        };
        let mut timeout_ms = if rng.f64() < 0.25 { rng.u64(50..=2000) } else { 0 };
        let mut cancel = (rng.f64() < 0.15).then(|| random_cancel(rng, now));
        if op == Op::Hold && timeout_ms == 0 && cancel.is_none() {
            // A held call must end somehow.
            if rng.bool() {
                timeout_ms = rng.u64(50..=1000);
            } else {
                cancel = Some(random_cancel(rng, now));
            }
        }
        let receive_progress = if matches!(op, Op::Progress(_)) { rng.f64() < 0.7 } else { rng.f64() < 0.1 };
        let blob = match rng.u32(..100) {
            0..=69 => rng.usize(0..=64),
            70..=94 => rng.usize(65..=1024),
            _ => rng.usize(4096..=16384),
        };
        Plan { procedure, op, timeout_ms, cancel, receive_progress, blob }
    }

    /// The CALL (the first chunk, for a chunked call).
    fn call(&self, caller: u64, request: u64) -> Message {
        let mut options = Dict::new();
        if self.timeout_ms > 0 {
            options.insert("timeout", self.timeout_ms);
        }
        if self.receive_progress {
            options.insert("receive_progress", true);
        }
        if matches!(self.op, Op::Chunk { .. }) {
            options.insert("progress", true);
        }
        let ask = Ask { caller, request, procedure: self.procedure, op: self.op, blob: self.blob };
        Message::Call {
            request,
            options,
            procedure: PROCEDURES[self.procedure].uri.into(),
            payload: Payload::args(ask.args()),
        }
    }

    /// How long the callee is asked to take, at most, on top of the grace period.
    fn allowance(&self) -> Duration {
        let deliberate = match self.op {
            Op::Slow(ms) => Duration::from_millis(ms),
            Op::Chunk { total, .. } => Duration::from_millis(total * CHUNK_GAP_MS),
            _ => Duration::ZERO,
        };
        Duration::from_millis(self.timeout_ms + CANCEL_WITHIN_MS) + deliberate + MAX_DELAY
    }
}

fn random_cancel(rng: &mut fastrand::Rng, now: Instant) -> (&'static str, Instant) {
    (MODES[rng.usize(..MODES.len())], now + Duration::from_millis(rng.u64(0..=CANCEL_WITHIN_MS)))
}

/// A call in flight.
struct Pending {
    plan: Plan,
    ask: Ask,
    sent: Instant,
    /// The CANCEL sent, if any.
    canceled: Option<&'static str>,
    progress_seen: u64,
    /// What the procedure's callees were doing when the call went out.
    snapshot: Snapshot,
    deadline: Instant,
    /// Reported as unanswered in time.
    overdue: bool,
    /// Chunks still to send: the next index and when.
    chunks: Option<(u64, Instant)>,
}

/// Chunks of a chunked call that ended early, still sent (the router must drop them).
struct Tail {
    ask: Ask,
    next: u64,
    at: Instant,
}

struct Caller<'a> {
    ctx: &'a Ctx,
    name: String,
    no: u64,
    rng: fastrand::Rng,
    pending: HashMap<u64, Pending>,
    tails: Vec<Tail>,
    last_request: u64,
}

async fn healthy(ctx: &Ctx, name: String, transport: Transport, lifetime: Duration, rng: fastrand::Rng) {
    let mut peer = match Peer::join(&ctx.endpoints, transport, FEATURES, ctx.grace).await {
        Ok(peer) => peer,
        Err(e) => {
            ctx.ledger.violation(&name, format!("could not join: {e}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    };
    ctx.ledger.case(&format!("caller over {}", transport.name()));
    let mut caller =
        Caller { ctx, name, no: ctx.caller_number(), rng, pending: HashMap::new(), tails: Vec::new(), last_request: 0 };
    if let Err(e) = caller.drive(&mut peer, Instant::now() + lifetime).await {
        let lost = caller.pending.len();
        return ctx.ledger.violation(&caller.name, format!("{e} ({lost} calls in flight lost)"));
    }
    let mut late = Vec::new();
    let left = peer.leave(ctx.grace, |message| late.push(message)).await;
    for message in late {
        caller.on_message(message);
    }
    if let Err(e) = left {
        ctx.ledger.violation(&caller.name, format!("could not leave: {e}"));
    }
}

impl Caller<'_> {
    /// Calls until `end` (or the run stops), then waits for the answers. `Err` when the session
    /// was lost.
    async fn drive(&mut self, peer: &mut Peer, end: Instant) -> Result<(), String> {
        let interval = self.ctx.interval;
        let mut next_send = Instant::now() + interval.mul_f64(self.rng.f64());
        let mut sending = true;
        loop {
            let now = Instant::now();
            if sending && (self.ctx.stop.is_cancelled() || now >= end) {
                sending = false;
            }
            if !sending && self.tails.is_empty() && self.pending.values().all(|p| p.overdue) {
                return Ok(());
            }
            let room = self.pending.len() < self.ctx.window;
            if sending && room && now >= next_send {
                self.call(peer, now).await?;
                next_send += interval;
                // After a stall, carry on at the pace rather than catch up in a burst.
                if next_send + interval * 4 < now {
                    next_send = now;
                }
            }
            self.due(peer, now).await?;
            let mut wake = now + Duration::from_millis(100);
            if sending && self.pending.len() < self.ctx.window {
                wake = wake.min(next_send);
            }
            for p in self.pending.values() {
                let cancel = p.plan.cancel.filter(|_| p.canceled.is_none()).map(|(_, at)| at);
                for at in [cancel, p.chunks.map(|(_, at)| at), (!p.overdue).then_some(p.deadline)].into_iter().flatten()
                {
                    wake = wake.min(at);
                }
            }
            for tail in &self.tails {
                wake = wake.min(tail.at);
            }
            tokio::select! {
                biased;
                message = peer.recv() => match message {
                    Ok(Message::Goodbye { reason, .. } | Message::Abort { reason, .. }) => {
                        return Err(format!("closed by the router while healthy: {reason}"));
                    }
                    Ok(message) => self.on_message(message),
                    Err(e) => return Err(format!("lost its session: {}", crate::wamp::describe(&e))),
                },
                _ = sleep_until(wake) => {}
            }
        }
    }

    async fn call(&mut self, peer: &mut Peer, now: Instant) -> Result<(), String> {
        let request = peer.tx.request_id();
        self.last_request = request;
        let plan = Plan::random(&mut self.rng, now);
        let ledger = &self.ctx.ledger;
        ledger.case(&format!("call: {}", plan.op.name()));
        if plan.timeout_ms > 0 {
            ledger.case("call with a timeout");
        }
        if plan.receive_progress {
            ledger.case("call with receive_progress");
        }
        let snapshot = ledger.procedure(plan.procedure).snapshot();
        let call = plan.call(self.no, request);
        peer.send(&call).await.map_err(|e| format!("lost its session sending CALL: {}", crate::wamp::describe(&e)))?;
        ledger.calls.fetch_add(1, Ordering::Relaxed);
        let ask = Ask { caller: self.no, request, procedure: plan.procedure, op: plan.op, blob: plan.blob };
        let chunks = matches!(plan.op, Op::Chunk { .. }).then(|| (1, now + self.chunk_gap()));
        let deadline = now + plan.allowance() + self.ctx.grace;
        self.pending.insert(
            request,
            Pending {
                plan,
                ask,
                sent: now,
                canceled: None,
                progress_seen: 0,
                snapshot,
                deadline,
                overdue: false,
                chunks,
            },
        );
        Ok(())
    }

    fn chunk_gap(&mut self) -> Duration {
        Duration::from_millis(self.rng.u64(0..=CHUNK_GAP_MS))
    }

    /// Sends the CANCELs and chunks that are due, and reports calls past their bound.
    async fn due(&mut self, peer: &mut Peer, now: Instant) -> Result<(), String> {
        let lost = |e: roundhouse::client::ClientError| format!("lost its session: {}", crate::wamp::describe(&e));
        let mut sends = Vec::new();
        let mut overdue = Vec::new();
        for (request, p) in self.pending.iter_mut() {
            if let Some((mode, at)) = p.plan.cancel {
                if p.canceled.is_none() && at <= now {
                    p.canceled = Some(mode);
                    self.ctx.ledger.case(&format!("cancel: {mode}"));
                    sends.push(Message::Cancel { request: *request, options: Dict::new().with("mode", mode) });
                }
            }
            if let Some((index, at)) = p.chunks {
                if at <= now {
                    sends.push(chunk(&p.ask, index));
                    let total = chunk_total(&p.ask);
                    let gap = Duration::from_millis(self.rng.u64(0..=CHUNK_GAP_MS));
                    p.chunks = (index + 1 < total).then_some((index + 1, now + gap));
                }
            }
            if !p.overdue && p.deadline <= now {
                p.overdue = true;
                overdue.push(format!(
                    "call {request} ({}) unanswered {:.1} s after it was sent; its bound was {:.1} s",
                    describe(p),
                    now.duration_since(p.sent).as_secs_f64(),
                    p.deadline.duration_since(p.sent).as_secs_f64()
                ));
            }
        }
        for what in overdue {
            self.ctx.ledger.violation(&self.name, what);
        }
        let mut i = 0;
        while i < self.tails.len() {
            let tail = &mut self.tails[i];
            if tail.at <= now {
                sends.push(chunk(&tail.ask, tail.next));
                tail.next += 1;
                tail.at = now + Duration::from_millis(self.rng.u64(0..=CHUNK_GAP_MS));
                if tail.next >= chunk_total(&tail.ask) {
                    self.tails.swap_remove(i);
                    self.ctx.ledger.case("chunks sent after their call ended");
                    continue;
                }
            }
            i += 1;
        }
        if sends.is_empty() {
            return Ok(());
        }
        for message in &sends {
            peer.tx.feed(message).await.map_err(lost)?;
        }
        peer.tx.flush().await.map_err(lost)
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Result { request, details, payload } => {
                let progressive = details.get("progress").and_then(Value::as_bool) == Some(true);
                let Some(p) = self.pending.get_mut(&request) else {
                    return self.stray(request, if progressive { "a progressive RESULT" } else { "a RESULT" });
                };
                if progressive {
                    self.ctx.ledger.answer("RESULT (progressive)", false);
                    p.progress_seen += 1;
                    let fits = p.plan.receive_progress && matches!(p.plan.op, Op::Progress(n) if p.progress_seen <= n);
                    let claim = Answer::parse(&payload);
                    let problem = match claim {
                        _ if !fits => Some(format!("progressive RESULT #{} it did not ask for", p.progress_seen)),
                        Ok(a) if (a.caller, a.request, a.n) != (p.ask.caller, p.ask.request, p.progress_seen) => {
                            Some(format!(
                                "progressive RESULT #{} claims to be #{} of call {}/{}",
                                p.progress_seen, a.n, a.caller, a.request
                            ))
                        }
                        Ok(_) => None,
                        Err(e) => Some(format!("progressive RESULT: {e}")),
                    };
                    if let Some(problem) = problem {
                        let what = format!("call {request} ({}): {problem}", describe(p));
                        self.ctx.ledger.violation(&self.name, what);
                    }
                    return;
                }
                let p = self.pending.remove(&request).expect("checked above");
                self.ctx.ledger.answer("RESULT", true);
                if let Err(problem) = judge_result(&p, &payload) {
                    self.ctx.ledger.violation(&self.name, format!("call {request} ({}): {problem}", describe(&p)));
                }
                self.record(&p);
                self.tail(p);
            }
            Message::Error { request_type, request, error, payload, .. } => {
                if request_type != MessageType::Call as u64 {
                    let what = format!("ERROR {error} for request {request} of type {request_type}");
                    return self.ctx.ledger.violation(&self.name, what);
                }
                let Some(p) = self.pending.remove(&request) else {
                    return self.stray(request, &format!("an ERROR {error}"));
                };
                self.ctx.ledger.answer(&format!("ERROR {error}"), true);
                let now = self.ctx.ledger.procedure(p.plan.procedure).snapshot();
                if let Err(problem) = judge_error(&p, &error, &payload, &now) {
                    self.ctx.ledger.violation(&self.name, format!("call {request} ({}): {problem}", describe(&p)));
                }
                self.tail(p);
            }
            other => {
                let what = format!("unexpected {:?}", other.message_type());
                self.ctx.ledger.violation(&self.name, what);
            }
        }
    }

    /// An answer for a request not in flight.
    fn stray(&self, request: u64, what: &str) {
        let why = if request > self.last_request || request == 0 { "it never sent" } else { "already answered" };
        self.ctx.ledger.violation(&self.name, format!("{what} for request {request}, which {why}"));
    }

    /// Plain echoes answered: their latency says how the router treats healthy calls meanwhile.
    fn record(&self, p: &Pending) {
        if p.plan.op == Op::Echo && p.canceled.is_none() && p.plan.timeout_ms == 0 {
            let nanos = u64::try_from(p.sent.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
            self.ctx.ledger.latency.lock().expect("ledger lock").saturating_record(nanos);
        }
    }

    /// A chunked call that ended before all its chunks went out keeps sending them.
    fn tail(&mut self, p: Pending) {
        if let Some((next, at)) = p.chunks {
            self.tails.push(Tail { ask: p.ask, next, at });
        }
    }
}

fn chunk_total(ask: &Ask) -> u64 {
    match ask.op {
        Op::Chunk { total, .. } => total,
        _ => 1,
    }
}

fn chunk(ask: &Ask, index: u64) -> Message {
    let total = chunk_total(ask);
    let options = if index + 1 < total { Dict::new().with("progress", true) } else { Dict::new() };
    let ask = Ask { op: Op::Chunk { index, total }, ..*ask };
    Message::Call {
        request: ask.request,
        options,
        procedure: PROCEDURES[ask.procedure].uri.into(),
        payload: Payload::args(ask.args()),
    }
}

/// A call in words, for violations.
fn describe(p: &Pending) -> String {
    let mut text = format!("{} to {}", p.plan.op.name(), PROCEDURES[p.plan.procedure].uri);
    match p.plan.op {
        Op::Slow(ms) => text.push_str(&format!(" {ms} ms")),
        Op::Progress(n) => text.push_str(&format!(" ×{n}")),
        Op::Chunk { total, .. } => text.push_str(&format!(" in {total} chunks")),
        _ => {}
    }
    if p.plan.timeout_ms > 0 {
        text.push_str(&format!(", timeout {} ms", p.plan.timeout_ms));
    }
    if let Some(mode) = p.canceled {
        text.push_str(&format!(", canceled ({mode})"));
    }
    if p.plan.receive_progress {
        text.push_str(", receive_progress");
    }
    text
}

/// Whether a final RESULT fits the call.
fn judge_result(p: &Pending, payload: &Payload) -> Result<(), String> {
    let expected_n = match p.plan.op {
        Op::Echo | Op::Slow(_) => 0,
        Op::Progress(n) => {
            if p.progress_seen != 0 && p.progress_seen != n {
                return Err(format!("RESULT after {} of the {n} progressive results", p.progress_seen));
            }
            n
        }
        Op::Chunk { total, .. } => total,
        Op::Fail | Op::Hold => return Err("RESULT, though its callee never answers such a call with one".into()),
    };
    let answer = Answer::parse(payload).map_err(|e| format!("RESULT: {e}"))?;
    if (answer.caller, answer.request) != (p.ask.caller, p.ask.request) {
        return Err(format!("RESULT of call {}/{}", answer.caller, answer.request));
    }
    if answer.n != expected_n {
        return Err(match p.plan.op {
            Op::Chunk { total, .. } => format!("the callee got {} of the {total} chunks", answer.n),
            _ => format!("RESULT says {} where {expected_n} was expected", answer.n),
        });
    }
    if answer.blob != Some(p.ask.blob) {
        return Err(format!("RESULT does not carry back the call's {} bytes intact", p.ask.blob));
    }
    Ok(())
}

/// Whether an ERROR fits what happened to the call.
fn judge_error(p: &Pending, error: &str, payload: &Payload, now: &Snapshot) -> Result<(), String> {
    let fits = match error {
        REQUESTED_ERROR => {
            let answer = Answer::parse(payload).map_err(|e| format!("ERROR {error}: {e}"))?;
            p.plan.op == Op::Fail && (answer.caller, answer.request) == (p.ask.caller, p.ask.request)
        }
        INTERRUPTED => p.canceled == Some("kill"),
        "wamp.error.canceled" => p.canceled.is_some() || p.snapshot.explains_canceled(now),
        "wamp.error.timeout" => {
            p.plan.timeout_ms > 0 && p.sent.elapsed() + TIMEOUT_SLACK >= Duration::from_millis(p.plan.timeout_ms)
        }
        "wamp.error.no_such_procedure" => p.snapshot.explains_no_such_procedure(now),
        "wamp.error.no_available_callee" => p.snapshot.explains_no_available_callee(now),
        _ => false,
    };
    if fits {
        return Ok(());
    }
    let text = payload
        .to_values()
        .ok()
        .and_then(|(args, _)| args.first().and_then(Value::as_str).map(str::to_owned))
        .map(|t| format!(" (\"{t}\")"))
        .unwrap_or_default();
    Err(format!(
        "ERROR {error}{text} after {:.3} s, which nothing that happened explains (callees of the procedure then/now: {:?} / {:?})",
        p.sent.elapsed().as_secs_f64(),
        p.snapshot,
        now
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(members: i64, departed: u64) -> Snapshot {
        Snapshot { members, emptied: 0, departing: 0, departed, reluctant: 0, reluctant_joined: 0 }
    }

    fn pending(op: Op, timeout_ms: u64, canceled: Option<&'static str>) -> Pending {
        let now = Instant::now();
        let procedure = if matches!(op, Op::Chunk { .. }) { STREAM } else { 1 };
        let plan = Plan { procedure, op, timeout_ms, cancel: None, receive_progress: false, blob: 10 };
        Pending {
            plan,
            ask: Ask { caller: 3, request: 9, procedure, op, blob: 10 },
            sent: now,
            canceled,
            progress_seen: 0,
            snapshot: snapshot(1, 5),
            deadline: now + Duration::from_secs(60),
            overdue: false,
            chunks: None,
        }
    }

    #[test]
    fn a_result_must_be_the_calls_own_and_complete() {
        let echo = pending(Op::Echo, 0, None);
        assert!(judge_result(&echo, &echo.ask.answer(0, true)).is_ok());
        assert!(judge_result(&echo, &echo.ask.answer(0, false)).is_err(), "its bytes are missing");
        let other = Ask { request: 8, ..echo.ask };
        assert!(judge_result(&echo, &other.answer(0, true)).is_err(), "another call's answer");
        let fail = pending(Op::Fail, 0, None);
        assert!(judge_result(&fail, &fail.ask.answer(0, true)).is_err(), "a RESULT where the callee fails");
        let chunked = pending(Op::Chunk { index: 0, total: 4 }, 0, None);
        assert!(judge_result(&chunked, &chunked.ask.answer(4, true)).is_ok());
        assert!(judge_result(&chunked, &chunked.ask.answer(3, true)).is_err(), "a chunk went missing");
        let mut progress = pending(Op::Progress(3), 0, None);
        progress.progress_seen = 2;
        assert!(judge_result(&progress, &progress.ask.answer(3, true)).is_err(), "progressive results lost");
        progress.progress_seen = 3;
        assert!(judge_result(&progress, &progress.ask.answer(3, true)).is_ok());
    }

    #[test]
    fn an_error_must_fit_what_happened() {
        let none = Payload::Empty;
        let quiet = snapshot(1, 5);
        let echo = pending(Op::Echo, 0, None);
        assert!(judge_error(&echo, "wamp.error.canceled", &none, &quiet).is_err(), "nobody left, nobody canceled");
        assert!(judge_error(&echo, "wamp.error.canceled", &none, &snapshot(1, 6)).is_ok(), "a callee left");
        assert!(judge_error(&pending(Op::Echo, 0, Some("skip")), "wamp.error.canceled", &none, &quiet).is_ok());
        assert!(judge_error(&pending(Op::Hold, 0, Some("skip")), INTERRUPTED, &none, &quiet).is_err());
        assert!(judge_error(&pending(Op::Hold, 0, Some("kill")), INTERRUPTED, &none, &quiet).is_ok());
        assert!(judge_error(&echo, "wamp.error.timeout", &none, &quiet).is_err(), "no timeout was asked for");
        assert!(
            judge_error(&pending(Op::Hold, 60_000, None), "wamp.error.timeout", &none, &quiet).is_err(),
            "too early"
        );
        let mut timed = pending(Op::Hold, 50, None);
        timed.sent -= Duration::from_millis(60);
        assert!(judge_error(&timed, "wamp.error.timeout", &none, &quiet).is_ok());
        assert!(judge_error(&echo, "wamp.error.no_such_procedure", &none, &quiet).is_err());
        assert!(judge_error(&echo, "wamp.error.no_such_procedure", &none, &snapshot(0, 5)).is_ok());
        assert!(judge_error(&echo, "wamp.error.unavailable", &none, &snapshot(0, 9)).is_err(), "never forwarded");
        let fail = pending(Op::Fail, 0, None);
        assert!(judge_error(&fail, REQUESTED_ERROR, &fail.ask.answer(0, false), &quiet).is_ok());
        assert!(judge_error(&echo, REQUESTED_ERROR, &echo.ask.answer(0, false), &quiet).is_err());
    }

    #[test]
    fn every_planned_call_can_end() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let plan = Plan::random(&mut rng, Instant::now());
            assert_eq!(matches!(plan.op, Op::Chunk { .. }), plan.procedure == STREAM);
            if plan.op == Op::Hold {
                assert!(plan.timeout_ms > 0 || plan.cancel.is_some(), "a held call with neither timeout nor cancel");
            }
        }
    }
}
