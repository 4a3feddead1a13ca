//! The session state machine: HELLO/WELCOME, then the dealer's and broker's messages, GOODBYE
//! and ABORT, plus the liveness rules of the connection (keepalive pings, idle timeout).
//!
//! Everything the reader sends is queued without waiting ([`super::outbox`]); the only await on
//! the way is a CALL waiting for room at its callee. So a peer that stopped reading can slow down
//! nobody but the callers of its own procedures, and those only until it is closed as stuck.
//!
//! Anything a peer sends that breaks the protocol ends its session with ABORT
//! `wamp.error.protocol_violation` and a reason; a request the router merely refuses gets an ERROR
//! and the session goes on.

use std::cell::Cell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use super::{CalleeFeatures, Closing, Identity, Outbound, SessionHandle};
use crate::auth::config::Action;
use crate::auth::handshake::{self, Admitted, Hello};
use crate::auth::permissions::{Access, Grant};
use crate::broker;
use crate::dealer::call::{self, Opened, Outcome};
use crate::dealer::{self, Dealer};
use crate::error::{Refusal, WampError};
use crate::meta;
use crate::metrics::{CloseCause, Direction};
use crate::realm::Realm;
use crate::router::RouterShared;
use crate::transport::{CloseCode, PeerLink};
use crate::wire::{uri, validate, Dict, Message, MessageType, Value};

/// One item from a transport.
pub enum Inbound {
    /// A complete WAMP message frame.
    Frame(Bytes),
    /// The transport saw the peer break its rules (wrong frame type, oversized message, a text
    /// frame that is not UTF-8, a message that did not arrive in time).
    Violation {
        /// Why, for the ABORT and the log.
        reason: String,
        /// The close status the transport reports.
        code: CloseCode,
    },
    /// A transport-level PING whose payload must be echoed in a PONG (RawSocket).
    Ping(Bytes),
    /// A transport-level PONG: the peer is alive.
    Pong,
}

/// What to do after a message.
enum Flow {
    Continue,
    /// End the session, sending this message last (if any).
    Close(Option<Closing>),
}

/// A session's protocol state, owned by its reader.
pub struct Session {
    router: Arc<RouterShared>,
    handle: Arc<SessionHandle>,
    /// The peer answers pings, so it may be pinged and closed when it stays silent.
    pings: bool,
    realm: Option<Arc<Realm>>,
    /// Registrations this session is a member of, so leaving can remove it from each.
    registrations: HashSet<u64>,
    /// Subscriptions this session holds, likewise.
    subscriptions: HashSet<u64>,
    /// The peer's address, for the log.
    peer: SocketAddr,
    /// When the handshake (HELLO, and AUTHENTICATE if challenged) must be over.
    handshake_deadline: Instant,
    /// A CHALLENGE sent, AUTHENTICATE awaited.
    challenged: Option<Challenged>,
    /// What the session may do; set at WELCOME.
    access: Option<Access>,
    /// Why the session ended, as far as its reader knows.
    cause: Cell<CloseCause>,
}

/// A session between CHALLENGE and AUTHENTICATE.
struct Challenged {
    realm: Arc<Realm>,
    pending: Box<handshake::Pending>,
    features: CalleeFeatures,
}

/// When the peer was last heard from, checked at each keepalive tick.
struct Liveness {
    /// Items received so far (messages, pings, pongs).
    heard: u64,
    /// `heard` at the last tick ...
    heard_at_tick: u64,
    /// ... and since when it has not changed.
    silent_since: Instant,
    /// How often to tick (and ping), if at all.
    period: Option<Duration>,
    idle_timeout: Option<Duration>,
    ping: bool,
}

