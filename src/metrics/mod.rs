//! What the router counts, and how `/metrics` shows it.
//!
//! Counting sits on the call path, so it is kept to a few relaxed adds on per-thread rows of
//! [`counters::Counters`] (no lock, nothing allocated per call) and one clock read at each end of
//! a routed call. Everything that can be read from the router's own tables instead (sessions,
//! registrations, calls in flight, queued bytes) is read at scrape time, costing the call path
//! nothing. [`exposition`] turns both into the Prometheus text format with the `prometheus-client`
//! crate's encoder.

pub mod counters;
pub mod exposition;
pub mod histogram;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::dealer::rule::InvocationRule;
use crate::wire::Message;
use counters::Counters;

/// Rule slots of the call counters: the invocation rules, then `none` for calls that reached no
/// registration (meta procedures, `no_such_procedure`, refused options).
pub const RULES: [&str; 9] = [
    "single",
    "roundrobin",
    "random",
    "first",
    "last",
    "queue_least_loaded",
    "queue_least_loaded_sample",
    "jump_consistent_hash",
    "none",
];
const RULE_NONE: u8 = 8;

fn rule_slot(rule: InvocationRule) -> u8 {
    match rule {
        InvocationRule::Single => 0,
        InvocationRule::RoundRobin => 1,
        InvocationRule::Random => 2,
        InvocationRule::First => 3,
        InvocationRule::Last => 4,
        InvocationRule::LeastLoaded => 5,
        InvocationRule::LeastLoadedSample => 6,
        InvocationRule::JumpConsistentHash => 7,
    }
}

/// How calls end, as the `outcome` label: `result`, an error URI the router or WAMP defines, or
/// `application_error` for any other error URI a callee sent (so callees cannot grow the label
/// set without bound).
pub const OUTCOMES: [&str; 24] = [
    "result",
    "wamp.error.canceled",
    "wamp.error.timeout",
    "wamp.error.no_such_procedure",
    "wamp.error.no_available_callee",
    "wamp.error.invalid_uri",
    "wamp.error.invalid_argument",
    "wamp.error.unavailable",
    "wamp.error.not_authorized",
    "wamp.error.feature_not_supported",
    "wamp.error.payload_size_exceeded",
    "wamp.error.option_disallowed.disclose_me",
    "wamp.error.no_such_session",
    "wamp.error.no_such_registration",
    "wamp.error.no_such_subscription",
    "wamp.error.no_such_realm",
    "wamp.error.protocol_violation",
    "wamp.error.procedure_already_exists",
    "wamp.error.procedure_exists_with_different_invocation_policy",
    "wamp.error.no_auth_method",
    "wamp.error.authorization_failed",
    "wamp.error.authentication_failed",
    "other_wamp_error",
    "application_error",
];
const OUTCOME_APPLICATION: usize = OUTCOMES.len() - 1;
const OUTCOME_OTHER_WAMP: usize = OUTCOMES.len() - 2;

fn outcome(answer: &Message) -> usize {
    match answer {
        Message::Error { error, .. } if error.starts_with("wamp.") => {
            OUTCOMES[1..OUTCOME_OTHER_WAMP].iter().position(|u| *u == error).map_or(OUTCOME_OTHER_WAMP, |i| i + 1)
        }
        Message::Error { .. } => OUTCOME_APPLICATION,
        _ => 0,
    }
}

/// What a call's entry remembers for counting its end.
#[derive(Debug, Clone, Copy)]
pub struct CallTag {
    rule: u8,
    /// The call stands for `2^weight` calls in the latency histograms (see [`timed`]).
    weight: u8,
    /// Index into the realm's opted-in procedures, or `u16::MAX`.
    procedure: u16,
    /// When the CALL arrived; set for routed calls that are timed.
    opened: Option<Instant>,
}

impl CallTag {
    /// A call that reaches no registration.
    pub const NONE: CallTag = CallTag { rule: RULE_NONE, weight: 0, procedure: u16::MAX, opened: None };

    /// A call routed by `rule`, opened now; `procedure` from [`RealmMetrics::procedure_slot`].
    #[inline]
    pub fn routed(rule: InvocationRule, procedure: u16) -> Self {
        let (opened, weight) = match timed() {
            Some((now, weight)) => (Some(now), weight),
            None => (None, 0),
        };
        CallTag { rule: rule_slot(rule), weight, procedure, opened }
    }
}

