//! The dealer: the RPC role of one realm.
//!
//! [`registry`] holds who registered what (sharded, wait-free reads), [`patterns`] indexes prefix
//! and wildcard registrations so a lookup never scans them, [`rule`] decides which member serves a
//! call, [`call`] is the state machine of calls in flight (routing, results, cancels,
//! callee or caller leaving), [`timeout`] expires calls that asked for a timeout. This module
//! turns REGISTER, UNREGISTER, CALL and CANCEL into operations on those; YIELD and a callee's
//! ERROR go straight to [`call::complete`]. On a cluster node, [`cluster`] makes the tables a view
//! of the cluster's replicated registrations and carries calls to members on other nodes; the
//! call path is the same either way.

pub mod call;
pub mod cluster;
pub mod patterns;
pub mod registry;
pub mod rule;
pub mod timeout;

use std::sync::Arc;

use crate::error::{Refusal, WampError};
use crate::session::SessionHandle;
use crate::wire::uri::{self, MatchPolicy};
use crate::wire::{Dict, MessageType, Payload, Value};

use crate::metrics::CallTag;
use call::{CallOptions, CancelMode, Chunk, Invocation, Opened, QueueBounds};
use patterns::{PatternIndex, PatternKind};
use registry::{Member, MemberLoad, RegisterError, Registry};
use rule::{InvocationRule, KeySource, ProcedureRules};

/// The features the dealer announces in `WELCOME.Details.roles.dealer.features`: exactly what is
/// implemented, nothing more.
pub const FEATURES: &[&str] = &[
    "shared_registration",
    "progressive_call_results",
    "call_canceling",
    "call_timeout",
    "caller_identification",
    "call_reroute",
    "pattern_based_registration",
    "registration_meta_api",
    "session_meta_api",
    "testament_meta_api",
    "registration_revocation",
    "progressive_call_invocations",
    // Extensions (no spec name): `REGISTER.Options.concurrency` with the bounded call queue,
    // and the load-based invocation rules.
    "_concurrency",
    "_invoke_queue_least_loaded",
    // `jump_consistent_hash` by `CALL.Options.rkey`, and `runmode: "partition"` with `rkey`.
    "_invoke_jump_consistent_hash",
    // `CALL.Options._callee`: a call to one chosen member of a shared registration.
    "_callee_targeting",
    // `REGISTER.Options.force_reregister` (Crossbar's option): a principal's new session takes
    // over its stale `single` registration.
    "_force_reregister",
    // `CALL.Options.runmode: "all"`: a call to every member, one progressive RESULT each.
    "_runmode_all",
];

/// What a callee asked for in `REGISTER.Options`, kept with its membership.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalleeOptions {
    /// `disclose_caller`: calls to this callee name their caller.
    pub disclose_caller: bool,
    /// `forward_timeout`: the callee enforces `CALL.Options.timeout` itself.
    pub forward_timeout: bool,
    /// `max_reroutes`: how many times a call this callee answers `wamp.error.unavailable` may be
    /// handed on; `None` means every member once.
    pub max_reroutes: Option<u64>,
}

/// A member of a registration: a callee session, its options and its load there. Routing clones
/// the member it picks for every call, so a clone is one reference count, as it was when a member
/// was its session alone.
#[derive(Clone)]
pub struct Callee(Arc<Membership>);

/// What [`Callee`] shares: one session's membership in one registration.
pub struct Membership {
    /// The callee's session.
    pub session: Arc<SessionHandle>,
    /// Its REGISTER options.
    pub options: CalleeOptions,
    /// Its calls in flight in this registration and its `concurrency` limit.
    pub load: Arc<MemberLoad>,
}

impl Callee {
    /// A member limited to `concurrency` calls in flight, when given.
    pub fn new(session: Arc<SessionHandle>, options: CalleeOptions, concurrency: Option<u64>) -> Self {
        Callee(Arc::new(Membership { session, options, load: Arc::new(MemberLoad::new(concurrency)) }))
    }
}

impl std::ops::Deref for Callee {
    type Target = Membership;

    fn deref(&self) -> &Membership {
        &self.0
    }
}

impl Member for Callee {
    fn member_id(&self) -> u64 {
        self.session.id
    }

    fn load(&self) -> Option<&Arc<MemberLoad>> {
        Some(&self.load)
    }
}

/// A registration whose members are callee sessions.
pub type Registration = registry::Registration<Callee>;