impl Liveness {
    /// The rules for a peer that answers pings (`pings`) or may not (then it is neither pinged
    /// nor closed for its silence: a silent peer may be alive).
    fn new(router: &RouterShared, pings: bool) -> Self {
        let config = &router.config;
        let ms = |ms: u64| (pings && ms > 0).then(|| Duration::from_millis(ms));
        let (keepalive, idle_timeout) = (ms(config.keepalive_interval_ms), ms(config.idle_timeout_ms));
        // Without pings, still look for silence often enough to close an idle peer in time.
        let period = keepalive.or(idle_timeout.map(|t| t / 4));
        Liveness {
            heard: 0,
            heard_at_tick: 0,
            silent_since: Instant::now(),
            period,
            idle_timeout,
            ping: keepalive.is_some(),
        }
    }

    /// A tick: `true` when the peer has been silent for the idle timeout.
    fn tick(&mut self, now: Instant) -> bool {
        if self.heard != self.heard_at_tick {
            self.heard_at_tick = self.heard;
            self.silent_since = now;
            return false;
        }
        self.idle_timeout.is_some_and(|timeout| now.duration_since(self.silent_since) >= timeout)
    }
}

impl Session {
    /// A session that has not said HELLO yet, on a transport link.
    pub fn new(router: Arc<RouterShared>, handle: Arc<SessionHandle>, link: &PeerLink) -> Self {
        let (registrations, subscriptions) = (HashSet::new(), HashSet::new());
        let handshake_deadline = Instant::now() + router.config.handshake_timeout();
        Session {
            router,
            handle,
            pings: link.pings,
            realm: None,
            registrations,
            subscriptions,
            peer: link.peer,
            handshake_deadline,
            challenged: None,
            access: None,
            cause: Cell::new(CloseCause::ConnectionLost),
        }
    }

    /// Why the session ended: what the router decided (slow consumer, killed, ...) if it did,
    /// else what the reader saw.
    pub fn cause(&self) -> CloseCause {
        self.handle.close_cause().unwrap_or(self.cause.get())
    }

    /// The realm the session joined, if it did.
    pub fn realm(&self) -> Option<&Arc<Realm>> {
        self.realm.as_ref()
    }

    /// Reads and handles messages until the session ends; returns the last message to send.
    pub async fn run<S: Stream<Item = Inbound> + Unpin>(&mut self, frames: &mut S) -> Option<Closing> {
        let hello_deadline = tokio::time::sleep_until(self.handshake_deadline);
        // Made once, not per message: each `cancelled()` registers with (and leaves) a Notify.
        let closed = self.handle.closing.clone().cancelled_owned();
        let shutdown = self.router.shutdown.clone().cancelled_owned();
        let mut liveness = Liveness::new(&self.router, self.pings);
        let far = Duration::from_secs(86_400 * 365);
        let tick = tokio::time::sleep(liveness.period.unwrap_or(far));
        tokio::pin!(hello_deadline, closed, shutdown, tick);
        loop {
            let inbound = tokio::select! {
                biased;
                _ = &mut closed => return None,
                _ = &mut shutdown => {
                    self.cause.set(CloseCause::Shutdown);
                    return Some(goodbye(WampError::SystemShutdown, "the router is shutting down", CloseCode::Away));
                }
                _ = &mut hello_deadline, if self.realm.is_none() => {
                    self.cause.set(CloseCause::HelloTimeout);
                    if let Some(challenged) = &self.challenged {
                        let (authid, authmethod) = (challenged.pending.authid(), challenged.pending.method());
                        tracing::warn!(session = self.handle.id, peer = %self.peer, authid, authmethod, "no AUTHENTICATE in time; closing");
                        return Some(abort(WampError::AuthenticationFailed, "no AUTHENTICATE received in time"));
                    }
                    tracing::info!(session = self.handle.id, peer = %self.peer, "no HELLO in time; closing");
                    return Some(abort(WampError::ProtocolViolation, "no HELLO received in time"));
                }
                _ = &mut tick, if liveness.period.is_some() => {
                    let now = Instant::now();
                    if liveness.tick(now) {
                        tracing::info!(session = self.handle.id, "peer silent for the idle timeout; closing");
                        self.cause.set(CloseCause::IdleTimeout);
                        let reason = "the peer sent nothing, not even a PONG, for the idle timeout";
                        return Some(goodbye(WampError::CloseRealm, reason, CloseCode::Policy));
                    }
                    if liveness.ping {
                        let _ = self.handle.push(Outbound::Ping);
                    }
                    let period = liveness.period.unwrap_or(far);
                    tick.as_mut().reset(now + period);
                    continue;
                }
                inbound = frames.next() => inbound,
            };
            liveness.heard += 1;
            let frame = match inbound {
                None => return None,
                Some(Inbound::Violation { reason, code }) => return Some(Closing { code, ..self.violation(&reason) }),
                Some(Inbound::Frame(frame)) => frame,
                Some(Inbound::Ping(payload)) => {
                    let _ = self.handle.push(Outbound::Pong(payload));
                    continue;
                }
                Some(Inbound::Pong) => continue,
            };
            let size = frame.len();
            let message = match self.handle.serializer.decode(frame).and_then(|m| validate::check(&m).map(|()| m)) {
                Ok(message) => {
                    self.router.metrics.message(Direction::In, message.message_type() as u8, size);
                    message
                }
                Err(error) => return Some(self.violation(&format!("invalid message: {error}"))),
            };
            if let Flow::Close(last) = self.on_message(message).await {
                return last;
            }
        }
    }

