//! A session from connection to teardown.
//!
//! The order of the teardown is what keeps "no call lost" true:
//! 1. the reader stops and the session leaves every registration, so no new call is routed here;
//! 2. the writer sends the last message (GOODBYE/ABORT) if there is one, and stops;
//! 3. the queue is closed — senders racing with us get their item back and route it elsewhere —
//!    and whatever was still queued is drained: undelivered calls go to another member;
//! 4. calls the session was serving end with `wamp.error.canceled` for their callers;
//! 5. calls the session made that are still running are interrupted at callees that support it.

use std::sync::Arc;

use futures_util::{Sink, Stream};

use super::protocol::{Inbound, Session};
use super::writer::{self, WriterExit};
use super::{Outbound, SessionHandle};
use crate::dealer::pending;
use crate::router::RouterShared;
use crate::transport::OutFrame;
use crate::wire::Serializer;

/// Runs one session over a transport's frame stream and sink, until it ends and is torn down.
/// `max_outgoing` is the largest message the peer accepts.
pub async fn run<R, W>(router: Arc<RouterShared>, serializer: Serializer, mut frames: R, sink: W, max_outgoing: usize)
where
    R: Stream<Item = Inbound> + Unpin,
    W: Sink<OutFrame> + Unpin + Send + 'static,
    W::Error: std::fmt::Display,
{
    let (handle, queue) = router.new_session(serializer);
    let mut writer =
        tokio::spawn(writer::run(sink, queue, handle.clone(), max_outgoing, router.config.max_pending_per_callee));
    let mut session = Session::new(router.clone(), handle.clone());
    let last = session.run(&mut frames).await;
    session.leave().await;
    match last {
        Some(message) => {
            if handle.deliver(Outbound::Close(Box::new(message))).await.is_err() {
                handle.kill();
            }
        }
        None => handle.kill(),
    }
    let exit = match tokio::time::timeout(router.config.shutdown_timeout(), &mut writer).await {
        Ok(joined) => joined,
        Err(_) => {
            handle.kill();
            writer.await
        }
    };
    drop(frames);
    match exit {
        Ok(exit) => teardown(&handle, exit).await,
        Err(error) => tracing::error!(session = handle.id, %error, "session writer failed"),
    }
    router.sessions.remove(&handle.id);
    tracing::debug!(session = handle.id, "session closed");
}

async fn teardown(handle: &SessionHandle, exit: WriterExit) {
    let WriterExit { mut queue, mut unsent } = exit;
    queue.close();
    while let Ok(item) = queue.try_recv() {
        unsent.push(item);
    }
    for item in unsent {
        if let Outbound::Invocation(call) = item {
            pending::reroute(call);
        }
    }
    let in_flight: Vec<_> = handle.invocations.lock().drain().map(|(_, call)| call).collect();
    if !in_flight.is_empty() {
        tracing::debug!(
            session = handle.id,
            calls = in_flight.len(),
            "callee left with calls in flight; canceling them"
        );
    }
    for call in in_flight {
        pending::callee_gone(call).await;
    }
    pending::caller_gone(handle).await;
}