/// The RPC router of one realm.
///
/// Registrations live in two tables: exact URIs in the sharded [`Registry`] (the hot path: one
/// lookup per CALL), prefix and wildcard patterns in the [`PatternIndex`], which a CALL asks only
/// when no exact registration matches. Both are read through snapshots: routing never waits.
pub struct Dealer {
    exact: Registry<Callee>,
    patterns: PatternIndex<Callee>,
    timeouts: Arc<timeout::Timeouts>,
    allow_disclose_caller: bool,
    /// Bytes of further chunks a progressive invocation may hold while its first chunk waits for
    /// its callee; beyond that the caller waits.
    max_buffered_chunks: usize,
    metrics: Arc<crate::metrics::RealmMetrics>,
    /// The realm config's `[[realm.procedure]]` tables; swapped whole on a config reload, read
    /// by every REGISTER and by calls to keyed registrations.
    procedures: arc_swap::ArcSwap<ProcedureRules>,
    /// Where call queues report the calls they refuse (installed by the realm).
    congestion: std::sync::OnceLock<call::CongestionSink>,
    /// Set on a cluster node: registrations live in the cluster's registry, and the tables
    /// above are this node's view of it (see [`cluster`]). Never read by a CALL.
    cluster: std::sync::OnceLock<cluster::Link>,
}

/// What a REGISTER asks for, checked and with the realm's config applied.
pub(crate) struct RegisterPlan {
    pub(crate) policy: MatchPolicy,
    pub(crate) rule: InvocationRule,
    /// The config names the rule: a registration that predates it is joined under its own.
    pub(crate) configured_rule: bool,
    pub(crate) options: CalleeOptions,
    pub(crate) concurrency: Option<u64>,
    pub(crate) queue: Option<QueueBounds>,
}