    fn violation(&self, reason: &str) -> Closing {
        self.cause.set(CloseCause::ProtocolViolation);
        tracing::warn!(session = self.handle.id, peer = %self.peer, reason, "protocol violation; aborting session");
        abort(WampError::ProtocolViolation, reason)
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        let Some(realm) = self.realm.clone() else {
            return match message {
                Message::Hello { .. } if self.challenged.is_some() => {
                    Flow::Close(Some(self.violation("HELLO received while a CHALLENGE awaits its AUTHENTICATE")))
                }
                // Boxed: these run once per session, and their state (authenticators awaited) would
                // otherwise be room reserved in every session's task for its whole life.
                Message::Hello { realm, details } => Box::pin(self.on_hello(&realm, &details)).await,
                Message::Authenticate { signature, extra } => Box::pin(self.on_authenticate(&signature, &extra)).await,
                other => Flow::Close(Some(self.violation(&format!("{} received before HELLO", other.message_type())))),
            };
        };
        if let Some(0) = request_id(&message) {
            let kind = message.message_type();
            return Flow::Close(Some(self.violation(&format!("{kind} with request id 0; ids start at 1"))));
        }
        let dealer = &realm.dealer;
        match message {
            Message::Call { request, options, procedure, payload } => {
                let grant = self.grant(&procedure);
                let answer = if !grant.allows(Action::Call) {
                    let refusal = self.not_authorized(Action::Call, &procedure);
                    tracing::debug!(session = self.handle.id, %refusal, "call refused");
                    Err(refusal)
                } else if meta::is_meta_procedure(&procedure) {
                    Box::pin(meta::call(&realm, &self.handle, &procedure, &payload)).await
                } else {
                    let disclose = grant.discloses_caller();
                    if let Err(violation) =
                        dealer.call(&self.handle, request, &procedure, &options, payload, disclose).await
                    {
                        return Flow::Close(Some(self.violation(&violation)));
                    }
                    return Flow::Continue;
                };
                let token = match self.handle.calls.open(request, false) {
                    Opened::New(token) => token,
                    Opened::Reused => return self.reused(request),
                    Opened::Chunk | Opened::Stray => return Flow::Continue,
                };
                let answer = match answer {
                    Ok(payload) => Message::Result { request, details: Dict::new(), payload },
                    Err(refusal) => refusal.to_message(MessageType::Call, request),
                };
                call::end(&self.handle, request, token, answer);
            }
            Message::Yield { request, options, payload } => {
                let outcome = match options.get("progress").and_then(Value::as_bool) {
                    Some(true) => Outcome::Progress(payload),
                    _ => Outcome::Result(payload),
                };
                call::complete(&self.handle, request, outcome);
            }
            Message::Error { request_type, request, error, payload, .. } => {
                if request_type != MessageType::Invocation as u64 {
                    return Flow::Close(Some(
                        self.violation(&format!("ERROR for request type {request_type}; peers only answer INVOCATION")),
                    ));
                }
                if !uri::is_valid(&error) {
                    return Flow::Close(Some(self.violation(&format!("invalid error URI '{error}'"))));
                }
                call::complete(&self.handle, request, Outcome::Error { error, payload });
            }
            Message::Register { request, options, procedure } => {
                if self.registrations.len() >= realm.limits.max_registrations {
                    let reason = format!(
                        "this session holds {} registrations, the most this router allows",
                        self.registrations.len()
                    );
                    self.refuse(MessageType::Register, request, Refusal::new(WampError::InvalidArgument, reason));
                    return Flow::Continue;
                }
                if !self.grant(&procedure).allows(Action::Register) {
                    let refusal = self.not_authorized(Action::Register, &procedure);
                    self.refuse(MessageType::Register, request, refusal);
                    return Flow::Continue;
                }
                // Rare and cluster-only futures are boxed: whatever a future awaited here holds is
                // part of every session's task, idle ones included, for the session's whole life.
                if options.get("force_reregister").is_some() {
                    Box::pin(meta::force_reregister(&realm, &self.handle, &procedure, &options)).await;
                }
                let registered = if dealer.is_clustered() {
                    Box::pin(dealer.register_clustered(&self.handle, &procedure, &options)).await
                } else {
                    dealer.register(&self.handle, &procedure, &options)
                };
                match registered {
                    Ok(registered) => {
                        let registration = registered.id;
                        self.registrations.insert(registration);
                        self.handle.send(Message::Registered { request, registration });
                        meta::registered(&realm, self.handle.id, registration, registered.created);
                    }
                    Err(refusal) => self.refuse(MessageType::Register, request, refusal),
                }
            }
            Message::Unregister { request, registration } => match if dealer.is_clustered() {
                Box::pin(dealer.unregister_clustered(self.handle.id, registration)).await
            } else {
                dealer.unregister(self.handle.id, registration)
            } {
                Ok(deleted) => {
                    self.registrations.remove(&registration);
                    let _ = self.handle.push(Outbound::Unregistered { request, registration, reason: None });
                    meta::unregistered(&realm, self.handle.id, registration, deleted);
                }
                Err(refusal) => self.refuse(MessageType::Unregister, request, refusal),
            },
            Message::Goodbye { .. } => {
                self.cause.set(CloseCause::Goodbye);
                return Flow::Close(Some(goodbye(WampError::GoodbyeAndOut, "", CloseCode::Normal)));
            }
            Message::Abort { reason, .. } => {
                tracing::info!(session = self.handle.id, reason, "peer aborted the session");
                self.cause.set(CloseCause::PeerAbort);
                return Flow::Close(None);
            }
            Message::Cancel { request, options } => {
                if let Err(refusal) = Dealer::cancel(&self.handle, request, &options) {
                    self.refuse(MessageType::Cancel, request, refusal);
                }
            }
            Message::Subscribe { request, options, topic } => {
                if self.subscriptions.len() >= realm.limits.max_subscriptions {
                    let reason = format!(
                        "this session holds {} subscriptions, the most this router allows",
                        self.subscriptions.len()
                    );
                    self.refuse(MessageType::Subscribe, request, Refusal::new(WampError::InvalidArgument, reason));
                    return Flow::Continue;
                }
                if !self.grant(&topic).allows(Action::Subscribe) {
                    let refusal = self.not_authorized(Action::Subscribe, &topic);
                    self.refuse(MessageType::Subscribe, request, refusal);
                    return Flow::Continue;
                }
                match realm.broker.subscribe(&self.handle, &topic, &options) {
                    Ok(subscribed) => {
                        let subscription = subscribed.id;
                        self.subscriptions.insert(subscription);
                        if let Some(events) = realm.broker.cluster() {
                            if subscribed.created {
                                // The policy was read by `subscribe` already; it cannot fail here.
                                let policy = uri::MatchPolicy::from_option(options.get("match"))
                                    .unwrap_or(uri::MatchPolicy::Exact);
                                Box::pin(events.listen(&realm.broker, subscription, policy, &topic)).await;
                            } else {
                                Box::pin(events.ready(subscription)).await;
                            }
                        }
                        self.handle.send(Message::Subscribed { request, subscription });
                    }
                    Err(refusal) => self.refuse(MessageType::Subscribe, request, refusal),
                }
            }
            Message::Unsubscribe { request, subscription } => {
                match realm.broker.unsubscribe(self.handle.id, subscription) {
                    Ok(()) => {
                        self.subscriptions.remove(&subscription);
                        self.handle.send(Message::Unsubscribed { request, details: None });
                    }
                    Err(refusal) => self.refuse(MessageType::Unsubscribe, request, refusal),
                }
            }
            Message::Publish { request, options, topic, payload } => {
                let acknowledge = options.get("acknowledge").and_then(Value::as_bool) == Some(true);
                let grant = self.grant(&topic);
                let published = if grant.allows(Action::Publish) {
                    realm.broker.publish(&self.handle, &topic, &options, payload, grant.discloses_publisher())
                } else {
                    Err(self.not_authorized(Action::Publish, &topic))
                };
                let published = match published {
                    Ok((publication, Some(outgoing))) => {
                        Box::pin(outgoing.send()).await;
                        Ok(publication)
                    }
                    Ok((publication, None)) => Ok(publication),
                    Err(refusal) => Err(refusal),
                };
                match published {
                    Ok(publication) if acknowledge => {
                        self.handle.send(Message::Published { request, publication });
                    }
                    Ok(_) => {}
                    Err(refusal) if acknowledge => self.refuse(MessageType::Publish, request, refusal),
                    Err(refusal) => {
                        tracing::debug!(session = self.handle.id, %refusal, "unacknowledged publish refused")
                    }
                }
            }
            Message::Hello { .. } => {
                return Flow::Close(Some(self.violation("HELLO received on an established session")))
            }
            Message::Authenticate { .. } => {
                return Flow::Close(Some(self.violation("AUTHENTICATE received without a CHALLENGE")))
            }
            other => {
                let reason = format!("{} is a message only routers send", other.message_type());
                return Flow::Close(Some(self.violation(&reason)));
            }
        }
        Flow::Continue
    }

