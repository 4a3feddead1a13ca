//! A caller: one session keeping up to `window` calls in flight, in a closed loop or at a fixed rate.
//!
//! One task does both directions: it feeds every call it may send and flushes once, then waits for a
//! reply, takes every further reply already received without waiting, and goes round again. A call
//! is timed from its intended send time (the moment it was due, with a rate; the moment it was
//! written, without) to the moment its RESULT is decoded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hdrhistogram::Histogram;
use roundhouse::client::{ClientError, Receiver, Sender};
use roundhouse::wire::{Message, Value};
use tokio::time::Instant;

use crate::progress::Counters;
use crate::report::new_histogram;
use crate::timer::PreciseTimer;
use crate::wamp;

/// What every caller of a run shares.
pub struct Plan {
    /// When load starts.
    pub start: Instant,
    /// When measuring starts (end of warmup).
    pub measure_from: Instant,
    /// When measuring, and sending, ends.
    pub measure_until: Instant,
    /// How long calls in flight at the end may take.
    pub drain: Duration,
    /// Most calls in flight per caller.
    pub window: usize,
    /// With a rate: the time between two calls of one caller.
    pub interval: Option<Duration>,
    /// Caller sessions (to stagger their schedules).
    pub callers: usize,
    /// Each call carries `rkey` (its request id modulo 1024), for keyed rules.
    pub keyed: bool,
    /// The CALL to send (its request id is set per call).
    pub call: Message,
    /// The arguments each RESULT should carry back.
    pub expected: Vec<Value>,
}

/// What one caller saw.
pub struct CallerOutcome {
    /// Latency from the intended send time, of calls due before the measurement ended and answered
    /// after it started (ns).
    pub latency: Histogram<u64>,
    /// With a rate: latency from the actual send time (ns).
    pub service: Option<Histogram<u64>>,
    /// RESULTs received in the measured interval.
    pub measured_calls: u64,
    /// Failed calls by error URI or cause.
    pub errors: BTreeMap<String, u64>,
    /// With a rate: calls due before the end that were never sent.
    pub unsent: u64,
}

type InFlight = HashMap<u64, (Instant, Instant), foldhash::fast::FixedState>;

struct State<'a> {
    plan: &'a Plan,
    in_flight: InFlight,
    out: CallerOutcome,
    verified: bool,
    done: u64,
    failed: u64,
}

/// Runs caller number `index` until the measurement ends and its calls are answered (or time out).
pub async fn run(
    index: usize,
    mut tx: Sender,
    mut rx: Receiver,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
) -> CallerOutcome {
    let mut state = State {
        plan: &plan,
        in_flight: InFlight::with_capacity_and_hasher(plan.window * 2, Default::default()),
        out: CallerOutcome {
            latency: new_histogram(),
            service: plan.interval.map(|_| new_histogram()),
            measured_calls: 0,
            errors: BTreeMap::new(),
            unsent: 0,
        },
        verified: false,
        done: 0,
        failed: 0,
    };
    let fatal = state.drive(index, &mut tx, &mut rx, &counters).await;
    let mut out = state.out;
    match fatal {
        Some(cause) => {
            let lost = state.in_flight.len().max(1) as u64;
            *out.errors.entry(cause).or_default() += lost;
            counters.add(0, lost);
        }
        None => {
            wamp::leave(&mut tx, &mut rx).await;
        }
    }
    out
}

