//! Call timeouts (`CALL.Options.timeout`, milliseconds), enforced by one sweeper task per realm.
//!
//! A timed call costs an ordered-map insert, not a task or a timer of its own, and a call that
//! ends in time removes its entry at once (its [`TimerKey`] is kept with the call), so the table
//! holds only calls in flight. The table is split into shards, picked by caller session, so timed
//! calls of different sessions rarely meet on a lock. The sweeper sleeps until the earliest
//! deadline, then ends every call whose deadline passed: the caller gets `wamp.error.timeout`,
//! the callee an INTERRUPT if it supports canceling. Ending a call never waits on a peer's queue,
//! so one stuck session cannot delay another's timeout. Entries hold weak references: a departed
//! caller is not kept alive by its timers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::call::{self, CancelMode};
use crate::error::WampError;
use crate::session::SessionHandle;

/// How long the sweeper sleeps at most, so it notices when its realm is gone.
const IDLE: Duration = Duration::from_secs(1);

/// Shards of the table; a power of two.
const SHARDS: usize = 16;

/// Where a call's deadline sits in the table, to remove it when the call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey {
    shard: usize,
    deadline: Instant,
    seq: u64,
}

struct Due {
    caller: Weak<SessionHandle>,
    request: u64,
    token: u64,
    /// The deadline of a wait in a registration's queue, not of the call itself.
    queue_wait: bool,
}

#[derive(Default)]
struct Shard {
    deadlines: BTreeMap<(Instant, u64), Due>,
    next_seq: u64,
}

/// The pending deadlines of one realm.
pub struct Timeouts {
    shards: Box<[Mutex<Shard>]>,
    /// When the sweeper plans to wake, in milliseconds since `base`.
    wake_at: AtomicU64,
    base: Instant,
    earlier: Notify,
}

impl Timeouts {
    /// Creates the table and spawns its sweeper (which ends when the table is dropped).
    pub fn start() -> Arc<Self> {
        let timeouts = Arc::new(Timeouts {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            wake_at: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            earlier: Notify::new(),
        });
        tokio::spawn(sweep(Arc::downgrade(&timeouts)));
        timeouts
    }

    /// Ends the caller's call `request` (if it is still the call `token`) with
    /// `wamp.error.timeout` after `timeout_ms`, unless it is canceled first.
    pub fn schedule(&self, timeout_ms: u64, caller: &Arc<SessionHandle>, request: u64, token: u64) -> TimerKey {
        self.insert(timeout_ms, caller, request, token, false)
    }

    /// Ends the caller's call `request` with `wamp.error.timeout` after `wait_ms` if it is still
    /// parked in its registration's queue then.
    pub fn schedule_queue_wait(&self, wait_ms: u64, caller: &Arc<SessionHandle>, request: u64, token: u64) -> TimerKey {
        self.insert(wait_ms, caller, request, token, true)
    }

    fn insert(
        &self,
        timeout_ms: u64,
        caller: &Arc<SessionHandle>,
        request: u64,
        token: u64,
        queue_wait: bool,
    ) -> TimerKey {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let shard = (caller.id as usize) & (SHARDS - 1);
        let seq = {
            let mut table = self.shards[shard].lock();
            table.next_seq += 1;
            let seq = table.next_seq;
            table.deadlines.insert((deadline, seq), Due { caller: Arc::downgrade(caller), request, token, queue_wait });
            seq
        };
        let at = deadline.saturating_duration_since(self.base).as_millis() as u64;
        if at < self.wake_at.load(Ordering::Relaxed) {
            self.earlier.notify_one();
        }
        TimerKey { shard, deadline, seq }
    }

    /// Removes a deadline whose call has ended.
    pub fn cancel(&self, key: TimerKey) {
        self.shards[key.shard].lock().deadlines.remove(&(key.deadline, key.seq));
    }

    /// Deadlines pending (calls with a timeout in flight).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().deadlines.len()).sum()
    }

    /// True when no deadline is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the entries due at `now` out of the table; returns them and the next deadline.
    fn due(&self, now: Instant) -> (Vec<Due>, Option<Instant>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for shard in self.shards.iter() {
            let mut table = shard.lock();
            while let Some(entry) = table.deadlines.first_entry() {
                if entry.key().0 > now {
                    next = Some(next.map_or(entry.key().0, |n| n.min(entry.key().0)));
                    break;
                }
                due.push(entry.remove());
            }
        }
        (due, next)
    }
}

async fn sweep(timeouts: Weak<Timeouts>) {
    loop {
        let Some(table) = timeouts.upgrade() else { return };
        let now = Instant::now();
        let (due, next) = table.due(now);
        for entry in due {
            let Some(caller) = entry.caller.upgrade() else { continue };
            if entry.queue_wait {
                call::queue_wait_expired(&caller, entry.request, entry.token);
            } else {
                call::cancel(&caller, entry.request, Some(entry.token), CancelMode::KillNoWait, WampError::Timeout);
            }
        }
        let wake = next.unwrap_or(now + IDLE).min(now + IDLE);
        let earlier = table.earlier.notified();
        tokio::pin!(earlier);
        earlier.as_mut().enable();
        table.wake_at.store(wake.saturating_duration_since(table.base).as_millis() as u64, Ordering::Relaxed);
        // A deadline scheduled between `due` and here is earlier than `wake` only if it notified.
        if table.due_before(wake) {
            continue;
        }
        // Holding the table while asleep keeps it at most IDLE past its realm.
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = earlier => {}
        }
    }
}

impl Timeouts {
    /// True when some deadline falls before `when`.
    fn due_before(&self, when: Instant) -> bool {
        self.shards.iter().any(|s| s.lock().deadlines.first_key_value().is_some_and(|((d, _), _)| *d < when))
    }
}
