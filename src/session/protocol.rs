//! The session state machine: HELLO/WELCOME, then the dealer's messages, GOODBYE and ABORT.
//!
//! Rare and large operations (meta API, meta events, PUBLISH fan-out) are awaited boxed: an async
//! fn's state is as large as its largest await, and this state lives in every session's task for
//! the whole session, idle or not.
//!
//! Anything a peer sends that breaks the protocol ends its session with ABORT
//! `wamp.error.protocol_violation` and a reason; a request the router merely refuses gets an ERROR
//! and the session goes on.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{CalleeFeatures, Identity, Outbound, SessionHandle};
use crate::broker;
use crate::dealer::{self, Dealer, Outcome};
use crate::error::{Refusal, WampError};
use crate::meta;
use crate::realm::Realm;
use crate::router::RouterShared;
use crate::wire::{uri, validate, Dict, Message, MessageType, Value};

/// One item from a transport.
pub enum Inbound {
    /// A complete WAMP message frame.
    Frame(Bytes),
    /// The transport saw the peer break its rules (wrong frame type, oversized message).
    Violation(String),
    /// A transport-level PING whose payload must be echoed in a PONG (RawSocket).
    Ping(Bytes),
}

/// What to do after a message.
enum Flow {
    Continue,
    /// End the session, sending this message last (if any).
    Close(Option<Message>),
}

/// A session's protocol state, owned by its reader.
pub struct Session {
    router: Arc<RouterShared>,
    handle: Arc<SessionHandle>,
    realm: Option<Arc<Realm>>,
    /// Registrations this session is a member of, so leaving can remove it from each.
    registrations: HashSet<u64>,
    /// Subscriptions this session holds, likewise.
    subscriptions: HashSet<u64>,
}

impl Session {
    /// A session that has not said HELLO yet.
    pub fn new(router: Arc<RouterShared>, handle: Arc<SessionHandle>) -> Self {
        Session { router, handle, realm: None, registrations: HashSet::new(), subscriptions: HashSet::new() }
    }

    /// Reads and handles messages until the session ends; returns the last message to send.
    pub async fn run<S: Stream<Item = Inbound> + Unpin>(&mut self, frames: &mut S) -> Option<Message> {
        let hello_deadline =
            tokio::time::sleep_until(tokio::time::Instant::now() + self.router.config.handshake_timeout());
        // Made once, not per message: each `cancelled()` registers with (and leaves) a Notify.
        let closed = self.handle.closing.clone().cancelled_owned();
        let shutdown = self.router.shutdown.clone().cancelled_owned();
        tokio::pin!(hello_deadline, closed, shutdown);
        loop {
            let inbound = tokio::select! {
                biased;
                _ = &mut closed => return None,
                _ = &mut shutdown => {
                    return Some(goodbye(WampError::SystemShutdown, "the router is shutting down"));
                }
                _ = &mut hello_deadline, if self.realm.is_none() => {
                    tracing::info!(session = self.handle.id, "no HELLO in time; closing");
                    return Some(abort(WampError::ProtocolViolation, "no HELLO received in time"));
                }
                inbound = frames.next() => inbound,
            };
            let frame = match inbound {
                None => return None,
                Some(Inbound::Violation(reason)) => return Some(self.violation(&reason)),
                Some(Inbound::Frame(frame)) => frame,
                Some(Inbound::Ping(payload)) => {
                    let _ = self.handle.deliver(Outbound::Pong(payload)).await;
                    continue;
                }
            };
            let message = match self.handle.serializer.decode(frame).and_then(|m| validate::check(&m).map(|()| m)) {
                Ok(message) => message,
                Err(error) => return Some(self.violation(&format!("invalid message: {error}"))),
            };
            if let Flow::Close(last) = self.on_message(message).await {
                return last;
            }
        }
    }

