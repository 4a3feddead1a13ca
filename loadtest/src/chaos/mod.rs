//! `chaos` mode: a bounded soak that checks the router keeps its promises while everything around
//! it misbehaves. It owns the run: which actors run, in what numbers, for how long, how each round
//! winds down, and the checks between and after the rounds (the router empty again, its RSS when
//! empty back near where it was, its process alive).
//!
//! Actors run in slots: each slot runs one actor after another until its round stops, each actor
//! with a random personality and lifetime from the slot's RNG, itself derived from `--seed`.
//! - [`callee`]: `--callees` slots of callees that join, serve and leave in every way;
//! - [`caller`]: `--callers` slots of healthy callers whose every call is checked, and a few slots
//!   of callers that drop mid-flight;
//! - [`slow`]: slots of peers that stop reading, and one healthy publisher/subscriber pair;
//! - [`hostile`]: one case of malformed input after another, a few at a time;
//! - [`watcher`]: one session that hears `wamp.session.on_leave`, so callees that drop or freeze
//!   learn when the router has seen them go.
//!
//! A run is two rounds, `--warmup` then `--duration`, of the same chaos. In each, callees start
//! first (so that early calls find someone), then everyone else; when the round's time is over,
//! nobody starts anything new, healthy callers wait for their answers and leave, then the callees
//! leave. After each round a little plain traffic lets the router's allocator give back what was
//! freed, the router must be empty — for an embedded router its census, for another its meta API
//! (`wamp.session.count` is 1, the checker itself; `wamp.registration.list` is empty) — and its
//! RSS is read. The RSS after the second round is checked against the one after the first: both
//! are readings of an empty router after the same kind of work, so they compare. CPU is measured
//! over the second round. Any check that fails is a violation; a run with any violation fails.

mod callee;
mod caller;
mod hostile;
mod ledger;
mod peer;
mod result;
mod script;
mod slow;
mod watcher;

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
/// Slots of peers that stop reading (deaf subscribers and callers).
const DEAF_SLOTS: u64 = 2;
/// Callees get this head start before the first call.
const HEAD_START: Duration = Duration::from_millis(500);
/// The longest an actor lives (shorter runs scale it down so that every slot turns over).
const MAX_LIFE: Duration = Duration::from_secs(15);
/// How often the router's RSS is read for its peak.
const RSS_EVERY: Duration = Duration::from_millis(250);
/// What the RSS at the end may exceed the RSS after the warmup by, beyond `--rss-margin`: the
/// allocator's own noise. A 64 KiB page goes back to the system only once every object in it is
/// freed, so which pages an empty router still holds depends on where its few long-lived objects
/// happened to land: against one release router, four 90-second soaks in a row left it, empty,
/// at 19, 30, 28 and 16 MiB (no growth), and two readings of one run differed by up to 12 MiB.
const RSS_SLACK: u64 = 16 << 20;
/// How long the settling traffic after a round lasts.
const SETTLE: Duration = Duration::from_secs(2);

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
    /// The first round, after which RSS is first read.
    pub warmup: Duration,
    /// The second round, over which CPU is measured.
    pub duration: Duration,
    /// How long the router may take beyond what a peer asked for.
    pub grace: Duration,
    /// Allowed RSS growth from the empty router after the first round to the empty router after
    /// the second, in percent (plus [`RSS_SLACK`]).
    pub rss_margin: f64,
    /// Hostile cases left out.
    pub skip: Vec<String>,
}

/// Settings of the embedded router for a chaos run: the default configuration with liveness
/// timings short enough that frozen and hostile peers, RawSocket ones included, are closed well
/// within the grace period (10 s by default), and a stuck timeout above it: only a peer that
/// stopped reading may be made to wait that long, so a healthy peer stalled until the router gives
/// up on a stuck one shows as a violation. `scripts/soak.sh` gives a `roundhouse` process the same
/// values.
pub fn tune(config: &mut RouterConfig) {
    config.keepalive_interval_ms = 1_000;
    // RawSocket peers are pinged, and closed when silent, too: the soak's peers answer PINGs.
    config.rawsocket_keepalive = true;
    config.idle_timeout_ms = 3_000;
    config.message_timeout_ms = 2_000;
    config.handshake_timeout_ms = 3_000;
    config.stuck_timeout_ms = 15_000;
}

