//! What every actor of a chaos run reports to: cases tried, calls made and answered, answers by
//! kind, violations, and what the callees of each procedure are doing right now (so a caller can
//! tell whether an error it got fits what happened while its call was in flight).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::progress::Counters;
use crate::report::new_histogram;

use super::script::PROCEDURES;

/// Violations printed on stderr as they happen; later ones are only counted and kept for the report.
const PRINTED: u64 = 40;

/// Violations kept word for word for the report.
const KEPT: usize = 200;

/// Characters of one violation kept.
const MAX_LINE: usize = 600;

/// The run's shared record.
pub struct Ledger {
    violations: Mutex<Vec<String>>,
    violation_count: AtomicU64,
    cases: Mutex<BTreeMap<String, u64>>,
    answers: Mutex<BTreeMap<String, u64>>,
    /// Calls healthy callers made.
    pub calls: AtomicU64,
    /// Of those, calls that got their final answer.
    pub answered: AtomicU64,
    /// Events the healthy publisher had acknowledged.
    pub published: AtomicU64,
    /// Events the healthy subscriber received.
    pub received: AtomicU64,
    /// What the callees of each procedure (in [`PROCEDURES`] order) are doing.
    pub procedures: [Membership; PROCEDURES.len()],
    /// For the progress line: final answers and violations.
    pub progress: Arc<Counters>,
    /// Latency of plain echo calls (no timeout, no cancel), in ns.
    pub latency: Mutex<Histogram<u64>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            violations: Mutex::default(),
            violation_count: AtomicU64::default(),
            cases: Mutex::default(),
            answers: Mutex::default(),
            calls: AtomicU64::default(),
            answered: AtomicU64::default(),
            published: AtomicU64::default(),
            received: AtomicU64::default(),
            procedures: Default::default(),
            progress: Arc::default(),
            latency: Mutex::new(new_histogram()),
        }
    }
}

/// The callees of one procedure, as they report themselves. A callee counts as a member from its
/// REGISTERED until just before it starts to leave (or freezes), so while `members > 0` the router
/// has at least one member too.
#[derive(Default)]
pub struct Membership {
    /// Callees registered and serving.
    pub members: AtomicI64,
    /// How many times `members` fell to zero.
    pub emptied: AtomicU64,
    /// Departures under way that may cancel calls in flight: from just before the router can see
    /// them (a GOODBYE sent, a connection dropped, a callee frozen) until the router has surely
    /// acted on them (its GOODBYE received; the grace period after a drop; the router seen to
    /// close a frozen callee). A call the router routed meanwhile may end canceled.
    pub departing: AtomicI64,
    /// Departures completed.
    pub departed: AtomicU64,
    /// Members that answer some calls `wamp.error.unavailable`, right now ...
    pub reluctant: AtomicI64,
    /// ... and how many ever joined.
    pub reluctant_joined: AtomicU64,
}

/// A [`Membership`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// `members`.
    pub members: i64,
    /// `emptied`.
    pub emptied: u64,
    /// `departing`.
    pub departing: i64,
    /// `departed`.
    pub departed: u64,
    /// `reluctant`.
    pub reluctant: i64,
    /// `reluctant_joined`.
    pub reluctant_joined: u64,
}

