//! Chaos callees: each joins over a random transport, registers one to three procedures, serves for
//! a random while and then leaves in one of four ways — UNREGISTER (then GOODBYE once its calls are
//! answered), GOODBYE, a dropped connection, or freezing (it stops reading and stays connected until
//! the router closes it). Each has a personality: the features it announces, how slowly it
//! answers, whether it answers some calls `wamp.error.unavailable`, and whether it sends
//! progressive results nobody asked for.
//!
//! A callee also checks the router: every INVOCATION must be a chaos call (nothing a hostile peer
//! sent), reach the registration of the procedure it was made for, carry a fresh id (or continue a
//! progressive invocation in order), and never come for a registration after its UNREGISTERED;
//! INTERRUPT only if it announced `call_canceling`; and the router must not close it while it is
//! healthy, and must announce it gone (`wamp.session.on_leave`) within the grace period once it
//! froze or dropped its connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use roundhouse::client::ClientError;
use roundhouse::wire::{Dict, Message, MessageType, Payload, Value};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

use super::peer::{Peer, Transport};
use super::script::{Ask, Op, BAD_CALL, INTERRUPTED, PROCEDURES, REQUESTED_ERROR};
use super::Ctx;

/// The longest a callee delays an answer of its own accord (a call's own `slow` comes on top).
pub const MAX_DELAY: Duration = Duration::from_millis(800);

/// How a callee leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    Unregister,
    Goodbye,
    Drop,
    Freeze,
}

impl Leave {
    fn name(self) -> &'static str {
        match self {
            Leave::Unregister => "unregister",
            Leave::Goodbye => "goodbye",
            Leave::Drop => "drop",
            Leave::Freeze => "freeze",
        }
    }
}

struct Personality {
    transport: Transport,
    canceling: bool,
    progressive_results: bool,
    procedures: Vec<usize>,
    /// Chance of answering a call `wamp.error.unavailable` (never a chunked one).
    reluctance: f64,
    /// Longest delay before answering.
    delay: Duration,
    /// Sends progressive results even when the call did not ask for them.
    sloppy: bool,
    lifetime: Duration,
    leave: Leave,
}

impl Personality {
    /// A random callee; once the run is winding down (`tame`), one that only leaves politely.
    fn random(rng: &mut fastrand::Rng, max_life: Duration, tame: bool) -> Personality {
        let mut procedures = vec![rng.usize(..PROCEDURES.len())];
        for _ in 0..rng.usize(..3) {
            let other = rng.usize(..PROCEDURES.len());
            if !procedures.contains(&other) {
                procedures.push(other);
            }
        }
        let leave = match rng.u8(..4) {
            0 => Leave::Unregister,
            1 => Leave::Goodbye,
            2 => Leave::Drop,
            _ => Leave::Freeze,
        };
        let life_ms = max_life.as_millis().max(1000) as u64;
        Personality {
            transport: Transport::random(rng),
            canceling: rng.f64() < 0.7,
            progressive_results: rng.f64() < 0.6,
            procedures,
            reluctance: if !tame && rng.f64() < 0.25 { 0.3 } else { 0.0 },
            delay: if rng.f64() < 0.3 { MAX_DELAY.mul_f64(rng.f64()) } else { Duration::ZERO },
            sloppy: rng.f64() < 0.2,
            lifetime: Duration::from_millis(rng.u64(life_ms / 4..=life_ms)),
            leave: if tame { Leave::Goodbye } else { leave },
        }
    }

    fn features(&self) -> Vec<&'static str> {
        let mut features = vec!["progressive_call_invocations"];
        if self.canceling {
            features.push("call_canceling");
        }
        if self.progressive_results {
            features.push("progressive_call_results");
        }
        features
    }
}

/// Runs callees one after another in slot `slot` until the run ends.
pub async fn slot(ctx: Arc<Ctx>, slot: u64, mut rng: fastrand::Rng) {
    let mut n = 0;
    while !ctx.callees_off.is_cancelled() {
        n += 1;
        let personality = Personality::random(&mut rng, ctx.max_life, ctx.stop.is_cancelled());
        let name = format!("callee {slot}.{n} {}", personality.transport.name());
        let seed = rng.u64(..);
        Callee::run(ctx.clone(), name, personality, fastrand::Rng::with_seed(seed)).await;
        let pause = Instant::now() + Duration::from_millis(rng.u64(0..300));
        tokio::select! {
            _ = sleep_until(pause) => {}
            _ = ctx.callees_off.cancelled() => {}
        }
    }
}

