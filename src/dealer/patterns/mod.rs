//! The pattern index: prefix and wildcard registrations (and subscriptions) of one realm, found
//! for a URI at a cost that does not grow with how many patterns there are.
//!
//! The index owns the pattern entries — [`Registration`] values, exactly like the exact table's,
//! so members, invocation rules and the round-robin cursor work the same — and the trie that
//! finds them. Exact URIs stay in the sharded [`super::registry::Registry`]; the dealer asks the
//! index only when that has no entry.
//!
//! # The structure
//! A trie of URI components (`trie.rs` owns its storage and explains it), in the spirit of nats-server's
//! sublist. A pattern is stored at the node its components lead to, prefix patterns in the node's
//! `prefix` slot, wildcard patterns (whose empty components follow the node's wildcard child) in
//! its `wildcard` slot. One trie serves both kinds and both selections:
//!
//! - **Registrations** ([`PatternIndex::best_match`], the spec's order). Prefix patterns match whole
//!   components and the longest wins: walk the URI's components down literal edges and keep the
//!   deepest `prefix` slot seen. If none, wildcard patterns: depth-first search that tries the
//!   literal child before the wildcard child at each level and stops at the first node at the
//!   URI's depth with a `wildcard` slot. That first one is the best by
//!   [`uri::wildcard_rank`](crate::wire::uri::wildcard_rank): among patterns of equal length
//!   that match one URI, comparing their runs of concrete components left to right is the same as
//!   comparing, component by component, "concrete beats empty" — the order the search visits.
//! - **Subscriptions** ([`PatternIndex::for_each_match`], every match). Prefix subscriptions are
//!   *string* prefixes: `a.b` matches `a.bc.d`. A pattern `c1.….ck.p` is stored at the node of
//!   `c1.….ck.p` like any other, and matches a topic whose first `k` components are `c1.….ck` and
//!   whose next component starts with `p`. So at each node on the topic's literal path, the index
//!   probes the child for each prefix of the next component — only at byte lengths that some child
//!   holding a prefix pattern has (a 64-bit mask per node, kept by the writers). Wildcard
//!   subscriptions: the same depth-first search, visiting every match.
//!
//! # Costs
//! - **Lookup**: for a URI of `n` components, the prefix walk takes at most `n` child probes; the
//!   wildcard search visits at most two children per node on its way (literal, wildcard), so at
//!   most `2^(n+1)` nodes however many patterns there are, and in practice about `n` plus the
//!   branches where wildcard patterns really diverge; string-prefix matching adds at most one probe
//!   per distinct length per component. Each probe is a hash, two snapshot loads and a table probe
//!   (`trie.rs`). Nothing is locked, allocated (up to 16 components) or counted by pattern: with
//!   10 or 100,000 patterns that do not match, a lookup takes the same steps (tested).
//! - **REGISTER/UNREGISTER** of a pattern: joining or leaving an existing pattern copies its
//!   member list only. Creating one walks its components and adds the missing nodes, each a copy
//!   of one edge-table shard (plain data, `edges / shards` entries); deleting one empties its slot
//!   and removes the nodes left with no pattern and no child. No step copies all patterns.
//!   Writers take one lock per index, held for that short work and never by readers.
//! - **Memory**: per node about 100 bytes plus its component, per edge 24 bytes in its shard,
//!   `8 × shards` bytes of shard pointers per index; nothing per pattern beyond its nodes and
//!   its [`Registration`].

mod trie;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::registry::{fresh_id, Member, Policy, RegisterError, Registered, Registration};
use super::rule::InvocationRule;
use crate::wire::uri::MatchPolicy;
use trie::{Node, NodeId, Slots, Trie, ROOT};

/// Which of the two pattern match policies an entry has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// `match: prefix`.
    Prefix,
    /// `match: wildcard`.
    Wildcard,
}

impl PatternKind {
    /// The pattern kind of a match policy; `None` for exact matching.
    pub fn of(policy: MatchPolicy) -> Option<Self> {
        match policy {
            MatchPolicy::Exact => None,
            MatchPolicy::Prefix => Some(PatternKind::Prefix),
            MatchPolicy::Wildcard => Some(PatternKind::Wildcard),
        }
    }

