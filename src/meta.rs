//! The WAMP meta API of a realm: procedures under `wamp.registration.*` and `wamp.session.*` that
//! the router answers itself, the meta events it publishes (`on_create`, `on_register`,
//! `on_unregister`, `on_delete`, `on_join`, `on_leave`, in the spec's order), testaments, and
//! registration revocation.
//!
//! Meta events are published only when somebody subscribed to them: with no listener a register
//! or join costs one snapshot lookup per event. Like every event, they are queued without waiting
//! (see [`crate::session::outbox`]): a subscriber that stopped reading never delays the REGISTER or
//! join that caused the event.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Refusal, WampError};
use crate::realm::Realm;
use crate::session::{Closing, Outbound, SessionHandle};
use crate::transport::CloseCode;
use crate::wire::uri::MatchPolicy;
use crate::wire::{Dict, Message, Payload, Value};

/// True for procedures the router answers itself.
pub fn is_meta_procedure(procedure: &str) -> bool {
    procedure.starts_with("wamp.registration.")
        || procedure.starts_with("wamp.session.")
        || procedure.starts_with("wamp.subscription.")
}

/// A testament: an event the router publishes for a session when it ends.
#[derive(Debug, Clone)]
pub struct Testament {
    topic: String,
    payload: Payload,
    /// What it counts against `max_testament_bytes`.
    size: usize,
}

impl Testament {
    /// The topic it is published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// What it publishes.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
}