/// An answer waiting for its time.
struct Job {
    ask: Ask,
    /// When to answer; `None` while it holds (or waits for more chunks).
    due: Option<Instant>,
    /// Chunks received, for a progressive invocation.
    chunks: u64,
    registration: u64,
}

/// How serving ended.
enum Exit {
    /// Say GOODBYE.
    Goodbye,
    /// Drop the connection without a word.
    Drop,
    /// Nothing left to do (the router closed the frozen callee).
    Closed,
}

enum Phase {
    /// Sending REGISTERs; the set holds the requests not answered yet.
    Registering(HashMap<u64, usize>),
    Serving,
    /// Sent UNREGISTER for these registrations, waiting for UNREGISTERED.
    Unregistering(HashMap<u64, u64>),
    /// Answering the calls it still holds, then GOODBYE.
    Draining,
}

struct Callee {
    ctx: Arc<Ctx>,
    name: String,
    me: Personality,
    rng: fastrand::Rng,
    peer: Peer,
    /// Registration id → procedure index.
    registrations: HashMap<u64, usize>,
    /// Registrations whose UNREGISTERED arrived.
    unregistered: HashSet<u64>,
    /// Members counted in the ledger (so leaving uncounts exactly those).
    counted: Vec<usize>,
    highest: u64,
    jobs: HashMap<u64, Job>,
    /// Progressive invocations it ended on INTERRUPT: chunks the router forwarded before it saw
    /// the answer may still come (a `kill` cancel keeps the call open until the callee answers).
    interrupted: HashSet<u64>,
    phase: Phase,
}

impl Callee {
    async fn run(ctx: Arc<Ctx>, name: String, me: Personality, rng: fastrand::Rng) {
        let features = me.features();
        let peer = match Peer::join(&ctx.endpoints, me.transport, &features, ctx.grace).await {
            Ok(peer) => peer,
            Err(e) => return ctx.ledger.violation(&name, format!("could not join: {e}")),
        };
        let mut callee = Callee {
            ctx,
            name,
            me,
            rng,
            peer,
            registrations: HashMap::new(),
            unregistered: HashSet::new(),
            counted: Vec::new(),
            highest: 0,
            jobs: HashMap::new(),
            interrupted: HashSet::new(),
            phase: Phase::Serving,
        };
        callee.ctx.ledger.case(&format!("callee over {}", callee.me.transport.name()));
        let ctx = callee.ctx.clone();
        match callee.serve().await {
            Ok(Exit::Goodbye) => {
                // Calls it still holds end with the GOODBYE; once the router's GOODBYE is here,
                // it routes nothing more to this callee.
                let departing = callee.depart();
                callee.goodbye().await;
                departed(&ctx, &departing);
            }
            Ok(Exit::Drop) => {
                let gone = ctx.watcher.expect(callee.peer.session);
                let departing = callee.depart();
                let name = std::mem::take(&mut callee.name);
                drop(callee);
                departed_when(&ctx, &name, &departing, gone, true).await;
            }
            Ok(Exit::Closed) => {}
            Err(e) => {
                // The connection is dropped: calls it holds end.
                callee.uncount();
                let gone = ctx.watcher.expect(callee.peer.session);
                let departing = callee.depart();
                callee.ctx.ledger.violation(&callee.name, e);
                drop(callee);
                departed_when(&ctx, "", &departing, gone, false).await;
            }
        }
    }

    /// A departure that may cancel the calls it holds begins: for each procedure it registered.
    fn depart(&self) -> Vec<usize> {
        let procedures: Vec<usize> = self.registrations.values().copied().collect();
        for &procedure in &procedures {
            self.ctx.ledger.procedure(procedure).depart();
        }
        procedures
    }

