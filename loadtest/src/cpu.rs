//! CPU time and memory from Linux `/proc`: a process's utime+stime, the same summed over the threads of
//! this process whose name starts with a prefix (the embedded router's runtime), and VmRSS.
//!
//! CPU times come in clock ticks (usually 10 ms), which is plenty over a measurement of seconds.

use std::fs;
use std::io;
use std::time::Duration;

/// Name prefix of the embedded router runtime's threads (a thread name holds at most 15 bytes).
pub const ROUTER_THREAD_PREFIX: &str = "rh-router";

/// Whose CPU time counts as the router's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterCpu {
    /// Not known (an external router without --router-pid).
    Unknown,
    /// A whole process.
    Process(u32),
    /// The threads of this process named with [`ROUTER_THREAD_PREFIX`] or the router's worker
    /// prefix.
    EmbeddedThreads,
}

impl RouterCpu {
    /// How the router's CPU time is measured, for the report.
    pub fn describe(&self) -> String {
        match self {
            RouterCpu::Unknown => "unknown (pass --router-pid)".into(),
            RouterCpu::Process(pid) => format!("process {pid}"),
            RouterCpu::EmbeddedThreads => format!("embedded router threads ({ROUTER_THREAD_PREFIX}*)"),
        }
    }
}

/// CPU time used so far by the router and by the load generator.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// The router's CPU time, when known.
    pub router: Option<Duration>,
    /// The load generator's: this process, less the embedded router threads.
    pub loader: Duration,
    /// Every CPU's busy time, machine-wide (from `/proc/stat`), when readable.
    pub machine: Option<Duration>,
}

impl CpuSample {
    /// Reads the current CPU times. Failures (no /proc, process gone) leave the figure unknown.
    pub fn take(router: &RouterCpu) -> Option<CpuSample> {
        let process = process_cpu("self").ok()?;
        let (router, loader) = match router {
            RouterCpu::Unknown => (None, process),
            RouterCpu::Process(pid) => (process_cpu(&pid.to_string()).ok(), process),
            RouterCpu::EmbeddedThreads => {
                // The runtime that started the router, and the router's session workers.
                let threads = threads_cpu("self", ROUTER_THREAD_PREFIX).ok()?
                    + threads_cpu("self", roundhouse::workers::THREAD_NAME_PREFIX).ok()?;
                (Some(threads), process.saturating_sub(threads))
            }
        };
        Some(CpuSample { router, loader, machine: machine_busy().ok() })
    }

    /// CPU used between `self` (earlier) and `later`.
    pub fn until(&self, later: &CpuSample) -> CpuSample {
        CpuSample {
            router: match (self.router, later.router) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            loader: later.loader.saturating_sub(self.loader),
            machine: match (self.machine, later.machine) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
        }
    }

    /// For an interval's usage (see [`CpuSample::until`]) over `wall` time: how many CPUs' worth of
    /// time went to processes other than the router and the load generator (including time stolen
    /// by a hypervisor). Known only when the router's CPU time is.
    pub fn others(&self, wall: Duration) -> Option<f64> {
        let others = self.machine?.saturating_sub(self.router? + self.loader);
        Some(others.as_secs_f64() / wall.as_secs_f64().max(1e-9))
    }
}

/// utime+stime of a whole process (`pid` may be `self`), including threads that have exited.
pub fn process_cpu(pid: &str) -> io::Result<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let stat = parse_stat(&text).ok_or_else(|| bad_data(&format!("/proc/{pid}/stat")))?;
    Ok(ticks_to_duration(stat.ticks))
}

/// utime+stime summed over the live threads of `pid` whose name starts with `prefix`.
pub fn threads_cpu(pid: &str, prefix: &str) -> io::Result<Duration> {
    let mut ticks = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("stat");
        // A thread may exit between listing and reading; it simply no longer counts.
        let Ok(text) = fs::read_to_string(&path) else { continue };
        match parse_stat(&text) {
            Some(stat) if stat.comm.starts_with(prefix) => ticks += stat.ticks,
            Some(_) => {}
            None => return Err(bad_data(&path.display().to_string())),
        }
    }
    Ok(ticks_to_duration(ticks))
}

/// Busy time summed over every CPU since boot: user, nice, system, irq, softirq and steal from the
/// `cpu` line of `/proc/stat`.
pub fn machine_busy() -> io::Result<Duration> {
    let text = fs::read_to_string("/proc/stat")?;
    parse_machine_busy(&text).map(ticks_to_duration).ok_or_else(|| bad_data("/proc/stat"))
}

/// Parses the busy ticks of the `cpu` line of `/proc/stat`.
pub fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user and nice]
    let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
    (ticks.len() >= 4).then(|| field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// Resident set size of a process (`pid` may be `self`), in bytes.
pub fn vm_rss(pid: &str) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&text).ok_or_else(|| bad_data(&format!("/proc/{pid}/status")))
}

/// The fields of a `/proc/.../stat` line that we use.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    /// The command or thread name (`comm`).
    pub comm: String,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
}

/// Parses a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line. The name sits in parentheses
/// and may itself contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After the name: field 3 (state) is index 0, so utime (field 14) is 11 and stime (15) is 12.
    let mut fields = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Stat { comm, ticks: utime + stime })
}

/// Reads `VmRSS:  1234 kB` from a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 { per_second as u64 } else { 100 };
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second)
}

fn bad_data(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "4242 (rh-router-1) S 1 4242 4242 0 -1 4194368 1523 0 0 0 250 75 0 0 20 0 3 0 1 1 1";
        assert_eq!(parse_stat(line), Some(Stat { comm: "rh-router-1".into(), ticks: 325 }));
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(odd).map(|s| (s.comm, s.ticks)), Some(("a (b) c".into(), 30)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 9000 40 3 2 7 0 0\ncpu0 50 2 25 4500 20 1 1 3 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(100 + 5 + 50 + 3 + 2 + 7));
        assert_eq!(parse_machine_busy("intr 1 2 3\n"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tloadtest\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(process_cpu("self").is_ok());
        assert!(vm_rss("self").unwrap() > 0);
    }
}