/// Answers a CALL to a meta procedure.
pub async fn call(
    realm: &Realm,
    caller: &Arc<SessionHandle>,
    procedure: &str,
    payload: &Payload,
) -> Result<Payload, Refusal> {
    let (args, kwargs) = payload.to_values().map_err(|e| invalid(&e.to_string()))?;
    let one = |value: Value| Ok(Payload::args(vec![value]));
    match procedure {
        "wamp.registration.list" => {
            let ids = |policy| Value::List(realm.dealer.ids(policy).into_iter().map(Value::UInt).collect());
            one(Value::Dict(
                Dict::new()
                    .with("exact", ids(MatchPolicy::Exact))
                    .with("prefix", ids(MatchPolicy::Prefix))
                    .with("wildcard", ids(MatchPolicy::Wildcard)),
            ))
        }
        "wamp.registration.lookup" => {
            let uri = string_arg(&args, 0, "procedure")?;
            let policy = MatchPolicy::from_option(args.get(1).and_then(Value::as_dict).and_then(|o| o.get("match")))
                .map_err(|reason| invalid(&reason))?;
            one(realm.dealer.lookup_exactly(uri, policy).map_or(Value::Null, |r| Value::UInt(r.id)))
        }
        "wamp.registration.match" => {
            let uri = string_arg(&args, 0, "procedure")?;
            one(realm.dealer.lookup(uri).map_or(Value::Null, |(r, _)| Value::UInt(r.id)))
        }
        "wamp.registration.get" => {
            let (registration, policy) = registration_arg(realm, &args)?;
            one(Value::Dict(registration_details(&registration, policy)))
        }
        "wamp.registration.list_callees" => {
            let (registration, _) = registration_arg(realm, &args)?;
            one(Value::List(registration.members().iter().map(|c| Value::UInt(c.session.id)).collect()))
        }
        "wamp.registration.count_callees" => {
            let (registration, _) = registration_arg(realm, &args)?;
            one(Value::UInt(registration.members().len() as u64))
        }
        "wamp.registration.remove_callee" => {
            let (registration, _) = registration_arg(realm, &args)?;
            let callee = id_arg(&args, 1, "callee")?;
            let reason = kwargs.get("reason").and_then(Value::as_str).unwrap_or("wamp.error.removed").to_owned();
            revoke(realm, registration.id, callee, &reason).await?;
            tracing::info!(
                registration = registration.id,
                callee,
                reason,
                by = caller.id,
                by_authid = authid(caller),
                "callee removed through the meta API"
            );
            Ok(Payload::Empty)
        }
        "wamp.subscription.remove_subscriber" => {
            let subscription = id_arg(&args, 0, "subscription")?;
            let subscriber = id_arg(&args, 1, "subscriber")?;
            // A session of another cluster node: that node removes it (the id is of its broker).
            let elsewhere = realm.cluster_sessions.as_ref().filter(|_| !realm.sessions.contains_key(&subscriber));
            let record = elsewhere.and_then(|c| c.get(subscriber).filter(|r| r.realm == realm.name && !c.is_local(r)));
            match (elsewhere, record) {
                (Some(cluster), Some(record)) => cluster.unsubscribe_remote(subscriber, &record, subscription).await?,
                _ => realm.broker.unsubscribe(subscriber, subscription)?,
            }
            tracing::info!(
                subscription,
                subscriber,
                by = caller.id,
                by_authid = authid(caller),
                "subscriber removed through the meta API"
            );
            Ok(Payload::Empty)
        }
        "wamp.session.count" if realm.cluster_sessions.is_some() => {
            one(Value::UInt(cluster_sessions(realm, &args).len() as u64))
        }
        "wamp.session.list" if realm.cluster_sessions.is_some() => {
            one(Value::List(cluster_sessions(realm, &args).iter().map(|(id, _)| Value::UInt(*id)).collect()))
        }
        "wamp.session.count" => one(Value::UInt(sessions(realm, &args).len() as u64)),
        "wamp.session.list" => one(Value::List(sessions(realm, &args).iter().map(|s| Value::UInt(s.id)).collect())),
        "wamp.session.get" => {
            let id = id_arg(&args, 0, "session")?;
            if let Some(session) = realm.sessions.get(&id).map(|s| s.clone()) {
                return one(Value::Dict(session_details(realm, &session)));
            }
            let remote = realm.cluster_sessions.as_ref().and_then(|c| c.get(id)).filter(|r| r.realm == realm.name);
            one(Value::Dict(remote.ok_or_else(|| no_such_session(id))?.details(id)))
        }
        "wamp.session.kill" => {
            let id = id_arg(&args, 0, "session")?;
            if id == caller.id {
                return Err(Refusal::new(WampError::NoSuchSession, "a session cannot kill itself"));
            }
            if let Some(session) = realm.sessions.get(&id).map(|s| s.clone()) {
                kill(&session, caller, &kwargs);
                return Ok(Payload::Empty);
            }
            let cluster = realm.cluster_sessions.as_ref();
            let remote = cluster.and_then(|c| c.get(id)).filter(|r| r.realm == realm.name);
            let (Some(cluster), Some(record)) = (cluster, remote) else { return Err(no_such_session(id)) };
            let (reason, message) = kill_reason(&kwargs);
            cluster.kill_remote(id, &record, &reason, message).await;
            Ok(Payload::Empty)
        }
        "wamp.session.kill_by_authid" | "wamp.session.kill_by_authrole" | "wamp.session.kill_all" => {
            let wanted = match procedure {
                "wamp.session.kill_all" => None,
                _ => Some(string_arg(&args, 0, "authid or authrole")?),
            };
            let by_role = procedure.ends_with("authrole");
            let targets: Vec<_> = realm
                .sessions
                .iter()
                .map(|s| s.clone())
                .filter(|s| s.id != caller.id)
                .filter(|s| {
                    let identity = s.identity();
                    wanted
                        .is_none_or(|w| identity.is_some_and(|i| if by_role { i.authrole == w } else { i.authid == w }))
                })
                .collect();
            for session in &targets {
                kill(session, caller, &kwargs);
            }
            let mut killed = targets.len() as u64;
            if let Some(cluster) = &realm.cluster_sessions {
                let (reason, message) = kill_reason(&kwargs);
                for (id, record) in cluster.of_realm(&realm.name) {
                    let wanted = wanted.is_none_or(|w| if by_role { record.authrole == w } else { record.authid == w });
                    if id != caller.id && wanted && !cluster.is_local(&record) {
                        cluster.kill_remote(id, &record, &reason, message).await;
                        killed += 1;
                    }
                }
            }
            one(Value::UInt(killed))
        }
        "wamp.session.add_testament" => {
            let topic = string_arg(&args, 0, "topic")?.to_owned();
            if !crate::wire::uri::is_valid(&topic) || crate::wire::uri::is_reserved(&topic) {
                return Err(Refusal::new(
                    WampError::InvalidUri,
                    format!("a testament cannot be published to '{topic}': only the router publishes in wamp."),
                ));
            }
            let testament_args = match args.get(1) {
                Some(Value::List(items)) => items.clone(),
                _ => Vec::new(),
            };
            let testament_kwargs = args.get(2).and_then(Value::as_dict).cloned();
            let size = topic.len() + crate::dealer::call::payload_size(payload);
            let testament = Testament { topic, payload: Payload::Values(testament_args, testament_kwargs), size };
            let limits = &realm.limits;
            let mut testaments = caller.testaments.lock();
            let held: usize = testaments.iter().map(|t| t.size).sum();
            if testaments.len() >= limits.max_testaments {
                return Err(Refusal::new(
                    WampError::InvalidArgument,
                    format!("this session holds {} testaments, the most this router allows", testaments.len()),
                ));
            }
            if held + size > limits.max_testament_bytes {
                return Err(Refusal::new(
                    WampError::InvalidArgument,
                    format!(
                        "this testament would take the session's testaments to {} bytes; the router allows {}",
                        held + size,
                        limits.max_testament_bytes
                    ),
                ));
            }
            testaments.push(testament);
            drop(testaments);
            if let Some(cluster) = &realm.cluster_sessions {
                cluster.changed(caller.id);
            }
            Ok(Payload::Empty)
        }
        "wamp.session.flush_testaments" => {
            let flushed = std::mem::take(&mut *caller.testaments.lock());
            if let (Some(cluster), false) = (&realm.cluster_sessions, flushed.is_empty()) {
                cluster.changed(caller.id);
            }
            one(Value::UInt(flushed.len() as u64))
        }
        _ => Err(Refusal::new(WampError::NoSuchProcedure, format!("no meta procedure '{procedure}'"))),
    }
}

