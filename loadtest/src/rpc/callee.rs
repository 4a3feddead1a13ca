//! A callee: one session registered for the procedure, answering every INVOCATION with a YIELD that
//! echoes its payload. It writes in batches: a YIELD for every INVOCATION already received, then one
//! flush. With a service time, each call is answered that long after it arrived, calls overlapping
//! (a callee with unbounded parallelism whose every call takes the same time: they finish in the
//! order they came).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use roundhouse::client::{ClientError, Receiver, Sender};
use roundhouse::wire::{Dict, Message, Payload};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::wamp;

/// How long UNREGISTER may take once the run is over.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves INVOCATIONs until `stop` fires, counting them in `served`, each answered `service_time`
/// after it arrived (`serial`: after the calls before it were answered, one at a time); then
/// unregisters and leaves. `Err` describes a lost session or a failed
/// UNREGISTER.
pub async fn run(
    mut tx: Sender,
    mut rx: Receiver,
    registration: u64,
    served: Arc<AtomicU64>,
    stop: CancellationToken,
    service_time: Duration,
    serial: bool,
) -> Result<(), String> {
    let lost = |e: ClientError| format!("callee session lost: {}", wamp::describe(&e));
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    // Calls being "worked on": (due, INVOCATION id, payload), due times in arrival order.
    let mut working: VecDeque<(Instant, u64, Payload)> = VecDeque::new();
    if service_time.is_zero() {
        loop {
            let first = tokio::select! {
                biased;
                _ = &mut stopped => break,
                received = rx.recv_forever() => received,
            };
            let mut answered = 0;
            let mut next = Some(first);
            while let Some(received) = next {
                answered += answer(&mut tx, received.map_err(lost)?).await?;
                next = rx.recv_forever().now_or_never();
            }
            tx.flush().await.map_err(lost)?;
            served.fetch_add(answered, Ordering::Relaxed);
        }
    } else {
        loop {
            let due = working.front().map(|w| w.0);
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let now = Instant::now();
                    let mut answered = 0;
                    while working.front().is_some_and(|w| w.0 <= now) {
                        let Some((_, request, payload)) = working.pop_front() else { break };
                        let reply = Message::Yield { request, options: Dict::new(), payload };
                        tx.feed(&reply).await.map_err(lost)?;
                        answered += 1;
                    }
                    tx.flush().await.map_err(lost)?;
                    served.fetch_add(answered, Ordering::Relaxed);
                }
                received = rx.recv_forever() => match received.map_err(lost)? {
                    Message::Invocation { request, payload, .. } => {
                        // A serial callee starts a call when the one before it is done.
                        let start = match working.back() {
                            Some(last) if serial => last.0.max(Instant::now()),
                            _ => Instant::now(),
                        };
                        working.push_back((start + service_time, request, payload));
                    }
                    other => {
                        answer(&mut tx, other).await?;
                    }
                },
            }
        }
        // The run is over: what is still being worked on is answered now.
        if !working.is_empty() {
            for (_, request, payload) in working.drain(..) {
                tx.feed(&Message::Yield { request, options: Dict::new(), payload }).await.map_err(lost)?;
                served.fetch_add(1, Ordering::Relaxed);
            }
            tx.flush().await.map_err(lost)?;
        }
    }

    let request = tx.request_id();
    tx.send(&Message::Unregister { request, registration }).await.map_err(lost)?;
    let deadline = Instant::now() + UNREGISTER_TIMEOUT;
    loop {
        let received = timeout_at(deadline, rx.recv_forever())
            .await
            .map_err(|_| format!("no UNREGISTERED within {UNREGISTER_TIMEOUT:?}"))?;
        match received.map_err(lost)? {
            Message::Unregistered { request: r, .. } if r == request => break,
            Message::Error { request: r, error, .. } if r == request => {
                return Err(format!("UNREGISTER refused: {error}"));
            }
            other => {
                // A call that was still on its way: answer it like any other.
                served.fetch_add(answer(&mut tx, other).await?, Ordering::Relaxed);
                tx.flush().await.map_err(lost)?;
            }
        }
    }
    wamp::leave(&mut tx, &mut rx).await;
    Ok(())
}

/// Queues the YIELD for an INVOCATION (returns 1), ignores INTERRUPT and the like (0), and fails on
/// GOODBYE or ABORT.
async fn answer(tx: &mut Sender, message: Message) -> Result<u64, String> {
    match message {
        Message::Invocation { request, payload, .. } => {
            let reply = Message::Yield { request, options: Dict::new(), payload };
            tx.feed(&reply).await.map_err(|e| format!("callee session lost: {}", wamp::describe(&e)))?;
            Ok(1)
        }
        Message::Goodbye { reason, .. } | Message::Abort { reason, .. } => {
            Err(format!("callee session closed by the router: {reason}"))
        }
        _ => Ok(0),
    }
}
