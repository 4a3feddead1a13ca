//! The registration registry: the design card's sharded, wait-free routing table.
//!
//! It owns [`Registration`], the entry every table shares: exact URIs here, prefix and wildcard
//! patterns in [`super::patterns`], subscriptions in the broker. A table finds entries; the entry
//! keeps its members and picks one (`join`, `leave`, `pick` below), whichever table holds it.
//!
//! Procedure URIs are hashed into shards. Each shard publishes an immutable map
//! `URI → Arc<Registration>` through an [`ArcSwap`]; each registration publishes its member list
//! (callees in registration order) through an `ArcSwap` of its own. Routing a call is therefore
//! two atomic snapshot loads, one hash lookup and one rule pick: no lock, no allocation, and
//! wait-free (the round-robin cursor is a `fetch_add`, never a CAS loop).
//!
//! # Load and concurrency
//! A member may carry a [`MemberLoad`]: its calls in flight, calls served and concurrency limit,
//! as atomics in an `Arc` that every version of the member list shares. A member list is *gated*
//! when its rule reads loads (least loaded) or some member has a limit; only then does
//! [`Registration::select`] look at loads and charge the chosen member a slot (a compare-and-swap
//! loop on a limited member: lock-free). A list that is not gated picks exactly as before and
//! touches no counter: the calls of the five contract rules pay nothing for concurrency limits
//! they do not use. Its members' calls in flight are then counted only by the callee's own
//! invocation table, which the meta API reads instead. A list that becomes gated (a limited member
//! joins) counts the calls routed from then on.
//!
//! Writers (REGISTER, UNREGISTER, session teardown) serialise on the shard's mutex, build the next
//! version and publish it. Membership changes of an existing procedure — the common churn of
//! callees joining and leaving — copy only that procedure's member list. Creating or deleting a
//! procedure copies its shard's map, so the shard count is sized to keep that copy small (see
//! `RouterConfig::dealer_shards`); BENCHMARKS.md measures it from 1k to 100k procedures.
//!
//! # Round-robin across joins and leaves
//! The contract says a call goes to the member *after the one that served the previous call*.
//! `ticket % len` breaks that whenever the list changes (Crossbar repeats a callee after a leave).
//! Here each call takes a ticket `t` from the registration's cursor and serves member
//! `(t - base + offset) % len`, where `base`/`offset` belong to the member-list version. When a
//! writer publishes a new version it reads the cursor `t0`, finds the member that served ticket
//! `t0 - 1` (the previous call; remembered across versions that served no call), and points the
//! new version's `offset`, with `base = t0`, at the first member that joined after it — wrapping
//! to the first member. So the rotation continues exactly where it was, whoever joined or left. Calls racing with the publish may still use the old version; concurrent
//! calls have no order anyway, and the rotation is exact again from the next call on.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::rule::InvocationRule;
use crate::wire::message::MAX_ID;

/// What members of one entry must agree on: the invocation rule for registrations, nothing (`()`)
/// for subscriptions, which share the same table structure.
pub trait Policy: Copy + Eq + Send + Sync + 'static {
    /// True when an entry under this policy admits a single member only.
    fn is_exclusive(self) -> bool;

    /// True when picking under this policy reads the members' loads.
    fn reads_load(self) -> bool {
        false
    }
}

impl Policy for InvocationRule {
    fn is_exclusive(self) -> bool {
        self == InvocationRule::Single
    }

    fn reads_load(self) -> bool {
        self.is_load_based()
    }
}

impl Policy for () {
    fn is_exclusive(self) -> bool {
        false
    }
}

/// Something that can be a member of a registration: a session handle in the router, a plain id
/// in unit tests and benches.
pub trait Member: Clone + Send + Sync + 'static {
    /// The member's session id; a session is a member of a registration at most once.
    fn member_id(&self) -> u64;

    /// The member's load counters, when it keeps them (callees do; plain ids do not, and count as
    /// never full).
    fn load(&self) -> Option<&Arc<MemberLoad>> {
        None
    }
}

/// One member's load in one registration: shared by every version of the member list, so counts
/// survive joins and leaves of other members. Counted only while the list is gated (see the
/// module docs); what a member served is its invocation table's to count.
#[derive(Debug)]
pub struct MemberLoad {
    in_flight: CachePadded<AtomicU64>,
    /// `REGISTER.Options.concurrency`; `u64::MAX` when unlimited.
    limit: u64,
}

impl MemberLoad {
    /// A member with nothing in flight, limited to `concurrency` calls at once when given.
    pub fn new(concurrency: Option<u64>) -> Self {
        MemberLoad { in_flight: CachePadded::new(AtomicU64::new(0)), limit: concurrency.unwrap_or(u64::MAX) }
    }

    /// Calls routed to this member and not ended yet (each holds a slot).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The concurrency limit, if any.
    pub fn limit(&self) -> Option<u64> {
        (self.limit != u64::MAX).then_some(self.limit)
    }

    /// True when the member has a concurrency limit.
    pub fn is_limited(&self) -> bool {
        self.limit != u64::MAX
    }

    /// True when a call could take a slot now.
    #[inline]
    pub fn has_room(&self) -> bool {
        self.in_flight() < self.limit
    }

    /// Takes a slot if one is free. Unlimited members always have one (a single `fetch_add`);
    /// limited ones never go past their limit, even when calls race for the last slot.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        if self.limit == u64::MAX {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < self.limit).then_some(n + 1)).is_ok()
    }

    /// Gives back a slot taken by [`MemberLoad::try_acquire`].
    #[inline]
    pub fn release(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "slot released twice");
    }
}