impl Dealer {
    /// A dealer whose registry has `shards` shards. Starts the realm's timeout sweeper, so it must
    /// be created inside a tokio runtime.
    pub fn new(
        shards: usize,
        allow_disclose_caller: bool,
        max_buffered_chunks: usize,
        metrics: Arc<crate::metrics::RealmMetrics>,
    ) -> Self {
        Dealer {
            exact: Registry::new(shards),
            patterns: PatternIndex::new(shards),
            timeouts: timeout::Timeouts::start(),
            allow_disclose_caller,
            max_buffered_chunks,
            metrics,
            procedures: arc_swap::ArcSwap::from_pointee(ProcedureRules::default()),
            congestion: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// True on a cluster node (REGISTER and UNREGISTER go through the cluster's registry).
    pub fn is_clustered(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// Sends the congestion reports of the registrations' call queues (calls refused because a
    /// queue was full, rate-limited: see [`call::queue`]) to `sink`. Set once, before the first
    /// REGISTER; queues made before it report nowhere.
    pub fn report_queue_full(&self, sink: call::CongestionSink) {
        let _ = self.congestion.set(sink);
    }

    /// Puts the config's procedure tables in force. REGISTERs from now on follow them;
    /// registrations that exist keep the rule, limits and queue they were created with (a member
    /// joining one later joins under its rule), since changing the rule under calls in flight
    /// would break what callers were promised (one key, one member). A keyed registration reads
    /// where its key comes from at each call, from the tables in force.
    pub fn set_procedure_rules(&self, rules: ProcedureRules) {
        self.procedures.store(Arc::new(rules));
    }

    /// The procedure tables in force.
    pub fn procedure_rules(&self) -> Arc<ProcedureRules> {
        self.procedures.load_full()
    }

    /// The realm's call timeouts (deadlines pending), for inspection.
    pub fn timeouts(&self) -> &timeout::Timeouts {
        &self.timeouts
    }

    /// The exact-match registrations.
    pub fn registry(&self) -> &Registry<Callee> {
        &self.exact
    }

    /// The registration a CALL to `procedure` goes to, per the spec's selection: an exact match,
    /// else the most specific prefix match, else the most specific wildcard match. The flag says
    /// whether it is a pattern registration.
    ///
    /// Patterns never capture a procedure in the reserved `wamp.` namespace, nor an invalid URI
    /// (which then gets `wamp.error.invalid_uri`, not a callee). Nothing invalid can have been
    /// registered exactly, so that check is paid on the pattern path only.
    pub fn lookup(&self, procedure: &str) -> Option<(Arc<Registration>, bool)> {
        if let Some(exact) = self.exact.lookup(procedure) {
            return Some((exact, false));
        }
        if self.patterns.is_empty() || uri::is_reserved(procedure) || !uri::is_valid(procedure) {
            return None;
        }
        self.patterns.best_match(procedure).map(|registration| (registration, true))
    }

    /// The registration with this id, and its match policy.
    pub fn get(&self, id: u64) -> Option<(Arc<Registration>, MatchPolicy)> {
        match self.exact.get(id) {
            Some(exact) => Some((exact, MatchPolicy::Exact)),
            None => self.patterns.get(id).map(|(registration, kind)| (registration, kind.policy())),
        }
    }

    /// The registration of `procedure` under exactly this match policy (no pattern selection).
    pub fn lookup_exactly(&self, procedure: &str, policy: MatchPolicy) -> Option<Arc<Registration>> {
        match PatternKind::of(policy) {
            None => self.exact.lookup(procedure),
            Some(kind) => self.patterns.find(procedure, kind),
        }
    }

    /// How many registrations (exact and pattern) have members.
    pub fn registration_count(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    /// The ids of all registrations under `policy`.
    pub fn ids(&self, policy: MatchPolicy) -> Vec<u64> {
        match PatternKind::of(policy) {
            None => {
                let mut ids = Vec::new();
                self.exact.for_each(|r| ids.push(r.id));
                ids
            }
            Some(kind) => self.patterns.ids(kind),
        }
    }

    /// REGISTER: adds `callee` to the registration of `procedure`, returning its id and whether
    /// this created it.
    pub fn register(
        &self,
        callee: &Arc<SessionHandle>,
        procedure: &str,
        options: &Dict,
    ) -> Result<registry::Registered, Refusal> {
        let plan = self.plan_register(procedure, options)?;
        let callee = Callee::new(callee.clone(), plan.options, plan.concurrency);
        let register = |rule: InvocationRule| self.join(procedure, plan.policy, rule, None, callee.clone(), plan.queue);
        let mut registered = register(plan.rule);
        if let (true, Err(RegisterError::DifferentRule(existing))) = (plan.configured_rule, &registered) {
            // A registration created before a config reload keeps its rule; a member the config
            // sends to it joins under that rule rather than being refused for the config's.
            tracing::info!(
                procedure,
                existing = %existing,
                configured = %plan.rule,
                "registration predates the configured rule; the new member joins under its rule"
            );
            registered = register(*existing);
        }
        registered.map_err(|error| register_refusal(error, procedure, plan.rule))
    }

    /// REGISTER on a cluster node: the member is added to the cluster's record of the
    /// registration (exact cluster-wide: `single` and the rule check are decided by one
    /// linearizable write), and this returns once this node's view shows it.
    pub async fn register_clustered(
        &self,
        callee: &Arc<SessionHandle>,
        procedure: &str,
        options: &Dict,
    ) -> Result<registry::Registered, Refusal> {
        let plan = self.plan_register(procedure, options)?;
        match self.cluster.get() {
            Some(link) => link.register(callee, procedure, plan).await,
            None => self.register(callee, procedure, options),
        }
    }

    /// UNREGISTER on a cluster node: the member leaves the cluster's record first (so a registry
    /// that cannot be reached refuses with `wamp.error.network_failure` and changes nothing), then
    /// this node's view.
    pub async fn unregister_clustered(&self, session: u64, registration: u64) -> Result<bool, Refusal> {
        match self.cluster.get() {
            Some(link) => link.unregister(session, registration).await,
            None => self.unregister(session, registration),
        }
    }

    /// Revokes the membership of `callee`, a session on another cluster node, in `registration`
    /// (see [`cluster::Link::revoke_elsewhere`]); `wamp.error.no_such_registration` when it is
    /// no member of it here.
    pub async fn revoke_elsewhere(&self, registration: u64, callee: u64, reason: &str) -> Result<(), Refusal> {
        match self.cluster.get() {
            Some(link) => link.revoke_elsewhere(registration, callee, reason).await,
            None => Err(Refusal::new(
                WampError::NoSuchRegistration,
                format!("session {callee} is not registered under registration {registration}"),
            )),
        }
    }

    /// Checks a REGISTER and applies the realm's procedure config to it.
    pub(crate) fn plan_register(&self, procedure: &str, options: &Dict) -> Result<RegisterPlan, Refusal> {
        let policy = MatchPolicy::from_option(options.get("match"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        if !policy.accepts(procedure) {
            return Err(Refusal::new(WampError::InvalidUri, format!("invalid procedure URI '{procedure}'")));
        }
        if uri::is_reserved(procedure) {
            return Err(Refusal::new(
                WampError::InvalidUri,
                format!("procedure URI '{procedure}' is in the reserved wamp. namespace"),
            ));
        }
        let mut rule = InvocationRule::from_option(options.get("invoke"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        let flag = |key: &str| options.get(key).and_then(Value::as_bool).unwrap_or(false);
        let mut concurrency = count_option(options, "concurrency", 1)?;
        let mut max_calls = count_option(options, "_max_queued_calls", 0)?;
        let mut max_wait_ms = count_option(options, "_max_queue_ms", 0)?;
        // The realm's config wins, key by key, over what the callee asked (its REGISTER is still
        // checked above: a malformed option is refused whatever the config says).
        let procedures = self.procedures.load();
        let configured = procedures.decide(procedure);
        if let Some(configured) = configured {
            rule = configured.invoke.unwrap_or(rule);
            concurrency = configured.concurrency.or(concurrency);
            max_calls = configured.max_queued_calls.or(max_calls);
            max_wait_ms = configured.max_queue_ms.or(max_wait_ms);
        }
        let queue = (concurrency.is_some() || max_calls.is_some() || max_wait_ms.is_some()).then(|| QueueBounds {
            max_calls: max_calls.map_or(QueueBounds::DEFAULT_MAX_CALLS, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_wait_ms: max_wait_ms.unwrap_or(0),
        });
        let options = CalleeOptions {
            disclose_caller: flag("disclose_caller"),
            forward_timeout: flag("forward_timeout"),
            max_reroutes: options.get("max_reroutes").and_then(Value::as_u64),
        };
        let configured_rule = configured.is_some_and(|c| c.invoke.is_some());
        Ok(RegisterPlan { policy, rule, configured_rule, options, concurrency, queue })
    }

    /// Adds `callee` to the registration of `procedure` under `policy` and `rule` (created with
    /// the id `id` when given and new), making its call queue with `queue` when the member asks
    /// for one.
    pub(crate) fn join(
        &self,
        procedure: &str,
        policy: MatchPolicy,
        rule: InvocationRule,
        id: Option<u64>,
        callee: Callee,
        queue: Option<QueueBounds>,
    ) -> Result<registry::Registered, RegisterError> {
        // The first REGISTER that asks for a queue (or a limit) sets its bounds, before its member
        // is published: a call can wait only once a limited member is in the list, so no call can
        // find the registration without its queue and make one with default bounds.
        let prepare = |registration: &Registration| {
            if let Some(bounds) = queue {
                let (timeouts, sink) = (Some(self.timeouts.clone()), self.congestion.get().cloned());
                registration.queue.get_or_init(|| Box::new(call::CallQueue::new(bounds, timeouts, sink)));
            }
        };
        let registered = match PatternKind::of(policy) {
            None => self.exact.register_as(procedure, rule, id, callee, prepare),
            Some(kind) => self.patterns.register_as(procedure, kind, rule, id, callee, prepare),
        }?;
        if let Some((registration, _)) = self.get(registered.id) {
            // A new member may take calls that wait.
            if registration.queued() > 0 {
                call::queue::drain(&registration);
            }
        }
        Ok(registered)
    }

    /// UNREGISTER: removes the session from a registration it is a member of; `Ok(true)` when
    /// that deleted the registration (its last member left).
    /// On a cluster node the member leaves this node's view at once and the cluster's record in
    /// the background (a session closing, a revocation).
    pub fn unregister(&self, session: u64, registration: u64) -> Result<bool, Refusal> {
        match self.leave(session, registration) {
            Some((left, policy, deleted)) => {
                if let Some(link) = self.cluster.get() {
                    link.forget(session, &left, policy);
                }
                Ok(deleted)
            }
            None if self.cluster.get().is_some_and(|link| link.forget_id(session, registration)) => Ok(false),
            None => Err(Refusal::new(
                WampError::NoSuchRegistration,
                format!("session is not registered under registration {registration}"),
            )),
        }
    }

    /// Removes the member `session` from `registration` in this node's tables: the registration,
    /// its match policy and whether it was deleted; `None` when the session was not a member.
    pub(crate) fn leave(&self, session: u64, registration: u64) -> Option<(Arc<Registration>, MatchPolicy, bool)> {
        let (registration, policy, deleted) = match self.exact.unregister(registration, session) {
            Some((r, deleted)) => (r, MatchPolicy::Exact, deleted),
            None => {
                let kind = self.patterns.get(registration)?.1;
                let (r, deleted) = self.patterns.unregister(registration, session)?;
                (r, kind.policy(), deleted)
            }
        };
        // Calls waiting for a slot end when nobody is left to serve them; otherwise a head of
        // the queue that may not go to the remaining members must end too.
        if deleted {
            call::queue::fail_all(&registration);
        } else if registration.queued() > 0 {
            call::queue::drain(&registration);
        }
        Some((registration, policy, deleted))
    }

    /// CALL: opens the call in the caller's table, routes it by the registration's rule and
    /// queues the INVOCATION at the callee, waiting while the callee's queue is full. A further
    /// chunk of a progressive invocation goes where its call went. Every refusal is the call's
    /// one answer; `Err` is a protocol violation (a request id already in flight). `disclose`
    /// names the caller to the callee whatever the caller asked (its role's rule says so).
    pub async fn call(
        &self,
        caller: &Arc<SessionHandle>,
        request: u64,
        procedure: &str,
        options: &Dict,
        payload: Payload,
        disclose: bool,
    ) -> Result<(), String> {
        let streaming = options.get("progress").and_then(Value::as_bool) == Some(true);
        // Looked up before the call is opened, so its entry knows the rule it is counted under.
        let found = self.lookup(procedure);
        let tag = match &found {
            Some((registration, _)) => {
                CallTag::routed(registration.policy, self.metrics.procedure_slot(&registration.uri))
            }
            None => CallTag::NONE,
        };
        let token = match caller.calls.open_tagged(request, streaming, tag) {
            Opened::New(token) => token,
            Opened::Chunk => {
                let chunk = Chunk { progress: streaming, payload };
                call::chunk(caller, request, chunk, self.max_buffered_chunks).await;
                return Ok(());
            }
            Opened::Stray => {
                tracing::debug!(session = caller.id, request, "chunk of an ended progressive call dropped");
                return Ok(());
            }
            Opened::Reused => return Err(format!("CALL request id {request} is already in flight")),
        };
        let refuse = |refusal: Refusal| {
            tracing::debug!(session = caller.id, %refusal, "call refused");
            call::end(caller, request, token, refusal.to_message(MessageType::Call, request));
            Ok(())
        };
        let Some((registration, pattern)) = found else {
            return refuse(if uri::is_valid(procedure) {
                Refusal::new(WampError::NoSuchProcedure, format!("no callee registered for procedure '{procedure}'"))
            } else {
                Refusal::new(WampError::InvalidUri, format!("invalid procedure URI '{procedure}'"))
            });
        };
        let mut options = match call_options(options) {
            Ok(options) => options,
            Err(refusal) => return refuse(refusal),
        };
        if options.disclose_me && !self.allow_disclose_caller {
            return refuse(Refusal::new(
                WampError::OptionDisallowedDiscloseMe,
                "this realm does not disclose callers to callees",
            ));
        }
        options.disclose_me |= disclose;
        if options.all {
            let timeouts = (options.timeout_ms > 0).then(|| self.timeouts.clone());
            let called = pattern.then(|| procedure.into());
            let disclose_callee = self.allow_disclose_caller;
            call::dispatch_all(
                registration,
                caller,
                request,
                token,
                options,
                payload,
                timeouts,
                called,
                disclose_callee,
            )
            .await;
            return Ok(());
        }
        // A keyed registration whose config names a path into the payload takes its key there
        // (the config wins over `CALL.Options.rkey`); only these calls decode their payload.
        if registration.policy == InvocationRule::JumpConsistentHash {
            let procedures = self.procedures.load();
            let configured = procedures.decide(&registration.uri).filter(|c| c.invoke == Some(registration.policy));
            if let Some(source) = configured.map(|c| &c.key).filter(|k| **k != KeySource::Option) {
                match source.key_of(&payload) {
                    Ok(key) => options.rkey = Some(key),
                    Err(reason) => {
                        return refuse(Refusal::new(
                            WampError::InvalidArgument,
                            format!("a call to '{procedure}' is routed by key: {reason}"),
                        ))
                    }
                }
            }
        }
        // The key routes the call only under a keyed rule or `runmode: "partition"`; there it is
        // required.
        if registration.policy == InvocationRule::JumpConsistentHash || options.partition {
            if options.rkey.is_none() {
                return refuse(Refusal::new(
                    WampError::InvalidArgument,
                    format!("a call to '{procedure}' is routed by key and needs CALL.Options.rkey"),
                ));
            }
        } else {
            options.rkey = None;
        }
        let mut invocation = Invocation::new(registration, caller.clone(), request, token, options, payload);
        if options.timeout_ms > 0 {
            invocation.timer = Some(self.timeouts.clone());
        }
        if pattern {
            invocation.called = Some(procedure.into());
        }
        call::dispatch(invocation).await;
        Ok(())
    }

    /// CANCEL: ends the caller's call `request` in the mode it asks for.
    pub fn cancel(caller: &SessionHandle, request: u64, options: &Dict) -> Result<(), Refusal> {
        let mode = CancelMode::from_option(options.get("mode"))
            .map_err(|reason| Refusal::new(WampError::InvalidArgument, reason))?;
        if let Some(metrics) = caller.metrics() {
            metrics.cancels[mode as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        call::cancel(caller, request, None, mode, WampError::Canceled);
        Ok(())
    }
}

/// The refusal a REGISTER gets for `error`.
pub(crate) fn register_refusal(error: RegisterError, procedure: &str, rule: InvocationRule) -> Refusal {
    match error {
        RegisterError::AlreadyExists => Refusal::new(
            WampError::ProcedureAlreadyExists,
            format!("register for already registered procedure '{procedure}'"),
        ),
        RegisterError::DifferentRule(existing) => Refusal::new(
            WampError::ProcedureExistsWithDifferentInvocationPolicy,
            format!("procedure '{procedure}' is registered with invocation rule '{existing}', not '{rule}'"),
        ),
    }
}

/// A non-negative integer REGISTER option of at least `min`, if given.
fn count_option(options: &Dict, key: &str, min: u64) -> Result<Option<u64>, Refusal> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::UInt(n)) if *n >= min => Ok(Some(*n)),
        Some(other) => Err(Refusal::new(
            WampError::InvalidArgument,
            format!("REGISTER.Options.{key} must be an integer of at least {min}, got {}", other.describe()),
        )),
    }
}

fn call_options(options: &Dict) -> Result<CallOptions, Refusal> {
    let flag = |key: &str| match options.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Refusal::new(
            WampError::InvalidArgument,
            format!("CALL.Options.{key} must be a boolean, got {}", other.describe()),
        )),
    };
    let timeout_ms = match options.get("timeout") {
        None => 0,
        Some(Value::UInt(ms)) => *ms,
        Some(Value::Float(ms)) if *ms >= 0.0 && ms.is_finite() => *ms as u64,
        Some(other) => {
            return Err(Refusal::new(
                WampError::InvalidArgument,
                format!("CALL.Options.timeout must be a non-negative number of milliseconds, got {}", other.describe()),
            ))
        }
    };
    let callee = match options.get("_callee") {
        None => None,
        Some(Value::UInt(session)) => Some(*session),
        Some(other) => {
            return Err(Refusal::new(
                WampError::InvalidArgument,
                format!("CALL.Options._callee must be a session id, got {}", other.describe()),
            ))
        }
    };
    let (partition, all) = match options.get("runmode") {
        None => (false, false),
        Some(Value::Str(mode)) if mode == "partition" => (true, false),
        Some(Value::Str(mode)) if mode == "all" => (false, true),
        Some(other) => {
            return Err(Refusal::new(
                WampError::InvalidArgument,
                format!("CALL.Options.runmode must be \"partition\" or \"all\", got {}", other.describe()),
            ))
        }
    };
    let rkey = match options.get("rkey") {
        None => None,
        Some(value) => Some(rule::rkey_hash(value).ok_or_else(|| {
            Refusal::new(
                WampError::InvalidArgument,
                format!("CALL.Options.rkey must be a string or an integer, got {}", value.describe()),
            )
        })?),
    };
    Ok(CallOptions {
        receive_progress: flag("receive_progress")?,
        disclose_me: flag("disclose_me")?,
        timeout_ms,
        progress: flag("progress")?,
        callee,
        partition,
        rkey,
        all,
    })
}