/// Calls timed per second and thread before timing turns to sampling.
const TIMED_PER_SECOND: u32 = 1024;
/// At most one call in `2^MAX_WEIGHT` is timed.
const MAX_WEIGHT: u8 = 7;

/// A thread's sampling state: the second it is in (of the last timed call), the calls routed on
/// it since, and this second's weight.
#[derive(Clone, Copy)]
struct Sampling {
    second: u64,
    calls: u32,
    weight: u8,
}

/// Whether to time this call, and if so the clock reading and the call's weight.
///
/// Reading the clock costs more than all the counting together (about 60 ns on a VM), so a busy
/// thread times a random sample: every call while it routes fewer than [`TIMED_PER_SECOND`] a
/// second, else one call in `2^weight`, chosen at random, which then counts `2^weight` times in
/// the histograms (bucket counts and sums stay unbiased estimates of all calls). The weight is set
/// from the previous second's calls, read when the clock is read anyway.
#[inline]
fn timed() -> Option<(Instant, u8)> {
    thread_local! {
        static SAMPLING: std::cell::Cell<Sampling> = const { std::cell::Cell::new(Sampling { second: 0, calls: 0, weight: 0 }) };
    }
    SAMPLING
        .try_with(|cell| {
            let mut state = cell.get();
            state.calls = state.calls.saturating_add(1);
            let take = state.weight == 0 || fastrand::u32(..) & ((1u32 << state.weight) - 1) == 0;
            if !take {
                cell.set(state);
                return None;
            }
            let now = Instant::now();
            let second = now.duration_since(*process_start()).as_secs();
            if second != state.second {
                let elapsed = second.saturating_sub(state.second).max(1);
                let per_second = u64::from(state.calls) / elapsed;
                let ratio = per_second / u64::from(TIMED_PER_SECOND);
                state.weight =
                    if ratio == 0 { 0 } else { (64 - ratio.leading_zeros()).min(u32::from(MAX_WEIGHT)) as u8 };
                state.second = second;
                state.calls = 0;
            }
            cell.set(state);
            Some((now, state.weight))
        })
        .ok()
        .flatten()
}

fn process_start() -> &'static Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now)
}

/// The message directions of [`RouterMetrics::messages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from peers.
    In = 0,
    /// Sent to peers.
    Out = 1,
}

/// Message type codes go up to 70 (YIELD).
const TYPES: usize = 71;

/// Why a session ended, as the `reason` label of `roundhouse_sessions_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseCause {
    /// The peer said GOODBYE.
    Goodbye = 1,
    /// The peer sent ABORT.
    PeerAbort,
    /// The connection dropped (or the peer closed it) without GOODBYE.
    ConnectionLost,
    /// The peer broke the protocol.
    ProtocolViolation,
    /// No HELLO in time.
    HelloTimeout,
    /// HELLO refused (unknown realm, no acceptable authentication).
    Refused,
    /// Silent past `idle_timeout_ms`.
    IdleTimeout,
    /// Its queue reached `slow_consumer_bytes`.
    SlowConsumer,
    /// Its queue stayed full, or a socket write stayed pending, for `stuck_timeout_ms`.
    Stuck,
    /// Killed through the meta API.
    Killed,
    /// The router shut down.
    Shutdown,
    /// A task of the session failed.
    InternalError,
}

impl CloseCause {
    const ALL: [CloseCause; 12] = [
        CloseCause::Goodbye,
        CloseCause::PeerAbort,
        CloseCause::ConnectionLost,
        CloseCause::ProtocolViolation,
        CloseCause::HelloTimeout,
        CloseCause::Refused,
        CloseCause::IdleTimeout,
        CloseCause::SlowConsumer,
        CloseCause::Stuck,
        CloseCause::Killed,
        CloseCause::Shutdown,
        CloseCause::InternalError,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Goodbye => "goodbye",
            CloseCause::PeerAbort => "peer_abort",
            CloseCause::ConnectionLost => "connection_lost",
            CloseCause::ProtocolViolation => "protocol_violation",
            CloseCause::HelloTimeout => "hello_timeout",
            CloseCause::Refused => "refused",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::Stuck => "stuck",
            CloseCause::Killed => "killed",
            CloseCause::Shutdown => "shutdown",
            CloseCause::InternalError => "internal_error",
        }
    }

    /// The cause stored as `code` by [`crate::session::SessionHandle::mark_closing`].
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u8 == code)
    }

    /// Whether the router closed the session for not keeping up with what it was sent.
    pub fn is_slow_consumer(self) -> bool {
        matches!(self, CloseCause::SlowConsumer | CloseCause::Stuck)
    }
}