/// The environment variable (and value) under which the router's allocator (mimalloc) returns the
/// memory it frees to the system at once instead of after a delay, and so only when it is next
/// used: otherwise an idle router keeps tens of MiB of freed pages, and its RSS says more about
/// the allocator's timing than about what the router holds. `scripts/soak.sh` and
/// `--spawn-router` start the router with it.
pub const PURGE_NOW: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "0");

/// What every actor of one round shares.
pub struct Ctx {
    endpoints: Endpoints,
    ledger: Arc<Ledger>,
    grace: Duration,
    /// Fires when the round's time is over: no new actor, no new call.
    stop: CancellationToken,
    /// Fires once the callers are done: callees leave.
    callees_off: CancellationToken,
    /// Time between two calls of one healthy caller.
    interval: Duration,
    window: usize,
    max_life: Duration,
    skip: Vec<String>,
    next_caller: Arc<AtomicU64>,
    /// Tells callees when the router has seen them go.
    watcher: Arc<watcher::Watcher>,
}

impl Ctx {
    /// A caller number no other caller of the run has.
    fn caller_number(&self) -> u64 {
        self.next_caller.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A derived RNG for round `round`, actor group `group`, slot `slot`.
fn rng(seed: u64, round: u64, group: u64, slot: u64) -> fastrand::Rng {
    let group = round * 16 + group;
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

    let ledger = Arc::new(Ledger::default());
    let next_caller = Arc::new(AtomicU64::new(0));
    let sampling = CancellationToken::new();
    let rss = rss_target(s).map(|target| tokio::spawn(sample_rss(target, sampling.clone())));
    let started = Instant::now();

    // The warmup is a round of its own, wound down to an empty router: RSS is then read in the
    // same state as at the end, so the two readings compare.
    round(s, &endpoints, &ledger, &next_caller, 0, s.warmup).await;
    let (_, after_warmup) = empty_and_settled(s, &endpoints, &ledger, census).await;
    let (cpu, measured) = round(s, &endpoints, &ledger, &next_caller, 1, s.duration).await;
    let (emptiness, at_end) = empty_and_settled(s, &endpoints, &ledger, census).await;
    let elapsed = started.elapsed();
    sampling.cancel();
    let rss_peak = match rss {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };

    let rss_limit = after_warmup.map(|start| (start as f64 * (1.0 + s.rss_margin / 100.0)) as u64 + RSS_SLACK);
    if let Some(pid) = s.router_pid {
        if !alive(pid) {
            ledger.violation("router", format!("the router process {pid} is gone"));
        }
        match (after_warmup, at_end, rss_limit) {
            (Some(start), Some(end), Some(limit)) if end > limit => ledger.violation(
                "router",
                format!(
                    "RSS once everyone had left is {:.1} MiB at the end, over its limit {:.1} MiB (after the warmup {:.1} MiB, + {}% + {:.0} MiB)",
                    mib(end),
                    mib(limit),
                    mib(start),
                    s.rss_margin,
                    mib(RSS_SLACK)
                ),
            ),
            (Some(_), Some(_), _) => {}
            _ => ledger.violation("router", "its RSS could not be read"),
        }
    }
    let other_cpus = cpu.and_then(|used| used.others(measured));
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
        skipped: s.skip.clone(),
        warmup: s.warmup,
        duration: s.duration,
        elapsed,
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
            start: after_warmup,
            peak: rss_peak,
            end: at_end,
            limit: rss_limit,
            margin: s.rss_margin,
            slack: RSS_SLACK,
            checked: s.router_pid.is_some(),
            in_process: s.in_process,
        },
        router_cpu: cpu.and_then(|c| c.router),
        loader_cpu: cpu.map(|c| c.loader),
        cpu_source: s.router_cpu.describe(),
        measured,
        other_cpus,
        emptiness,
    })
}

