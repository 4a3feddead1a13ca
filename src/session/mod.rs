//! Sessions: one per connection, run as a reader (this connection's inbound messages, the
//! protocol state machine in [`protocol`]) and a writer ([`writer`]) joined by a bounded queue.
//!
//! Other sessions reach a session only through its [`SessionHandle`]: they put [`Outbound`] items
//! on its queue. The writer drains the queue in batches and flushes the socket once per batch.
//!
//! # Backpressure
//! Every queue is bounded (`outbound_queue` messages). A sender that finds it full waits for room —
//! that is how a saturated callee slows its callers down instead of failing their calls. If the
//! queue stays full for `stuck_timeout`, the receiving peer is declared stuck and its session is
//! closed; what it had queued or in flight is rerouted or answered with an ERROR by the teardown
//! (see [`lifecycle`]). Memory per session is therefore bounded by the queue length, and no call
//! is lost without an ERROR.

pub mod lifecycle;
pub mod protocol;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dealer::pending::{CallState, InvocationRequest};
use crate::dealer::registry::Member;
use crate::wire::{Message, Serializer};

/// Something queued for a session's writer.
///
/// Kept to a few words (large payloads are boxed): every session's queue allocates its first
/// block of 32 slots up front, so the slot size is paid by every idle session.
pub enum Outbound {
    /// A message to send as it is.
    Message(Box<Message>),
    /// A call routed to this session as callee; the writer numbers it and turns it into INVOCATION.
    Invocation(Box<InvocationRequest>),
    /// A further chunk of a progressive invocation; the writer sends it with the INVOCATION id
    /// of the call's first chunk.
    InvocationChunk(Box<Chunk>),
    /// UNREGISTERED for `registration`; the writer must know which registration it ends.
    Unregistered {
        /// The UNREGISTER request id (0 when the router revoked the registration).
        request: u64,
        /// The registration the session left.
        registration: u64,
        /// Why the router revoked it (registration revocation); `None` for an UNREGISTER.
        reason: Option<String>,
    },
    /// A message already encoded in this session's serializer (an EVENT shared by subscribers).
    Frame(bytes::Bytes),
    /// A transport PONG echoing a PING's payload.
    Pong(bytes::Bytes),
    /// The last message of the session (GOODBYE or ABORT); the writer sends it and closes.
    Close(Box<Message>),
}

/// A further chunk of a progressive invocation.
pub struct Chunk {
    /// The caller.
    pub caller: Arc<SessionHandle>,
    /// The caller's CALL request id, shared by every chunk.
    pub caller_request: u64,
    /// More chunks follow.
    pub progress: bool,
    /// The chunk's arguments.
    pub payload: crate::wire::Payload,
}

/// How other tasks reach a session.
pub struct SessionHandle {
    /// The WAMP session id (random in [1, 2^53]).
    pub id: u64,
    /// The serializer this session's peer speaks.
    pub serializer: Serializer,
    outbound: mpsc::Sender<Outbound>,
    /// Calls this session is serving as callee, by INVOCATION request id. The writer inserts when
    /// it sends an INVOCATION, the reader removes on YIELD/ERROR, the teardown drains it.
    pub(crate) invocations: Mutex<HashMap<u64, Box<InvocationRequest>, foldhash::fast::RandomState>>,
    /// This session's own calls, by CALL request id, as the caller sees them. Inserted when a
    /// call is routed, updated when a callee's writer sends it, removed when it is answered.
    pub(crate) calls: Mutex<HashMap<u64, CallState, foldhash::fast::RandomState>>,
    /// Progressive invocations this session has open as caller; while zero, a CALL needs no
    /// lookup to tell whether it continues one.
    pub(crate) progressive_calls: std::sync::atomic::AtomicU32,
    /// Cancelled when the session must end now (peer gone, stuck, killed).
    pub(crate) closing: CancellationToken,
    stuck_timeout: Duration,
    /// Events to publish when the session ends (`wamp.session.add_testament`).
    pub(crate) testaments: Mutex<Vec<crate::meta::Testament>>,
    /// Who the session authenticated as; set once, at WELCOME.
    identity: std::sync::OnceLock<Identity>,
}

