//! The live progress line on stderr, once per second, from a thread of its own so that a busy load
//! generator runtime cannot delay it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::report::thousands;

/// Counters the workers bump and the progress line reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Completed operations (calls or sessions).
    pub done: AtomicU64,
    /// Failed operations.
    pub errors: AtomicU64,
}

impl Counters {
    /// Adds completed and failed operations.
    pub fn add(&self, done: u64, errors: u64) {
        if done > 0 {
            self.done.fetch_add(done, Ordering::Relaxed);
        }
        if errors > 0 {
            self.errors.fetch_add(errors, Ordering::Relaxed);
        }
    }
}

/// A running progress line; stops when dropped.
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing `label` (e.g. "rpc roundrobin"), the rate of `unit`s per second, the total done,
    /// errors, and the elapsed time against `warmup` and `total` (left out when `total` is zero).
    pub fn start(
        label: String,
        unit: &'static str,
        counters: Arc<Counters>,
        warmup: Duration,
        total: Duration,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let tty = std::io::stderr().is_terminal();
                let start = Instant::now();
                let mut last = (start, 0u64);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(1)) {
                    let now = Instant::now();
                    let done = counters.done.load(Ordering::Relaxed);
                    let errors = counters.errors.load(Ordering::Relaxed);
                    let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                    let elapsed = now.duration_since(start);
                    // The phase of the second just reported: where its middle fell.
                    let middle = (last.0.duration_since(start) + elapsed) / 2;
                    let phase = match () {
                        _ if total.is_zero() => String::new(),
                        _ if middle < warmup => {
                            format!("warmup  {:>5.1}s/{:.0}s", elapsed.as_secs_f64(), total.as_secs_f64())
                        }
                        _ => format!("measure {:>5.1}s/{:.0}s", elapsed.as_secs_f64(), total.as_secs_f64()),
                    };
                    last = (now, done);
                    let line = format!(
                        "[{label}] {phase}  {:>10} {unit}/s  {} done  errors {}",
                        thousands(rate.round() as u64),
                        thousands(done),
                        thousands(errors),
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = if tty { write!(err, "\r\x1b[2K{line}") } else { writeln!(err, "{line}") };
                    let _ = err.flush();
                }
                if tty {
                    let _ = write!(std::io::stderr(), "\r\x1b[2K");
                }
            })
            .ok();
        Progress { stop: Some(stop), thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
