//! The trie under the pattern index: URI components as edges, nodes readers reach without a lock.
//!
//! # Layout
//! A node is one URI component under its parent; the root is the empty path. A node lives in the
//! *node table*, a growable array of slots (`ArcSwapOption<Node>`), and is named by a [`NodeId`]:
//! its slot in the low 32 bits and the slot's generation in the high 32, so that an id never
//! names a later node that reuses the slot. The edges are kept apart from the nodes:
//!
//! - a non-empty component is an entry `(parent id, component) → child id` of the *edge table*,
//!   one table for the whole trie, hashed into `shards` shards, each an immutable
//!   [`HashTable`] of plain-data entries published through an `ArcSwapOption`;
//! - the empty component (a wildcard pattern's) is the parent's `wildcard_child` field, so a
//!   wildcard step costs no probe.
//!
//! # Costs
//! - **Reading a child**: hash `(parent, component)`, one snapshot load of its shard, one probe,
//!   one load of the child's slot to confirm the component (hash collisions are told apart here).
//!   Neither the number of nodes nor a node's number of children enters it: siblings are spread
//!   over all shards, unlike a per-node child map, whose copy would grow with a wide node.
//! - **Adding or removing a node** copies one shard: `edges / shards` entries of 24 bytes, plain
//!   data, so the copy touches no reference count and no other node (with 100k patterns and 4,096
//!   shards, about 25 entries). The node table grows by allocating one more segment, twice the
//!   size of the previous one, so nodes never move and nothing is copied.
//! - **Readers never wait**: every read is a snapshot load (shard, slot) or an atomic load
//!   (`wildcard_child`). A reader racing a writer sees each edge as it was before or after the
//!   change, never a torn one; a child removed under it shows as absent (its slot is empty or has
//!   a newer generation).
//!
//! Writers are serialised by the pattern index's write lock; the methods that change the trie
//! take the [`Slots`] allocator, which the index keeps under that lock, as proof of it. Order of
//! publication: a node is stored in its slot before the edge that leads to it, and its edge is
//! removed before its slot is emptied, so a reader never follows an edge to a missing node.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use hashbrown::HashTable;

/// A node's name: slot in the low 32 bits, the slot's generation in the high 32.
pub(super) type NodeId = u64;

/// The root: slot 0, never removed, so `0` also means "no node" in `wildcard_child`.
pub(super) const ROOT: NodeId = 0;

/// One URI component in the trie, with what the index keeps there.
pub(super) struct Node<T> {
    id: NodeId,
    parent: NodeId,
    component: Box<str>,
    /// The child for an empty component, or 0 (the root is nobody's child).
    wildcard_child: AtomicU64,
    /// Children of both kinds. Written and read under the write lock only (pruning).
    children: AtomicU32,
    /// What the index keeps at this node.
    pub(super) value: T,
}

impl<T> Node<T> {
    /// This node's id.
    pub(super) fn id(&self) -> NodeId {
        self.id
    }

    /// The component this node stands for.
    pub(super) fn component(&self) -> &str {
        &self.component
    }

    /// The parent's id (the root's own for the root).
    pub(super) fn parent(&self) -> NodeId {
        self.parent
    }

    /// The child reached by an empty component, if any.
    pub(super) fn wildcard_child(&self) -> Option<NodeId> {
        Some(self.wildcard_child.load(Ordering::Acquire)).filter(|&id| id != ROOT)
    }
}

/// An entry of the edge table. Plain data: copying a shard copies bytes, nothing else.
#[derive(Clone, Copy)]
struct Edge {
    hash: u64,
    parent: NodeId,
    child: NodeId,
}

/// Slot allocation, the writers' side of the trie. Only the pattern index's write lock holds it.
pub(super) struct Slots {
    next: u32,
    free: Vec<NodeId>,
}

impl Slots {
    fn allocate(&mut self) -> NodeId {
        if let Some(old) = self.free.pop() {
            // Same slot, next generation: ids held by readers of the old node no longer resolve.
            let generation = ((old >> 32) as u32).wrapping_add(1);
            return (u64::from(generation) << 32) | (old & u64::from(u32::MAX));
        }
        let slot = self.next;
        self.next = slot.checked_add(1).expect("the pattern trie has room for 2^32 nodes");
        u64::from(slot)
    }

    /// Nodes in the trie, root included.
    #[cfg(test)]
    pub(super) fn live(&self) -> usize {
        self.next as usize - self.free.len()
    }
}

