//! A session's outbound queue, accounted in bytes, with one rule per direction.
//!
//! Everything another task sends to a session goes through its [`Outbox`]. The queue itself is
//! unbounded; the bound is kept here, in bytes (each item counts its frame or payload bytes plus
//! a fixed overhead), so a session's memory is bounded whatever the message sizes are.
//!
//! Only one direction ever waits: a call on its way to a callee ([`Outbox::deliver`]) waits while
//! the callee's queue holds `max_outbound_bytes` or more. That is the backpressure that slows a
//! caller down to what its callee can take. Everything else — RESULTs and ERRORs for a caller,
//! REGISTERED and the other replies, INTERRUPTs, meta events, timeouts — is queued at once
//! ([`Outbox::push`]), because waiting there would let one peer that stopped reading stall the
//! session, or the realm-wide task, that is answering it. EVENTs are dropped (and counted) for a
//! session whose queue is over the limit ([`Outbox::push_event`]): a subscriber that cannot keep
//! up loses events, never the publisher's time.
//!
//! A session whose queue keeps growing to `slow_consumer_bytes` is a slow consumer (nats-server's
//! rule): it is closed at once, with a logged reason, and its teardown answers its calls. One
//! that stops reading altogether is caught sooner by the writer's write deadline (see
//! [`super::writer`]), and a caller waiting to deliver gives up after `stuck_timeout` and closes
//! the stuck callee. So the queue never holds more than `slow_consumer_bytes` plus one message.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::Outbound;
use crate::metrics::CloseCause;

/// Bytes an item costs beyond its frame or payload: the queue slot, the box, the bookkeeping.
pub const ITEM_OVERHEAD: usize = 64;

/// How a session's queue is bounded.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Bytes queued at which calls wait and events are dropped.
    pub max_bytes: usize,
    /// Bytes queued at which the session is closed as a slow consumer.
    pub slow_consumer_bytes: usize,
    /// How long a call may wait for room before the session is closed as stuck.
    pub stuck_timeout: Duration,
}

/// Why an item was not queued; the item comes back so that its obligations (a call to route
/// elsewhere or answer) are kept by the sender.
pub enum Refused {
    /// The session has closed its queue.
    Closed(Outbound),
    /// The session is a slow consumer and is being closed.
    SlowConsumer(Outbound),
}

impl Refused {
    /// The item that was not queued.
    pub fn into_item(self) -> Outbound {
        match self {
            Refused::Closed(item) | Refused::SlowConsumer(item) => item,
        }
    }
}

/// The sending side of a session's queue.
pub struct Outbox {
    session: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    /// Bytes queued and not yet taken by the writer.
    queued: AtomicUsize,
    /// Signalled when `queued` falls below the limit (calls waiting for room).
    room: Notify,
    limits: OutboxLimits,
    /// EVENTs dropped because the queue was over the limit.
    events_dropped: AtomicU64,
    /// The session's close signal: fired when the session is found slow or stuck.
    closing: CancellationToken,
    /// Why the router closed the session ([`CloseCause`] code; 0 while it has not).
    cause: AtomicU8,
}

impl Outbox {
    /// An outbox for session `session` and the receiving end its writer drains.
    pub fn new(
        session: u64,
        limits: OutboxLimits,
        closing: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            session,
            tx,
            queued: AtomicUsize::new(0),
            room: Notify::new(),
            limits,
            events_dropped: AtomicU64::new(0),
            closing,
            cause: AtomicU8::new(0),
        };
        (outbox, rx)
    }

    /// Queues `item` now, without waiting: for answers, replies and control messages. Refused
    /// when the session has closed, or when its queue already holds `slow_consumer_bytes` — then
    /// the session is closed as a slow consumer.
    pub fn push(&self, item: Outbound) -> Result<(), Refused> {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued >= self.limits.slow_consumer_bytes {
            if !self.closing.is_cancelled() {
                tracing::warn!(
                    session = self.session,
                    queued_bytes = queued,
                    limit = self.limits.slow_consumer_bytes,
                    "slow consumer: the peer does not read what it is sent; closing the session"
                );
                self.mark(CloseCause::SlowConsumer);
                self.closing.cancel();
            }
            return Err(Refused::SlowConsumer(item));
        }
        self.enqueue(item)
    }

    /// Queues an EVENT frame unless the queue is over the limit, in which case the event is
    /// dropped and counted. Returns whether it was queued.
    pub fn push_event(&self, frame: bytes::Bytes) -> bool {
        if self.queued.load(Ordering::Relaxed) >= self.limits.max_bytes {
            let dropped = self.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::info!(session = self.session, dropped, "subscriber's queue is full; events dropped");
            }
            return false;
        }
        self.enqueue(Outbound::Frame(frame)).is_ok()
    }

    /// Queues a call for this session as callee, waiting while its queue is over the limit
    /// (backpressure). If it stays over the limit for `stuck_timeout`, the session is closed as
    /// stuck and the item comes back, as it does when the session has closed.
    pub async fn deliver(&self, item: Outbound) -> Result<(), Refused> {
        if self.queued.load(Ordering::Relaxed) < self.limits.max_bytes {
            return self.enqueue(item);
        }
        let deadline = tokio::time::Instant::now() + self.limits.stuck_timeout;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.queued.load(Ordering::Relaxed) < self.limits.max_bytes {
                return self.enqueue(item);
            }
            if self.tx.is_closed() || self.closing.is_cancelled() {
                return Err(Refused::Closed(item));
            }
            tokio::select! {
                _ = room => {}
                _ = self.closing.cancelled() => return Err(Refused::Closed(item)),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        session = self.session,
                        timeout_ms = self.limits.stuck_timeout.as_millis() as u64,
                        "outbound queue stayed full; closing the stuck session"
                    );
                    self.mark(CloseCause::Stuck);
                    self.closing.cancel();
                    return Err(Refused::SlowConsumer(item));
                }
            }
        }
    }

    fn enqueue(&self, item: Outbound) -> Result<(), Refused> {
        crate::sync::switch_point();
        let size = item.size();
        self.queued.fetch_add(size, Ordering::Relaxed);
        self.tx.send(item).map_err(|error| {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            Refused::Closed(error.0)
        })
    }

    /// The writer took items of `size` bytes in all off the queue.
    pub fn taken(&self, size: usize) {
        let before = self.queued.fetch_sub(size, Ordering::Relaxed);
        if before >= self.limits.max_bytes && before - size < self.limits.max_bytes {
            self.room.notify_waiters();
        }
    }

    /// Bytes queued right now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Records why the session is being closed, unless a reason was recorded already.
    pub fn mark(&self, cause: CloseCause) {
        let _ = self.cause.compare_exchange(0, cause as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Why the router closed the session, if it did.
    pub fn cause(&self) -> Option<CloseCause> {
        CloseCause::from_code(self.cause.load(Ordering::Relaxed))
    }

    /// EVENTs dropped so far because this session could not keep up.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }
}