/// The outcome of [`Registration::select`].
#[derive(Debug, PartialEq, Eq)]
pub enum Selected<C> {
    /// This member serves the call, and a slot was taken on it: whoever holds the call gives it
    /// back when the call ends or moves on.
    Member(C),
    /// This member serves the call; its member list does not count load (not gated), so there is
    /// no slot to give back.
    Unmetered(C),
    /// Members that may serve the call exist, but every one is at its concurrency limit.
    Full,
    /// No member may serve the call (none left, or all excluded).
    Nobody,
}

impl Member for u64 {
    fn member_id(&self) -> u64 {
        *self
    }
}

/// One version of a registration's member list.
struct Members<C> {
    /// Members in registration order, each with its join sequence number.
    callees: SmallVec<[(C, u64); 4]>,
    /// Round-robin: the first ticket this version serves ...
    rr_base: u64,
    /// ... and the index that ticket goes to.
    rr_offset: usize,
    /// The sequence number the next joining member gets.
    next_seq: u64,
    /// The sequence number of the member that served the last call before `rr_base`.
    last_served: Option<u64>,
    /// Picking reads loads: the rule is load-based or a member has a concurrency limit.
    gated: bool,
}

impl<C: Member> Members<C> {
    fn new<P: Policy>(policy: P, callees: SmallVec<[(C, u64); 4]>, next_seq: u64) -> Self {
        let gated = policy.reads_load() || callees.iter().any(|(c, _)| c.load().is_some_and(|l| l.is_limited()));
        Members { callees, rr_base: 0, rr_offset: 0, next_seq, last_served: None, gated }
    }
}

/// `member`, chosen by its id or key rather than by the rule: a slot is taken on it when its list
/// is gated, `Full` when that fails.
fn charge<C: Member>(members: &Members<C>, member: &C) -> Selected<C> {
    if !members.gated {
        Selected::Unmetered(member.clone())
    } else if acquire(member) {
        Selected::Member(member.clone())
    } else {
        Selected::Full
    }
}

/// Takes a slot on `member` if it keeps a load.
#[inline]
fn acquire<C: Member>(member: &C) -> bool {
    member.load().is_none_or(|l| l.try_acquire())
}

fn in_flight<C: Member>(member: &C) -> u64 {
    member.load().map_or(0, |l| l.in_flight())
}

fn has_room<C: Member>(member: &C) -> bool {
    member.load().is_none_or(|l| l.has_room())
}

/// An entry of the table: a procedure registration (a URI, its invocation rule, its callees) or,
/// with `P = ()`, a subscription (a topic and its subscribers).
pub struct Registration<C, P = InvocationRule> {
    /// The registration id every member got in REGISTERED.
    pub id: u64,
    /// The procedure URI.
    pub uri: Arc<str>,
    /// The invocation rule (or other policy) all members agreed on.
    pub policy: P,
    /// When the entry was created (meta API).
    pub created: std::time::SystemTime,
    members: ArcSwap<Members<C>>,
    /// Round-robin tickets; outlives member-list versions, padded against false sharing.
    cursor: CachePadded<AtomicU64>,
    /// The dealer's queue of calls waiting for a free slot, made when the registration is created
    /// with bounds or first needs it; subscriptions never make one.
    pub(crate) queue: OnceLock<Box<crate::dealer::call::CallQueue>>,
}

impl<C: Member> Registration<C> {
    /// Picks the member that serves the next call, per the rule. `None` once every member left.
    ///
    /// On a gated member list (a load-based rule or a member with a concurrency limit) this is
    /// [`Registration::select`]: the chosen member is charged a slot, which its caller must
    /// release, and `None` also means every member is full. Otherwise nothing is charged.
    #[inline]
    pub fn pick(&self) -> Option<C> {
        let members = self.members.load();
        if members.gated {
            return match self.select_gated(&members, &[]) {
                Selected::Member(member) | Selected::Unmetered(member) => Some(member),
                Selected::Full | Selected::Nobody => None,
            };
        }
        let len = members.callees.len();
        if len == 0 {
            return None;
        }
        let index = self.rotate_pick(&members);
        Some(members.callees[index].0.clone())
    }

    #[inline]
    fn rotate_pick(&self, members: &Members<C>) -> usize {
        let len = members.callees.len();
        self.policy.pick(len, || {
            let ticket = self.cursor.fetch_add(1, Ordering::Relaxed);
            (ticket.wrapping_sub(members.rr_base) as usize).wrapping_add(members.rr_offset) % len
        })
    }

    /// Chooses the member that serves a call, skipping the members in `excluded`, and takes a slot
    /// on it when its list is gated: the routing decision of the dealer. On a list that is not
    /// gated this is [`Registration::pick_excluding`], and the member comes `Unmetered`.
    /// Otherwise the rule picks among the members with a free slot: round-robin keeps its exact
    /// position among them (a full member's turn passes to the next), random is uniform over
    /// them, first/last take the earliest/latest, least-loaded the fewest in flight (ties in
    /// registration order), least-loaded-sample the less loaded of two random ones.
    #[inline]
    pub fn select(&self, excluded: &[u64]) -> Selected<C> {
        let members = self.members.load();
        if members.gated {
            return self.select_gated(&members, excluded);
        }
        let picked = if excluded.is_empty() {
            (!members.callees.is_empty()).then(|| members.callees[self.rotate_pick(&members)].0.clone())
        } else {
            self.pick_excluding_in(&members, excluded)
        };
        match picked {
            Some(member) => Selected::Unmetered(member),
            None => Selected::Nobody,
        }
    }