impl Membership {
    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            members: self.members.load(Ordering::SeqCst),
            emptied: self.emptied.load(Ordering::SeqCst),
            departing: self.departing.load(Ordering::SeqCst),
            departed: self.departed.load(Ordering::SeqCst),
            reluctant: self.reluctant.load(Ordering::SeqCst),
            reluctant_joined: self.reluctant_joined.load(Ordering::SeqCst),
        }
    }

    /// A callee got REGISTERED.
    pub fn join(&self, reluctant: bool) {
        if reluctant {
            self.reluctant_joined.fetch_add(1, Ordering::SeqCst);
            self.reluctant.fetch_add(1, Ordering::SeqCst);
        }
        self.members.fetch_add(1, Ordering::SeqCst);
    }

    /// A registered callee is about to leave (or freeze).
    pub fn leave(&self, reluctant: bool) {
        if self.members.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.emptied.fetch_add(1, Ordering::SeqCst);
        }
        if reluctant {
            self.reluctant.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A departure that may cancel calls in flight is about to happen.
    pub fn depart(&self) {
        self.departing.fetch_add(1, Ordering::SeqCst);
    }

    /// The router has surely acted on a departure.
    pub fn departed(&self) {
        // Counted as done before it stops being under way, so that it always shows in one.
        self.departed.fetch_add(1, Ordering::SeqCst);
        self.departing.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Snapshot {
    /// `wamp.error.canceled` without a CANCEL of the caller's own fits only if a callee of the
    /// procedure was departing (leaving, dropped, frozen) at some point while the call was in
    /// flight: when it went out, when it was answered, or in between.
    pub fn explains_canceled(&self, now: &Snapshot) -> bool {
        self.departing > 0 || now.departing > 0 || now.departed != self.departed
    }

    /// `wamp.error.no_such_procedure` fits only if the procedure had no member at some point
    /// while the call was in flight.
    pub fn explains_no_such_procedure(&self, now: &Snapshot) -> bool {
        self.members <= 0 || now.members <= 0 || now.emptied != self.emptied
    }

    /// `wamp.error.no_available_callee` fits only if a reluctant member was there, or members
    /// left, while the call was in flight.
    pub fn explains_no_available_callee(&self, now: &Snapshot) -> bool {
        self.reluctant > 0
            || now.reluctant > 0
            || now.reluctant_joined != self.reluctant_joined
            || self.explains_canceled(now)
    }
}

impl Ledger {
    /// A check failed: `who` (an actor, e.g. "caller 3 ws/json") saw `what`.
    pub fn violation(&self, who: &str, what: impl Into<String>) {
        let mut line = format!("{who}: {}", what.into());
        if let Some((cut, _)) = line.char_indices().nth(MAX_LINE) {
            line.truncate(cut);
            line.push('…');
        }
        let n = self.violation_count.fetch_add(1, Ordering::SeqCst) + 1;
        self.progress.add(0, 1);
        if n <= PRINTED {
            eprintln!("loadtest: VIOLATION {line}");
        } else if n == PRINTED + 1 {
            eprintln!("loadtest: more violations; the report lists the first {KEPT}");
        }
        let mut kept = self.violations.lock().expect("ledger lock");
        if kept.len() < KEPT {
            kept.push(line);
        }
    }

    /// Violations so far.
    pub fn violation_count(&self) -> u64 {
        self.violation_count.load(Ordering::SeqCst)
    }

    /// The violations kept word for word.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().expect("ledger lock").clone()
    }

    /// One more case of scenario `name` was tried.
    pub fn case(&self, name: &str) {
        *self.cases.lock().expect("ledger lock").entry(name.to_owned()).or_default() += 1;
    }

    /// Cases tried, by scenario.
    pub fn cases(&self) -> BTreeMap<String, u64> {
        self.cases.lock().expect("ledger lock").clone()
    }

    /// A healthy caller got an answer of `kind` (`RESULT`, `RESULT (progressive)`, `ERROR <uri>`).
    pub fn answer(&self, kind: &str, last: bool) {
        *self.answers.lock().expect("ledger lock").entry(kind.to_owned()).or_default() += 1;
        if last {
            self.answered.fetch_add(1, Ordering::Relaxed);
            self.progress.add(1, 0);
        }
    }

    /// Answers by kind.
    pub fn answers(&self) -> BTreeMap<String, u64> {
        self.answers.lock().expect("ledger lock").clone()
    }

    /// The membership of procedure number `index`.
    pub fn procedure(&self, index: usize) -> &Membership {
        &self.procedures[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_explained_only_by_what_happened_meanwhile() {
        let m = Membership::default();
        m.join(false);
        let before = m.snapshot();
        assert!(!before.explains_canceled(&m.snapshot()));
        assert!(!before.explains_no_such_procedure(&m.snapshot()));
        assert!(!before.explains_no_available_callee(&m.snapshot()));
        m.depart();
        assert!(before.explains_canceled(&m.snapshot()));
        let during = m.snapshot();
        m.departed();
        assert!(during.explains_canceled(&m.snapshot()), "it was under way when the call went out");
        assert!(before.explains_canceled(&m.snapshot()), "it happened while the call was in flight");
        assert!(!m.snapshot().explains_canceled(&m.snapshot()), "it was over before the call went out");
        m.leave(false);
        assert!(before.explains_no_such_procedure(&m.snapshot()));
        m.join(false);
        assert!(before.explains_no_such_procedure(&m.snapshot()), "it was empty meanwhile");
        let again = m.snapshot();
        m.join(true);
        assert!(again.explains_no_available_callee(&m.snapshot()));
    }

    #[test]
    fn violations_are_counted_and_kept() {
        let ledger = Ledger::default();
        ledger.violation("caller 1", "no answer");
        assert_eq!(ledger.violation_count(), 1);
        assert_eq!(ledger.violations(), vec!["caller 1: no answer".to_owned()]);
        ledger.case("hostile/x");
        ledger.case("hostile/x");
        assert_eq!(ledger.cases()["hostile/x"], 2);
    }
}