    /// The match policy on the wire.
    pub fn policy(self) -> MatchPolicy {
        match self {
            PatternKind::Prefix => MatchPolicy::Prefix,
            PatternKind::Wildcard => MatchPolicy::Wildcard,
        }
    }
}

/// What the index keeps at a trie node: the entries whose pattern ends there.
struct Slot<C, P> {
    prefix: ArcSwapOption<Registration<C, P>>,
    wildcard: ArcSwapOption<Registration<C, P>>,
    /// Bit `len - 1` set: some child whose component is `len` bytes long holds a prefix entry (bit
    /// 63: 64 bytes or more). String-prefix matching probes only those lengths.
    prefix_lengths: AtomicU64,
}

impl<C, P> Default for Slot<C, P> {
    fn default() -> Self {
        Slot { prefix: ArcSwapOption::empty(), wildcard: ArcSwapOption::empty(), prefix_lengths: AtomicU64::new(0) }
    }
}

impl<C, P> Slot<C, P> {
    fn of(&self, kind: PatternKind) -> &ArcSwapOption<Registration<C, P>> {
        match kind {
            PatternKind::Prefix => &self.prefix,
            PatternKind::Wildcard => &self.wildcard,
        }
    }

    fn is_empty(&self) -> bool {
        self.prefix.load().is_none() && self.wildcard.load().is_none()
    }
}

/// The bit of `prefix_lengths` for a component of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << (len.clamp(1, 64) - 1)
}

/// An entry as the id table knows it: where it lives, to delete it.
struct Located<C, P> {
    registration: Arc<Registration<C, P>>,
    kind: PatternKind,
    node: NodeId,
}

/// What only writers touch, under the index's write lock.
struct Writer {
    slots: Slots,
    /// Per (node, length bit): how many children of that length hold a prefix entry; keeps the
    /// `prefix_lengths` masks exact as entries come and go.
    prefix_lengths: HashMap<(NodeId, u64), u32>,
}

/// URI components; the inline size covers any URI met in practice without allocating.
type Components<'a> = SmallVec<[&'a str; 16]>;

/// Prefix and wildcard entries of one realm (registrations, or with `P = ()` subscriptions).
pub struct PatternIndex<C, P = InvocationRule> {
    trie: Trie<Slot<C, P>>,
    write: Mutex<Writer>,
    by_id: DashMap<u64, Located<C, P>, foldhash::fast::RandomState>,
    prefixes: AtomicUsize,
    wildcards: AtomicUsize,
}

impl<C: Member, P: Policy> PatternIndex<C, P> {
    /// An empty index whose edge table has `shards` shards (rounded up to a power of two).
    pub fn new(shards: usize) -> Self {
        let (trie, slots) = Trie::new(shards);
        PatternIndex {
            trie,
            write: Mutex::new(Writer { slots, prefix_lengths: HashMap::new() }),
            by_id: DashMap::default(),
            prefixes: AtomicUsize::new(0),
            wildcards: AtomicUsize::new(0),
        }
    }

    /// How many pattern entries exist.
    pub fn len(&self) -> usize {
        self.prefixes.load(Ordering::Relaxed) + self.wildcards.load(Ordering::Relaxed)
    }

    /// True when there is no pattern entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry with this id, and its kind.
    pub fn get(&self, id: u64) -> Option<(Arc<Registration<C, P>>, PatternKind)> {
        self.by_id.get(&id).map(|e| (e.registration.clone(), e.kind))
    }

    /// The ids of every entry of `kind` (meta API listings: a walk over all entries).
    pub fn ids(&self, kind: PatternKind) -> Vec<u64> {
        self.by_id.iter().filter(|e| e.kind == kind).map(|e| *e.key()).collect()
    }

    /// The entry for exactly this pattern and kind, no matching involved.
    pub fn find(&self, pattern: &str, kind: PatternKind) -> Option<Arc<Registration<C, P>>> {
        let mut node = ROOT;
        for component in pattern.split('.') {
            node = match component.is_empty() {
                true => self.trie.node(node, |n| n.wildcard_child())??,
                false => self.trie.literal_child(node, component, |_| ())?.0,
            };
        }
        self.trie.node(node, |n| n.value.of(kind).load_full())?
    }