    fn reused(&self, request: u64) -> Flow {
        Flow::Close(Some(self.violation(&format!("CALL request id {request} is already in flight"))))
    }

    /// What this session may do with `uri` (nothing before WELCOME).
    fn grant(&mut self, uri: &str) -> Grant {
        self.access.as_mut().map_or(Grant::DENY, |access| access.grant(uri))
    }

    fn not_authorized(&self, action: Action, uri: &str) -> Refusal {
        let role = self.access.as_ref().map_or("", |a| a.role().name());
        let action = format!("{action:?}").to_lowercase();
        Refusal::new(WampError::NotAuthorized, format!("role '{role}' may not {action} '{uri}'"))
    }

    async fn on_hello(&mut self, realm_name: &str, details: &Dict) -> Flow {
        if !uri::is_valid(realm_name) {
            return Flow::Close(Some(self.violation(&format!("invalid realm URI '{realm_name}'"))));
        }
        let roles = details.get("roles").and_then(Value::as_dict);
        if roles.is_none_or(|r| r.is_empty()) {
            return Flow::Close(Some(self.violation("HELLO.Details.roles must announce at least one role")));
        }
        let Some(realm) = self.router.realms.get(realm_name).cloned() else {
            self.cause.set(CloseCause::Refused);
            tracing::info!(session = self.handle.id, peer = %self.peer, realm = realm_name, "session refused: no such realm");
            return Flow::Close(Some(abort(
                WampError::NoSuchRealm,
                &format!("no realm '{realm_name}' on this router"),
            )));
        };
        let features = CalleeFeatures::from_hello(details);
        let context = handshake::Context { session: &self.handle, realm: realm_name };
        let mut started = handshake::hello(&realm.auth.load(), details, &context);
        if let Hello::Ask(asking) = started {
            // The realm's authenticator is asked through the dealer; this session's task waits
            // (no worker thread does), until the handshake deadline or the peer leaving.
            let consulted = handshake::consult(&self.router, &realm, *asking, self.handle.id);
            started = tokio::select! {
                biased;
                _ = self.handle.closing.cancelled() => return Flow::Close(None),
                consulted = tokio::time::timeout_at(self.handshake_deadline, consulted) => consulted.unwrap_or_else(|_| {
                    let reason = "the authenticator did not answer in time";
                    Hello::Refused(Refusal::new(WampError::AuthenticationFailed, reason))
                }),
            };
        }
        match started {
            Hello::Welcome(admitted) => self.welcome(realm, admitted, features).await,
            Hello::Challenge(challenge, pending) => {
                self.challenged = Some(Challenged { realm, pending, features });
                if self.handle.push(Outbound::Message(Box::new(challenge))).is_err() {
                    return Flow::Close(None);
                }
                Flow::Continue
            }
            Hello::Ask(_) => Flow::Close(Some(abort(WampError::AuthenticationFailed, "authentication did not finish"))),
            Hello::Refused(refusal) => {
                let authid = details.get("authid").and_then(Value::as_str).unwrap_or("");
                self.cause.set(CloseCause::Refused);
                tracing::warn!(session = self.handle.id, peer = %self.peer, realm = realm_name, authid, %refusal, "authentication refused");
                Flow::Close(Some(abort(refusal.error, &refusal.message)))
            }
        }
    }