/// Handshakes refused before a session existed, by transport and reason.
pub const REFUSALS: [(&str, &str); 8] = [
    ("websocket", "wrong_path"),
    ("websocket", "no_subprotocol"),
    ("websocket", "bad_request"),
    ("websocket", "timeout"),
    ("rawsocket", "unsupported_serializer"),
    ("rawsocket", "reserved_bits"),
    ("rawsocket", "timeout"),
    ("any", "max_connections"),
];

/// Router-wide counters.
#[derive(Debug)]
pub struct RouterMetrics {
    /// Messages and their bytes, by direction and type.
    messages: Counters,
    sessions_closed: [AtomicU64; 13],
    refusals: [AtomicU64; REFUSALS.len()],
    /// Connections accepted.
    pub connections: AtomicU64,
    started: Instant,
}

impl Default for RouterMetrics {
    fn default() -> Self {
        RouterMetrics {
            messages: Counters::new(2 * TYPES * 2),
            sessions_closed: Default::default(),
            refusals: Default::default(),
            connections: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl RouterMetrics {
    /// Counts one message of `kind` (its type code) and `bytes` on the wire.
    #[inline]
    pub fn message(&self, direction: Direction, kind: u8, bytes: usize) {
        let index = ((direction as usize * TYPES) + (kind as usize).min(TYPES - 1)) * 2;
        self.messages.add2(index, 1, index + 1, bytes as u64);
    }

    /// Messages and bytes of type `kind` in `direction` so far.
    pub fn messages(&self, direction: Direction, kind: u8) -> (u64, u64) {
        let index = ((direction as usize * TYPES) + kind as usize) * 2;
        (self.messages.get(index), self.messages.get(index + 1))
    }

    fn messages_snapshot(&self) -> Vec<u64> {
        self.messages.snapshot()
    }

    /// A session ended for `cause`.
    pub fn session_closed(&self, cause: CloseCause) {
        self.sessions_closed[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Sessions closed for `cause` so far.
    pub fn sessions_closed(&self, cause: CloseCause) -> u64 {
        self.sessions_closed[cause as usize].load(Ordering::Relaxed)
    }

    /// A handshake was refused (`transport`, `reason` as in [`REFUSALS`]).
    pub fn refused(&self, transport: &str, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|(t, r)| *t == transport && *r == reason) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Seconds since the router started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

/// Events of one realm's broker.
#[derive(Debug, Clone, Copy)]
pub enum EventCount {
    /// PUBLISHes accepted.
    Published = 0,
    /// EVENTs queued to subscribers.
    Delivered = 1,
    /// EVENTs dropped for subscribers whose queue was full.
    Dropped = 2,
}

/// Counters of one realm.
#[derive(Debug)]
pub struct RealmMetrics {
    /// The realm's name.
    pub realm: String,
    /// Calls by rule and outcome.
    calls: Counters,
    /// Latency histograms by rule.
    latency: Counters,
    events: Counters,
    /// Opted-in procedures: URI → index into `procedures`.
    procedure_index: HashMap<String, u16>,
    procedures: Vec<ProcedureMetrics>,
    /// Calls handed to another member (callee left before taking it, answered
    /// `wamp.error.unavailable`, or was at its limits).
    pub reroutes: AtomicU64,
    /// Calls that ran past their `timeout`.
    pub timeouts: AtomicU64,
    /// CANCELs received, by mode: skip, kill, killnowait.
    pub cancels: [AtomicU64; 3],
    /// Memberships the router revoked (`wamp.registration.remove_callee`).
    pub revocations: AtomicU64,
    /// Sessions killed through the meta API.
    pub kills: AtomicU64,
    /// Sessions that joined, by transport (websocket, rawsocket) and serializer (json, msgpack, cbor).
    pub joined: [[AtomicU64; 3]; 2],
}

/// Counters of one opted-in procedure.
#[derive(Debug)]
struct ProcedureMetrics {
    uri: String,
    calls: Counters,
    latency: Counters,
}

impl RealmMetrics {
    /// Counters for realm `realm`, with per-procedure series for the registration URIs in
    /// `procedures`.
    pub fn new(realm: &str, procedures: &[String]) -> Self {
        let mut procedure_index = HashMap::new();
        let mut list = Vec::new();
        for uri in procedures.iter().take(u16::MAX as usize - 1) {
            if procedure_index.contains_key(uri) {
                continue;
            }
            procedure_index.insert(uri.clone(), list.len() as u16);
            list.push(ProcedureMetrics {
                uri: uri.clone(),
                calls: Counters::new(OUTCOMES.len()),
                latency: Counters::new(histogram::WIDTH),
            });
        }
        RealmMetrics {
            realm: realm.to_owned(),
            calls: Counters::new(RULES.len() * OUTCOMES.len()),
            latency: Counters::new(RULES.len() * histogram::WIDTH),
            events: Counters::new(3),
            procedure_index,
            procedures: list,
            reroutes: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            cancels: Default::default(),
            revocations: AtomicU64::new(0),
            kills: AtomicU64::new(0),
            joined: Default::default(),
        }
    }

    /// The per-procedure slot of registration URI `uri`, or `u16::MAX` when it has none (the
    /// usual case, answered without hashing when no procedure opted in).
    #[inline]
    pub fn procedure_slot(&self, uri: &str) -> u16 {
        if self.procedure_index.is_empty() {
            return u16::MAX;
        }
        self.procedure_index.get(uri).copied().unwrap_or(u16::MAX)
    }

    /// A call ended with `answer`: counts its outcome and, for a routed call, its latency.
    #[inline]
    pub fn call_ended(&self, tag: &CallTag, answer: &Message) {
        let outcome = outcome(answer);
        let rule = tag.rule as usize;
        self.calls.add(rule * OUTCOMES.len() + outcome, 1);
        let procedure = self.procedures.get(tag.procedure as usize);
        if let Some(procedure) = procedure {
            procedure.calls.add(outcome, 1);
        }
        let Some(opened) = tag.opened else { return };
        let nanos = opened.elapsed().as_nanos() as u64;
        let bucket = histogram::bucket(nanos);
        let base = rule * histogram::WIDTH;
        let (count, sum) = (1u64 << tag.weight, nanos << tag.weight);
        self.latency.add2(base + bucket, count, base + histogram::SUM, sum);
        if let Some(procedure) = procedure {
            procedure.latency.add2(bucket, count, histogram::SUM, sum);
        }
    }

    /// Counts broker events.
    #[inline]
    pub fn events(&self, what: EventCount, n: u64) {
        if n > 0 {
            self.events.add(what as usize, n);
        }
    }

    /// Events of kind `what` so far.
    pub fn event_count(&self, what: EventCount) -> u64 {
        self.events.get(what as usize)
    }

    /// Calls ended so far, by rule slot (see [`RULES`]) and outcome (see [`OUTCOMES`]).
    pub fn calls_snapshot(&self) -> Vec<u64> {
        self.calls.snapshot()
    }

    /// Latency histograms by rule slot, each [`histogram::WIDTH`] counters.
    pub fn latency_snapshot(&self) -> Vec<u64> {
        self.latency.snapshot()
    }

    /// Calls ended so far, all rules and outcomes.
    pub fn calls_total(&self) -> u64 {
        self.calls.snapshot().iter().sum()
    }

    /// The latency buckets of every rule merged (for the status page).
    pub fn latency_merged(&self) -> Vec<u64> {
        let all = self.latency.snapshot();
        let mut merged = vec![0u64; histogram::WIDTH];
        for chunk in all.chunks(histogram::WIDTH) {
            for (m, c) in merged.iter_mut().zip(chunk) {
                *m += c;
            }
        }
        merged
    }

    /// Transport/serializer index for [`RealmMetrics::joined`].
    pub fn count_join(&self, transport: crate::transport::Kind, serializer: crate::wire::Serializer) {
        let s = crate::wire::Serializer::ALL.iter().position(|x| *x == serializer).unwrap_or(0);
        self.joined[transport as usize][s].fetch_add(1, Ordering::Relaxed);
    }
}
