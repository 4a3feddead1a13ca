//! The router under test: one given by `--url`, or an embedded Roundhouse.
//!
//! The embedded router runs either in this process, on a tokio runtime of its own whose worker
//! threads are named `rh-router*` (so they never share workers with the load generator, and their CPU
//! time can be told apart in `/proc/self/task`), or in a child process: this very binary re-executed
//! with the hidden `--internal-router` flag, which serves the router and prints its URL on stdout. The
//! child lives as long as its stdin stays open, so it cannot outlive the load generator.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roundhouse::{Census, Router, RouterConfig, RouterHandle};

use crate::cpu::{self, RouterCpu};

/// A router to send load to.
pub struct Target {
    /// WebSocket URL.
    pub url: String,
    /// Whose CPU time counts as the router's.
    pub router_cpu: RouterCpu,
    /// The router's process, when known (for its memory).
    pub router_pid: Option<u32>,
    /// What the router is, for the report.
    pub description: String,
    embedded: Embedded,
}

/// How an embedded router is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// The default configuration.
    Default,
    /// The default with short liveness timings, for chaos runs (see [`crate::chaos::tune`]).
    Chaos,
}

enum Embedded {
    None,
    InProcess(tokio::runtime::Runtime, RouterHandle),
    Child(Child),
}

impl Target {
    /// An external router at `url`, optionally with its PID.
    pub fn external(url: &str, pid: Option<u32>) -> Target {
        Target {
            url: url.to_owned(),
            router_cpu: pid.map_or(RouterCpu::Unknown, RouterCpu::Process),
            router_pid: pid,
            description: match pid {
                Some(pid) => format!("{url} (pid {pid})"),
                None => url.to_owned(),
            },
            embedded: Embedded::None,
        }
    }

    /// Starts Roundhouse in this process with `threads` session workers (default: the router's),
    /// serving `realm` on 127.0.0.1 and an ephemeral port.
    pub fn in_process(realm: &str, threads: Option<usize>, tuning: Tuning) -> Result<Target, String> {
        let threads = threads.unwrap_or_else(default_threads);
        // The router runs its sessions on `threads` workers of its own; this runtime keeps its
        // timers and the tasks that outlive a session.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(cpu::ROUTER_THREAD_PREFIX)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the embedded router's runtime: {e}"))?;
        let config = RouterConfig { worker_threads: threads, ..router_config(realm, tuning) };
        let router =
            runtime.block_on(Router::start(config)).map_err(|e| format!("cannot start the embedded router: {e}"))?;
        Ok(Target {
            url: router.url(),
            router_cpu: RouterCpu::EmbeddedThreads,
            router_pid: None,
            description: format!(
                "embedded Roundhouse {} in-process ({threads} router workers)",
                env!("CARGO_PKG_VERSION")
            ),
            embedded: Embedded::InProcess(runtime, router),
        })
    }

    /// Starts Roundhouse in a child process (this binary with `--internal-router`).
    pub fn child_process(realm: &str, threads: Option<usize>, tuning: Tuning) -> Result<Target, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
        let mut command = Command::new(exe);
        command.args(["--internal-router", "--realm", realm]);
        if tuning == Tuning::Chaos {
            command.args(["--mode", "chaos"]);
            // Memory the router frees goes back to the system at once, so its RSS tracks what it
            // holds (see crate::chaos::PURGE_NOW).
            command.env(crate::chaos::PURGE_NOW.0, crate::chaos::PURGE_NOW.1);
        }
        if let Some(threads) = threads {
            command.args(["--router-threads", &threads.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the router process: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        let read = BufReader::new(stdout).read_line(&mut line);
        if read.is_err() || !line.starts_with("ws://") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the router process did not start (it printed {line:?})"));
        }
        let pid = child.id();
        Ok(Target {
            url: line.trim().to_owned(),
            router_cpu: RouterCpu::Process(pid),
            router_pid: Some(pid),
            description: format!(
                "embedded Roundhouse {} in child process {pid} ({} router workers)",
                env!("CARGO_PKG_VERSION"),
                threads.unwrap_or_else(default_threads)
            ),
            embedded: Embedded::Child(child),
        })
    }

    /// What an in-process router holds right now (`None` for a router in another process).
    pub fn census(&self) -> Option<Census> {
        match &self.embedded {
            Embedded::InProcess(_, router) => Some(router.census()),
            _ => None,
        }
    }

    /// True when the router runs in this process.
    pub fn is_in_process(&self) -> bool {
        matches!(self.embedded, Embedded::InProcess(..))
    }

    /// Stops an embedded router (an external one is left alone).
    pub fn stop(self) {
        match self.embedded {
            Embedded::None => {}
            Embedded::InProcess(runtime, router) => {
                runtime.block_on(router.shutdown());
                runtime.shutdown_timeout(Duration::from_secs(2));
            }
            Embedded::Child(mut child) => {
                drop(child.stdin.take());
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The router's own default: its session workers (see `roundhouse::workers::default_count`).
fn default_threads() -> usize {
    roundhouse::workers::default_count()
}

fn router_config(realm: &str, tuning: Tuning) -> RouterConfig {
    // The default configuration, with its one realm renamed (so every other realm setting keeps
    // its default).
    let mut config = RouterConfig { listen: ([127, 0, 0, 1], 0).into(), ..Default::default() };
    config.realms.truncate(1);
    if let Some(only) = config.realms.first_mut() {
        only.name = realm.to_owned();
    }
    if tuning == Tuning::Chaos {
        crate::chaos::tune(&mut config);
    }
    config
}

/// The child side of [`Target::child_process`]: serves a router, prints its URL on stdout, and runs
/// until stdin closes. Returns the process exit code.
pub fn serve_child(realm: &str, threads: Option<usize>, tuning: Tuning) -> i32 {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let target = match Target::in_process(realm, threads, tuning) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("loadtest router: {error}");
            return 2;
        }
    };
    println!("{}", target.url);
    // Blocks until the parent closes our stdin (or dies); the router runs on its own threads.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    target.stop();
    0
}