/// One round: every actor for `length`, then the wind-down (callers wait for their answers and
/// leave, then the callees leave). Returns the CPU used while the actors ran, and for how long.
async fn round(
    s: &ChaosSettings,
    endpoints: &Endpoints,
    ledger: &Arc<Ledger>,
    next_caller: &Arc<AtomicU64>,
    number: u64,
    length: Duration,
) -> (Option<CpuSample>, Duration) {
    let watching = watcher::Watching::start(endpoints, ledger.clone(), s.grace).await;
    let ctx = Arc::new(Ctx {
        endpoints: endpoints.clone(),
        ledger: ledger.clone(),
        grace: s.grace,
        stop: CancellationToken::new(),
        callees_off: CancellationToken::new(),
        interval: Duration::from_secs_f64(s.callers as f64 / s.rate),
        window: s.window,
        max_life: MAX_LIFE.min(length / 4).max(Duration::from_secs(2)),
        skip: s.skip.clone(),
        next_caller: next_caller.clone(),
        watcher: watching.watcher.clone(),
    });
    let label = if number == 0 { "chaos warmup" } else { "chaos" };
    let progress = Progress::start(label.into(), "answers", ledger.progress.clone(), Duration::ZERO, length);
    let start = Instant::now();
    let cpu_from = CpuSample::take(&s.router_cpu);
    let mut callees = JoinSet::new();
    for slot in 1..=s.callees {
        callees.spawn(callee::slot(ctx.clone(), slot, rng(s.seed, number, 1, slot)));
    }
    tokio::time::sleep(HEAD_START).await;
    let mut callers = JoinSet::new();
    for slot in 1..=s.callers {
        callers.spawn(caller::slot(ctx.clone(), slot, rng(s.seed, number, 2, slot)));
    }
    let mut others = JoinSet::new();
    for slot in 1..=DROPPER_SLOTS {
        others.spawn(caller::dropper_slot(ctx.clone(), slot, rng(s.seed, number, 3, slot)));
    }
    for slot in 1..=DEAF_SLOTS {
        others.spawn(slow::deaf_slot(ctx.clone(), slot, rng(s.seed, number, 4, slot)));
    }
    others.spawn(slow::ticks(ctx.clone(), rng(s.seed, number, 5, 0)));
    others.spawn(hostile::scheduler(ctx.clone(), rng(s.seed, number, 6, 0)));
    sleep_until(start + length).await;
    let cpu = match (cpu_from, CpuSample::take(&s.router_cpu)) {
        (Some(a), Some(b)) => Some(a.until(&b)),
        _ => None,
    };
    let measured = start.elapsed();
    ctx.stop.cancel();
    // Callers wait for their answers (each within its own bound), then leave.
    let wind_down = ctx.grace * 3 + Duration::from_secs(10);
    finish(&ctx, &mut callers, "healthy callers", wind_down).await;
    finish(&ctx, &mut others, "droppers, slow consumers, hostile sessions and the ticks", wind_down).await;
    ctx.callees_off.cancel();
    finish(&ctx, &mut callees, "callees", wind_down).await;
    watching.stop().await;
    drop(progress);
    (cpu, measured)
}

/// After a round: a little plain traffic, so that every worker of the router allocates and frees
/// again and its allocator gives back what it freed; then the router must be empty, and its RSS
/// is read (the lowest of a few readings). Returns how it was found empty, and the RSS.
async fn empty_and_settled(
    s: &ChaosSettings,
    endpoints: &Endpoints,
    ledger: &Ledger,
    census: &dyn Fn() -> Option<Census>,
) -> (String, Option<u64>) {
    if let Err(e) = settle(endpoints, s.grace).await {
        ledger.violation("settling traffic", e);
    }
    let emptiness = check_empty(endpoints, ledger, s.grace, census).await;
    let mut lowest: Option<u64> = None;
    for _ in 0..4 {
        tokio::time::sleep(RSS_EVERY).await;
        if let Some(rss) = rss_now(s) {
            lowest = Some(lowest.map_or(rss, |l| l.min(rss)));
        }
    }
    (emptiness, lowest)
}

