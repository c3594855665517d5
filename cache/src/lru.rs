//! An exact least-recently-used order by bytes (golang/groupcache's `lru`), kept by last-use
//! stamps instead of a linked list.
//!
//! A hit does not touch this structure: it records a stamp ([`crate::local`]) in its
//! thread's lane of [`crate::stamps`], so hits write nothing that another thread's hits
//! write and need no lock. Eviction finds the least recently used entry lazily: a min-heap holds
//! every entry under the stamp it had when it was last queued, which is never more than its
//! last use. If the heap's top is still current, no entry was used less recently and it
//! goes; if it was used since, it goes back into the heap under its latest stamp. Each
//! requeue follows at least one hit, so eviction costs O(log n) per hit since the entry was
//! queued, and the order of eviction is exactly the order of last use.
//!
//! Entries live in a slab; a [`NodeRef`] (slab index and generation) names one for as long
//! as it stays. An entry's size is its key's length plus its value's length, as in
//! groupcache; the caller keeps the values and looks up last uses by key.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::Bytes;

/// Names one entry for as long as it stays: its slab index and the slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRef {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

struct Node {
    key: Box<str>,
    size: usize,
    /// The stamp this entry is queued under in the heap.
    queued: u64,
    /// Odd while the slot holds an entry, even while it is free: bumped when the slot is
    /// freed and again when it is reused, so a [`NodeRef`] or heap item taken earlier matches
    /// neither a free slot nor a later entry reusing it.
    generation: u32,
}

/// A heap item: ordered by stamp, then slab index (ties only between threads' concurrent
/// uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    stamp: u64,
    index: u32,
    generation: u32,
}

/// A byte-counted set of keys in exact least-recently-used order, for one tier of one shard.
/// The owner enforces the budget by calling [`evict_oldest`](Self::evict_oldest).
pub(crate) struct Lru {
    nodes: Vec<Node>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<Queued>>,
    /// Heap items whose entry has been removed (skipped when they come to the top).
    stale: usize,
    len: usize,
    bytes: usize,
    evictions: u64,
}

impl std::fmt::Debug for Lru {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru")
            .field("items", &self.len)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// The size an entry is charged: key bytes plus value bytes.
pub(crate) fn entry_size(key: &str, value: &Bytes) -> usize {
    key.len() + value.len()
}

impl Lru {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self {
            nodes: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            stale: 0,
            len: 0,
            bytes: 0,
            evictions: 0,
        }
    }

    /// Bytes held (keys plus values).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries evicted so far.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Adds `key`, charged `size` bytes and last used at `stamp`. The caller has removed any
    /// earlier entry of the same key.
    pub(crate) fn insert(&mut self, key: &str, size: usize, stamp: u64) -> NodeRef {
        let index = match self.free.pop() {
            Some(index) => {
                let node = &mut self.nodes[index as usize];
                node.key = key.into();
                node.size = size;
                node.queued = stamp;
                node.generation = node.generation.wrapping_add(1);
                index
            }
            None => {
                self.nodes.push(Node {
                    key: key.into(),
                    size,
                    queued: stamp,
                    generation: 1,
                });
                (self.nodes.len() - 1) as u32
            }
        };
        let generation = self.nodes[index as usize].generation;
        self.heap.push(Reverse(Queued {
            stamp,
            index,
            generation,
        }));
        self.len += 1;
        self.bytes += size;
        NodeRef { index, generation }
    }

    /// Removes the entry `node` names and returns its key; `None` (and nothing changes) when
    /// it has been removed already.
    pub(crate) fn remove(&mut self, node: NodeRef) -> Option<Box<str>> {
        let key = self.free_slot(node)?;
        // Its heap item stays behind until it comes to the top or the heap is rebuilt.
        self.stale += 1;
        if self.stale > self.len + 64 {
            self.compact();
        }
        Some(key)
    }