/// Slots of the first node-table segment; segment `i` has `FIRST_SEGMENT << i` slots.
const FIRST_SEGMENT: u64 = 64;
/// Enough segments to give every `u32` slot a place.
const SEGMENTS: usize = 27;

type Segment<T> = Box<[ArcSwapOption<Node<T>>]>;

/// The component trie: reads lock-free, writes under the caller's lock (see module docs).
pub(super) struct Trie<T> {
    nodes: [OnceLock<Segment<T>>; SEGMENTS],
    edges: Box<[ArcSwapOption<HashTable<Edge>>]>,
    mask: u64,
    hasher: foldhash::fast::RandomState,
}

/// The segment and offset of a slot.
fn locate(slot: u32) -> (usize, usize) {
    let x = u64::from(slot) / FIRST_SEGMENT + 1;
    let segment = 63 - x.leading_zeros() as u64;
    let start = FIRST_SEGMENT * ((1 << segment) - 1);
    (segment as usize, (u64::from(slot) - start) as usize)
}

impl<T: Default> Trie<T> {
    /// A trie holding only its root, with an edge table of `shards` shards (rounded up to a
    /// power of two), and the allocator its writers need.
    pub(super) fn new(shards: usize) -> (Self, Slots) {
        let shards = shards.max(1).next_power_of_two();
        let trie = Trie {
            nodes: std::array::from_fn(|_| OnceLock::new()),
            edges: (0..shards).map(|_| ArcSwapOption::empty()).collect(),
            mask: shards as u64 - 1,
            hasher: foldhash::fast::RandomState::default(),
        };
        let mut slots = Slots { next: 0, free: Vec::new() };
        let root = slots.allocate();
        trie.slot(root).store(Some(Arc::new(Trie::fresh(root, ROOT, ""))));
        (trie, slots)
    }

    fn fresh(id: NodeId, parent: NodeId, component: &str) -> Node<T> {
        Node {
            id,
            parent,
            component: component.into(),
            wildcard_child: AtomicU64::new(ROOT),
            children: AtomicU32::new(0),
            value: T::default(),
        }
    }

    /// The slot of `id`, its segment allocated if needed (writers only).
    fn slot(&self, id: NodeId) -> &ArcSwapOption<Node<T>> {
        let (segment, offset) = locate(id as u32);
        let slots =
            self.nodes[segment].get_or_init(|| (0..FIRST_SEGMENT << segment).map(|_| ArcSwapOption::empty()).collect());
        &slots[offset]
    }

    /// The node `id` for a writer to change, if it still exists.
    pub(super) fn get(&self, id: NodeId) -> Option<Arc<Node<T>>> {
        self.slot(id).load_full().filter(|node| node.id == id)
    }

    /// The node at the end of `components`, created with every missing ancestor.
    pub(super) fn insert_path(&self, slots: &mut Slots, components: &[&str]) -> NodeId {
        let mut parent = ROOT;
        for component in components {
            let existing = match component.is_empty() {
                true => self.node(parent, |n| n.wildcard_child()).flatten(),
                false => self.literal_child(parent, component, |_| ()).map(|(id, ())| id),
            };
            parent = match existing {
                Some(child) => child,
                None => self.add_child(slots, parent, component),
            };
        }
        parent
    }

    fn add_child(&self, slots: &mut Slots, parent: NodeId, component: &str) -> NodeId {
        let parent = self.get(parent).expect("writers only extend nodes that exist");
        let id = slots.allocate();
        self.slot(id).store(Some(Arc::new(Trie::fresh(id, parent.id, component))));
        if component.is_empty() {
            parent.wildcard_child.store(id, Ordering::Release);
        } else {
            let hash = self.edge_hash(parent.id, component);
            self.change_shard(hash, |table| {
                table.insert_unique(hash, Edge { hash, parent: parent.id, child: id }, |e| e.hash);
            });
        }
        parent.children.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Removes `id` if it is childless and `is_empty(value)`, then each ancestor that became so;
    /// never the root.
    pub(super) fn prune(&self, slots: &mut Slots, mut id: NodeId, is_empty: impl Fn(&T) -> bool) {
        while id != ROOT {
            let Some(node) = self.get(id) else { return };
            if node.children.load(Ordering::Relaxed) > 0 || !is_empty(&node.value) {
                return;
            }
            let parent = self.get(node.parent).expect("a node's parent outlives it");
            if node.component.is_empty() {
                parent.wildcard_child.store(ROOT, Ordering::Release);
            } else {
                let hash = self.edge_hash(parent.id, &node.component);
                self.change_shard(hash, |table| {
                    if let Ok(entry) = table.find_entry(hash, |e| e.child == id) {
                        entry.remove();
                    }
                    if table.len() * 4 < table.capacity() {
                        table.shrink_to_fit(|e| e.hash);
                    }
                });
            }
            parent.children.fetch_sub(1, Ordering::Relaxed);
            self.slot(id).store(None);
            slots.free.push(id);
            id = parent.id;
        }
    }

    /// Publishes a changed copy of the shard that `hash` falls in.
    fn change_shard(&self, hash: u64, change: impl FnOnce(&mut HashTable<Edge>)) {
        let shard = &self.edges[self.shard_of(hash)];
        let mut next = shard.load().as_deref().cloned().unwrap_or_default();
        change(&mut next);
        shard.store((!next.is_empty()).then(|| Arc::new(next)));
    }
}

impl<T> Trie<T> {
    fn edge_hash(&self, parent: NodeId, component: &str) -> u64 {
        self.hasher.hash_one((parent, component))
    }