/// Two echoing callees and four callers over both carriers, calling with payloads of a few sizes
/// for [`SETTLE`]; everyone leaves politely.
async fn settle(endpoints: &Endpoints, grace: Duration) -> Result<(), String> {
    const PROCEDURE: &str = "chaos.settle";
    let mut callees = Vec::new();
    for transport in [Transport::ALL[1], Transport::ALL[3]] {
        let mut peer = Peer::join(endpoints, transport, &[], grace).await?;
        let request = peer.tx.request_id();
        let options = Dict::new().with("invoke", "roundrobin");
        peer.send(&Message::Register { request, options, procedure: PROCEDURE.into() })
            .await
            .map_err(|e| format!("REGISTER: {}", crate::wamp::describe(&e)))?;
        match timeout_at(Instant::now() + grace, peer.recv()).await {
            Ok(Ok(Message::Registered { .. })) => {}
            other => return Err(format!("REGISTER {PROCEDURE}: {other:?}")),
        }
        let done = CancellationToken::new();
        let stopped = done.clone();
        let task = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = peer.recv() => message,
                    _ = stopped.cancelled() => break,
                };
                match message {
                    Ok(Message::Invocation { request, payload, .. }) => {
                        let answer = Message::Yield { request, options: Dict::new(), payload };
                        if peer.send(&answer).await.is_err() {
                            return Err("an echoing callee lost its session".to_owned());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("an echoing callee lost its session: {}", crate::wamp::describe(&e))),
                }
            }
            peer.leave(grace, |_| {}).await
        });
        callees.push((done, task));
    }
    let until = Instant::now() + SETTLE;
    let mut callers = JoinSet::new();
    for (i, transport) in
        [Transport::ALL[0], Transport::ALL[2], Transport::ALL[4], Transport::ALL[5]].into_iter().enumerate()
    {
        let endpoints = endpoints.clone();
        callers.spawn(async move {
            let mut peer = Peer::join(&endpoints, transport, &[], grace).await?;
            let mut n = 0usize;
            while Instant::now() < until {
                let requests: Vec<u64> = (0..8).map(|_| peer.tx.request_id()).collect();
                for &request in &requests {
                    n += 1;
                    let size = [16, 256, 4096, 32 * 1024][(n + i) % 4];
                    let payload = Payload::args(vec![Value::Bytes(vec![7; size])]);
                    let call = Message::Call { request, options: Dict::new(), procedure: PROCEDURE.into(), payload };
                    peer.tx.feed(&call).await.map_err(|e| format!("CALL: {}", crate::wamp::describe(&e)))?;
                }
                peer.tx.flush().await.map_err(|e| format!("CALL: {}", crate::wamp::describe(&e)))?;
                for _ in &requests {
                    match timeout_at(Instant::now() + grace, peer.recv()).await {
                        Ok(Ok(Message::Result { .. })) => {}
                        other => return Err(format!("a settling call got {other:?}")),
                    }
                }
            }
            peer.leave(grace, |_| {}).await
        });
    }
    let mut outcome = Ok(());
    while let Some(joined) = callers.join_next().await {
        if let Err(e) = joined.map_err(|e| e.to_string()).and_then(|r| r) {
            outcome = Err(e);
        }
    }
    for (done, task) in callees {
        done.cancel();
        if let Err(e) = task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            outcome = Err(e);
        }
    }
    outcome
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
async fn check_empty(
    endpoints: &Endpoints,
    ledger: &Ledger,
    grace: Duration,
    census: &dyn Fn() -> Option<Census>,
) -> String {
    let deadline = Instant::now() + grace;
    if let Some(mut now) = census() {
        while !now.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            now = census().unwrap_or_default();
        }
        if !now.is_empty() {
            ledger.violation("router", format!("not empty {grace:?} after everyone left: {now:?}"));
            return format!("census NOT empty: {now:?}");
        }
        return "census empty (sessions, calls, invocations, timers, registrations, subscriptions, queued bytes)"
            .into();
    }
    let mut checker = match Peer::join(endpoints, Transport::ALL[0], &[], grace).await {
        Ok(peer) => peer,
        Err(e) => {
            ledger.violation("router", format!("the emptiness checker could not join: {e}"));
            return format!("unknown: {e}");
        }
    };
    let mut last;
    loop {
        match meta_state(&mut checker, deadline).await {
            Ok((1, 0)) => {
                let _ = checker.leave(grace, |_| {}).await;
                return "meta API: 1 session (the checker), 0 registrations".into();
            }
            Ok((sessions, registrations)) => last = format!("{sessions} sessions, {registrations} registrations"),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            ledger.violation("router", format!("not empty {grace:?} after everyone left: {last}"));
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
