//! Sessions: one per connection, run as a reader (this connection's inbound messages, the
//! protocol state machine in [`protocol`]) and a writer ([`writer`]) joined by a queue. Both run
//! on the session's worker thread ([`crate::workers`]), so a session's own replies, and messages
//! from sessions of the same worker, reach its writer without a cross-thread wake-up.
//!
//! Other sessions reach a session only through its [`SessionHandle`]: they put [`Outbound`] items
//! in its [`outbox::Outbox`]. The writer drains the queue in batches and flushes the socket once
//! per batch.
//!
//! # Backpressure and slow consumers
//! The queue is bounded in bytes, and only the CALL→callee direction waits for room (see
//! [`outbox`]): answers, replies, events and timeouts are never held up by a peer that stopped
//! reading. Such a peer is closed (slow consumer, stuck, or write deadline), and its teardown
//! (see [`lifecycle`]) reroutes or answers every call it held.

pub mod lifecycle;
pub mod outbox;
pub mod protocol;
pub mod writer;

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dealer::call::{CallTable, ChunkDelivery, Invocation, InvocationTable};
use crate::dealer::registry::Member;
use crate::transport::tls::{ClientCert, TlsPeer};
use crate::wire::{Message, Serializer};
use outbox::{Outbox, OutboxLimits, Refused, ITEM_OVERHEAD};

/// Something queued for a session's writer.
///
/// Kept to a few words (large payloads are boxed): the queue's blocks are allocated per session,
/// so the slot size is paid by every idle session.
pub enum Outbound {
    /// A message to send as it is.
    Message(Box<Message>),
    /// A call routed to this session as callee; the writer numbers it and turns it into INVOCATION.
    Invocation(Box<Invocation>),
    /// A further chunk of a progressive invocation this session is running as callee.
    InvocationChunk(Box<ChunkDelivery>),
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
    /// A transport PING (keepalive).
    Ping,
    /// The last message of the session (GOODBYE or ABORT); the writer sends it and closes.
    Close(Box<Closing>),
}

/// How a session ends: its last message, and the close status its transport reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Closing {
    /// GOODBYE or ABORT.
    pub message: Message,
    /// The transport's close status.
    pub code: crate::transport::CloseCode,
}

impl Outbound {
    /// The bytes this item counts for in its queue: what it will put on the wire, or a fair
    /// estimate before encoding, plus [`ITEM_OVERHEAD`]. A pure function of the item, so the
    /// writer can subtract exactly what the sender added.
    pub fn size(&self) -> usize {
        use crate::dealer::call::payload_size;
        ITEM_OVERHEAD
            + match self {
                Outbound::Message(message) => message_size(message),
                Outbound::Close(closing) => message_size(&closing.message),
                Outbound::Ping => 0,
                Outbound::Invocation(call) => payload_size(&call.payload),
                Outbound::InvocationChunk(chunk) => payload_size(&chunk.chunk.payload),
                Outbound::Unregistered { reason, .. } => reason.as_ref().map_or(0, String::len),
                Outbound::Frame(frame) | Outbound::Pong(frame) => frame.len(),
            }
    }
}

/// The payload bytes of a message (envelopes count in the overhead).
fn message_size(message: &Message) -> usize {
    use crate::dealer::call::payload_size;
    match message {
        Message::Result { payload, .. } | Message::Error { payload, .. } | Message::Event { payload, .. } => {
            payload_size(payload)
        }
        _ => 0,
    }
}

/// How other tasks reach a session.
pub struct SessionHandle {
    /// The WAMP session id (random in [1, 2^53]).
    pub id: u64,
    /// The serializer this session's peer speaks.
    pub serializer: Serializer,
    outbox: Outbox,
    /// Calls this session is serving as callee, by INVOCATION request id. The writer inserts when
    /// it sends an INVOCATION; answers, cancels and the teardown take them out.
    pub(crate) invocations: InvocationTable,
    /// This session's own calls, by CALL request id: the in-flight state machine of
    /// [`crate::dealer::call`].
    pub(crate) calls: CallTable,
    /// Cancelled when the session must end now (peer gone, stuck, killed).
    pub(crate) closing: CancellationToken,
    /// Events to publish when the session ends (`wamp.session.add_testament`).
    pub(crate) testaments: Mutex<Vec<crate::meta::Testament>>,
    /// Who the session authenticated as; set once, at WELCOME.
    identity: std::sync::OnceLock<Identity>,
    /// Set when it came over TLS: the client certificate its connection verified, if any.
    tls: Option<Arc<TlsPeer>>,
    /// The transport it came over.
    transport: crate::transport::Kind,
    /// The peer's address (`None` for sessions made without a connection, as benches do).
    peer: Option<std::net::SocketAddr>,
    /// The counters of the realm it joined; set once, at WELCOME.
    metrics: std::sync::OnceLock<Arc<crate::metrics::RealmMetrics>>,
    /// The worker its reader and writer run on (see [`crate::workers`]).
    worker: Option<usize>,
}

