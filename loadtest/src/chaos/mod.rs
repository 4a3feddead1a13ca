//! `chaos` mode: a bounded soak that checks the router keeps its promises while everything around
//! it misbehaves. It owns the run: which actors run, in what numbers, for how long, how the run
//! winds down, and the checks at the end (the router empty again, its RSS back near where it was
//! after the warmup, its process alive).
//!
//! Actors run in slots: each slot runs one actor after another until the run stops, each actor
//! with a random personality and lifetime from the slot's RNG, itself seeded from `--seed`.
//! - [`callee`]: `--callees` slots of callees that join, serve and leave in every way;
//! - [`caller`]: `--callers` slots of healthy callers whose every call is checked, and a few
//!   slots of callers that drop mid-flight;
//! - [`slow`]: slots of peers that stop reading, and one healthy publisher/subscriber pair;
//! - [`hostile`]: one case of malformed input after another, a few at a time.
//!
//! A run: callees start first (so that early calls find someone), then everyone else. RSS and CPU
//! are read at the end of the warmup; at the end of the duration the actors stop starting new
//! work, healthy callers wait for their answers and leave, then the callees leave, and once every
//! session is gone the router must be empty: for an embedded router its census, for another its
//! meta API (`wamp.session.count` is 1, the checker itself; `wamp.registration.list` is empty).
//! Any check that fails is a violation; a run with any violation fails.

mod callee;
mod caller;
mod hostile;
mod ledger;
mod peer;
mod result;
mod script;
mod slow;

pub use hostile::CASES;
pub use result::ChaosResult;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roundhouse::wire::{Dict, Message, Payload, Value};
use roundhouse::{Census, RouterConfig};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::cpu::{vm_rss, CpuSample, RouterCpu};
use crate::progress::Progress;
use ledger::Ledger;
use peer::{Endpoints, Peer, Transport};

/// Slots of callers that drop their connection mid-flight.
const DROPPER_SLOTS: u64 = 2;
/// Slots of peers that stop reading.
const DEAF_SLOTS: u64 = 2;
/// Callees get this head start before the first call.
const HEAD_START: Duration = Duration::from_millis(500);
/// The longest an actor lives (shorter runs scale it down so that every slot turns over).
const MAX_LIFE: Duration = Duration::from_secs(15);
/// How often the router's RSS is read for its peak.
const RSS_EVERY: Duration = Duration::from_millis(250);

/// Everything a chaos run needs.
pub struct ChaosSettings {
    /// Router URL.
    pub url: String,
    /// What the router is, for the report.
    pub router: String,
    /// Whose CPU is the router's.
    pub router_cpu: RouterCpu,
    /// The router's process, when it is one of its own (its RSS is checked then).
    pub router_pid: Option<u32>,
    /// The router runs in this process (its RSS is reported, mixed with the loader's).
    pub in_process: bool,
    /// Realm.
    pub realm: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// Callee slots.
    pub callees: u64,
    /// Healthy caller slots.
    pub callers: u64,
    /// Calls in flight per healthy caller, at most.
    pub window: usize,
    /// Calls per second over all healthy callers.
    pub rate: f64,
    /// Before RSS and CPU are first read.
    pub warmup: Duration,
    /// After the warmup.
    pub duration: Duration,
    /// How long the router may take beyond what a peer asked for.
    pub grace: Duration,
    /// Allowed RSS growth from after the warmup to the end, in percent.
    pub rss_margin: f64,
    /// Hostile cases left out.
    pub skip: Vec<String>,
}

/// Settings of the embedded router for a chaos run: the default configuration with liveness
/// timings short enough that frozen and hostile peers are closed well within the grace period
/// (10 s by default), and a stuck timeout above it: only a peer that stopped reading may be made
/// to wait that long, so a healthy peer stalled until the router gives up on a stuck one shows as
/// a violation. `scripts/soak.sh` gives a `roundhouse` process the same values.
pub fn tune(config: &mut RouterConfig) {
    config.keepalive_interval_ms = 1_000;
    config.idle_timeout_ms = 3_000;
    config.message_timeout_ms = 2_000;
    config.handshake_timeout_ms = 3_000;
    config.stuck_timeout_ms = 15_000;
}