/// Publishes `on_join` for a session that just got WELCOME.
pub fn joined(realm: &Realm, session: &SessionHandle) {
    realm
        .broker
        .publish_internal("wamp.session.on_join", || Payload::args(vec![Value::Dict(session_details(realm, session))]));
}

/// Publishes `on_join` for a session that joined on another node (see
/// [`crate::cluster::sessions`]), to this node's subscribers.
pub fn joined_elsewhere(realm: &Realm, id: u64, record: &crate::cluster::sessions::Record) {
    realm.broker.publish_internal("wamp.session.on_join", || Payload::args(vec![Value::Dict(record.details(id))]));
}

/// Publishes `on_leave` for a session of another node, to this node's subscribers.
pub fn left_elsewhere(realm: &Realm, id: u64, record: &crate::cluster::sessions::Record) {
    realm.broker.publish_internal("wamp.session.on_leave", || {
        Payload::args(vec![Value::UInt(id), Value::from(record.authid.as_str()), Value::from(record.authrole.as_str())])
    });
}

/// Publishes a session's testaments (to the whole cluster, in one), then `on_leave`.
pub fn left(realm: &Realm, session: &SessionHandle) {
    let testaments = std::mem::take(&mut *session.testaments.lock());
    match &realm.cluster_sessions {
        None => {
            for testament in testaments {
                realm.broker.publish_internal(&testament.topic, || testament.payload.clone());
            }
        }
        Some(cluster) => {
            let outgoing: Vec<_> =
                testaments.into_iter().filter_map(|t| realm.broker.publish_everywhere(&t.topic, t.payload)).collect();
            cluster.left(session.id, outgoing);
        }
    }
    let identity = session.identity();
    realm.broker.publish_internal("wamp.session.on_leave", || {
        Payload::args(vec![
            Value::UInt(session.id),
            identity.map_or(Value::Null, |i| Value::from(i.authid.as_str())),
            identity.map_or(Value::Null, |i| Value::from(i.authrole.as_str())),
        ])
    });
}

/// Publishes `on_create` (when `created`) and `on_register`. On a cluster node the events come
/// from the cluster's registry instead (see [`crate::dealer::cluster`]), once per change.
pub fn registered(realm: &Realm, session: u64, registration: u64, created: bool) {
    if !realm.dealer.is_clustered() {
        publish_registered(realm, session, registration, created);
    }
}