/// Who a session is, as WELCOME told it, and what it announced in HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `authid`.
    pub authid: String,
    /// `authrole`.
    pub authrole: String,
    /// `authmethod`: how it authenticated.
    pub authmethod: &'static str,
    /// `authprovider`: where its principal came from.
    pub authprovider: &'static str,
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
        limits: OutboxLimits,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Outbound>) {
        Self::connected(id, serializer, limits, crate::transport::Kind::WebSocket, None, None)
    }

    /// Like [`SessionHandle::new`], for a session over `transport` from `peer`, and over TLS
    /// when `tls` is set.
    pub fn connected(
        id: u64,
        serializer: Serializer,
        limits: OutboxLimits,
        transport: crate::transport::Kind,
        peer: Option<std::net::SocketAddr>,
        tls: Option<Arc<TlsPeer>>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Outbound>) {
        let closing = CancellationToken::new();
        let (outbox, rx) = Outbox::new(id, limits, closing.clone());
        let handle = SessionHandle {
            id,
            serializer,
            outbox,
            invocations: InvocationTable::default(),
            calls: CallTable::default(),
            testaments: Mutex::default(),
            closing,
            identity: std::sync::OnceLock::new(),
            tls,
            transport,
            peer,
            metrics: std::sync::OnceLock::new(),
            worker: crate::workers::current(),
        };
        (Arc::new(handle), rx)
    }

    /// Queues a call for this session as callee, waiting while its queue is full (backpressure);
    /// see [`Outbox::deliver`].
    pub(crate) async fn deliver(&self, item: Outbound) -> Result<(), Refused> {
        self.outbox.deliver(item).await
    }

    /// Queues an item without waiting; see [`Outbox::push`].
    pub(crate) fn push(&self, item: Outbound) -> Result<(), Refused> {
        self.outbox.push(item)
    }

    /// Queues a message without waiting; a session that is gone or too slow does not get it.
    pub(crate) fn send(&self, message: Message) {
        let _ = self.outbox.push(Outbound::Message(Box::new(message)));
    }

    /// The session's queue.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Calls this session has in flight as caller.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Calls this session is serving as callee (INVOCATIONs sent, not yet answered).
    pub fn invocations_in_flight(&self) -> usize {
        self.invocations.len()
    }

    /// The session's identity; `None` before WELCOME.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.get()
    }

    /// The client certificate the session's TLS connection verified (subject CN, SHA-256
    /// fingerprint), for an authentication method that maps it to an authid.
    pub fn client_cert(&self) -> Option<&ClientCert> {
        self.tls.as_ref().and_then(|tls| tls.client_cert.as_ref())
    }

    /// Set when the session came over TLS.
    pub fn tls(&self) -> Option<&TlsPeer> {
        self.tls.as_deref()
    }

    /// Records the session's identity at WELCOME (later calls are ignored).
    pub fn set_identity(&self, identity: Identity) {
        let _ = self.identity.set(identity);
    }

    /// Asks the session to end now (its teardown still answers its calls).
    pub fn kill(&self) {
        self.closing.cancel();
    }

    /// Asks the session to end now, recording why (the first reason given wins).
    pub fn kill_for(&self, cause: crate::metrics::CloseCause) {
        self.outbox.mark(cause);
        self.closing.cancel();
    }

    /// Why the router decided to close the session, if it did.
    pub fn close_cause(&self) -> Option<crate::metrics::CloseCause> {
        self.outbox.cause()
    }

    /// The transport the session came over.
    pub fn transport(&self) -> crate::transport::Kind {
        self.transport
    }

    /// The peer's address.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    /// The index of the worker the session runs on; `None` for a session made off the workers
    /// (benches that drive a handle themselves).
    pub fn worker(&self) -> Option<usize> {
        self.worker
    }

    /// The counters of the session's realm; `None` before it joined.
    #[inline]
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::RealmMetrics>> {
        self.metrics.get()
    }

    /// Records the realm's counters at WELCOME.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::RealmMetrics>) {
        let _ = self.metrics.set(metrics);
    }
}

impl Member for Arc<SessionHandle> {
    fn member_id(&self) -> u64 {
        self.id
    }
}
