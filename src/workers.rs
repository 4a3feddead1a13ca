//! The threads sessions run on: N session workers, each one OS thread driving its own
//! single-threaded tokio runtime, and the round-robin hand-off of accepted connections to them.
//!
//! A session lives on one worker from accept to teardown: its reader, its writer and every task
//! it spawns (reroutes, ticket checks' waits) run on that worker's thread. A message for a
//! session on the same worker wakes its writer with a push onto the worker's local run queue, no
//! futex and no context switch; a message for a session on another worker wakes it through that
//! runtime's inject queue and an `eventfd` write (nothing if the writer is already scheduled, so
//! a burst costs one; measured at 3–4% of the router's CPU with two workers, see BENCHMARKS.md,
//! which is why there is no batching mailbox on top). Everything else about a session is unchanged: its queue, its tables and the
//! dealer are shared, thread-safe structures, so the rules of RELIABILITY.md do not depend on
//! where a session runs.
//!
//! The worker count is `worker_threads` (0: see [`default_count`]). Workers stop when the router
//! is shut down, or when the runtime that started the router ends (tests and benches embed the
//! router in their own runtime and drop it at the end, as before the workers existed).

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The name of every worker thread starts with this (then the worker's index).
pub const THREAD_NAME_PREFIX: &str = "roundhouse-w";

/// The session workers of one router.
pub struct Workers {
    handles: Vec<Handle>,
    /// The next worker to get a connection.
    next: AtomicUsize,
    /// Fires to stop every worker (their remaining tasks are dropped).
    stop: CancellationToken,
}

thread_local! {
    /// The index of the worker this thread is; `None` on every other thread.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the calling thread is, if it is one.
pub fn current() -> Option<usize> {
    CURRENT.get()
}

/// The worker count `worker_threads = 0` means: one worker per CPU this process may run on (its
/// affinity mask and cgroup quota count), less one, and at least one. The CPU left over takes
/// what runs beside the workers and must not wait behind them: the kernel's network processing,
/// the main thread (signals, the admin listener, call timeouts, ticket hashes) and, on a small
/// machine, the clients. On two CPUs one worker routes more calls, at lower latency, than two
/// (see BENCHMARKS.md); on a large dedicated server one worker per CPU may route a little more.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| cpus.get().saturating_sub(1).max(1))
}

impl Workers {
    /// Starts `count` workers (0: [`default_count`]), each on its own thread. They run until
    /// [`Workers::stop`], or until the returned guard is dropped.
    pub fn start(count: usize) -> io::Result<(Arc<Self>, StopOnDrop)> {
        let count = if count == 0 { default_count() } else { count };
        let stop = CancellationToken::new();
        // Dropped on an early return too: workers already started then stop again.
        let guard = StopOnDrop(stop.clone());
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("{THREAD_NAME_PREFIX}{index}")).spawn(move || {
                CURRENT.set(Some(index));
                runtime.block_on(stop.cancelled());
                // Not `drop`: that would wait for blocking tasks (a ticket hash) to finish.
                runtime.shutdown_background();
            })?;
        }
        Ok((Arc::new(Workers { handles, next: AtomicUsize::new(0), stop }), guard))
    }

    /// The worker that takes the next connection: round-robin, so sessions spread evenly.
    pub fn next_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    /// The runtime of worker `index`.
    pub fn handle(&self, index: usize) -> &Handle {
        &self.handles[index]
    }

    /// Stops every worker; tasks still on them are dropped.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Stops the workers when dropped. The router keeps one inside a task of the runtime that
/// started it, so the workers end with that runtime.
pub struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
