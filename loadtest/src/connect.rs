//! `connect` mode: `--callers` loops each open a session (TCP, WebSocket handshake, HELLO→WELCOME),
//! close it (GOODBYE→GOODBYE, WebSocket close) and start over, as fast as they can.
//!
//! Two latencies are kept per session: `join` (connect until WELCOME) and `cycle` (connect until the
//! connection is closed). Sessions/s counts cycles completed in the measured interval.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use roundhouse::client::Credentials;
use roundhouse::wire::Serializer;
use serde_json::{json, Value as Json};
use tokio::time::Instant;

use crate::cpu::{CpuSample, RouterCpu};
use crate::progress::{Counters, Progress};
use crate::report::{cpu_line, errors_line, new_histogram, others_line, round2, round3, thousands, CpuPerOp, Latency};
use crate::wamp;

/// After a failed attempt a loop waits this long, so a refusing router is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Everything a connect run needs.
pub struct ConnectSettings {
    /// Router URL.
    pub url: String,
    /// What the router is.
    pub router: String,
    /// Whose CPU is the router's.
    pub router_cpu: RouterCpu,
    /// Realm.
    pub realm: String,
    /// How each session authenticates.
    pub credentials: Credentials,
    /// Serializer.
    pub serializer: Serializer,
    /// Its name.
    pub serializer_name: &'static str,
    /// Concurrent loops.
    pub loops: usize,
    /// Warmup.
    pub warmup: Duration,
    /// Measured interval.
    pub duration: Duration,
}

/// The outcome of a connect run.
pub struct ConnectResult {
    settings_line: String,
    router: String,
    loops: usize,
    serializer: &'static str,
    measured: Duration,
    sessions: u64,
    join: Histogram<u64>,
    cycle: Histogram<u64>,
    /// Failed attempts by cause.
    pub errors: BTreeMap<String, u64>,
    cpu: Option<CpuPerOp>,
    router_cpu: String,
    other_cpus: Option<f64>,
}

struct LoopOutcome {
    join: Histogram<u64>,
    cycle: Histogram<u64>,
    sessions: u64,
    errors: BTreeMap<String, u64>,
}

/// Runs the connect loops. `Err` when not even one session could be opened.
pub async fn run(s: &ConnectSettings) -> Result<ConnectResult, String> {
    // One session first, so an unreachable router is reported as such rather than as errors.
    let (mut tx, mut rx) = wamp::join_as(&s.url, &s.realm, s.serializer, &s.credentials).await?.split();
    wamp::leave(&mut tx, &mut rx).await;

    let start = Instant::now();
    let (from, until) = (start + s.warmup, start + s.warmup + s.duration);
    let counters = Arc::new(Counters::default());
    let progress = Progress::start("connect".into(), "sessions", counters.clone(), s.warmup, s.warmup + s.duration);
    let tasks: Vec<_> = (0..s.loops)
        .map(|_| {
            let (url, realm, serializer, counters) = (s.url.clone(), s.realm.clone(), s.serializer, counters.clone());
            let credentials = s.credentials.clone();
            tokio::spawn(async move { one_loop(&url, &realm, serializer, &credentials, from, until, &counters).await })
        })
        .collect();
    tokio::time::sleep_until(from).await;
    let (cpu_from, at_from) = (CpuSample::take(&s.router_cpu), Instant::now());
    tokio::time::sleep_until(until).await;
    let (cpu_until, at_until) = (CpuSample::take(&s.router_cpu), Instant::now());

    let (mut join, mut cycle) = (new_histogram(), new_histogram());
    let mut errors = BTreeMap::new();
    let mut sessions = 0;
    for task in tasks {
        let outcome = task.await.map_err(|e| format!("a connect task failed: {e}"))?;
        join.add(&outcome.join).expect("same bounds");
        cycle.add(&outcome.cycle).expect("same bounds");
        sessions += outcome.sessions;
        for (cause, n) in outcome.errors {
            *errors.entry(cause).or_default() += n;
        }
    }
    drop(progress);
    let (cpu, other_cpus) = match (cpu_from, cpu_until) {
        (Some(a), Some(b)) => {
            let used = a.until(&b);
            let ops = sessions as f64 / s.duration.as_secs_f64() * (at_until - at_from).as_secs_f64();
            (CpuPerOp::new(&used, ops), used.others(at_until - at_from))
        }
        _ => (None, None),
    };
    Ok(ConnectResult {
        settings_line: format!("{} concurrent loops · {}", s.loops, s.serializer_name),
        router: s.router.clone(),
        loops: s.loops,
        serializer: s.serializer_name,
        measured: s.duration,
        sessions,
        join,
        cycle,
        errors,
        cpu,
        router_cpu: s.router_cpu.describe(),
        other_cpus,
    })
}