    /// Adds `member` to the entry of (`pattern`, `kind`) under `policy`, creating it if needed.
    /// The pattern is one that [`MatchPolicy::accepts`] admits for its kind.
    pub fn register(
        &self,
        pattern: &str,
        kind: PatternKind,
        policy: P,
        member: C,
    ) -> Result<Registered, RegisterError<P>> {
        self.register_with(pattern, kind, policy, member, |_| {})
    }

    /// [`PatternIndex::register`], running `prepare` on the entry before the member can be routed
    /// to (see [`crate::dealer::registry::Registry::register_with`]).
    pub fn register_with(
        &self,
        pattern: &str,
        kind: PatternKind,
        policy: P,
        member: C,
        prepare: impl FnOnce(&Registration<C, P>),
    ) -> Result<Registered, RegisterError<P>> {
        self.register_as(pattern, kind, policy, None, member, prepare)
    }

    /// [`PatternIndex::register_with`], creating the entry (when it is new) with the id `id`
    /// rather than a fresh one (see [`crate::dealer::registry::Registry::register_as`]).
    pub fn register_as(
        &self,
        pattern: &str,
        kind: PatternKind,
        policy: P,
        id: Option<u64>,
        member: C,
        prepare: impl FnOnce(&Registration<C, P>),
    ) -> Result<Registered, RegisterError<P>> {
        debug_assert!(kind.policy().accepts(pattern), "{pattern:?} is no {kind:?} pattern");
        let components: Components = pattern.split('.').collect();
        let mut writer = self.write.lock();
        let node = self.trie.insert_path(&mut writer.slots, &components);
        let node = self.trie.get(node).expect("the path was just made");
        let slot = node.value.of(kind);
        if let Some(existing) = slot.load_full() {
            existing.join(policy, member, prepare)?;
            return Ok(Registered { id: existing.id, created: false });
        }
        let id = id.unwrap_or_else(|| fresh_id(|id| self.by_id.contains_key(&id)));
        let registration = Arc::new(Registration::new(id, pattern, policy, member));
        prepare(&registration);
        slot.store(Some(registration.clone()));
        self.by_id.insert(id, Located { registration, kind, node: node.id() });
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
        if kind == PatternKind::Prefix {
            self.count_prefix_length(&mut writer, &node, 1);
        }
        Ok(Registered { id, created: true })
    }

    /// Removes `member_id` from entry `id`: the entry and whether this deleted it (its last member
    /// left), or `None` when the session was not a member.
    pub fn unregister(&self, id: u64, member_id: u64) -> Option<(Arc<Registration<C, P>>, bool)> {
        let mut writer = self.write.lock();
        let (registration, kind, node) = self.by_id.get(&id).map(|e| (e.registration.clone(), e.kind, e.node))?;
        let deleted = registration.leave(member_id)?;
        if deleted {
            let node = self.trie.get(node).expect("an entry's node lives as long as the entry");
            node.value.of(kind).store(None);
            self.by_id.remove(&id);
            self.counter(kind).fetch_sub(1, Ordering::Relaxed);
            if kind == PatternKind::Prefix {
                self.count_prefix_length(&mut writer, &node, -1);
            }
            self.trie.prune(&mut writer.slots, node.id(), Slot::is_empty);
        }
        Some((registration, deleted))
    }

    fn counter(&self, kind: PatternKind) -> &AtomicUsize {
        match kind {
            PatternKind::Prefix => &self.prefixes,
            PatternKind::Wildcard => &self.wildcards,
        }
    }

    /// Keeps the `prefix_lengths` bit of the parent of `node`, which holds a prefix entry from now
    /// on (`change` 1) or no longer (-1), exact.
    fn count_prefix_length(&self, writer: &mut Writer, node: &Node<Slot<C, P>>, change: i32) {
        let (parent, bit) = (node.parent(), length_bit(node.component().len()));
        let count = writer.prefix_lengths.entry((parent, bit)).or_default();
        *count = count.saturating_add_signed(change);
        let set = *count > 0;
        if !set {
            writer.prefix_lengths.remove(&(parent, bit));
        }
        self.trie.node(parent, |n| match set {
            true => n.value.prefix_lengths.fetch_or(bit, Ordering::Release),
            false => n.value.prefix_lengths.fetch_and(!bit, Ordering::Release),
        });
    }

