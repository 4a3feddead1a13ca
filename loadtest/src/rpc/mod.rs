//! `rpc` mode: callees register the procedure with an invocation rule, callers call it, and one run
//! per rule measures throughput, latency, errors, how the calls spread over the callees, and CPU.
//!
//! A run: callees join and register, callers join, then load for warmup + duration. CPU time and the
//! callees' counters are sampled when measuring starts and ends. Callers stop sending at the end and
//! wait up to `--drain-timeout` for their calls in flight; then callees UNREGISTER and everyone says
//! GOODBYE, so the next rule starts from an empty registration.

mod callee;
mod caller;
mod result;

pub use result::{rpc_summary, RpcResult};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roundhouse::wire::{Dict, Message, Serializer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cpu::{CpuSample, RouterCpu};
use crate::progress::{Counters, Progress};
use crate::report::{new_histogram, CpuPerOp};
use crate::wamp;

/// Everything one rpc run needs.
pub struct RpcSettings {
    /// Router URL (the callers').
    pub url: String,
    /// Where the callees connect: [`RpcSettings::url`] unless another node of a cluster was given.
    pub callee_url: String,
    /// What the router is, for the report.
    pub router: String,
    /// Whose CPU is the router's.
    pub router_cpu: RouterCpu,
    /// Realm.
    pub realm: String,
    /// Procedure URI.
    pub procedure: String,
    /// Serializer.
    pub serializer: Serializer,
    /// Its name.
    pub serializer_name: &'static str,
    /// Callee sessions (one for `single`).
    pub callees: usize,
    /// Caller sessions.
    pub callers: usize,
    /// Calls in flight per caller.
    pub window: usize,
    /// Open-loop total rate.
    pub rate: Option<f64>,
    /// Warmup.
    pub warmup: Duration,
    /// Measured interval.
    pub duration: Duration,
    /// How long calls in flight at the end may take.
    pub drain: Duration,
    /// Payload bytes.
    pub payload: usize,
    /// `REGISTER.Options.concurrency` of every callee.
    pub concurrency: Option<u64>,
    /// `REGISTER.Options._max_queued_calls` of every callee.
    pub max_queued_calls: Option<u64>,
    /// How long each callee (by registration order) takes to answer.
    pub service_times: Vec<Duration>,
    /// Callees work on one call at a time instead of all at once.
    pub serial_callees: bool,
}

/// Runs the load once with invocation `rule`. `Err` when the run could not be set up (router
/// unreachable, REGISTER refused); failed calls are in the result.
pub async fn run_rule(s: &RpcSettings, rule: &'static str) -> Result<RpcResult, String> {
    let callee_count = if rule == "single" { 1 } else { s.callees };
    let stop = CancellationToken::new();
    let mut callees = Vec::with_capacity(callee_count);
    for i in 0..callee_count {
        let mut client = wamp::join(&s.callee_url, &s.realm, s.serializer).await?;
        let mut options = Dict::new().with("invoke", rule);
        if let Some(concurrency) = s.concurrency {
            options.insert("concurrency", concurrency);
        }
        if let Some(max) = s.max_queued_calls {
            options.insert("_max_queued_calls", max);
        }
        let service_time = s.service_times.get(i).copied().unwrap_or_default();
        let registration = client.register(&s.procedure, options).await.map_err(|e| {
            format!("callee {}: REGISTER {} with invoke={rule} failed: {}", i + 1, s.procedure, wamp::describe(&e))
        })?;
        let served = Arc::new(AtomicU64::new(0));
        let (tx, rx) = client.split();
        let task = tokio::spawn(callee::run(
            tx,
            rx,
            registration,
            served.clone(),
            stop.clone(),
            service_time,
            s.serial_callees,
        ));
        callees.push((task, served));
    }
    let mut sessions = Vec::with_capacity(s.callers);
    for _ in 0..s.callers {
        sessions.push(wamp::join(&s.url, &s.realm, s.serializer).await?.split());
    }

    let (payload, expected) = wamp::call_payload(s.serializer, s.payload);
    let start = Instant::now();
    let plan = Arc::new(caller::Plan {
        start,
        measure_from: start + s.warmup,
        measure_until: start + s.warmup + s.duration,
        drain: s.drain,
        window: s.window,
        interval: s.rate.map(|rate| Duration::from_secs_f64(s.callers as f64 / rate)),
        callers: s.callers,
        call: Message::Call { request: 0, options: Dict::new(), procedure: s.procedure.clone(), payload },
        keyed: rule == "jump_consistent_hash",
        expected,
    });
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(format!("rpc {rule}"), "calls", counters.clone(), s.warmup, s.warmup + s.duration);
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, (tx, rx))| tokio::spawn(caller::run(i, tx, rx, plan.clone(), counters.clone())))
        .collect();

    let served = |callees: &[(_, Arc<AtomicU64>)]| -> Vec<u64> {
        callees.iter().map(|(_, n)| n.load(Ordering::Relaxed)).collect()
    };
    tokio::time::sleep_until(plan.measure_from).await;
    let (cpu_from, at_from, served_from) = (CpuSample::take(&s.router_cpu), Instant::now(), served(&callees));
    tokio::time::sleep_until(plan.measure_until).await;
    let (cpu_until, at_until, served_until) = (CpuSample::take(&s.router_cpu), Instant::now(), served(&callees));

    let mut latency = new_histogram();
    let mut service = s.rate.map(|_| new_histogram());
    let mut errors = BTreeMap::new();
    let (mut calls, mut unsent) = (0, 0);
    for task in tasks {
        let outcome = task.await.map_err(|e| format!("a caller task failed: {e}"))?;
        latency.add(&outcome.latency).expect("same histogram bounds");
        if let (Some(all), Some(one)) = (service.as_mut(), outcome.service.as_ref()) {
            all.add(one).expect("same histogram bounds");
        }
        for (cause, n) in outcome.errors {
            *errors.entry(cause).or_default() += n;
        }
        calls += outcome.measured_calls;
        unsent += outcome.unsent;
    }
    drop(progress);
    stop.cancel();
    let callee_calls = served_until.iter().zip(&served_from).map(|(b, a)| b - a).collect();
    for (task, _) in callees {
        let outcome = task.await.map_err(|e| format!("a callee task failed: {e}"))?;
        if let Err(cause) = outcome {
            *errors.entry(cause).or_default() += 1;
        }
    }

    let measured = s.duration;
    let (cpu, other_cpus) = match (cpu_from, cpu_until) {
        (Some(a), Some(b)) => {
            let used = a.until(&b);
            // Calls done while CPU was being measured, from the callers' own (planned) interval.
            let ops = calls as f64 / measured.as_secs_f64() * (at_until - at_from).as_secs_f64();
            (CpuPerOp::new(&used, ops), used.others(at_until - at_from))
        }
        _ => (None, None),
    };
    Ok(RpcResult {
        router: s.router.clone(),
        rule,
        serializer: s.serializer_name,
        payload: s.payload,
        callers: s.callers,
        window: s.window,
        callees: callee_count,
        target_rate: s.rate,
        measured,
        calls,
        latency,
        service_latency: service,
        errors,
        callee_calls,
        cpu,
        router_cpu: s.router_cpu.describe(),
        other_cpus,
        unsent,
    })
}