async fn one_loop(
    url: &str,
    realm: &str,
    serializer: Serializer,
    credentials: &Credentials,
    from: Instant,
    until: Instant,
    counters: &Counters,
) -> LoopOutcome {
    let mut out = LoopOutcome { join: new_histogram(), cycle: new_histogram(), sessions: 0, errors: BTreeMap::new() };
    loop {
        let begin = Instant::now();
        if begin >= until {
            return out;
        }
        let client = match wamp::join_as(url, realm, serializer, credentials).await {
            Ok(client) => client,
            Err(cause) => {
                *out.errors.entry(cause).or_default() += 1;
                counters.add(0, 1);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let joined = Instant::now();
        let (mut tx, mut rx) = client.split();
        if !wamp::leave(&mut tx, &mut rx).await {
            *out.errors.entry("no GOODBYE reply".into()).or_default() += 1;
            counters.add(0, 1);
            continue;
        }
        let closed = Instant::now();
        counters.add(1, 0);
        if begin >= from && begin < until {
            out.join.saturating_record(nanos(joined - begin));
            out.cycle.saturating_record(nanos(closed - begin));
        }
        if closed >= from && closed < until {
            out.sessions += 1;
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl ConnectResult {
    /// Sessions opened and closed per second.
    pub fn sessions_per_sec(&self) -> f64 {
        self.sessions as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    /// The measured interval and the connect-until-closed latencies, for `--hist-out`.
    pub fn cycles(&self) -> (Duration, &Histogram<u64>) {
        (self.measured, &self.cycle)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "── connect · {} · HELLO→WELCOME→GOODBYE→close", self.settings_line);
        let _ = writeln!(out, "  router        {}", self.router);
        let _ = writeln!(
            out,
            "  throughput    {} sessions/s  ({} sessions in {:.2} s)",
            thousands(self.sessions_per_sec().round() as u64),
            thousands(self.sessions),
            self.measured.as_secs_f64()
        );
        for (name, h) in [("join µs      ", &self.join), ("cycle µs     ", &self.cycle)] {
            match Latency::of(h) {
                Some(l) => _ = writeln!(out, "  {name} {}", l.line()),
                None => _ = writeln!(out, "  {name} no session completed"),
            }
        }
        let _ = writeln!(out, "  errors        {}", errors_line(&self.errors));
        let _ = writeln!(out, "  cpu / session {}", cpu_line(self.cpu, &self.router_cpu));
        if let Some(line) = others_line(self.other_cpus) {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The `--json` line.
    pub fn json(&self) -> Json {
        json!({
            "mode": "connect",
            "router": self.router,
            "serializer": self.serializer,
            "loops": self.loops,
            "duration_s": round2(self.measured.as_secs_f64()),
            "sessions": self.sessions,
            "sessions_per_sec": round2(self.sessions_per_sec()),
            "join_latency_us": Latency::of(&self.join).map(|l| l.json()),
            "cycle_latency_us": Latency::of(&self.cycle).map(|l| l.json()),
            "errors": self.errors,
            "error_count": self.errors.values().sum::<u64>(),
            "router_cpu_us_per_session": self.cpu.and_then(|c| c.router).map(round3),
            "loader_cpu_us_per_session": self.cpu.map(|c| round3(c.loader)),
            "router_cpu_source": self.router_cpu,
            "other_cpus": self.other_cpus.map(round2),
        })
    }
}

/// The dynamic authenticator `--authenticator` serves: registered on its own session; it admits
/// every authid in role `anonymous` with `secret` as the WAMP-CRA secret, and accepts a ticket
/// equal to `secret`. It stops when the returned handle is dropped.
pub async fn serve_authenticator(
    url: &str,
    realm: &str,
    serializer: Serializer,
    procedure: &str,
    secret: &str,
) -> Result<AbortOnDrop, String> {
    use roundhouse::wire::{Dict, Message, MessageType, Payload, Value};
    let mut client = wamp::join(url, realm, serializer).await?;
    client
        .register(procedure, Dict::new())
        .await
        .map_err(|e| format!("cannot register {procedure}: {}", wamp::describe(&e)))?;
    let secret = secret.to_owned();
    let task = tokio::spawn(async move {
        let (mut tx, mut rx) = client.split();
        while let Ok(message) = rx.recv_forever().await {
            let Message::Invocation { request, payload, .. } = message else { continue };
            let details = payload.to_values().ok().and_then(|(args, _)| args.get(3).and_then(Value::as_dict).cloned());
            let ticket = details.as_ref().and_then(|d| d.get("ticket")).and_then(Value::as_str).map(str::to_owned);
            let answer = match ticket {
                Some(ticket) if ticket != secret => Message::Error {
                    request_type: MessageType::Invocation as u64,
                    request,
                    details: Dict::new(),
                    error: "wamp.error.authentication_denied".into(),
                    payload: Payload::Empty,
                },
                _ => {
                    let principal = Dict::new().with("role", "anonymous").with("secret", secret.as_str());
                    Message::Yield {
                        request,
                        options: Dict::new(),
                        payload: Payload::args(vec![Value::Dict(principal)]),
                    }
                }
            };
            if tx.send(&answer).await.is_err() {
                return;
            }
        }
    });
    Ok(AbortOnDrop(task))
}

/// A task that ends when this is dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