/// What every actor shares.
pub struct Ctx {
    endpoints: Endpoints,
    ledger: Ledger,
    grace: Duration,
    /// Fires when the run's duration is over: no new actor, no new call.
    stop: CancellationToken,
    /// Fires once the callers are done: callees leave.
    callees_off: CancellationToken,
    /// Time between two calls of one healthy caller.
    interval: Duration,
    window: usize,
    max_life: Duration,
    skip: Vec<String>,
    next_caller: AtomicU64,
}

impl Ctx {
    /// A caller number no other caller of the run has.
    fn caller_number(&self) -> u64 {
        self.next_caller.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A derived RNG for actor group `group`, slot `slot`.
fn rng(seed: u64, group: u64, slot: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(
        seed ^ group.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ slot.wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
    )
}

/// Runs the soak. `census` reads an embedded router's census (`None` for another router). `Err`
/// when the run could not start (router unreachable, bad settings); violations are in the result.
pub async fn run(s: &ChaosSettings, census: &dyn Fn() -> Option<Census>) -> Result<ChaosResult, String> {
    for case in &s.skip {
        if !CASES.contains(&case.as_str()) {
            return Err(format!("--skip: no hostile case '{case}' (cases: {})", CASES.join(", ")));
        }
    }
    eprintln!("loadtest: chaos seed {} (replay its choices with --seed {})", s.seed, s.seed);
    let endpoints = Endpoints::resolve(&s.url, &s.realm).await?;
    // One session first, so an unreachable router is reported as such.
    Peer::join(&endpoints, Transport::ALL[0], &[], s.grace).await?.leave(s.grace, |_| {}).await?;

    let total = s.warmup + s.duration;
    let ctx = Arc::new(Ctx {
        endpoints,
        ledger: Ledger::default(),
        grace: s.grace,
        stop: CancellationToken::new(),
        callees_off: CancellationToken::new(),
        interval: Duration::from_secs_f64(s.callers as f64 / s.rate),
        window: s.window,
        max_life: MAX_LIFE.min(total / 4).max(Duration::from_secs(2)),
        skip: s.skip.clone(),
        next_caller: AtomicU64::new(0),
    });
    let progress = Progress::start("chaos".into(), "answers", ctx.ledger.progress.clone(), s.warmup, total);
    let sampling = CancellationToken::new();
    let rss = rss_target(s).map(|target| tokio::spawn(sample_rss(target, sampling.clone())));

    let start = Instant::now();
    let mut callees = JoinSet::new();
    for slot in 1..=s.callees {
        callees.spawn(callee::slot(ctx.clone(), slot, rng(s.seed, 1, slot)));
    }
    tokio::time::sleep(HEAD_START).await;
    let mut callers = JoinSet::new();
    for slot in 1..=s.callers {
        callers.spawn(caller::slot(ctx.clone(), slot, rng(s.seed, 2, slot)));
    }
    let mut others = JoinSet::new();
    for slot in 1..=DROPPER_SLOTS {
        others.spawn(caller::dropper_slot(ctx.clone(), slot, rng(s.seed, 3, slot)));
    }
    for slot in 1..=DEAF_SLOTS {
        others.spawn(slow::deaf_slot(ctx.clone(), slot, rng(s.seed, 4, slot)));
    }
    others.spawn(slow::ticks(ctx.clone(), rng(s.seed, 5, 0)));
    others.spawn(hostile::scheduler(ctx.clone(), rng(s.seed, 6, 0)));

    sleep_until(start + s.warmup).await;
    let rss_start = rss_now(s);
    let (cpu_from, at_from) = (CpuSample::take(&s.router_cpu), Instant::now());
    sleep_until(start + total).await;
    let (cpu_until, at_until) = (CpuSample::take(&s.router_cpu), Instant::now());
    ctx.stop.cancel();

    // Callers wait for their answers (each within its own bound), then leave.
    let wind_down = ctx.grace * 3 + Duration::from_secs(10);
    finish(&ctx, &mut callers, "healthy callers", wind_down).await;
    finish(&ctx, &mut others, "droppers, slow consumers, hostile sessions and the ticks", wind_down).await;
    ctx.callees_off.cancel();
    finish(&ctx, &mut callees, "callees", wind_down).await;
    drop(progress);
    let ended = start.elapsed();

    let emptiness = check_empty(&ctx, census).await;
    let (rss_end, rss_limit) = match rss_start {
        Some(start_bytes) => {
            let limit = (start_bytes as f64 * (1.0 + s.rss_margin / 100.0)) as u64;
            (settle_rss(s, limit).await, Some(limit))
        }
        None => (None, None),
    };
    sampling.cancel();
    let rss_peak = match rss {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    if let Some(pid) = s.router_pid {
        if !alive(pid) {
            ctx.ledger.violation("router", format!("the router process {pid} is gone"));
        }
        match (rss_end, rss_limit) {
            (Some(end), Some(limit)) if end > limit => ctx.ledger.violation(
                "router",
                format!(
                    "RSS at the end {:.1} MiB is over its limit {:.1} MiB (RSS after the warmup + {}%)",
                    mib(end),
                    mib(limit),
                    s.rss_margin
                ),
            ),
            (None, _) => ctx.ledger.violation("router", "its RSS could not be read at the end"),
            _ => {}
        }
    }

    let (cpu, other_cpus) = match (cpu_from, cpu_until) {
        (Some(a), Some(b)) => {
            let used = a.until(&b);
            (Some(used), used.others(at_until - at_from))
        }
        _ => (None, None),
    };
    let ledger = &ctx.ledger;
    let latency = ledger.latency.lock().expect("ledger lock").clone();
    Ok(ChaosResult {
        seed: s.seed,
        router: s.router.clone(),
        settings: format!(
            "{} callees · {} callers × window {} at {} calls/s · grace {:.1} s",
            s.callees,
            s.callers,
            s.window,
            s.rate,
            s.grace.as_secs_f64()
        ),
        warmup: s.warmup,
        duration: s.duration,
        elapsed: ended,
        cases: ledger.cases(),
        calls: ledger.calls.load(Ordering::Relaxed),
        answered: ledger.answered.load(Ordering::Relaxed),
        answers: ledger.answers(),
        published: ledger.published.load(Ordering::Relaxed),
        received: ledger.received.load(Ordering::Relaxed),
        latency,
        violation_count: ledger.violation_count(),
        violations: ledger.violations(),
        rss: result::Rss {
            start: rss_start,
            peak: rss_peak,
            end: rss_end,
            limit: rss_limit,
            margin: s.rss_margin,
            checked: s.router_pid.is_some(),
            in_process: s.in_process,
        },
        router_cpu: cpu.and_then(|c| c.router),
        loader_cpu: cpu.map(|c| c.loader),
        cpu_source: s.router_cpu.describe(),
        measured: at_until - at_from,
        other_cpus,
        emptiness,
    })
}

/// Waits for a group of actors, up to `within`; stragglers are a violation and are stopped.
async fn finish(ctx: &Ctx, tasks: &mut JoinSet<()>, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match timeout_at(deadline, tasks.join_next()).await {
            Ok(None) => return,
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => ctx.ledger.violation(what, format!("an actor failed: {e}")),
            Err(_) => {
                let left = tasks.len();
                ctx.ledger.violation(what, format!("{left} still running {within:?} after the run stopped"));
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return;
            }
        }
    }
}

/// Checks that the router holds nothing once everyone has left; says how it was checked.
async fn check_empty(ctx: &Ctx, census: &dyn Fn() -> Option<Census>) -> String {
    let deadline = Instant::now() + ctx.grace;
    if let Some(mut now) = census() {
        while !now.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            now = census().unwrap_or_default();
        }
        if !now.is_empty() {
            ctx.ledger.violation("router", format!("not empty {:?} after everyone left: {now:?}", ctx.grace));
            return format!("census NOT empty: {now:?}");
        }
        return "census empty (sessions, calls, invocations, timers, registrations, subscriptions, queued bytes)"
            .into();
    }
    let mut checker = match Peer::join(&ctx.endpoints, Transport::ALL[0], &[], ctx.grace).await {
        Ok(peer) => peer,
        Err(e) => {
            ctx.ledger.violation("router", format!("the emptiness checker could not join: {e}"));
            return format!("unknown: {e}");
        }
    };
    let mut last;
    loop {
        match meta_state(&mut checker, deadline).await {
            Ok((1, 0)) => {
                let _ = checker.leave(ctx.grace, |_| {}).await;
                return "meta API: 1 session (the checker), 0 registrations".into();
            }
            Ok((sessions, registrations)) => last = format!("{sessions} sessions, {registrations} registrations"),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            ctx.ledger.violation("router", format!("not empty {:?} after everyone left: {last}", ctx.grace));
            return format!("meta API NOT empty: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sessions in the realm and registrations, from the meta API.
async fn meta_state(checker: &mut Peer, deadline: Instant) -> Result<(u64, usize), String> {
    let sessions = match meta_call(checker, "wamp.session.count", deadline).await?.first() {
        Some(Value::UInt(n)) => *n,
        other => return Err(format!("wamp.session.count returned {other:?}")),
    };
    let registrations = match meta_call(checker, "wamp.registration.list", deadline).await?.first() {
        Some(Value::Dict(lists)) => {
            lists.0.iter().map(|(_, ids)| if let Value::List(ids) = ids { ids.len() } else { 0 }).sum()
        }
        other => return Err(format!("wamp.registration.list returned {other:?}")),
    };
    Ok((sessions, registrations))
}

async fn meta_call(checker: &mut Peer, procedure: &str, deadline: Instant) -> Result<Vec<Value>, String> {
    let request = checker.tx.request_id();
    let call = Message::Call { request, options: Dict::new(), procedure: procedure.into(), payload: Payload::Empty };
    checker.send(&call).await.map_err(|e| format!("{procedure}: {}", crate::wamp::describe(&e)))?;
    loop {
        match timeout_at(deadline, checker.recv()).await {
            Ok(Ok(Message::Result { request: r, payload, .. })) if r == request => {
                return payload.to_values().map(|(args, _)| args).map_err(|e| format!("{procedure}: {e}"));
            }
            Ok(Ok(Message::Error { request: r, error, .. })) if r == request => {
                return Err(format!("{procedure}: {error}"))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("{procedure}: {}", crate::wamp::describe(&e))),
            Err(_) => return Err(format!("{procedure}: no answer")),
        }
    }
}

/// Whose RSS is the router's: its own process, or this process for an in-process router.
fn rss_target(s: &ChaosSettings) -> Option<String> {
    match (s.router_pid, s.in_process) {
        (Some(pid), _) => Some(pid.to_string()),
        (None, true) => Some("self".into()),
        (None, false) => None,
    }
}

/// The router's RSS now (see [`rss_target`]).
fn rss_now(s: &ChaosSettings) -> Option<u64> {
    vm_rss(&rss_target(s)?).ok()
}

/// RSS once the router has had a moment to give memory back: read until it is within `limit` or
/// a few seconds have passed.
async fn settle_rss(s: &ChaosSettings, limit: u64) -> Option<u64> {
    let until = Instant::now() + Duration::from_secs(5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    loop {
        let now = rss_now(s);
        if now.is_none_or(|r| r <= limit) || Instant::now() >= until {
            return now;
        }
        tokio::time::sleep(RSS_EVERY).await;
    }
}

/// The peak RSS of process `pid` (or `self`) until `done` fires.
async fn sample_rss(pid: String, done: CancellationToken) -> Option<u64> {
    let mut peak = None;
    loop {
        if let Ok(rss) = vm_rss(&pid) {
            peak = Some(peak.map_or(rss, |p: u64| p.max(rss)));
        }
        tokio::select! {
            _ = tokio::time::sleep(RSS_EVERY) => {}
            _ = done.cancelled() => return peak,
        }
    }
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