/// Publishes `on_create` (when `created`) and `on_register` to this node's subscribers.
pub fn publish_registered(realm: &Realm, session: u64, registration: u64, created: bool) {
    if created {
        if let Some((r, policy)) = realm.dealer.get(registration) {
            let details = registration_details(&r, policy);
            realm.broker.publish_internal("wamp.registration.on_create", || {
                Payload::args(vec![Value::UInt(session), Value::Dict(details)])
            });
        }
    }
    let args = || Payload::args(vec![Value::UInt(session), Value::UInt(registration)]);
    realm.broker.publish_internal("wamp.registration.on_register", args);
}

/// Publishes `on_unregister` and (when `deleted`) `on_delete`; on a cluster node these come from
/// the cluster's registry instead.
pub fn unregistered(realm: &Realm, session: u64, registration: u64, deleted: bool) {
    if !realm.dealer.is_clustered() {
        publish_unregistered(realm, session, registration, deleted);
    }
}

/// Publishes `on_unregister` and (when `deleted`) `on_delete` to this node's subscribers.
pub fn publish_unregistered(realm: &Realm, session: u64, registration: u64, deleted: bool) {
    let args = || Payload::args(vec![Value::UInt(session), Value::UInt(registration)]);
    realm.broker.publish_internal("wamp.registration.on_unregister", args);
    if deleted {
        realm.broker.publish_internal("wamp.registration.on_delete", args);
    }
}

/// Publishes `wamp.registration.on_queue_full`: calls to a registration were refused because its
/// call queue was full. Arguments: the registration id, then `{procedure, refused,
/// max_queued_calls}` — `refused` counts the refusals since the registration's previous event
/// (the dealer reports at most once per interval and adds up the refusals in between).
pub fn queue_full(broker: &crate::broker::Broker, full: &crate::dealer::call::QueueFull) {
    broker.publish_internal("wamp.registration.on_queue_full", || {
        let details = Dict::new()
            .with("procedure", &*full.procedure)
            .with("refused", full.refused)
            .with("max_queued_calls", full.max_queued_calls as u64);
        Payload::args(vec![Value::UInt(full.registration), Value::Dict(details)])
    });
}

/// `REGISTER.Options.force_reregister: true`, before the REGISTER is tried: a `single`
/// registration of the URI held by another session of the same authenticated principal (a stale
/// registration of a client that reconnected) is revoked, so the REGISTER takes its place.
/// Anonymous sessions never replace one (their authids prove nothing), nor does anyone replace
/// another principal's registration: then the REGISTER fails as it would without the option.
/// On a cluster node the old session may be on any node: it is revoked there, and this returns
/// once this node's view no longer shows it.
pub async fn force_reregister(realm: &Realm, session: &SessionHandle, procedure: &str, options: &Dict) {
    if options.get("force_reregister").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let Some(identity) = session.identity() else { return };
    let named = |i: &crate::session::Identity| i.authmethod != "anonymous" && i.authid == identity.authid;
    if !named(identity) {
        return;
    }
    let Ok(policy) = MatchPolicy::from_option(options.get("match")) else { return };
    let Some(registration) = realm.dealer.lookup_exactly(procedure, policy) else { return };
    if registration.policy != crate::dealer::rule::InvocationRule::Single {
        return;
    }
    for old in registration.members() {
        let id = old.session.id;
        // A member on another node is a stand-in here: its principal is in the cluster's record
        // of its session.
        let remote = !realm.sessions.contains_key(&id) && realm.dealer.is_clustered();
        let same_principal = match &realm.cluster_sessions {
            Some(cluster) if remote => cluster
                .get(id)
                .is_some_and(|r| r.realm == realm.name && r.authmethod != "anonymous" && r.authid == identity.authid),
            _ => !remote && old.session.identity().is_some_and(named),
        };
        if id != session.id && same_principal {
            tracing::info!(
                registration = registration.id,
                procedure,
                replaced = old.session.id,
                by = session.id,
                authid = %identity.authid,
                "registration replaced (force_reregister)"
            );
            let reason = "replaced by a registration of the same authid (force_reregister)";
            if let Err(refusal) = revoke(realm, registration.id, id, reason).await {
                tracing::warn!(registration = registration.id, replaced = id, %refusal, "force_reregister could not revoke");
            }
        }
    }
}