    /// Registers, serves, and leaves as its personality says, short of the GOODBYE. `Err` is a
    /// violation.
    async fn serve(&mut self) -> Result<Exit, String> {
        let mut requests = HashMap::new();
        for &procedure in &self.me.procedures {
            let request = self.peer.tx.request_id();
            let options = Dict::new().with("invoke", PROCEDURES[procedure].rule);
            let register = Message::Register { request, options, procedure: PROCEDURES[procedure].uri.into() };
            self.peer.send(&register).await.map_err(|e| lost("REGISTER", &e))?;
            requests.insert(request, procedure);
        }
        self.phase = Phase::Registering(requests);
        let joined = Instant::now();
        let registered_by = joined + self.ctx.grace;
        let mut leave_at = joined + self.me.lifetime;
        let mut leaving = false;
        loop {
            let now = Instant::now();
            if let Phase::Registering(waiting) = &self.phase {
                if waiting.is_empty() {
                    self.phase = Phase::Serving;
                    leave_at = Instant::now() + self.me.lifetime;
                } else if now >= registered_by {
                    return Err(format!("no answer to REGISTER within {:?}", self.ctx.grace));
                }
            }
            if matches!(self.phase, Phase::Serving) && self.registrations.is_empty() {
                // Nothing registered (`single` was taken): leave quietly.
                return Ok(Exit::Goodbye);
            }
            let off = self.ctx.callees_off.is_cancelled();
            if matches!(self.phase, Phase::Serving) && !leaving && (now >= leave_at || off) {
                leaving = true;
                let how = if off { Leave::Goodbye } else { self.me.leave };
                if !off {
                    self.ctx.ledger.case(&format!("callee leaves: {}", how.name()));
                }
                match how {
                    Leave::Goodbye => {
                        self.uncount();
                        return Ok(Exit::Goodbye);
                    }
                    Leave::Drop => {
                        self.uncount();
                        return Ok(Exit::Drop);
                    }
                    Leave::Freeze => return self.freeze().await.map(|()| Exit::Closed),
                    Leave::Unregister => {
                        self.unregister().await?;
                        leave_at = now + self.ctx.grace;
                    }
                }
            }
            if let Phase::Unregistering(waiting) = &self.phase {
                if waiting.is_empty() {
                    self.phase = Phase::Draining;
                    // Long enough for the slowest answer it may owe: a call's own delay (up to
                    // 1.5 s) plus its own.
                    leave_at = now + MAX_DELAY + Duration::from_millis(1600);
                } else if now >= leave_at {
                    return Err(format!("no UNREGISTERED within {:?}", self.ctx.grace));
                }
            }
            if matches!(self.phase, Phase::Draining)
                && (now >= leave_at || !self.jobs.values().any(|j| j.due.is_some()))
            {
                // Calls it holds (no answer due) end for their callers with wamp.error.canceled.
                self.uncount();
                return Ok(Exit::Goodbye);
            }
            self.answer_due(now).await?;
            let next = self.jobs.values().filter_map(|j| j.due).min();
            let wake = [Some(leave_at), next, Some(now + Duration::from_millis(100))].into_iter().flatten().min();
            let wake = wake.unwrap_or(now);
            tokio::select! {
                biased;
                message = self.peer.recv() => match message {
                    Ok(message) => self.on_message(message).await?,
                    Err(e) => return Err(format!("lost its session while healthy: {}", crate::wamp::describe(&e))),
                },
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// Uncounts its memberships, before a departure the router will see.
    fn uncount(&mut self) {
        let reluctant = self.me.reluctance > 0.0;
        for procedure in self.counted.drain(..) {
            self.ctx.ledger.procedure(procedure).leave(reluctant);
        }
    }

    /// Says GOODBYE; violations are recorded.
    async fn goodbye(self) {
        let (ctx, name) = (self.ctx, self.name);
        let mut unexpected = None;
        let result = self
            .peer
            .leave(ctx.grace, |message| match message {
                // Calls that were on their way; their callers get wamp.error.canceled.
                Message::Invocation { .. } | Message::Interrupt { .. } => {}
                other => unexpected = Some(other),
            })
            .await;
        if let Some(other) = unexpected {
            ctx.ledger.violation(&name, format!("got {:?} while leaving", other.message_type()));
        }
        if let Err(e) = result {
            ctx.ledger.violation(&name, format!("could not leave: {e}"));
        }
    }

    async fn unregister(&mut self) -> Result<(), String> {
        // Uncounted first: from the UNREGISTER on, the router may have no member. Calls it runs
        // are still answered, so this is no departure yet.
        self.uncount();
        let mut waiting = HashMap::new();
        let registrations: Vec<u64> = self.registrations.keys().copied().collect();
        for registration in registrations {
            let request = self.peer.tx.request_id();
            self.peer.send(&Message::Unregister { request, registration }).await.map_err(|e| lost("UNREGISTER", &e))?;
            waiting.insert(request, registration);
        }
        self.phase = Phase::Unregistering(waiting);
        Ok(())
    }

    /// Stops reading (and answering pings) and stays connected until the router says it has
    /// closed the session, which it must within the grace period.
    async fn freeze(&mut self) -> Result<(), String> {
        let gone = self.ctx.watcher.expect(self.peer.session);
        self.uncount();
        let departing = self.depart();
        let closed = tokio::time::timeout(self.ctx.grace, gone).await;
        departed(&self.ctx, &departing);
        match closed {
            Ok(Ok(())) => Ok(()),
            _ => Err(format!("froze, and the router had not closed it after {:?}", self.ctx.grace)),
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), String> {
        match message {
            Message::Registered { request, registration } => {
                let Phase::Registering(waiting) = &mut self.phase else {
                    return Err(format!("REGISTERED for request {request} it was not waiting for"));
                };
                let procedure =
                    waiting.remove(&request).ok_or_else(|| format!("REGISTERED for unknown request {request}"))?;
                self.registrations.insert(registration, procedure);
                self.counted.push(procedure);
                self.ctx.ledger.procedure(procedure).join(self.me.reluctance > 0.0);
            }
            Message::Error { request_type, request, error, .. } if request_type == MessageType::Register as u64 => {
                let Phase::Registering(waiting) = &mut self.phase else {
                    return Err(format!("ERROR {error} for a REGISTER it was not waiting for"));
                };
                let procedure =
                    waiting.remove(&request).ok_or_else(|| format!("ERROR for unknown REGISTER {request}"))?;
                if !(error == "wamp.error.procedure_already_exists" && PROCEDURES[procedure].rule == "single") {
                    return Err(format!("REGISTER {} refused: {error}", PROCEDURES[procedure].uri));
                }
                self.ctx.ledger.case("callee finds single taken");
            }
            Message::Unregistered { request, .. } => {
                let Phase::Unregistering(waiting) = &mut self.phase else {
                    return Err(format!("UNREGISTERED (request {request}) it did not ask for"));
                };
                let registration =
                    waiting.remove(&request).ok_or_else(|| format!("UNREGISTERED for unknown request {request}"))?;
                self.unregistered.insert(registration);
            }
            Message::Invocation { request, registration, details, payload } => {
                self.on_invocation(request, registration, &details, &payload).await?;
            }
            Message::Interrupt { request, .. } => {
                if !self.me.canceling {
                    return Err(format!("INTERRUPT for {request} though it did not announce call_canceling"));
                }
                if let Some(job) = self.jobs.remove(&request) {
                    if matches!(job.ask.op, Op::Chunk { .. }) {
                        self.interrupted.insert(request);
                    }
                    let error = Message::error(MessageType::Invocation, request, INTERRUPTED, Payload::Empty);
                    self.peer.send(&error).await.map_err(|e| lost("ERROR", &e))?;
                }
            }
            Message::Goodbye { reason, .. } | Message::Abort { reason, .. } => {
                return Err(format!("closed by the router while healthy: {reason}"));
            }
            other => return Err(format!("unexpected {:?}", other.message_type())),
        }
        Ok(())
    }

    async fn on_invocation(
        &mut self,
        request: u64,
        registration: u64,
        details: &Dict,
        payload: &Payload,
    ) -> Result<(), String> {
        let progress = details.get("progress").and_then(Value::as_bool) == Some(true);
        let Some(&procedure) = self.registrations.get(&registration) else {
            return Err(format!("INVOCATION {request} for registration {registration}, which it does not hold"));
        };
        let ask = payload.to_values().ok().and_then(|(args, _)| Ask::parse(&args));
        if request <= self.highest {
            // Only a further chunk of a progressive invocation may reuse an id.
            if self.interrupted.contains(&request) && matches!(ask, Some(Ask { op: Op::Chunk { .. }, .. })) {
                return Ok(());
            }
            let delay = self.delay();
            let Some(job) = self.jobs.get_mut(&request) else {
                return Err(format!("INVOCATION {request} reuses the id of an invocation that has ended"));
            };
            let Some(Ask { op: Op::Chunk { index, total }, caller, request: asked, .. }) = ask else {
                return Err(format!("INVOCATION {request} reuses the id of a call in flight"));
            };
            if (caller, asked) != (job.ask.caller, job.ask.request) {
                return Err(format!(
                    "a chunk of call {caller}/{asked} came as INVOCATION {request}, which is call {}/{}",
                    job.ask.caller, job.ask.request
                ));
            }
            let expected = job.chunks;
            if job.due.is_some()
                || registration != job.registration
                || index != expected
                || progress != (index + 1 < total)
            {
                return Err(format!(
                    "chunk {index}/{total} (progress {progress}) of INVOCATION {request} arrived out of order: \
                     expected chunk {expected}"
                ));
            }
            job.chunks += 1;
            if !progress {
                job.due = Some(Instant::now() + delay);
            }
            return Ok(());
        }
        self.highest = request;
        if self.unregistered.contains(&registration) {
            return Err(format!("INVOCATION {request} for registration {registration} after its UNREGISTERED"));
        }
        let Some(ask) = ask else {
            let args = payload.to_values().map(|(a, _)| super::script::short(&a)).unwrap_or_else(|e| e.to_string());
            self.ctx.ledger.violation(&self.name, format!("got a call no chaos caller made: arguments {args}"));
            let error = Message::error(MessageType::Invocation, request, BAD_CALL, Payload::Empty);
            return self.peer.send(&error).await.map_err(|e| lost("ERROR", &e));
        };
        if ask.procedure != procedure {
            return Err(format!(
                "a call to {} reached its registration of {}",
                PROCEDURES[ask.procedure].uri, PROCEDURES[procedure].uri
            ));
        }
        let chunked = matches!(ask.op, Op::Chunk { .. });
        if chunked != PROCEDURES[procedure].stream || chunked != progress {
            return Err(format!(
                "INVOCATION {request} ({} to {}) with progress {progress}",
                ask.op.name(),
                PROCEDURES[procedure].uri
            ));
        }
        if !chunked && self.me.reluctance > 0.0 && self.rng.f64() < self.me.reluctance {
            let error = Message::error(MessageType::Invocation, request, "wamp.error.unavailable", Payload::Empty);
            return self.peer.send(&error).await.map_err(|e| lost("ERROR", &e));
        }
        let now = Instant::now();
        let due = match ask.op {
            Op::Echo | Op::Fail => Some(now + self.delay()),
            Op::Slow(ms) => Some(now + Duration::from_millis(ms) + self.delay()),
            Op::Progress(n) => {
                if details.get("receive_progress").and_then(Value::as_bool) == Some(true) || self.me.sloppy {
                    for i in 1..=n {
                        let message = Message::Yield {
                            request,
                            options: Dict::new().with("progress", true),
                            payload: ask.answer(i, false),
                        };
                        self.peer.tx.feed(&message).await.map_err(|e| lost("YIELD", &e))?;
                    }
                    self.peer.tx.flush().await.map_err(|e| lost("YIELD", &e))?;
                }
                Some(now + self.delay())
            }
            Op::Hold | Op::Chunk { .. } => None,
        };
        self.jobs.insert(request, Job { ask, due, chunks: u64::from(chunked), registration });
        Ok(())
    }

    fn delay(&mut self) -> Duration {
        self.me.delay.mul_f64(self.rng.f64())
    }

    /// Sends every answer that is due.
    async fn answer_due(&mut self, now: Instant) -> Result<(), String> {
        let due: Vec<u64> =
            self.jobs.iter().filter(|(_, j)| j.due.is_some_and(|d| d <= now)).map(|(r, _)| *r).collect();
        if due.is_empty() {
            return Ok(());
        }
        for request in due {
            let Some(job) = self.jobs.remove(&request) else { continue };
            let answer = match job.ask.op {
                Op::Fail => Message::error(MessageType::Invocation, request, REQUESTED_ERROR, job.ask.answer(0, false)),
                Op::Chunk { .. } => {
                    Message::Yield { request, options: Dict::new(), payload: job.ask.answer(job.chunks, true) }
                }
                Op::Progress(n) => Message::Yield { request, options: Dict::new(), payload: job.ask.answer(n, true) },
                _ => Message::Yield { request, options: Dict::new(), payload: job.ask.answer(0, true) },
            };
            self.peer.tx.feed(&answer).await.map_err(|e| lost("YIELD", &e))?;
        }
        self.peer.tx.flush().await.map_err(|e| lost("YIELD", &e))
    }
}

/// The router has surely acted on a departure from `procedures`.
fn departed(ctx: &Ctx, procedures: &[usize]) {
    for &procedure in procedures {
        ctx.ledger.procedure(procedure).departed();
    }
}

/// A dropped connection: the departure is over when the router says the session left, which it
/// must within the grace period (a violation otherwise, when `check`).
async fn departed_when(ctx: &Ctx, name: &str, procedures: &[usize], gone: oneshot::Receiver<()>, check: bool) {
    let seen = tokio::time::timeout(ctx.grace, gone).await;
    departed(ctx, procedures);
    if check && !matches!(seen, Ok(Ok(()))) {
        let what = format!("dropped its connection, and the router had not seen it go after {:?}", ctx.grace);
        ctx.ledger.violation(name, what);
    }
}

fn lost(what: &str, error: &ClientError) -> String {
    format!("lost its session sending {what}: {}", crate::wamp::describe(error))
}