    fn shard_of(&self, hash: u64) -> usize {
        // hashbrown takes the bucket from the low bits and the tag from the top 7: shard by the
        // middle ones, so that a shard's entries still differ in both.
        ((hash >> 32) & self.mask) as usize
    }

    /// Runs `visit` on node `id` if it exists. Lock-free.
    #[inline]
    pub(super) fn node<R>(&self, id: NodeId, visit: impl FnOnce(&Node<T>) -> R) -> Option<R> {
        probed();
        let (segment, offset) = locate(id as u32);
        let slot = self.nodes[segment].get()?[offset].load();
        slot.as_ref().filter(|node| node.id == id).map(|node| visit(node))
    }

    /// The child of `parent` for the non-empty `component`, with `visit` run on it. Lock-free.
    #[inline]
    pub(super) fn literal_child<R>(
        &self,
        parent: NodeId,
        component: &str,
        mut visit: impl FnMut(&Node<T>) -> R,
    ) -> Option<(NodeId, R)> {
        probed();
        let hash = self.edge_hash(parent, component);
        let shard = self.edges[self.shard_of(hash)].load();
        let table = shard.as_ref()?;
        table.iter_hash(hash).filter(|e| e.hash == hash && e.parent == parent).find_map(|edge| {
            let seen = self.node(edge.child, |n| (*n.component == *component).then(|| visit(n)));
            seen.flatten().map(|r| (edge.child, r))
        })
    }
}

#[cfg(test)]
thread_local! {
    static PROBES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one lookup step (a node load or an edge probe) on this thread, in tests.
#[inline]
fn probed() {
    #[cfg(test)]
    PROBES.with(|p| p.set(p.get() + 1));
}

/// Lookup steps taken on this thread so far.
#[cfg(test)]
pub(super) fn probes() -> usize {
    PROBES.with(|p| p.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_segments_without_gaps() {
        let mut expected = (0usize, 0usize);
        for slot in 0..100_000u32 {
            assert_eq!(locate(slot), expected, "slot {slot}");
            expected.1 += 1;
            if expected.1 as u64 == FIRST_SEGMENT << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
        let (segment, offset) = locate(u32::MAX);
        assert!(segment < SEGMENTS && (offset as u64) < FIRST_SEGMENT << segment);
    }

    #[test]
    fn a_reused_slot_gets_a_new_generation() {
        let (trie, mut slots) = Trie::<()>::new(4);
        let a = trie.insert_path(&mut slots, &["a"]);
        trie.prune(&mut slots, a, |_| true);
        assert!(trie.node(a, |_| ()).is_none());
        let b = trie.insert_path(&mut slots, &["b"]);
        assert_eq!(a as u32, b as u32, "same slot");
        assert_ne!(a, b, "new generation");
        assert!(trie.node(a, |_| ()).is_none(), "the old id no longer resolves");
        assert!(trie.literal_child(ROOT, "a", |_| ()).is_none());
        assert_eq!(trie.literal_child(ROOT, "b", |n| n.id()), Some((b, b)));
    }

    #[test]
    fn paths_share_nodes_and_prune_up_to_a_shared_one() {
        let (trie, mut slots) = Trie::<()>::new(1);
        let abc = trie.insert_path(&mut slots, &["a", "", "c"]);
        let abd = trie.insert_path(&mut slots, &["a", "", "d"]);
        assert_eq!(slots.live(), 5);
        trie.prune(&mut slots, abc, |_| true);
        assert_eq!(slots.live(), 4, "a and its wildcard child stay for d");
        trie.prune(&mut slots, abd, |_| true);
        assert_eq!(slots.live(), 1, "only the root is left");
    }
}