/// Removes `callee` from `registration` on the router's initiative. A callee that announced
/// `registration_revocation` is told with `UNREGISTERED [0, {registration, reason}]`. On a cluster
/// node the callee may be on any node; this returns once the cluster's record (and this node's
/// view) no longer holds it.
async fn revoke(realm: &Realm, registration: u64, callee: u64, reason: &str) -> Result<(), Refusal> {
    if !realm.sessions.contains_key(&callee) {
        if let Some(cluster) = &realm.cluster_sessions {
            if cluster.get(callee).is_some_and(|r| r.realm == realm.name) {
                return realm.dealer.revoke_elsewhere(registration, callee, reason).await;
            }
        }
    }
    revoke_here(realm, registration, callee, reason, None).await
}

/// Revokes the membership of `callee`, a session of this node (asked by the node `by`, for the
/// log, when another node asked; see [`revoke`]).
pub async fn revoke_here(
    realm: &Realm,
    registration: u64,
    callee: u64,
    reason: &str,
    by: Option<&str>,
) -> Result<(), Refusal> {
    let session = realm.sessions.get(&callee).map(|s| s.clone()).ok_or_else(|| no_such_session(callee))?;
    let deleted = if realm.dealer.is_clustered() {
        realm.dealer.unregister_clustered(callee, registration).await?
    } else {
        realm.dealer.unregister(callee, registration)?
    };
    if let Some(by) = by {
        tracing::info!(registration, callee, reason, by, "callee removed at another node's request");
    }
    if session.identity().is_some_and(|i| i.features.registration_revocation) {
        let revoked = Outbound::Unregistered { request: 0, registration, reason: Some(reason.to_owned()) };
        let _ = session.push(revoked);
    }
    realm.metrics.revocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    unregistered(realm, callee, registration, deleted);
    Ok(())
}

fn kill_reason(kwargs: &Dict) -> (String, Option<&str>) {
    let reason = kwargs.get("reason").and_then(Value::as_str).unwrap_or("wamp.close.killed").to_owned();
    (reason, kwargs.get("message").and_then(Value::as_str))
}

fn kill(session: &SessionHandle, by: &SessionHandle, kwargs: &Dict) {
    let (reason, message) = kill_reason(kwargs);
    tracing::info!(
        session = session.id,
        authid = authid(session),
        reason,
        by = by.id,
        by_authid = authid(by),
        "session killed through the meta API"
    );
    close_killed(session, reason, message);
}

/// Closes a local session another node was asked to kill (`by` names who asked, for the log).
pub fn kill_for(session: &SessionHandle, reason: &str, message: Option<&str>, by: &str) {
    tracing::info!(session = session.id, authid = authid(session), reason, by, "session killed through the meta API");
    close_killed(session, reason.to_owned(), message);
}