    /// Like [`Registration::select`] for a call that must go to the member `target` (a targeted
    /// call): `Nobody` when it is not a member (or is excluded), `Full` when it is at its limit.
    pub fn select_target(&self, target: u64, excluded: &[u64]) -> Selected<C> {
        let members = self.members.load();
        let found = members.callees.iter().map(|(c, _)| c).find(|c| c.member_id() == target);
        match found {
            Some(member) if !excluded.contains(&target) => charge(&members, member),
            _ => Selected::Nobody,
        }
    }

    /// Like [`Registration::select`] for a keyed call (`jump_consistent_hash`, or `runmode:
    /// "partition"`): the member jump consistent hash of `key` names among the members in
    /// registration order, and no other; `Full` when it is at its limit.
    pub fn select_key(&self, key: u64, excluded: &[u64]) -> Selected<C> {
        let members = self.members.load();
        if members.callees.is_empty() {
            return Selected::Nobody;
        }
        let member = &members.callees[super::rule::jump_consistent_hash(key, members.callees.len())].0;
        if excluded.contains(&member.member_id()) {
            Selected::Nobody
        } else {
            charge(&members, member)
        }
    }

    fn select_gated(&self, members: &Members<C>, excluded: &[u64]) -> Selected<C> {
        let callees = &members.callees;
        let allowed = |c: &C| !excluded.contains(&c.member_id());
        if !callees.iter().any(|(c, _)| allowed(c)) {
            return Selected::Nobody;
        }
        let found = match self.policy {
            // Keyed calls use `select_key`; a call without a key never reaches a keyed rule.
            InvocationRule::Single | InvocationRule::First | InvocationRule::JumpConsistentHash => {
                callees.iter().map(|(c, _)| c).find(|c| allowed(c) && acquire(*c)).cloned()
            }
            InvocationRule::Last => callees.iter().rev().map(|(c, _)| c).find(|c| allowed(c) && acquire(*c)).cloned(),
            InvocationRule::RoundRobin => (0..callees.len())
                .map(|_| &callees[self.rotate_pick(members)].0)
                .find(|c| allowed(c) && acquire(*c))
                .cloned(),
            InvocationRule::Random => self.retry(callees.len(), || {
                let free: SmallVec<[&C; 8]> =
                    callees.iter().map(|(c, _)| c).filter(|c| allowed(c) && has_room(*c)).collect();
                (!free.is_empty()).then(|| free[fastrand::usize(..free.len())])
            }),
            InvocationRule::LeastLoaded => self.retry(callees.len(), || least_loaded(callees, &allowed)),
            InvocationRule::LeastLoadedSample => {
                let sampled = self.retry(2, || {
                    // Without exclusions (the common case) two indices are drawn directly: a
                    // constant cost whatever the number of members.
                    let pair = if excluded.is_empty() {
                        let (a, b) = two_of(callees.len());
                        [&callees[a].0, &callees[b].0]
                    } else {
                        let candidates: SmallVec<[&C; 8]> =
                            callees.iter().map(|(c, _)| c).filter(|c| allowed(c)).collect();
                        let (a, b) = two_of(candidates.len());
                        [candidates[a], candidates[b]]
                    };
                    pair.into_iter().filter(|c| has_room(*c)).min_by_key(|c| in_flight(*c))
                });
                // Both samples full: the sample is only a shortcut, any free member will do.
                sampled.or_else(|| self.retry(callees.len(), || least_loaded(callees, &allowed)))
            }
        };
        match found {
            Some(member) => Selected::Member(member),
            None => Selected::Full,
        }
    }

    /// Takes a slot on the member `choose` names, choosing again (at most `attempts` times) when
    /// another call took the last slot first.
    fn retry<'a>(&self, attempts: usize, mut choose: impl FnMut() -> Option<&'a C>) -> Option<C>
    where
        C: 'a,
    {
        for _ in 0..attempts.max(1) {
            let member = choose()?;
            if acquire(member) {
                return Some(member.clone());
            }
        }
        None
    }

    /// Like [`Registration::pick`], skipping the members in `excluded` (call reroute): round-robin
    /// moves on to the next member, random picks among the others, first takes the earliest and
    /// last the latest member not excluded.
    pub fn pick_excluding(&self, excluded: &[u64]) -> Option<C> {
        if excluded.is_empty() {
            return self.pick();
        }
        let members = self.members.load();
        self.pick_excluding_in(&members, excluded)
    }

    fn pick_excluding_in(&self, members: &Members<C>, excluded: &[u64]) -> Option<C> {
        let mut candidates = members.callees.iter().map(|(c, _)| c).filter(|c| !excluded.contains(&c.member_id()));
        match self.policy {
            InvocationRule::Single | InvocationRule::First => candidates.next().cloned(),
            InvocationRule::Last => candidates.last().cloned(),
            InvocationRule::Random => {
                let candidates: SmallVec<[&C; 8]> = candidates.collect();
                (!candidates.is_empty()).then(|| candidates[fastrand::usize(..candidates.len())].clone())
            }
            InvocationRule::RoundRobin => (0..members.callees.len())
                .map(|_| &members.callees[self.rotate_pick(members)].0)
                .find(|c| !excluded.contains(&c.member_id()))
                .cloned(),
            // Load-based lists are gated and never come here, keyed calls use `select_key`: both
            // fall back to the first member.
            InvocationRule::LeastLoaded | InvocationRule::LeastLoadedSample | InvocationRule::JumpConsistentHash => {
                candidates.next().cloned()
            }
        }
    }

    /// True while the member list is gated: its members' [`MemberLoad`]s count their calls in
    /// flight.
    pub fn counts_load(&self) -> bool {
        self.members.load().gated
    }

    /// Calls waiting in the registration's queue for a free slot.
    pub fn queued(&self) -> usize {
        self.queue.get().map_or(0, |q| q.len())
    }
}

