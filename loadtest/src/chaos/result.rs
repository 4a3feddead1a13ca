//! The chaos report: a table for people and one JSON line for scripts (RELIABILITY.md's figures
//! come from it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value as Json};

use crate::report::{others_line, round2, thousands, Latency};

/// The router's resident memory over the run, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    /// Once everyone had left the warmup round.
    pub start: Option<u64>,
    /// Highest reading during the run.
    pub peak: Option<u64>,
    /// Once everyone had left the second round.
    pub end: Option<u64>,
    /// What the end may be: start + margin + slack.
    pub limit: Option<u64>,
    /// The margin, in percent.
    pub margin: f64,
    /// Bytes allowed beyond the margin.
    pub slack: u64,
    /// The router is its own process, so its RSS is checked.
    pub checked: bool,
    /// The readings are this process's (an in-process router and the load generator together).
    pub in_process: bool,
}

/// The outcome of a chaos run.
pub struct ChaosResult {
    /// The seed of its choices.
    pub seed: u64,
    /// What the router was.
    pub router: String,
    /// Its actors and pace, in words.
    pub settings: String,
    /// Hostile cases left out.
    pub skipped: Vec<String>,
    /// Warmup.
    pub warmup: Duration,
    /// Duration after the warmup.
    pub duration: Duration,
    /// From the start to the end of the wind-down.
    pub elapsed: Duration,
    /// Cases tried, by scenario.
    pub cases: BTreeMap<String, u64>,
    /// Calls healthy callers made.
    pub calls: u64,
    /// Of those, answered.
    pub answered: u64,
    /// Answers by kind.
    pub answers: BTreeMap<String, u64>,
    /// Ticks the healthy publisher had acknowledged.
    pub published: u64,
    /// Ticks the healthy subscriber received.
    pub received: u64,
    /// Latency of plain echo calls (ns).
    pub latency: Histogram<u64>,
    /// Violations found.
    pub violation_count: u64,
    /// The first of them, word for word.
    pub violations: Vec<String>,
    /// Router RSS.
    pub rss: Rss,
    /// Router CPU over the measured interval.
    pub router_cpu: Option<Duration>,
    /// Load generator CPU over it.
    pub loader_cpu: Option<Duration>,
    /// How the router's CPU was measured.
    pub cpu_source: String,
    /// How long the second round's actors ran.
    pub measured: Duration,
    /// Other processes' CPUs meanwhile.
    pub other_cpus: Option<f64>,
    /// How the router was found empty (or not).
    pub emptiness: String,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl ChaosResult {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "── chaos · seed {} · {:.0} s + {:.0} s warmup · {}",
            self.seed,
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64(),
            self.settings
        );
        let _ = writeln!(out, "  router        {}", self.router);
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "  left out      hostile cases {}", self.skipped.join(", "));
        }
        let _ = writeln!(out, "  cases tried");
        for (case, n) in &self.cases {
            let _ = writeln!(out, "    {:<52} {:>10}", case, thousands(*n));
        }
        let _ = writeln!(
            out,
            "  calls         {} made by healthy callers, {} answered ({} still unanswered)",
            thousands(self.calls),
            thousands(self.answered),
            thousands(self.calls.saturating_sub(self.answered))
        );
        let _ = writeln!(out, "  answers");
        for (kind, n) in &self.answers {
            let _ = writeln!(out, "    {:<52} {:>10}", kind, thousands(*n));
        }
        if let Some(l) = Latency::of(&self.latency) {
            let _ = writeln!(out, "  echo µs       {}", l.line());
            let _ = writeln!(
                out,
                "                (plain echo calls, callers' view; slow callees' own delays of up to 0.8 s included)"
            );
        }
        let _ = writeln!(
            out,
            "  events        {} ticks acknowledged to the healthy publisher, {} received by the healthy subscriber",
            thousands(self.published),
            thousands(self.received)
        );
        let _ = writeln!(out, "  router RSS    {}", self.rss_line());
        let _ = writeln!(out, "  router CPU    {}", self.cpu_line());
        if let Some(line) = others_line(self.other_cpus) {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "  at the end    {}", self.emptiness);
        let _ = writeln!(out, "  violations    {}", thousands(self.violation_count));
        for v in &self.violations {
            let _ = writeln!(out, "    {v}");
        }
        if self.violation_count > self.violations.len() as u64 {
            let _ = writeln!(out, "    … and {} more", self.violation_count - self.violations.len() as u64);
        }
        out
    }

    fn rss_line(&self) -> String {
        let r = &self.rss;
        let (Some(start), Some(end)) = (r.start, r.end) else {
            return match r.start {
                Some(start) => format!("{} once the warmup round had left; not read at the end", mib(start)),
                None => "unknown (pass --router-pid with --url, or --spawn-router)".into(),
            };
        };
        let peak = r.peak.map_or_else(|| "?".to_owned(), mib);
        let whose = if r.in_process { " (this process: router and load generator, not checked)" } else { "" };
        let check = match r.limit {
            Some(limit) if r.checked => {
                let verdict = if end <= limit { "ok" } else { "OVER" };
                format!(" · end ≤ start + {}% + {} = {}: {verdict}", r.margin, mib(r.slack), mib(limit))
            }
            _ => String::new(),
        };
        format!("empty after the warmup {} · peak {peak} · empty at the end {}{check}{whose}", mib(start), mib(end))
    }

    fn cpu_line(&self) -> String {
        let secs = self.measured.as_secs_f64().max(1e-9);
        match self.router_cpu {
            Some(cpu) => format!(
                "{:.1} s over {:.0} s ({:.2} CPUs) [{}] · loader {:.1} s",
                cpu.as_secs_f64(),
                secs,
                cpu.as_secs_f64() / secs,
                self.cpu_source,
                self.loader_cpu.unwrap_or_default().as_secs_f64()
            ),
            None => format!("unknown [{}]", self.cpu_source),
        }
    }

    /// The `--json` line.
    pub fn json(&self) -> Json {
        json!({
            "mode": "chaos",
            "seed": self.seed,
            "router": self.router,
            "settings": self.settings,
            "skipped": self.skipped,
            "warmup_s": round2(self.warmup.as_secs_f64()),
            "duration_s": round2(self.duration.as_secs_f64()),
            "elapsed_s": round2(self.elapsed.as_secs_f64()),
            "cases": self.cases,
            "calls": self.calls,
            "answered": self.answered,
            "answers": self.answers,
            "echo_latency_us": Latency::of(&self.latency).map(|l| l.json()),
            "ticks_published": self.published,
            "ticks_received": self.received,
            "violation_count": self.violation_count,
            "violations": self.violations,
            "router_rss_start_bytes": self.rss.start,
            "router_rss_peak_bytes": self.rss.peak,
            "router_rss_end_bytes": self.rss.end,
            "router_rss_limit_bytes": self.rss.limit,
            "router_rss_margin_percent": self.rss.margin,
            "router_rss_slack_bytes": self.rss.slack,
            "router_rss_checked": self.rss.checked,
            "router_rss_in_process": self.rss.in_process,
            "router_cpu_s": self.router_cpu.map(|c| round2(c.as_secs_f64())),
            "loader_cpu_s": self.loader_cpu.map(|c| round2(c.as_secs_f64())),
            "router_cpu_source": self.cpu_source,
            "measured_s": round2(self.measured.as_secs_f64()),
            "other_cpus": self.other_cpus.map(round2),
            "emptiness": self.emptiness,
        })
    }
}