    fn violation(&self, reason: &str) -> Message {
        tracing::warn!(session = self.handle.id, reason, "protocol violation; aborting session");
        abort(WampError::ProtocolViolation, reason)
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        let Some(realm) = self.realm.as_ref() else {
            return match message {
                Message::Hello { realm, details } => {
                    let flow = self.on_hello(&realm, &details);
                    if let (Flow::Continue, Some(realm)) = (&flow, &self.realm) {
                        realm.sessions.insert(self.handle.id, self.handle.clone());
                        Box::pin(meta::joined(realm, &self.handle)).await;
                    }
                    flow
                }
                other => {
                    Flow::Close(Some(self.violation(&format!("{:?} received before HELLO", other.message_type()))))
                }
            };
        };
        let dealer = &realm.dealer;
        match message {
            Message::Call { request, procedure, payload, .. } if meta::is_meta_procedure(&procedure) => {
                match Box::pin(meta::call(realm, &self.handle, &procedure, &payload)).await {
                    Ok(payload) => self.handle.send(Message::Result { request, details: Dict::new(), payload }).await,
                    Err(refusal) => self.refuse(MessageType::Call, request, refusal).await,
                }
            }
            Message::Call { request, options, procedure, payload } => {
                if let Err(refusal) = dealer.call(&self.handle, request, &procedure, &options, payload).await {
                    self.refuse(MessageType::Call, request, refusal).await;
                }
            }
            Message::Yield { request, options, payload } => {
                let outcome = match options.get("progress").and_then(Value::as_bool) {
                    Some(true) => Outcome::Progress(payload),
                    _ => Outcome::Result(payload),
                };
                Dealer::complete(&self.handle, request, outcome).await;
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
                Dealer::complete(&self.handle, request, Outcome::Error { error, payload }).await;
            }
            Message::Register { request, options, procedure } => {
                match dealer.register(&self.handle, &procedure, &options) {
                    Ok(registered) => {
                        let registration = registered.id;
                        self.registrations.insert(registration);
                        self.handle.send(Message::Registered { request, registration }).await;
                        Box::pin(meta::registered(realm, self.handle.id, registration, registered.created)).await;
                    }
                    Err(refusal) => self.refuse(MessageType::Register, request, refusal).await,
                }
            }
            Message::Unregister { request, registration } => match dealer.unregister(self.handle.id, registration) {
                Ok(deleted) => {
                    self.registrations.remove(&registration);
                    let _ = self.handle.deliver(Outbound::Unregistered { request, registration, reason: None }).await;
                    Box::pin(meta::unregistered(realm, self.handle.id, registration, deleted)).await;
                }
                Err(refusal) => self.refuse(MessageType::Unregister, request, refusal).await,
            },
            Message::Goodbye { .. } => {
                return Flow::Close(Some(goodbye(WampError::GoodbyeAndOut, "")));
            }
            Message::Abort { reason, .. } => {
                tracing::info!(session = self.handle.id, reason, "peer aborted the session");
                return Flow::Close(None);
            }
            Message::Cancel { request, options } => {
                if let Err(refusal) = Dealer::cancel(&self.handle, request, &options).await {
                    self.refuse(MessageType::Cancel, request, refusal).await;
                }
            }
            Message::Subscribe { request, options, topic } => {
                match realm.broker.subscribe(&self.handle, &topic, &options) {
                    Ok(subscription) => {
                        self.subscriptions.insert(subscription);
                        self.handle.send(Message::Subscribed { request, subscription }).await;
                    }
                    Err(refusal) => self.refuse(MessageType::Subscribe, request, refusal).await,
                }
            }
            Message::Unsubscribe { request, subscription } => {
                match realm.broker.unsubscribe(self.handle.id, subscription) {
                    Ok(()) => {
                        self.subscriptions.remove(&subscription);
                        self.handle.send(Message::Unsubscribed { request, details: None }).await;
                    }
                    Err(refusal) => self.refuse(MessageType::Unsubscribe, request, refusal).await,
                }
            }
            Message::Publish { request, options, topic, payload } => {
                let acknowledge = options.get("acknowledge").and_then(Value::as_bool) == Some(true);
                match Box::pin(realm.broker.publish(&self.handle, &topic, &options, payload)).await {
                    Ok(publication) if acknowledge => {
                        self.handle.send(Message::Published { request, publication }).await;
                    }
                    Ok(_) => {}
                    Err(refusal) if acknowledge => self.refuse(MessageType::Publish, request, refusal).await,
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
                let reason = format!("{:?} is a message only routers send", other.message_type());
                return Flow::Close(Some(self.violation(&reason)));
            }
        }
        Flow::Continue
    }

    fn on_hello(&mut self, realm_name: &str, details: &Dict) -> Flow {
        if !uri::is_valid(realm_name) {
            return Flow::Close(Some(self.violation(&format!("invalid realm URI '{realm_name}'"))));
        }
        let roles = details.get("roles").and_then(Value::as_dict);
        if roles.is_none_or(|r| r.is_empty()) {
            return Flow::Close(Some(self.violation("HELLO.Details.roles must announce at least one role")));
        }
        if let Some(Value::List(methods)) = details.get("authmethods") {
            if !methods.is_empty() && !methods.iter().any(|m| m.as_str() == Some("anonymous")) {
                tracing::info!(session = self.handle.id, ?methods, "HELLO without an authmethod we offer");
                return Flow::Close(Some(abort(
                    WampError::NoAuthMethod,
                    "this router offers only anonymous authentication",
                )));
            }
        }
        let Some(realm) = self.router.realms.get(realm_name).cloned() else {
            tracing::info!(session = self.handle.id, realm = realm_name, "HELLO for an unknown realm");
            return Flow::Close(Some(abort(
                WampError::NoSuchRealm,
                &format!("no realm '{realm_name}' on this router"),
            )));
        };
        tracing::debug!(session = self.handle.id, realm = realm_name, "session joined");
        let identity = Identity {
            authid: format!("anonymous-{}", self.handle.id),
            authrole: "anonymous".to_owned(),
            features: CalleeFeatures::from_hello(details),
        };
        let welcome = Message::Welcome { session: self.handle.id, details: welcome_details(&realm, &identity) };
        self.handle.set_identity(identity);
        self.realm = Some(realm);
        // The queue is empty before WELCOME, so this cannot wait.
        if !self.handle.try_send(welcome) {
            return Flow::Close(None);
        }
        Flow::Continue
    }

    async fn refuse(&self, request_type: MessageType, request: u64, refusal: Refusal) {
        tracing::debug!(session = self.handle.id, %refusal, "request refused");
        self.handle.send(refusal.to_message(request_type, request)).await;
    }

    /// Removes the session from every registration it holds. Calls routed to it but not yet
    /// delivered, and calls it was serving, are handled by the teardown after its writer stops.
    pub async fn leave(&mut self) {
        let Some(realm) = self.realm.clone() else { return };
        realm.sessions.remove(&self.handle.id);
        for subscription in self.subscriptions.drain() {
            let _ = realm.broker.unsubscribe(self.handle.id, subscription);
        }
        let registrations: Vec<u64> = self.registrations.drain().collect();
        for registration in registrations {
            if let Ok(deleted) = realm.dealer.unregister(self.handle.id, registration) {
                Box::pin(meta::unregistered(&realm, self.handle.id, registration, deleted)).await;
            }
        }
        Box::pin(meta::left(&realm, &self.handle)).await;
    }
}

fn abort(reason: WampError, message: &str) -> Message {
    Message::Abort { details: Dict::new().with("message", message), reason: reason.uri().to_owned() }
}

fn goodbye(reason: WampError, message: &str) -> Message {
    let details = if message.is_empty() { Dict::new() } else { Dict::new().with("message", message) };
    Message::Goodbye { details, reason: reason.uri().to_owned() }
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
        .with("authmethod", "anonymous")
        .with("authprovider", "static")
        .with("roles", roles)
        .with("agent", concat!("roundhouse-", env!("CARGO_PKG_VERSION")))
}