    async fn on_authenticate(&mut self, signature: &str, extra: &Dict) -> Flow {
        let Some(Challenged { realm, pending, features }) = self.challenged.take() else {
            return Flow::Close(Some(self.violation("AUTHENTICATE received without a CHALLENGE")));
        };
        let (authid, authmethod) = (pending.authid().to_owned(), pending.method());
        // A slow check (a ticket hash waiting for a free CPU, the dynamic authenticator) ends at
        // the handshake deadline too.
        let check = handshake::authenticate(*pending, signature, extra, &self.router, &realm, self.handle.id);
        let checked = tokio::select! {
            biased;
            _ = self.handle.closing.cancelled() => return Flow::Close(None),
            checked = tokio::time::timeout_at(self.handshake_deadline, check) => checked.unwrap_or_else(|_| {
                Err(Refusal::new(WampError::AuthenticationFailed, "the credentials could not be checked in time"))
            }),
        };
        match checked {
            Ok(admitted) => self.welcome(realm, admitted, features).await,
            Err(refusal) => {
                self.cause.set(CloseCause::Refused);
                tracing::warn!(session = self.handle.id, peer = %self.peer, realm = realm.name, authid, authmethod, %refusal, "authentication failed");
                Flow::Close(Some(abort(refusal.error, &refusal.message)))
            }
        }
    }