/// Who a session is, as WELCOME told it, and what it announced in HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `authid`.
    pub authid: String,
    /// `authrole`.
    pub authrole: String,
    /// The callee features it announced.
    pub features: CalleeFeatures,
}

/// Callee features a session announced in `HELLO.Details.roles.callee.features`; the dealer only
/// uses a feature with a callee that announced it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalleeFeatures {
    /// It can take `receive_progress` and send progressive YIELDs.
    pub progressive_call_results: bool,
    /// It understands INTERRUPT.
    pub call_canceling: bool,
    /// It understands `UNREGISTERED [0, {registration, reason}]`.
    pub registration_revocation: bool,
    /// It takes a call in chunks (`INVOCATION.Details.progress`).
    pub progressive_call_invocations: bool,
}

impl CalleeFeatures {
    /// Reads the features from HELLO.Details.
    pub fn from_hello(details: &crate::wire::Dict) -> Self {
        let features = details
            .get("roles")
            .and_then(|r| r.as_dict())
            .and_then(|r| r.get("callee"))
            .and_then(|c| c.as_dict())
            .and_then(|c| c.get("features"))
            .and_then(|f| f.as_dict());
        let has = |name: &str| features.and_then(|f| f.get(name)).and_then(|v| v.as_bool()).unwrap_or(false);
        CalleeFeatures {
            progressive_call_results: has("progressive_call_results"),
            call_canceling: has("call_canceling"),
            registration_revocation: has("registration_revocation"),
            progressive_call_invocations: has("progressive_call_invocations"),
        }
    }
}

impl SessionHandle {
    /// A handle and the receiving end of its queue. The router pairs them with a transport; a
    /// caller that drains the queue itself gets a session without one (benches do this).
    pub fn new(
        id: u64,
        serializer: Serializer,
        queue: usize,
        stuck_timeout: Duration,
    ) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (outbound, rx) = mpsc::channel(queue.max(1));
        let handle = SessionHandle {
            id,
            serializer,
            outbound,
            invocations: Mutex::default(),
            calls: Mutex::default(),
            testaments: Mutex::default(),
            progressive_calls: Default::default(),
            closing: CancellationToken::new(),
            stuck_timeout,
            identity: std::sync::OnceLock::new(),
        };
        (Arc::new(handle), rx)
    }

    /// Queues `item` for this session, waiting for room if the queue is full (backpressure).
    /// Gives the item back if the session is gone or stays stuck past `stuck_timeout` — in the
    /// latter case the session is closed as stuck.
    pub(crate) async fn deliver(&self, item: Outbound) -> Result<(), Outbound> {
        use mpsc::error::TrySendError;
        let item = match self.outbound.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(item)) => return Err(item),
            Err(TrySendError::Full(item)) => item,
        };
        match tokio::time::timeout(self.stuck_timeout, self.outbound.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(item);
                Ok(())
            }
            Ok(Err(_closed)) => Err(item),
            Err(_elapsed) => {
                tracing::warn!(session = self.id, timeout = ?self.stuck_timeout, "outbound queue stayed full; closing the stuck session");
                self.closing.cancel();
                Err(item)
            }
        }
    }

    /// Queues a message if there is room right now; `false` if there is not.
    pub(crate) fn try_send(&self, message: Message) -> bool {
        self.outbound.try_send(Outbound::Message(Box::new(message))).is_ok()
    }

    /// Queues a message; a session that is gone simply does not get it.
    pub(crate) async fn send(&self, message: Message) {
        let _ = self.deliver(Outbound::Message(Box::new(message))).await;
    }

    /// The session's identity; `None` before WELCOME.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.get()
    }

    /// Records the session's identity at WELCOME (later calls are ignored).
    pub fn set_identity(&self, identity: Identity) {
        let _ = self.identity.set(identity);
    }

    /// Asks the session to end now (its teardown still answers its calls).
    pub fn kill(&self) {
        self.closing.cancel();
    }
}

impl Member for Arc<SessionHandle> {
    fn member_id(&self) -> u64 {
        self.id
    }
}