/// Two distinct indices in `0..n` drawn at random (the same one twice when `n` is 1), the
/// smaller first, so that a tie goes to the earlier registered member.
fn two_of(n: usize) -> (usize, usize) {
    let a = fastrand::usize(..n);
    let b = match n {
        1 => a,
        n => (a + 1 + fastrand::usize(..n - 1)) % n,
    };
    (a.min(b), a.max(b))
}

/// The allowed member with a free slot and the fewest calls in flight, earliest on ties.
fn least_loaded<'a, C: Member>(callees: &'a [(C, u64)], allowed: &impl Fn(&C) -> bool) -> Option<&'a C> {
    let mut best: Option<(&C, u64)> = None;
    for (c, _) in callees {
        if !allowed(c) || !has_room(c) {
            continue;
        }
        let load = in_flight(c);
        if best.is_none_or(|(_, least)| load < least) {
            best = Some((c, load));
        }
    }
    best.map(|(c, _)| c)
}

impl<C: Member, P: Policy> Registration<C, P> {
    /// A new entry whose only member is `member`; its table publishes it.
    pub(crate) fn new(id: u64, uri: &str, policy: P, member: C) -> Self {
        let mut callees = SmallVec::new();
        callees.push((member, 0));
        Registration {
            id,
            uri: Arc::from(uri),
            policy,
            created: std::time::SystemTime::now(),
            members: ArcSwap::from_pointee(Members::new(policy, callees, 1)),
            cursor: CachePadded::new(AtomicU64::new(0)),
            queue: OnceLock::new(),
        }
    }

    /// Adds `member` under `policy` (a member already in stays where it is), or says why not.
    /// Callers hold their table's write lock.
    /// `prepare` runs once the member is admitted, before it is published.
    pub(crate) fn join(&self, policy: P, member: C, prepare: impl FnOnce(&Self)) -> Result<(), RegisterError<P>> {
        if self.policy.is_exclusive() {
            return Err(RegisterError::AlreadyExists);
        }
        if self.policy != policy {
            return Err(RegisterError::DifferentRule(self.policy));
        }
        prepare(self);
        let old = self.members.load();
        if !old.callees.iter().any(|(c, _)| c.member_id() == member.member_id()) {
            let mut callees = old.callees.clone();
            callees.push((member, old.next_seq));
            self.publish(&old, callees, old.next_seq + 1);
        }
        Ok(())
    }

    /// Removes the member `member_id`: `Some(true)` when it was the last one (the table then
    /// deletes the entry), `None` when it was not a member. Callers hold their table's write lock.
    pub(crate) fn leave(&self, member_id: u64) -> Option<bool> {
        let old = self.members.load();
        let position = old.callees.iter().position(|(c, _)| c.member_id() == member_id)?;
        let mut callees = old.callees.clone();
        callees.remove(position);
        let deleted = callees.is_empty();
        self.publish(&old, callees, old.next_seq);
        Some(deleted)
    }

    /// True while the session `member_id` is a member.
    pub fn has_member(&self, member_id: u64) -> bool {
        self.members.load().callees.iter().any(|(c, _)| c.member_id() == member_id)
    }

    /// The current members, in registration order.
    pub fn members(&self) -> Vec<C> {
        self.snapshot().iter().cloned().collect()
    }

    /// The current member list, held as a snapshot (for fan-out across awaits).
    pub fn snapshot(&self) -> MemberSnapshot<C> {
        MemberSnapshot(self.members.load_full())
    }

    /// Publishes a new member list, carrying the round-robin rotation over (see module docs).
    /// Callers hold the shard's write lock.
    fn publish(&self, old: &Members<C>, callees: SmallVec<[(C, u64); 4]>, next_seq: u64) {
        let t0 = self.cursor.load(Ordering::SeqCst);
        let last_served = match old.callees.len() {
            len if len > 0 && t0 != old.rr_base => {
                let index = (t0.wrapping_sub(old.rr_base + 1) as usize).wrapping_add(old.rr_offset) % len;
                Some(old.callees[index].1)
            }
            _ => old.last_served,
        };
        let rr_offset = last_served.and_then(|last| callees.iter().position(|(_, seq)| *seq > last)).unwrap_or(0);
        let members = Members { rr_base: t0, rr_offset, last_served, ..Members::new(self.policy, callees, next_seq) };
        self.members.store(Arc::new(members));
    }
}

/// One version of an entry's member list, kept alive while it is iterated.
pub struct MemberSnapshot<C>(Arc<Members<C>>);

impl<C> MemberSnapshot<C> {
    /// The members, in the order they joined.
    pub fn iter(&self) -> impl Iterator<Item = &C> {
        self.0.callees.iter().map(|(c, _)| c)
    }
}

/// Why a REGISTER was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError<P = InvocationRule> {
    /// The entry admits one member only (the `single` rule), or a new one asks for that.
    AlreadyExists,
    /// The entry is shared under another policy, given here.
    DifferentRule(P),
}

/// What a successful REGISTER did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The registration id.
    pub id: u64,
    /// True when this REGISTER created the registration (it had no members before).
    pub created: bool,
}

type ProcedureMap<C, P> = HashMap<Arc<str>, Arc<Registration<C, P>>, foldhash::fast::RandomState>;

struct Shard<C, P> {
    procedures: ArcSwap<ProcedureMap<C, P>>,
    write: Mutex<()>,
}

/// All registrations (or subscriptions) of one realm, keyed by URI and by id.
pub struct Registry<C, P = InvocationRule> {
    shards: Box<[Shard<C, P>]>,
    mask: u64,
    hasher: foldhash::fast::RandomState,
    by_id: DashMap<u64, Arc<Registration<C, P>>, foldhash::fast::RandomState>,
    /// Entries, kept apart from `by_id` so that asking is one atomic load, not a walk over the
    /// map's locked shards (PUBLISH asks on every event whether pattern tables are empty).
    count: AtomicUsize,
}