    /// The registration a CALL to `uri` goes to among the patterns, per the spec: the prefix
    /// pattern with the most components that are the URI's first ones, else the best-ranked
    /// wildcard pattern. Lock-free; see the module docs for its cost.
    pub fn best_match(&self, uri: &str) -> Option<Arc<Registration<C, P>>> {
        let components: Components = uri.split('.').collect();
        if self.prefixes.load(Ordering::Relaxed) > 0 {
            if let Some(found) = self.longest_prefix(&components) {
                return Some(found);
            }
        }
        if self.wildcards.load(Ordering::Relaxed) > 0 {
            return self.wildcard_search(&components, |_| true);
        }
        None
    }

    /// Calls `visit` with every entry matching `topic` as subscriptions match: prefix entries
    /// that are a string prefix of it, and wildcard entries. Lock-free.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(Arc<Registration<C, P>>)) {
        let components: Components = topic.split('.').collect();
        if self.prefixes.load(Ordering::Relaxed) > 0 {
            self.string_prefixes(&components, &mut visit);
        }
        if self.wildcards.load(Ordering::Relaxed) > 0 {
            self.wildcard_search(&components, |found| {
                visit(found.clone());
                false
            });
        }
    }

    /// The deepest prefix entry on the URI's literal path.
    fn longest_prefix(&self, components: &[&str]) -> Option<Arc<Registration<C, P>>> {
        let mut node = ROOT;
        let mut best = None;
        for component in components.iter().take_while(|c| !c.is_empty()) {
            let Some((child, found)) = self.trie.literal_child(node, component, |n| n.value.prefix.load_full()) else {
                break;
            };
            best = found.or(best);
            node = child;
        }
        best
    }

    /// Every prefix entry that is a string prefix of the topic.
    fn string_prefixes(&self, components: &[&str], visit: &mut impl FnMut(Arc<Registration<C, P>>)) {
        let mut node = ROOT;
        for component in components {
            let Some(lengths) = self.trie.node(node, |n| n.value.prefix_lengths.load(Ordering::Acquire)) else {
                return;
            };
            if lengths != 0 {
                // Char boundaries only: a pattern is a str, so it never ends inside a character.
                let ends = component.char_indices().map(|(i, _)| i).skip(1).chain([component.len()]);
                for end in ends.filter(|&end| end > 0 && lengths & length_bit(end) != 0) {
                    let found = self.trie.literal_child(node, &component[..end], |n| n.value.prefix.load_full());
                    if let Some((_, Some(entry))) = found {
                        visit(entry);
                    }
                }
            }
            if component.is_empty() {
                return;
            }
            match self.trie.literal_child(node, component, |_| ()) {
                Some((child, ())) => node = child,
                None => return,
            }
        }
    }

    /// Depth-first search for wildcard entries matching all components, literal child before
    /// wildcard child, so entries are found best rank first. Stops when `found` returns true and
    /// returns that entry.
    fn wildcard_search(
        &self,
        components: &[&str],
        mut found: impl FnMut(&Arc<Registration<C, P>>) -> bool,
    ) -> Option<Arc<Registration<C, P>>> {
        let mut pending: SmallVec<[(NodeId, usize); 16]> = SmallVec::new();
        pending.push((ROOT, 0));
        while let Some((node, depth)) = pending.pop() {
            let Some(&component) = components.get(depth) else {
                if let Some(Some(entry)) = self.trie.node(node, |n| n.value.wildcard.load_full()) {
                    if found(&entry) {
                        return Some(entry);
                    }
                }
                continue;
            };
            // Pushed first, taken last: the wildcard child is tried after the literal one.
            if let Some(Some(wildcard)) = self.trie.node(node, |n| n.wildcard_child()) {
                pending.push((wildcard, depth + 1));
            }
            if !component.is_empty() {
                if let Some((literal, ())) = self.trie.literal_child(node, component, |_| ()) {
                    pending.push((literal, depth + 1));
                }
            }
        }
        None
    }

    /// Nodes in the trie, root included.
    #[cfg(test)]
    fn nodes(&self) -> usize {
        self.write.lock().slots.live()
    }
}
