//! A session from connection to teardown.
//!
//! The order of the teardown is what keeps "every call answered exactly once" true:
//! 1. the reader stops and the session leaves every registration, so no new call is routed here;
//! 2. the writer sends the last message (GOODBYE/ABORT) if there is one, and stops;
//! 3. the queue is closed — senders racing with us get their item back and route it elsewhere —
//!    and drained to the end: undelivered calls go to another member;
//! 4. calls the session was serving end with `wamp.error.canceled` for their callers;
//! 5. calls the session made that are still running are interrupted at callees that support it.
//!
//! The teardown runs however the session ended, a panic in its reader or writer included: a panic
//! is logged as an error and the session is torn down like any other. Calls lost with a panicked
//! writer's queue are answered by their own `Drop` (see [`crate::dealer::call`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::{FutureExt, Sink, Stream};

use super::protocol::{Inbound, Session};
use super::writer::{self, WriterExit, WriterLimits};
use super::{Closing, Outbound, SessionHandle};
use crate::dealer::call;
use crate::error::WampError;
use crate::metrics::CloseCause;
use crate::router::RouterShared;
use crate::transport::{CloseCode, OutFrame, PeerLink};
use crate::wire::{Dict, Message};

/// Runs one session over a transport's frame stream and sink, until it ends and is torn down.
pub async fn run<R, W>(router: Arc<RouterShared>, link: PeerLink, mut frames: R, sink: W)
where
    R: Stream<Item = Inbound> + Unpin,
    W: Sink<OutFrame> + Unpin + Send + 'static,
    W::Error: std::fmt::Display,
{
    let (handle, queue) = router.new_session(&link);
    let opened = std::time::Instant::now();
    let limits = WriterLimits {
        max_outgoing: link.max_outgoing,
        max_pending: router.config.max_pending_per_callee,
        max_pending_bytes: router.config.max_pending_bytes_per_callee,
        write_timeout: router.config.stuck_timeout(),
    };
    let mut writer = tokio::spawn(writer::run(sink, queue, handle.clone(), limits, router.clone()));
    let mut session = Session::new(router.clone(), handle.clone(), &link);
    let last = match AssertUnwindSafe(session.run(&mut frames)).catch_unwind().await {
        Ok(last) => last,
        Err(_) => {
            tracing::error!(session = handle.id, "session reader panicked; closing the session");
            handle.outbox().mark(CloseCause::InternalError);
            let details = Dict::new().with("message", "internal router error");
            let message = Message::Abort { details, reason: WampError::CloseRealm.uri().to_owned() };
            Some(Closing { message, code: CloseCode::Policy })
        }
    };
    if router.shutdown.is_cancelled() {
        // The router is going down: every call this session made ends with an ERROR, queued
        // before its GOODBYE, rather than vanishing with the callees' sessions.
        call::cancel_all(&handle, "the router is shutting down");
    }
    session.leave();
    match last {
        Some(closing) => {
            if handle.push(Outbound::Close(Box::new(closing))).is_err() {
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
    let exit = match exit {
        Ok(exit) => Some(exit),
        Err(error) => {
            tracing::error!(session = handle.id, %error, "session writer failed");
            None
        }
    };
    teardown(&handle, exit).await;
    router.sessions.remove(&handle.id);
    let cause = session.cause();
    router.metrics.session_closed(cause);
    // One info line per session, at its end, with everything `session joined` (debug) says,
    // why it ended and how long it lasted: two lines cost a tenth of a short session's CPU.
    match session.realm() {
        Some(realm) => {
            let identity = handle.identity();
            tracing::info!(
                session = handle.id,
                realm = realm.name.as_str(),
                peer = %link.peer,
                transport = link.transport.as_str(),
                serializer = link.serializer.subprotocol(),
                authid = identity.map_or("", |i| i.authid.as_str()),
                authrole = identity.map_or("", |i| i.authrole.as_str()),
                authmethod = identity.map_or("", |i| i.authmethod),
                reason = cause.as_str(),
                seconds = opened.elapsed().as_secs_f64(),
                "session left"
            );
        }
        None => {
            tracing::debug!(session = handle.id, peer = %link.peer, reason = cause.as_str(), "connection closed before joining")
        }
    }
}

async fn teardown(handle: &SessionHandle, exit: Option<WriterExit>) {
    if let Some(WriterExit { mut queue, unsent }) = exit {
        queue.close();
        unsent.into_iter().for_each(settle);
        // `recv` (not `try_recv`) returns `None` only once every sender that got in before the
        // close has finished: nothing queued is missed.
        while let Some(item) = queue.recv().await {
            settle(item);
        }
    }
    call::callee_gone(handle);
    call::caller_gone(handle);
}

/// What happens to an item the writer never wrote: a call goes to another member; anything else
/// was for this peer only.
fn settle(item: Outbound) {
    if let Outbound::Invocation(call) = item {
        call::reroute(call);
    }
}
