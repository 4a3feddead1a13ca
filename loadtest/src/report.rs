//! Shared pieces of every result: latency summaries from HDR histograms, CPU per operation, and the
//! formatting helpers of the tables.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value as Json};

use crate::cpu::CpuSample;

/// Latencies are recorded in nanoseconds, up to an hour, with three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Summarizes a histogram of nanoseconds; `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            count: histogram.len(),
            p50: us(histogram.value_at_quantile(0.5)),
            p90: us(histogram.value_at_quantile(0.9)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1000.0,
        })
    }

    /// `p50 … max` on one line, in µs.
    pub fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, n={})",
            micros(self.p50),
            micros(self.p90),
            micros(self.p99),
            micros(self.p999),
            micros(self.max),
            micros(self.mean),
            thousands(self.count)
        )
    }

    /// The JSON object of the percentiles, in µs.
    pub fn json(&self) -> Json {
        json!({
            "p50": round2(self.p50), "p90": round2(self.p90), "p99": round2(self.p99),
            "p999": round2(self.p999), "max": round2(self.max), "mean": round2(self.mean), "count": self.count,
        })
    }
}

/// CPU used per operation by the router and the load generator, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuPerOp {
    /// The router's, when known.
    pub router: Option<f64>,
    /// The load generator's.
    pub loader: f64,
}

impl CpuPerOp {
    /// Divides CPU used over an interval by the operations done in it.
    pub fn new(cpu: &CpuSample, ops: f64) -> Option<CpuPerOp> {
        if ops <= 0.0 {
            return None;
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / ops;
        Some(CpuPerOp { router: cpu.router.map(per), loader: per(cpu.loader) })
    }
}

/// Errors as `uri count, …`, or `none`.
pub fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors.iter().map(|(uri, n)| format!("{uri} ×{}", thousands(*n))).collect::<Vec<_>>().join(", ")
}

/// Calls per callee with their share, four to a line.
pub fn callee_line(counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum();
    let cells: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let share = if total == 0 { 0.0 } else { *n as f64 * 100.0 / total as f64 };
            format!("#{} {} ({share:.1}%)", i + 1, thousands(*n))
        })
        .collect();
    cells.chunks(4).map(|c| c.join("  ")).collect::<Vec<_>>().join("\n                ")
}

/// `router X µs (how) · loader Y µs`.
pub fn cpu_line(cpu: Option<CpuPerOp>, router_source: &str) -> String {
    match cpu {
        None => "unknown (no /proc, or nothing completed)".into(),
        Some(c) => {
            let router = match c.router {
                Some(v) => format!("router {v:.2} µs [{router_source}]"),
                None => format!("router {router_source}"),
            };
            format!("{router} · loader {:.2} µs", c.loader)
        }
    }
}

/// Below this many CPUs' worth of other processes' time, a measurement counts as undisturbed.
const OTHERS_NOTICEABLE: f64 = 0.1;

/// A warning line when other processes took noticeable CPU time during the measurement.
pub fn others_line(others: Option<f64>) -> Option<String> {
    let others = others.filter(|o| *o >= OTHERS_NOTICEABLE)?;
    Some(format!(
        "  DISTURBED     other processes used {others:.2} CPUs during the measurement: these figures are not reliable"
    ))
}

/// A count with thousands separators: 1234567 → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds with one decimal (two below 10 µs), thousands separated.
pub fn micros(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.2}")
    } else {
        let tenths = (us * 10.0).round() as u64;
        format!("{}.{}", thousands(tenths / 10), tenths % 10)
    }
}

/// Rounds to two decimals (for JSON).
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Rounds to three decimals (for JSON).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(micros(4.5678), "4.57");
        assert_eq!(micros(1234.56), "1,234.6");
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_micros() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::of(&h).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
        assert!(Latency::of(&new_histogram()).is_none());
    }

    #[test]
    fn callee_shares_and_errors_read_well() {
        assert_eq!(callee_line(&[3, 1]), "#1 3 (75.0%)  #2 1 (25.0%)");
        assert_eq!(errors_line(&BTreeMap::new()), "none");
        let errors = BTreeMap::from([("wamp.error.canceled".to_string(), 1200)]);
        assert_eq!(errors_line(&errors), "wamp.error.canceled ×1,200");
    }

    #[test]
    fn cpu_is_divided_per_operation() {
        let cpu = CpuSample {
            router: Some(Duration::from_millis(500)),
            loader: Duration::from_secs(1),
            machine: Some(Duration::from_secs(2)),
        };
        assert_eq!(cpu.others(Duration::from_secs(5)), Some(0.1));
        let per = CpuPerOp::new(&cpu, 100_000.0).unwrap();
        assert_eq!(per.router, Some(5.0));
        assert_eq!(per.loader, 10.0);
        assert!(CpuPerOp::new(&cpu, 0.0).is_none());
    }
}