    /// WELCOME: the session joins `realm` as `admitted`.
    async fn welcome(&mut self, realm: Arc<Realm>, admitted: Admitted, features: CalleeFeatures) -> Flow {
        let identity = Identity {
            authid: admitted.authid,
            authrole: admitted.role.name().to_owned(),
            authmethod: admitted.authmethod,
            authprovider: admitted.authprovider,
            features,
        };
        // At debug: the one info line of a session is `session left` (see lifecycle), which says
        // all this too. Formatting and writing a log line is a tenth of a short session's cost.
        tracing::debug!(
            session = self.handle.id,
            realm = realm.name.as_str(),
            peer = %self.peer,
            transport = self.handle.transport().as_str(),
            serializer = self.handle.serializer.subprotocol(),
            authid = identity.authid.as_str(),
            authrole = identity.authrole.as_str(),
            authmethod = identity.authmethod,
            "session joined"
        );
        let mut details = welcome_details(&realm, &identity);
        if let Some(authextra) = admitted.authextra {
            details.insert("authextra", authextra);
        }
        let welcome = Message::Welcome { session: self.handle.id, details };
        self.handle.set_identity(identity);
        if let Some(cluster) = &realm.cluster_sessions {
            if cluster.reserve(&self.handle, &realm.name).await == crate::cluster::sessions::Reserved::Taken {
                self.cause.set(CloseCause::Refused);
                tracing::warn!(session = self.handle.id, "session id taken by a session of another node; refused");
                let reason = "this session's id is taken elsewhere in the cluster; connect again";
                return Flow::Close(Some(abort(WampError::AuthenticationFailed, reason)));
            }
        }
        self.access = Some(Access::new(admitted.role));
        if self.handle.push(Outbound::Message(Box::new(welcome))).is_err() {
            return Flow::Close(None);
        }
        realm.sessions.insert(self.handle.id, self.handle.clone());
        self.handle.set_metrics(realm.metrics.clone());
        realm.metrics.count_join(self.handle.transport(), self.handle.serializer);
        meta::joined(&realm, &self.handle);
        self.realm = Some(realm);
        Flow::Continue
    }