impl<C: Member, P: Policy> Registry<C, P> {
    /// A registry with `shards` shards (rounded up to a power of two).
    pub fn new(shards: usize) -> Self {
        let count = shards.max(1).next_power_of_two();
        let hasher = foldhash::fast::RandomState::default();
        let shards = (0..count)
            .map(|_| Shard {
                procedures: ArcSwap::from_pointee(ProcedureMap::with_hasher(hasher.clone())),
                write: Mutex::new(()),
            })
            .collect();
        Registry { shards, mask: count as u64 - 1, hasher, by_id: DashMap::default(), count: AtomicUsize::new(0) }
    }

    fn shard(&self, uri: &str) -> &Shard<C, P> {
        // The low bits pick the map bucket inside the shard, so the shard uses the high bits.
        let hash = self.hasher.hash_one(uri);
        &self.shards[((hash >> 40) & self.mask) as usize]
    }

    /// The registration for `uri`, if any. Lock-free.
    #[inline]
    pub fn lookup(&self, uri: &str) -> Option<Arc<Registration<C, P>>> {
        self.shard(uri).procedures.load().get(uri).cloned()
    }

    /// The registration with this id, if it exists.
    pub fn get(&self, id: u64) -> Option<Arc<Registration<C, P>>> {
        self.by_id.get(&id).map(|r| r.value().clone())
    }

    /// Visits every entry (a snapshot per shard): O(entries + shards), for the meta API's
    /// listings, never for routing.
    pub fn for_each(&self, mut visit: impl FnMut(&Arc<Registration<C, P>>)) {
        for shard in self.shards.iter() {
            shard.procedures.load().values().for_each(&mut visit);
        }
    }

    /// How many procedures are registered.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `member` to the entry of `uri` under `policy`, creating it if needed.
    pub fn register(&self, uri: &str, policy: P, member: C) -> Result<Registered, RegisterError<P>> {
        self.register_with(uri, policy, member, |_| {})
    }

    /// [`Registry::register`], running `prepare` on the entry once the member is admitted and
    /// before anyone can route to it: on a new entry before the entry is published, on an
    /// existing one before the new member list is. What `prepare` sets up (the dealer's call
    /// queue and its bounds) is therefore in place for the first call that could need it.
    pub fn register_with(
        &self,
        uri: &str,
        policy: P,
        member: C,
        prepare: impl FnOnce(&Registration<C, P>),
    ) -> Result<Registered, RegisterError<P>> {
        self.register_as(uri, policy, None, member, prepare)
    }

    /// [`Registry::register_with`], creating the entry (when it is new) with the id `id` rather
    /// than a fresh one: a cluster node's view takes registration ids from the replicated record.
    pub fn register_as(
        &self,
        uri: &str,
        policy: P,
        id: Option<u64>,
        member: C,
        prepare: impl FnOnce(&Registration<C, P>),
    ) -> Result<Registered, RegisterError<P>> {
        let shard = self.shard(uri);
        let _write = shard.write.lock();
        let map = shard.procedures.load();
        if let Some(existing) = map.get(uri) {
            existing.join(policy, member, prepare)?;
            return Ok(Registered { id: existing.id, created: false });
        }
        let id = id.unwrap_or_else(|| fresh_id(|id| self.by_id.contains_key(&id)));
        let registration = Arc::new(Registration::new(id, uri, policy, member));
        prepare(&registration);
        let mut next = ProcedureMap::clone(&map);
        next.insert(registration.uri.clone(), registration.clone());
        self.by_id.insert(id, registration);
        self.count.fetch_add(1, Ordering::Relaxed);
        shard.procedures.store(Arc::new(next));
        Ok(Registered { id, created: true })
    }