impl State<'_> {
    /// The send/receive loop; returns the cause if the session was lost.
    async fn drive(&mut self, index: usize, tx: &mut Sender, rx: &mut Receiver, counters: &Counters) -> Option<String> {
        let plan = self.plan;
        let lost = |e: ClientError| Some(format!("caller session lost: {}", wamp::describe(&e)));
        let mut call = plan.call.clone();
        let stagger = plan.interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / plan.callers as f64));
        let mut next_due = plan.start + stagger;
        let mut pacer = match plan.interval {
            Some(_) => match PreciseTimer::new() {
                Ok(timer) => Some(timer),
                Err(e) => return Some(format!("cannot create a timer: {e}")),
            },
            None => None,
        };
        let drain_until = plan.measure_until + plan.drain;
        let mut stopping = false;
        // Coarse deadlines (end of measurement, end of drain) use tokio's timer; the pacing of an
        // open loop uses the precise one.
        let deadline = tokio::time::sleep_until(plan.measure_until);
        tokio::pin!(deadline);
        loop {
            if !stopping {
                let now = Instant::now();
                let mut sent = false;
                while self.in_flight.len() < plan.window {
                    let intended = match plan.interval {
                        None if now < plan.measure_until => Instant::now(),
                        Some(_) if next_due <= now && next_due < plan.measure_until => next_due,
                        _ => break,
                    };
                    let actual = if plan.interval.is_some() { Instant::now() } else { intended };
                    let request = tx.request_id();
                    if let Message::Call { request: slot, options, .. } = &mut call {
                        *slot = request;
                        if plan.keyed {
                            options.insert("rkey", request % 1024);
                        }
                    }
                    if let Err(e) = tx.feed(&call).await {
                        return lost(e);
                    }
                    self.in_flight.insert(request, (intended, actual));
                    if let Some(interval) = plan.interval {
                        next_due += interval;
                    }
                    sent = true;
                }
                if sent {
                    if let Err(e) = tx.flush().await {
                        return lost(e);
                    }
                }
                let finished = match plan.interval {
                    None => now >= plan.measure_until,
                    Some(_) => next_due >= plan.measure_until || now >= plan.measure_until,
                };
                if finished {
                    stopping = true;
                    deadline.as_mut().reset(drain_until);
                    if let Some(interval) = plan.interval.filter(|_| next_due < plan.measure_until) {
                        let behind = (plan.measure_until - next_due).as_secs_f64() / interval.as_secs_f64();
                        self.out.unsent = behind.ceil() as u64;
                    }
                }
            }
            if stopping && self.in_flight.is_empty() {
                return None;
            }
            let pacing = !stopping && pacer.is_some() && self.in_flight.len() < plan.window;
            tokio::select! {
                biased;
                received = rx.recv_forever() => {
                    let mut next = Some(received);
                    while let Some(received) = next {
                        let message = match received {
                            Ok(message) => message,
                            Err(e) => return lost(e),
                        };
                        if let Err(cause) = self.on_message(message) {
                            return Some(cause);
                        }
                        next = rx.recv_forever().now_or_never();
                    }
                    counters.add(self.done, self.failed);
                    (self.done, self.failed) = (0, 0);
                }
                _ = &mut deadline => {
                    if stopping {
                        let lost = self.in_flight.len() as u64;
                        *self.out.errors.entry("loadtest.timeout (no reply before --drain-timeout)".into()).or_default() += lost;
                        counters.add(0, lost);
                        return None;
                    }
                }
                woke = async { pacer.as_mut().expect("pacing needs the timer").sleep_until(next_due.into_std()).await }, if pacing => {
                    if let Err(e) = woke {
                        return Some(format!("timer failed: {e}"));
                    }
                }
            }
        }
    }

    /// Handles one message from the router; `Err` when the session is over.
    fn on_message(&mut self, message: Message) -> Result<(), String> {
        match message {
            Message::Result { request, payload, .. } => {
                let now = Instant::now();
                let Some((intended, actual)) = self.in_flight.remove(&request) else {
                    self.error("loadtest.unexpected_result (RESULT for no call in flight)".into());
                    return Ok(());
                };
                if !self.verified {
                    self.verified = true;
                    if !matches!(payload.to_values(), Ok((args, _)) if args == self.plan.expected) {
                        self.error("loadtest.payload_mismatch (RESULT does not echo the call's argument)".into());
                        return Ok(());
                    }
                }
                self.done += 1;
                let plan = self.plan;
                // Every call that overlaps the measured interval: due before its end, answered after
                // its start. That keeps the calls answered late in the drain, and, when the schedule
                // fell behind during the warmup, the backlog's waiting.
                if intended < plan.measure_until && now >= plan.measure_from {
                    self.out.latency.saturating_record(nanos(now - intended));
                    if let Some(service) = &mut self.out.service {
                        service.saturating_record(nanos(now - actual));
                    }
                }
                if now >= plan.measure_from && now < plan.measure_until {
                    self.out.measured_calls += 1;
                }
            }
            Message::Error { request, error, .. } => {
                if self.in_flight.remove(&request).is_none() {
                    self.error(format!("{error} (for no call in flight)"));
                } else {
                    self.error(error);
                }
            }
            Message::Goodbye { reason, .. } | Message::Abort { reason, .. } => {
                return Err(format!("caller session closed by the router: {reason}"));
            }
            other => self.error(format!("loadtest.unexpected_message ({:?})", other.message_type())),
        }
        Ok(())
    }

    fn error(&mut self, key: String) {
        *self.out.errors.entry(key).or_default() += 1;
        self.failed += 1;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}