    fn refuse(&self, request_type: MessageType, request: u64, refusal: Refusal) {
        tracing::debug!(session = self.handle.id, %refusal, "request refused");
        self.handle.send(refusal.to_message(request_type, request));
    }

    /// Removes the session from every registration and subscription it holds, and publishes its
    /// testaments and `on_leave`. Calls routed to it but not yet delivered, and calls it was
    /// serving, are handled by the teardown after its writer stops.
    pub fn leave(&mut self) {
        let Some(realm) = self.realm.clone() else { return };
        realm.sessions.remove(&self.handle.id);
        for subscription in self.subscriptions.drain() {
            let _ = realm.broker.unsubscribe(self.handle.id, subscription);
        }
        let registrations: Vec<u64> = self.registrations.drain().collect();
        for registration in registrations {
            if let Ok(deleted) = realm.dealer.unregister(self.handle.id, registration) {
                meta::unregistered(&realm, self.handle.id, registration, deleted);
            }
        }
        meta::left(&realm, &self.handle);
    }
}

/// The request id of a message a peer sends with one.
fn request_id(message: &Message) -> Option<u64> {
    match message {
        Message::Call { request, .. }
        | Message::Cancel { request, .. }
        | Message::Register { request, .. }
        | Message::Unregister { request, .. }
        | Message::Subscribe { request, .. }
        | Message::Unsubscribe { request, .. }
        | Message::Publish { request, .. } => Some(*request),
        _ => None,
    }
}

fn abort(reason: WampError, message: &str) -> Closing {
    let code = match reason {
        WampError::ProtocolViolation => CloseCode::Protocol,
        _ => CloseCode::Normal,
    };
    let message = Message::Abort { details: Dict::new().with("message", message), reason: reason.uri().to_owned() };
    Closing { message, code }
}

fn goodbye(reason: WampError, message: &str, code: CloseCode) -> Closing {
    let details = if message.is_empty() { Dict::new() } else { Dict::new().with("message", message) };
    Closing { message: Message::Goodbye { details, reason: reason.uri().to_owned() }, code }
}

fn welcome_details(realm: &Realm, identity: &Identity) -> Dict {
    let features = |list: &[&str]| list.iter().fold(Dict::new(), |d, f| d.with(f, true));
    let roles = Dict::new()
        .with("dealer", Dict::new().with("features", features(dealer::FEATURES)))
        .with("broker", Dict::new().with("features", features(broker::FEATURES)));
    Dict::new()
        .with("realm", realm.name.as_str())
        .with("authid", identity.authid.as_str())
        .with("authrole", identity.authrole.as_str())
        .with("authmethod", identity.authmethod)
        .with("authprovider", identity.authprovider)
        .with("roles", roles)
        .with("agent", concat!("roundhouse-", env!("CARGO_PKG_VERSION")))
}