    /// Removes `member_id` from registration `id`. Returns the registration and whether it was
    /// deleted (its last member left), or `None` when the session was not a member.
    pub fn unregister(&self, id: u64, member_id: u64) -> Option<(Arc<Registration<C, P>>, bool)> {
        let registration = self.get(id)?;
        let shard = self.shard(&registration.uri);
        let _write = shard.write.lock();
        let deleted = registration.leave(member_id)?;
        if deleted {
            let map = shard.procedures.load();
            let mut next = ProcedureMap::clone(&map);
            next.remove(&*registration.uri);
            shard.procedures.store(Arc::new(next));
            self.by_id.remove(&id);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Some((registration, deleted))
    }
}

/// A random registration id in WAMP's id range that `taken` does not refuse.
pub(crate) fn fresh_id(taken: impl Fn(u64) -> bool) -> u64 {
    loop {
        let id = fastrand::u64(1..=MAX_ID);
        if !taken(id) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvocationRule::*;

    fn calls(registry: &Registry<u64>, uri: &str, n: usize) -> Vec<u64> {
        (0..n).map(|_| registry.lookup(uri).unwrap().pick().unwrap()).collect()
    }

    fn join(registry: &Registry<u64>, uri: &str, rule: InvocationRule, member: u64) -> u64 {
        registry.register(uri, rule, member).unwrap().id
    }

    /// What the dealer sets up on an entry for a member (its call queue and bounds) is in place
    /// before any router thread can see the entry or the member: a lookup from inside `prepare`
    /// finds neither. A refused member prepares nothing.
    #[test]
    fn prepare_runs_before_the_entry_or_the_member_is_published() {
        let r = Registry::new(4);
        let mut seen = Vec::new();
        let created = r.register_with("p", RoundRobin, 1, |_| seen.push(("create", r.lookup("p").is_some()))).unwrap();
        r.register_with("p", RoundRobin, 2, |entry| {
            seen.push(("join", entry.has_member(2) || r.lookup("p").unwrap().has_member(2)))
        })
        .unwrap();
        let refused = r.register_with("p", First, 3, |_| seen.push(("refused", true)));
        assert_eq!(refused, Err(RegisterError::DifferentRule(RoundRobin)));
        assert_eq!(seen, [("create", false), ("join", false)]);
        assert_eq!(r.get(created.id).unwrap().members(), vec![1, 2]);

        let patterns = crate::dealer::patterns::PatternIndex::new(4);
        let kind = crate::dealer::patterns::PatternKind::Prefix;
        let mut visible = None;
        patterns
            .register_with("com.example", kind, RoundRobin, 1u64, |_| {
                visible = Some(patterns.find("com.example", kind).is_some())
            })
            .unwrap();
        assert_eq!(visible, Some(false), "a pattern entry is prepared before it is published");
    }

    #[test]
    fn shared_members_get_one_id_and_join_once() {
        let r = Registry::new(4);
        let a = r.register("p", RoundRobin, 1).unwrap();
        let b = r.register("p", RoundRobin, 2).unwrap();
        let again = r.register("p", RoundRobin, 1).unwrap();
        assert!(a.created && !b.created && !again.created);
        assert_eq!((a.id, b.id), (again.id, again.id));
        assert_eq!(r.get(a.id).unwrap().members(), vec![1, 2]);
    }

    #[test]
    fn rule_conflicts_are_refused() {
        let r = Registry::new(4);
        join(&r, "single", Single, 1);
        assert_eq!(r.register("single", Single, 2), Err(RegisterError::AlreadyExists));
        assert_eq!(r.register("single", Single, 1), Err(RegisterError::AlreadyExists));
        assert_eq!(r.register("single", First, 2), Err(RegisterError::AlreadyExists));
        join(&r, "shared", Last, 1);
        assert_eq!(r.register("shared", First, 2), Err(RegisterError::DifferentRule(Last)));
        assert_eq!(r.register("shared", Single, 2), Err(RegisterError::DifferentRule(Last)));
    }

    #[test]
    fn roundrobin_rotates_in_registration_order() {
        let r = Registry::new(4);
        for m in [1, 2, 3] {
            join(&r, "p", RoundRobin, m);
        }
        assert_eq!(calls(&r, "p", 7), vec![1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn roundrobin_continues_after_a_join() {
        let r = Registry::new(4);
        join(&r, "p", RoundRobin, 1);
        join(&r, "p", RoundRobin, 2);
        assert_eq!(calls(&r, "p", 3), vec![1, 2, 1]);
        join(&r, "p", RoundRobin, 3);
        assert_eq!(calls(&r, "p", 4), vec![2, 3, 1, 2]);
    }

    #[test]
    fn roundrobin_continues_after_a_leave() {
        let r = Registry::new(4);
        let id = join(&r, "p", RoundRobin, 1);
        join(&r, "p", RoundRobin, 2);
        join(&r, "p", RoundRobin, 3);
        assert_eq!(calls(&r, "p", 4), vec![1, 2, 3, 1]);
        r.unregister(id, 3).unwrap();
        assert_eq!(calls(&r, "p", 3), vec![2, 1, 2]);
    }

    #[test]
    fn roundrobin_skips_to_the_successor_when_the_due_member_leaves() {
        let r = Registry::new(4);
        let id = join(&r, "p", RoundRobin, 1);
        join(&r, "p", RoundRobin, 2);
        join(&r, "p", RoundRobin, 3);
        assert_eq!(calls(&r, "p", 1), vec![1]);
        r.unregister(id, 2).unwrap();
        assert_eq!(calls(&r, "p", 3), vec![3, 1, 3]);
        // 3 served last; 1 (due next, by wrapping) leaves, then 4 joins after 3
        r.unregister(id, 1).unwrap();
        join(&r, "p", RoundRobin, 4);
        assert_eq!(calls(&r, "p", 3), vec![4, 3, 4], "after 3 comes the newcomer");
    }

    #[test]
    fn first_and_last_fail_over_in_order() {
        let r = Registry::new(4);
        let f = join(&r, "f", First, 1);
        join(&r, "f", First, 2);
        join(&r, "f", First, 3);
        assert_eq!(calls(&r, "f", 3), vec![1, 1, 1]);
        r.unregister(f, 1).unwrap();
        assert_eq!(calls(&r, "f", 2), vec![2, 2]);
        join(&r, "f", First, 1);
        assert_eq!(calls(&r, "f", 1), vec![2], "a newcomer is appended");

        let l = join(&r, "l", Last, 1);
        join(&r, "l", Last, 2);
        join(&r, "l", Last, 3);
        assert_eq!(calls(&r, "l", 2), vec![3, 3]);
        r.unregister(l, 3).unwrap();
        assert_eq!(calls(&r, "l", 1), vec![2]);
        join(&r, "l", Last, 4);
        assert_eq!(calls(&r, "l", 1), vec![4]);
    }

    #[test]
    fn random_reaches_every_member() {
        let r = Registry::new(4);
        for m in [1, 2, 3] {
            join(&r, "p", Random, m);
        }
        let got = calls(&r, "p", 3000);
        for m in [1, 2, 3] {
            let n = got.iter().filter(|&&x| x == m).count();
            assert!((700..1300).contains(&n), "member {m} got {n} of 3000");
        }
    }

    #[test]
    fn last_leave_deletes_and_ids_are_not_reused_by_members() {
        let r = Registry::new(4);
        let id = join(&r, "p", First, 1);
        join(&r, "p", First, 2);
        assert!(r.unregister(id, 3).is_none(), "not a member");
        assert!(!r.unregister(id, 1).unwrap().1);
        assert!(r.unregister(id, 1).is_none(), "second unregister");
        assert!(r.unregister(id, 2).unwrap().1);
        assert!(r.lookup("p").is_none() && r.get(id).is_none() && r.is_empty());
        assert!(r.lookup("p").is_none());
        let again = join(&r, "p", Single, 5);
        assert_ne!(again, id);
    }

    #[test]
    fn routing_keeps_working_under_concurrent_churn() {
        let r = Arc::new(Registry::new(2));
        join(&r, "p", RoundRobin, 1);
        let churn = {
            let r = r.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let id = join(&r, "p", RoundRobin, 2);
                    r.unregister(id, 2).unwrap();
                    join(&r, &format!("other{}", fastrand::u8(..)), First, 3);
                }
            })
        };
        for _ in 0..20_000 {
            let m = r.lookup("p").unwrap().pick().unwrap();
            assert!(m == 1 || m == 2);
        }
        churn.join().unwrap();
    }
}

/// Selection with loads: slots, limits, and the load-based rules.
#[cfg(test)]
mod load_tests {
    use super::*;
    use InvocationRule::*;

    #[derive(Clone, Debug)]
    struct Loaded(u64, Arc<MemberLoad>);

    impl Member for Loaded {
        fn member_id(&self) -> u64 {
            self.0
        }

        fn load(&self) -> Option<&Arc<MemberLoad>> {
            Some(&self.1)
        }
    }

    fn registration(rule: InvocationRule, limits: &[Option<u64>]) -> (Registry<Loaded>, Vec<Loaded>) {
        let registry = Registry::new(2);
        let members: Vec<Loaded> =
            limits.iter().enumerate().map(|(i, l)| Loaded(i as u64 + 1, Arc::new(MemberLoad::new(*l)))).collect();
        for member in &members {
            registry.register("p", rule, member.clone()).unwrap();
        }
        (registry, members)
    }

    fn select(registry: &Registry<Loaded>, excluded: &[u64]) -> Selected<u64> {
        match registry.lookup("p").unwrap().select(excluded) {
            Selected::Member(m) => Selected::Member(m.0),
            Selected::Unmetered(m) => Selected::Unmetered(m.0),
            Selected::Full => Selected::Full,
            Selected::Nobody => Selected::Nobody,
        }
    }

    fn picks(registry: &Registry<Loaded>, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| match select(registry, &[]) {
                Selected::Member(m) | Selected::Unmetered(m) => m,
                other => panic!("expected a member, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn roundrobin_passes_full_members_and_keeps_its_place() {
        let (r, members) = registration(RoundRobin, &[Some(1), None, Some(1)]);
        assert_eq!(picks(&r, 5), vec![1, 2, 3, 2, 2]);
        members[0].1.release();
        // 3 is full, so the turn after 2 goes round to 1.
        assert_eq!(picks(&r, 2), vec![1, 2]);
        assert_eq!(members.iter().map(|m| m.1.in_flight()).collect::<Vec<_>>(), vec![1, 4, 1]);
    }

    #[test]
    fn full_and_nobody_are_told_apart() {
        let (r, members) = registration(First, &[Some(1), Some(2)]);
        assert_eq!(picks(&r, 3), vec![1, 2, 2]);
        assert_eq!(select(&r, &[]), Selected::Full);
        assert_eq!(select(&r, &[1]), Selected::Full);
        assert_eq!(select(&r, &[1, 2]), Selected::Nobody);
        members[1].1.release();
        assert_eq!(select(&r, &[]), Selected::Member(2));
        let (last, _) = registration(Last, &[Some(1), Some(1)]);
        assert_eq!(picks(&last, 2), vec![2, 1]);
        assert_eq!(select(&last, &[]), Selected::Full);
    }

    #[test]
    fn unlimited_members_under_a_contract_rule_are_never_charged() {
        let (r, members) = registration(Random, &[None, None]);
        assert!(matches!(select(&r, &[]), Selected::Unmetered(1 | 2)));
        let got = picks(&r, 100);
        assert!(got.iter().all(|m| *m == 1 || *m == 2));
        assert_eq!(members[0].1.in_flight() + members[1].1.in_flight(), 0);
        assert!(!r.lookup("p").unwrap().counts_load(), "no limit, no load rule: the plain pick");
    }

    #[test]
    fn least_loaded_takes_the_fewest_in_flight_earliest_on_ties() {
        let (r, members) = registration(LeastLoaded, &[None, None, Some(1)]);
        assert_eq!(picks(&r, 4), vec![1, 2, 3, 1]);
        members[1].1.release();
        assert_eq!(picks(&r, 2), vec![2, 2], "2 has fewer in flight than 1 until both have two");
    }

    #[test]
    fn least_loaded_sample_with_two_members_is_exact() {
        let (r, members) = registration(LeastLoadedSample, &[None, None]);
        assert_eq!(picks(&r, 4), vec![1, 2, 1, 2]);
        members[0].1.release();
        assert_eq!(picks(&r, 1), vec![1]);
    }

    #[test]
    fn racing_calls_never_exceed_a_limit() {
        let (r, members) = registration(RoundRobin, &[Some(2), Some(3)]);
        let r = Arc::new(r);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        if let Selected::Member(m) = r.lookup("p").unwrap().select(&[]) {
                            assert!(m.1.in_flight() <= m.1.limit().unwrap());
                            m.1.release();
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(members.iter().all(|m| m.1.in_flight() == 0));
    }
}

/// The registry against a simple model: a list of members per procedure, and for round-robin the
/// join number of the member that served the previous call.
#[cfg(test)]
mod model {
    use proptest::prelude::*;

    use super::*;
    use InvocationRule::*;

    const PROCEDURES: [&str; 3] = ["com.example.p", "com.example.q", "com.example.r"];

    #[derive(Debug, Clone)]
    enum Op {
        /// Joins with the procedure's usual rule, or with `odd` when given.
        Join {
            procedure: usize,
            odd: Option<InvocationRule>,
            member: u64,
        },
        Leave {
            procedure: usize,
            member: u64,
        },
        Call {
            procedure: usize,
        },
    }

    struct Modelled {
        id: u64,
        rule: InvocationRule,
        /// (member, join number), in join order.
        members: Vec<(u64, u64)>,
        joins: u64,
        /// The join number of the member that served the last round-robin call.
        last_served: Option<u64>,
    }

    impl Modelled {
        /// The member that serves the next call; round-robin moves on.
        fn serve(&mut self) -> Option<u64> {
            let first = self.members.first()?;
            let served = match self.rule {
                Single | First => *first,
                Last => *self.members.last()?,
                Random => return None,
                LeastLoaded | LeastLoadedSample | JumpConsistentHash => unreachable!("the model draws from ALL"),
                RoundRobin => {
                    let after = |&&(_, joined): &&(u64, u64)| self.last_served.is_none_or(|last| joined > last);
                    *self.members.iter().find(after).unwrap_or(first)
                }
            };
            self.last_served = Some(served.1);
            Some(served.0)
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let odd = prop_oneof![4 => Just(None), 1 => prop::sample::select(InvocationRule::ALL.to_vec()).prop_map(Some)];
        prop_oneof![
            3 => (0..3usize, odd, 1..6u64).prop_map(|(procedure, odd, member)| Op::Join { procedure, odd, member }),
            2 => (0..3usize, 1..6u64).prop_map(|(procedure, member)| Op::Leave { procedure, member }),
            5 => (0..3usize).prop_map(|procedure| Op::Call { procedure }),
        ]
    }

    fn rules() -> impl Strategy<Value = [InvocationRule; 3]> {
        let rule = prop_oneof![3 => Just(RoundRobin), 2 => prop::sample::select(InvocationRule::ALL.to_vec())];
        [rule.clone(), rule.clone(), rule]
    }

    fn join(
        registry: &Registry<u64>,
        model: &mut [Option<Modelled>],
        procedure: usize,
        rule: InvocationRule,
        member: u64,
    ) {
        let got = registry.register(PROCEDURES[procedure], rule, member);
        match &mut model[procedure] {
            None => {
                let registered = got.expect("a new procedure is created");
                assert!(registered.created);
                let members = vec![(member, 0)];
                let id = registered.id;
                model[procedure] = Some(Modelled { id, rule, members, joins: 1, last_served: None });
            }
            Some(m) if m.rule == Single => assert_eq!(got, Err(RegisterError::AlreadyExists)),
            Some(m) if m.rule != rule => assert_eq!(got, Err(RegisterError::DifferentRule(m.rule))),
            Some(m) => {
                assert_eq!(got, Ok(Registered { id: m.id, created: false }));
                if !m.members.iter().any(|&(joined, _)| joined == member) {
                    m.members.push((member, m.joins));
                    m.joins += 1;
                }
            }
        }
    }

    fn leave(registry: &Registry<u64>, model: &mut [Option<Modelled>], procedure: usize, member: u64) {
        let Some(m) = &mut model[procedure] else {
            assert!(registry.lookup(PROCEDURES[procedure]).is_none());
            return;
        };
        let left = registry.unregister(m.id, member).map(|(r, deleted)| (r.id, deleted));
        let Some(position) = m.members.iter().position(|&(joined, _)| joined == member) else {
            assert_eq!(left, None, "not a member");
            return;
        };
        m.members.remove(position);
        assert_eq!(left, Some((m.id, m.members.is_empty())));
        if m.members.is_empty() {
            assert!(registry.get(m.id).is_none());
            model[procedure] = None;
        }
    }

    fn call(registry: &Registry<u64>, model: &mut [Option<Modelled>], procedure: usize) {
        let picked = registry.lookup(PROCEDURES[procedure]).and_then(|r| r.pick());
        match &mut model[procedure] {
            None => assert_eq!(picked, None),
            Some(m) if m.rule == Random => {
                let picked = picked.expect("a member serves");
                assert!(m.members.iter().any(|&(member, _)| member == picked), "{picked} is a member");
            }
            Some(m) => assert_eq!(picked, m.serve(), "{:?} among {:?}", m.rule, m.members),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn the_registry_behaves_as_the_model(rules in rules(), ops in prop::collection::vec(op(), 1..80)) {
            let registry = Registry::new(2);
            let mut model: Vec<Option<Modelled>> = (0..PROCEDURES.len()).map(|_| None).collect();
            for op in ops {
                match op {
                    Op::Join { procedure, odd, member } => {
                        join(&registry, &mut model, procedure, odd.unwrap_or(rules[procedure]), member)
                    }
                    Op::Leave { procedure, member } => leave(&registry, &mut model, procedure, member),
                    Op::Call { procedure } => call(&registry, &mut model, procedure),
                }
                for (procedure, m) in PROCEDURES.iter().zip(&model) {
                    let members = registry.lookup(procedure).map(|r| (r.id, r.policy, r.members()));
                    let expected = m.as_ref().map(|m| (m.id, m.rule, m.members.iter().map(|&(c, _)| c).collect()));
                    prop_assert_eq!(members, expected);
                }
                prop_assert_eq!(registry.len(), model.iter().flatten().count());
            }
        }
    }
}
