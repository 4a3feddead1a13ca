//! Call timeouts (`CALL.Options.timeout`, milliseconds), enforced by one sweeper task per realm.
//!
//! A timed call costs a heap push, not a task or a timer of its own. The sweeper sleeps until the
//! earliest deadline, then ends every call whose deadline passed — the caller gets
//! `wamp.error.timeout`, the callee an INTERRUPT if it supports canceling. Calls that finished in
//! time leave their entry behind; it is dropped when it falls due and finds nothing to end. The
//! entries hold weak references, so a departed caller is not kept alive by its timers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::pending::{self, CancelMode};
use crate::error::WampError;
use crate::session::SessionHandle;

/// How long the sweeper sleeps at most, so it notices when its realm is gone.
const IDLE: Duration = Duration::from_secs(1);

struct Entry {
    deadline: Instant,
    caller: Weak<SessionHandle>,
    request: u64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.deadline.cmp(&other.deadline)
    }
}

/// The pending deadlines of one realm.
pub struct Timeouts {
    queue: Mutex<BinaryHeap<Reverse<Entry>>>,
    earlier: Notify,
}

impl Timeouts {
    /// Creates the table and spawns its sweeper (which ends when the table is dropped).
    pub fn start() -> Arc<Self> {
        let timeouts = Arc::new(Timeouts { queue: Mutex::new(BinaryHeap::new()), earlier: Notify::new() });
        tokio::spawn(sweep(Arc::downgrade(&timeouts)));
        timeouts
    }

    /// Ends the caller's call `request` with `wamp.error.timeout` after `timeout_ms`, unless it
    /// has ended by then.
    pub fn schedule(&self, timeout_ms: u64, caller: &Arc<SessionHandle>, request: u64) {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut queue = self.queue.lock();
        let earliest = queue.peek().is_none_or(|Reverse(first)| deadline < first.deadline);
        queue.push(Reverse(Entry { deadline, caller: Arc::downgrade(caller), request }));
        drop(queue);
        if earliest {
            self.earlier.notify_one();
        }
    }
}

async fn sweep(timeouts: Weak<Timeouts>) {
    loop {
        let Some(table) = timeouts.upgrade() else { return };
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut queue = table.queue.lock();
            while queue.peek().is_some_and(|Reverse(e)| e.deadline <= now) {
                if let Some(Reverse(entry)) = queue.pop() {
                    due.push(entry);
                }
            }
            queue.peek().map(|Reverse(e)| e.deadline)
        };
        for entry in due {
            if let Some(caller) = entry.caller.upgrade() {
                pending::cancel(&caller, entry.request, CancelMode::KillNoWait, WampError::Timeout).await;
            }
        }
        let wake = next.unwrap_or(now + IDLE).min(now + IDLE);
        // Holding the table while asleep keeps it at most IDLE past its realm.
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = table.earlier.notified() => {}
        }
    }
}