fn close_killed(session: &SessionHandle, reason: String, message: Option<&str>) {
    let details = match message {
        Some(message) => Dict::new().with("message", message),
        None => Dict::new(),
    };
    session.outbox().mark(crate::metrics::CloseCause::Killed);
    if let Some(metrics) = session.metrics() {
        metrics.kills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let closing = Closing { message: Message::Goodbye { details, reason }, code: CloseCode::Policy };
    if session.push(Outbound::Close(Box::new(closing))).is_err() {
        session.kill();
    }
}

/// Closes a session with GOODBYE `wamp.close.system_shutdown` and `message`.
pub fn shut_down(session: &SessionHandle, message: &str) {
    let details = Dict::new().with("message", message);
    let reason = crate::error::WampError::SystemShutdown.uri().to_owned();
    let closing = Closing { message: Message::Goodbye { details, reason }, code: CloseCode::Away };
    if session.push(Outbound::Close(Box::new(closing))).is_err() {
        session.kill();
    }
}

fn authid(session: &SessionHandle) -> &str {
    session.identity().map_or("", |i| i.authid.as_str())
}

fn sessions(realm: &Realm, args: &[Value]) -> Vec<Arc<SessionHandle>> {
    let roles: Option<Vec<&str>> = match args.first() {
        Some(Value::List(roles)) => Some(roles.iter().filter_map(Value::as_str).collect()),
        _ => None,
    };
    realm
        .sessions
        .iter()
        .map(|s| s.clone())
        .filter(|s| roles.as_ref().is_none_or(|r| s.identity().is_some_and(|i| r.contains(&i.authrole.as_str()))))
        .collect()
}

/// The sessions of the realm cluster-wide, optionally only those of the roles in `args[0]`.
fn cluster_sessions(realm: &Realm, args: &[Value]) -> Vec<(u64, Arc<crate::cluster::sessions::Record>)> {
    let roles: Option<Vec<&str>> = match args.first() {
        Some(Value::List(roles)) => Some(roles.iter().filter_map(Value::as_str).collect()),
        _ => None,
    };
    let Some(cluster) = &realm.cluster_sessions else { return Vec::new() };
    let mut found = cluster.of_realm(&realm.name);
    found.retain(|(_, r)| roles.as_ref().is_none_or(|roles| roles.contains(&r.authrole.as_str())));
    found
}

/// What `get` and `on_join` say of a local session; in a cluster, also its node, as they say of
/// other nodes' sessions.
fn session_details(realm: &Realm, session: &SessionHandle) -> Dict {
    let mut details = Dict::new().with("session", session.id);
    if let Some(identity) = session.identity() {
        details.insert("authid", identity.authid.as_str());
        details.insert("authrole", identity.authrole.as_str());
        details.insert("authmethod", identity.authmethod);
        details.insert("authprovider", identity.authprovider);
    }
    let details = details.with("serializer", session.serializer.subprotocol());
    match &realm.cluster {
        Some(cluster) => details.with("node", &*cluster.node().name),
        None => details,
    }
}

fn registration_details(registration: &crate::dealer::Registration, policy: MatchPolicy) -> Dict {
    let policy = policy.name();
    Dict::new()
        .with("id", registration.id)
        .with("created", iso8601(registration.created))
        .with("uri", &*registration.uri)
        .with("match", policy)
        .with("invoke", registration.policy.as_str())
        .with("_queued", registration.queued() as u64)
        .with("_callees", Value::List(registration.members().iter().map(|c| callee_load(registration, c)).collect()))
}

/// One member's load, for `wamp.registration.get` (extension keys, `_`-prefixed): INVOCATIONs
/// written to it and those not answered yet, from its invocation table, or, while the
/// registration counts load (a limit or a load-based rule), its calls holding a slot.
fn callee_load(registration: &crate::dealer::Registration, callee: &crate::dealer::Callee) -> Value {
    let serving = callee.session.invocations.serving().into_iter().find(|(id, _)| *id == registration.id);
    let serving = serving.map(|(_, s)| s).unwrap_or_default();
    let in_flight = if registration.counts_load() { callee.load.in_flight() } else { serving.in_flight };
    let mut load =
        Dict::new().with("session", callee.session.id).with("_in_flight", in_flight).with("_served", serving.served);
    if let Some(limit) = callee.load.limit() {
        load.insert("_concurrency", limit);
    }
    Value::Dict(load)
}

fn registration_arg(realm: &Realm, args: &[Value]) -> Result<(Arc<crate::dealer::Registration>, MatchPolicy), Refusal> {
    let id = id_arg(args, 0, "registration")?;
    realm.dealer.get(id).ok_or_else(|| Refusal::new(WampError::NoSuchRegistration, format!("no registration {id}")))
}

fn id_arg(args: &[Value], index: usize, name: &str) -> Result<u64, Refusal> {
    args.get(index).and_then(Value::as_u64).ok_or_else(|| invalid(&format!("argument {index} ({name}) must be an id")))
}

fn string_arg<'a>(args: &'a [Value], index: usize, name: &str) -> Result<&'a str, Refusal> {
    args.get(index)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("argument {index} ({name}) must be a string")))
}

fn invalid(reason: &str) -> Refusal {
    Refusal::new(WampError::InvalidArgument, reason)
}

fn no_such_session(id: u64) -> Refusal {
    Refusal::new(WampError::NoSuchSession, format!("no session {id} in this realm"))
}

/// `2026-11-25T18:30:00.000Z` for a time after the epoch (the meta API's `created`, WAMP-CRA's
/// `timestamp`, the load generator's reports).
pub fn iso8601(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((since.as_secs() / 86_400) as i64, since.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_iso8601() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_625_400_123);
        assert_eq!(iso8601(t), "2026-11-25T16:50:00.123Z");
        assert_eq!(iso8601(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }
}