    /// Frees the slot of the entry `node` names, if it is still there; returns its key.
    fn free_slot(&mut self, node: NodeRef) -> Option<Box<str>> {
        let n = self.nodes.get_mut(node.index as usize)?;
        if n.generation != node.generation {
            return None;
        }
        n.generation = n.generation.wrapping_add(1);
        let key = std::mem::take(&mut n.key);
        self.bytes -= n.size;
        self.len -= 1;
        self.free.push(node.index);
        Some(key)
    }

    /// Rebuilds the heap from the live entries, dropping stale items.
    fn compact(&mut self) {
        let live = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.generation % 2 == 1);
        let items: Vec<_> = live
            .map(|(i, n)| {
                Reverse(Queued {
                    stamp: n.queued,
                    index: i as u32,
                    generation: n.generation,
                })
            })
            .collect();
        self.heap = BinaryHeap::from(items);
        self.stale = 0;
    }

    /// Removes the least recently used entry and returns its key, or `None` when empty.
    /// `last_use` gives an entry's latest stamp by key.
    ///
    /// Entries used since they were queued go back under their latest stamp first. If
    /// other threads keep using entries faster than they can be requeued, after as many
    /// requeues as there are entries the top entry goes anyway (concurrent uses have no
    /// exact order to keep).
    pub(crate) fn evict_oldest(
        &mut self,
        mut last_use: impl FnMut(&str) -> u64,
    ) -> Option<Box<str>> {
        let mut requeues = 0;
        while let Some(Reverse(item)) = self.heap.pop() {
            let node = &mut self.nodes[item.index as usize];
            if node.generation != item.generation {
                self.stale -= 1;
                continue;
            }
            let used = last_use(&node.key);
            if used > item.stamp && requeues < self.len {
                requeues += 1;
                node.queued = used;
                self.heap.push(Reverse(Queued {
                    stamp: used,
                    ..item
                }));
                continue;
            }
            // Its heap item is the one just popped: nothing stale is left behind.
            let key = self.free_slot(NodeRef {
                index: item.index,
                generation: item.generation,
            });
            self.evictions += 1;
            return key;
        }
        None
    }

    /// Keys from most to least recently used (tests).
    #[cfg(test)]
    pub(crate) fn keys_by_recency(&self, mut last_use: impl FnMut(&str) -> u64) -> Vec<String> {
        let mut live: Vec<(u64, &str)> = self
            .nodes
            .iter()
            .filter(|n| n.generation % 2 == 1)
            .map(|n| (last_use(&n.key), &*n.key))
            .collect();
        live.sort_by(|a, b| b.cmp(a));
        live.into_iter().map(|(_, k)| k.to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// An `Lru` with its stamps kept in a map, as the store keeps them in its index.
    struct Model {
        lru: Lru,
        used: HashMap<String, (u64, NodeRef)>,
        clock: u64,
    }

    impl Model {
        fn new() -> Self {
            Self {
                lru: Lru::new(),
                used: HashMap::new(),
                clock: 0,
            }
        }

        fn insert(&mut self, key: &str, size: usize) {
            self.remove(key);
            self.clock += 1;
            let node = self.lru.insert(key, size, self.clock);
            self.used.insert(key.to_owned(), (self.clock, node));
        }

        fn touch(&mut self, key: &str) -> bool {
            self.clock += 1;
            match self.used.get_mut(key) {
                Some(e) => {
                    e.0 = self.clock;
                    true
                }
                None => false,
            }
        }

        fn remove(&mut self, key: &str) -> bool {
            match self.used.remove(key) {
                Some((_, node)) => self.lru.remove(node).is_some(),
                None => false,
            }
        }

        fn evict(&mut self) -> Option<String> {
            let used = &self.used;
            let key = self.lru.evict_oldest(|k| used[k].0)?;
            self.used.remove(&*key);
            Some(key.into())
        }

        fn keys(&self) -> Vec<String> {
            self.lru.keys_by_recency(|k| self.used[k].0)
        }
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let mut m = Model::new();
        m.insert("a", 10);
        m.insert("b", 10);
        m.insert("c", 10);
        assert!(m.touch("a")); // a is now most recent
        assert_eq!(m.evict().as_deref(), Some("b"));
        assert_eq!(m.keys(), ["a", "c"]);
        assert_eq!((m.lru.bytes(), m.lru.len(), m.lru.evictions()), (20, 2, 1));
        assert!(m.remove("a"));
        assert_eq!(m.keys(), ["c"]);
        assert_eq!(m.lru.bytes(), 10);
        assert_eq!(m.evict().as_deref(), Some("c"));
        assert_eq!(m.evict(), None);
    }

    #[test]
    fn a_reference_outlives_neither_removal_nor_reuse() {
        let mut l = Lru::new();
        let a = l.insert("a", 1, 1);
        let b = l.insert("b", 1, 2);
        assert_eq!(l.remove(a).as_deref(), Some("a"));
        assert_eq!(l.remove(a), None, "a freed slot");
        let c = l.insert("c", 1, 3);
        assert_eq!(c.index, a.index, "c reuses a's slot");
        assert_eq!(l.remove(a), None, "a reused slot");
        assert_eq!(l.remove(b).as_deref(), Some("b"));
        assert_eq!((l.len(), l.bytes()), (1, 1));
    }

    #[test]
    fn removals_leave_the_heap_bounded() {
        let mut m = Model::new();
        for i in 0..10_000 {
            m.insert("same", 1); // each insert removes the previous entry
            m.insert(&format!("k{}", i % 3), 1);
        }
        assert_eq!(m.lru.len(), 4);
        assert!(m.lru.heap.len() <= 2 * 4 + 64 + 1, "{}", m.lru.heap.len());
        assert_eq!(m.keys(), ["k0", "same", "k2", "k1"]);
    }

    #[test]
    fn uses_faster_than_requeues_cannot_stall_an_eviction() {
        let mut l = Lru::new();
        for i in 0..100 {
            l.insert(&format!("k{i}"), 1, i);
        }
        // Every look finds a newer use, as if other threads hit every entry meanwhile.
        let mut now = 1000;
        let key = l.evict_oldest(|_| {
            now += 1;
            now
        });
        assert!(key.is_some());
        assert_eq!(l.len(), 99);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, usize),
        Touch(u8),
        Remove(u8),
        Evict,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..24, 0usize..40).prop_map(|(k, n)| Op::Insert(k, n)),
            (0u8..24).prop_map(Op::Touch),
            (0u8..24).prop_map(Op::Remove),
            Just(Op::Evict),
        ]
    }

    proptest! {
        /// Against a model (a Vec ordered by recency): same contents, same order, same bytes,
        /// and evictions always take the least recently used entry.
        #[test]
        fn behaves_like_the_model(ops in proptest::collection::vec(op(), 1..300)) {
            let mut m = Model::new();
            let mut model: Vec<(String, usize)> = Vec::new(); // most recent first
            for op in ops {
                match op {
                    Op::Insert(k, size) => {
                        let key = format!("k{k}");
                        m.insert(&key, size);
                        model.retain(|(mk, _)| *mk != key);
                        model.insert(0, (key, size));
                    }
                    Op::Touch(k) => {
                        let key = format!("k{k}");
                        let pos = model.iter().position(|(mk, _)| *mk == key);
                        prop_assert_eq!(m.touch(&key), pos.is_some());
                        if let Some(p) = pos {
                            let e = model.remove(p);
                            model.insert(0, e);
                        }
                    }
                    Op::Remove(k) => {
                        let key = format!("k{k}");
                        let before = model.len();
                        model.retain(|(mk, _)| *mk != key);
                        prop_assert_eq!(m.remove(&key), model.len() < before);
                    }
                    Op::Evict => {
                        let expected = model.pop().map(|e| e.0);
                        prop_assert_eq!(m.evict(), expected);
                    }
                }
                prop_assert_eq!(m.lru.bytes(), model.iter().map(|e| e.1).sum::<usize>());
                prop_assert_eq!(m.lru.len(), model.len());
                let keys: Vec<String> = model.iter().map(|e| e.0.clone()).collect();
                prop_assert_eq!(m.keys(), keys);
            }
        }
    }
}
