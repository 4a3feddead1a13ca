//! Where and when a run happened, for results that are shared: the router's version (its WELCOME
//! agent), the load generator's version and commit, the host, its CPU model, a UTC timestamp;
//! and the `--csv` and `--hist-out` outputs.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value as Json};

/// The facts every JSON line and CSV row carries.
pub fn facts(router_version: Option<&str>, transport: &str) -> Map<String, Json> {
    let json = json!({
        "router_version": router_version,
        "loadtest_version": env!("CARGO_PKG_VERSION"),
        "commit": commit(),
        "host": host(),
        "cpu_model": cpu_model(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "timestamp": timestamp(SystemTime::now()),
        "transport": transport,
    });
    match json {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

/// The commit of the checkout the load generator was built from, `-dirty` when it has local
/// changes; `None` away from it (git asked at run time, so a rebuild is never needed for it).
fn commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

fn host() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The CPU model (Linux: `/proc/cpuinfo`).
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned())
}

/// RFC 3339, UTC, to the millisecond.
pub fn timestamp(at: SystemTime) -> String {
    roundhouse::meta::iso8601(at)
}

/// The `--csv` columns, read from each result's JSON line (nested keys joined with `.`).
const COLUMNS: [&str; 27] = [
    "mode",
    "rule",
    "transport",
    "serializer",
    "callers",
    "callees",
    "window",
    "rate_target",
    "payload_bytes",
    "duration_s",
    "calls",
    "calls_per_sec",
    "latency_us.p50",
    "latency_us.p90",
    "latency_us.p99",
    "latency_us.p999",
    "latency_us.max",
    "error_count",
    "router_cpu_us_per_call",
    "loader_cpu_us_per_call",
    "sessions_per_sec",
    "router_rss_per_session_bytes",
    "other_cpus",
    "router_version",
    "commit",
    "host",
    "timestamp",
];

/// The CSV text: a header row, then one row per JSON line.
pub fn csv(lines: &[Json]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for line in lines {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|column| {
                let value = column.split('.').try_fold(line, |v, key| v.get(key));
                match value {
                    None | Some(Json::Null) => String::new(),
                    Some(Json::String(s)) if s.contains([',', '"', '\n']) => format!("\"{}\"", s.replace('"', "\"\"")),
                    Some(Json::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                }
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Writes `histograms` (tag, measured interval, latencies in ns) as an HdrHistogram interval log.
pub fn write_histograms(path: &Path, histograms: &[(String, Duration, &Histogram<u64>)]) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot write --hist-out {}: {e}", path.display());
    let mut file = std::fs::File::create(path).map_err(|e| failed(&e))?;
    let mut serializer = V2DeflateSerializer::new();
    let now = SystemTime::now();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("loadtest latency histograms: values in nanoseconds, max column in microseconds")
        .add_comment(&format!("one interval per result; written {}", timestamp(now)))
        .with_start_time(now)
        .with_base_time(now)
        .with_max_value_divisor(1000.0);
    let mut log = builder.begin_log_with(&mut file, &mut serializer).map_err(|e| failed(&e))?;
    let mut start = Duration::ZERO;
    for (tag, measured, histogram) in histograms {
        let tag: String = tag.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        log.write_histogram(*histogram, start, *measured, Tag::new(&tag)).map_err(|e| failed(&format!("{e:?}")))?;
        start += *measured;
    }
    drop(log);
    file.flush().map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)), "2000-02-29T01:01:01.000Z");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(1_798_761_599)), "2026-12-31T23:59:59.000Z");
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_line() {
        let line = json!({"mode": "rpc", "rule": "roundrobin", "calls": 5, "latency_us": {"p50": 1.5}, "host": "a,b"});
        let text = csv(&[line]);
        let mut rows = text.lines();
        assert!(rows.next().unwrap().starts_with("mode,rule,transport"));
        let row = rows.next().unwrap();
        assert!(row.starts_with("rpc,roundrobin,,"), "{row}");
        assert!(row.contains(",5,") && row.contains(",1.5,") && row.contains("\"a,b\""), "{row}");
    }

    #[test]
    fn histogram_logs_read_back() {
        let mut histogram = crate::report::new_histogram();
        for v in 1..=1000u64 {
            histogram.record(v * 1000).unwrap();
        }
        let path = std::env::temp_dir().join(format!("loadtest-hist-{}.hlog", std::process::id()));
        write_histograms(&path, &[("roundrobin".into(), Duration::from_secs(10), &histogram)]).unwrap();
        let text = std::fs::read(&path).unwrap();
        let intervals: Vec<_> = hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&text)
            .filter_map(|e| match e {
                Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(h)) => {
                    Some((h.tag().map(|t| t.as_str().to_owned()), h.duration()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(intervals, vec![(Some("roundrobin".to_owned()), Duration::from_secs(10))]);
        std::fs::remove_file(path).ok();
    }
}
