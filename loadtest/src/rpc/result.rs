//! The result of one rpc run: its table, its line in the summary of several rules, and its JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value as Json};

use crate::report::{
    callee_line, cpu_line, errors_line, micros, others_line, round2, round3, thousands, CpuPerOp, Latency,
};

/// The outcome of one rpc run (one invocation rule).
#[derive(Debug)]
pub struct RpcResult {
    /// What was tested, for the header.
    pub router: String,
    /// The invocation rule.
    pub rule: &'static str,
    /// Serializer name.
    pub serializer: &'static str,
    /// Payload bytes per call.
    pub payload: usize,
    /// Caller sessions.
    pub callers: usize,
    /// Calls in flight per caller (or the cap, with a rate).
    pub window: usize,
    /// Callee sessions.
    pub callees: usize,
    /// Open-loop target rate, if any.
    pub target_rate: Option<f64>,
    /// The measured interval.
    pub measured: Duration,
    /// Calls completed (RESULT received) in the measured interval.
    pub calls: u64,
    /// Latency from the intended send time, of calls due before the interval's end and answered after
    /// its start.
    pub latency: Histogram<u64>,
    /// With a rate: latency from the actual send time.
    pub service_latency: Option<Histogram<u64>>,
    /// Failed calls by error URI, over the whole run (warmup and drain included).
    pub errors: BTreeMap<String, u64>,
    /// INVOCATIONs each callee answered in the measured interval.
    pub callee_calls: Vec<u64>,
    /// CPU per call over the measured interval.
    pub cpu: Option<CpuPerOp>,
    /// How the router's CPU was measured.
    pub router_cpu: String,
    /// With a rate: calls that fell due in the interval but were never sent (window full).
    pub unsent: u64,
    /// CPUs' worth of time other processes used during the measurement, when known.
    pub other_cpus: Option<f64>,
}

impl RpcResult {
    /// Completed calls per second in the measured interval.
    pub fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    /// Failed calls in all.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The table for this rule.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let shape = match self.target_rate {
            Some(rate) => format!(
                "open loop at {} calls/s (at most {} in flight per caller)",
                thousands(rate.round() as u64),
                self.window
            ),
            None => format!("closed loop, window {}", self.window),
        };
        let _ = writeln!(
            out,
            "── rpc · rule {} · {} caller{}, {shape} · {} callee{} · {} · {} B payload",
            self.rule,
            self.callers,
            if self.callers == 1 { "" } else { "s" },
            self.callees,
            if self.callees == 1 { "" } else { "s" },
            self.serializer,
            self.payload
        );
        let _ = writeln!(out, "  router        {}", self.router);
        let _ = writeln!(
            out,
            "  throughput    {} calls/s  ({} calls in {:.2} s)",
            thousands(self.calls_per_sec().round() as u64),
            thousands(self.calls),
            self.measured.as_secs_f64()
        );
        let label = if self.service_latency.is_some() {
            "latency µs    (from intended send time)\n                "
        } else {
            "latency µs    "
        };
        match Latency::of(&self.latency) {
            Some(l) => _ = writeln!(out, "  {label}{}", l.line()),
            None => _ = writeln!(out, "  latency µs    no call completed"),
        }
        if let Some(l) = self.service_latency.as_ref().and_then(Latency::of) {
            let _ = writeln!(out, "  service µs    (from actual send time)\n                {}", l.line());
        }
        if self.unsent > 0 {
            let _ = writeln!(
                out,
                "  behind        {} calls fell due but were never sent (window full): the router did not keep up",
                thousands(self.unsent)
            );
        }
        let _ = writeln!(out, "  errors        {}", errors_line(&self.errors));
        let _ = writeln!(out, "  per callee    {}", callee_line(&self.callee_calls));
        let _ = writeln!(out, "  cpu / call    {}", cpu_line(self.cpu, &self.router_cpu));
        if let Some(line) = others_line(self.other_cpus) {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The `--json` line.
    pub fn json(&self) -> Json {
        json!({
            "mode": "rpc",
            "router": self.router,
            "rule": self.rule,
            "serializer": self.serializer,
            "payload_bytes": self.payload,
            "callers": self.callers,
            "window": self.window,
            "callees": self.callees,
            "rate_target": self.target_rate,
            "duration_s": round2(self.measured.as_secs_f64()),
            "calls": self.calls,
            "calls_per_sec": round2(self.calls_per_sec()),
            "latency_us": Latency::of(&self.latency).map(|l| l.json()),
            "service_latency_us": self.service_latency.as_ref().and_then(Latency::of).map(|l| l.json()),
            "errors": self.errors,
            "error_count": self.error_count(),
            "callee_calls": self.callee_calls,
            "router_cpu_us_per_call": self.cpu.and_then(|c| c.router).map(round3),
            "loader_cpu_us_per_call": self.cpu.map(|c| round3(c.loader)),
            "router_cpu_source": self.router_cpu,
            "unsent": self.unsent,
            "other_cpus": self.other_cpus.map(round2),
        })
    }
}

/// One line per rule, for runs of several rules.
pub fn rpc_summary(results: &[RpcResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<25} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>14} {:>14}",
        "rule",
        "calls/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors",
        "router µs/call",
        "loader µs/call"
    );
    for r in results {
        let l = Latency::of(&r.latency);
        let p = |f: fn(&Latency) -> f64| l.as_ref().map_or("-".into(), |l| micros(f(l)));
        let _ = writeln!(
            out,
            "{:<25} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>14} {:>14}",
            r.rule,
            thousands(r.calls_per_sec().round() as u64),
            p(|l| l.p50),
            p(|l| l.p90),
            p(|l| l.p99),
            p(|l| l.p999),
            p(|l| l.max),
            thousands(r.error_count()),
            r.cpu.and_then(|c| c.router).map_or("-".into(), |v| format!("{v:.2}")),
            r.cpu.map_or("-".into(), |c| format!("{:.2}", c.loader)),
        );
    }
    let disturbed: Vec<String> = results
        .iter()
        .filter(|r| others_line(r.other_cpus).is_some())
        .map(|r| format!("{} ({:.2} CPUs)", r.rule, r.other_cpus.unwrap_or_default()))
        .collect();
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "DISTURBED: other processes took CPU time during {}: compare those rows with care",
            disturbed.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rule: &'static str, other_cpus: Option<f64>) -> RpcResult {
        RpcResult {
            router: "r".into(),
            rule,
            serializer: "json",
            payload: 16,
            callers: 1,
            window: 1,
            callees: 1,
            target_rate: None,
            measured: Duration::from_secs(1),
            calls: 10,
            latency: crate::report::new_histogram(),
            service_latency: None,
            errors: BTreeMap::new(),
            callee_calls: vec![10],
            cpu: None,
            router_cpu: "unknown".into(),
            unsent: 0,
            other_cpus,
        }
    }

    #[test]
    fn the_summary_of_several_rules_warns_when_disturbed() {
        let quiet = rpc_summary(&[result("single", Some(0.0)), result("random", None)]);
        assert!(!quiet.contains("DISTURBED"), "{quiet}");
        let noisy = rpc_summary(&[result("single", Some(0.0)), result("random", Some(0.5))]);
        assert!(noisy.contains("DISTURBED") && noisy.contains("random (0.50 CPUs)"), "{noisy}");
    }
}
