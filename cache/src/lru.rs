//! The least-recently-used order of one tier of one shard, by bytes (golang/groupcache's `lru`,
//! counting bytes as its `cache` does), kept by last-use stamps instead of a linked list.
//!
//! A hit does not touch this structure: it stores a last-use stamp in the key's entry of the
//! store's index, so hits need no lock. Eviction finds the least recently used entry
//! lazily: a min-heap holds every entry under the stamp it had when it was queued, which is
//! never more than its last use. If the heap's top is still current, no entry was used less
//! recently and it goes; if it was used since, it goes back under its latest stamp. Each
//! requeue follows a hit, so eviction costs O(log n) per hit since the entry was queued, and
//! the order of eviction is the order of last use.
//!
//! The store owns the entries and tells, for a queued key and insertion id, whether it is
//! still there, when it was last used and what it is charged.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// A heap item: an entry under the stamp it was queued with. `id` names one insertion of
/// the key, so an item left behind by a replaced or removed entry is recognised as stale.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    stamp: u64,
    id: u64,
    key: Arc<str>,
}

/// What the store says about a queued entry: its last use and its charge, or `None` when
/// that insertion of the key is gone.
pub(crate) type Current = Option<(u64, usize)>;

/// The bytes of a heap item, charged to every entry (see [`crate::store`]): its size, times
/// 1.5 for the stale items and spare capacity the heap may hold.
pub(crate) const QUEUED_BYTES: usize = std::mem::size_of::<Queued>() * 3 / 2;

/// A byte-counted set of entries in least-recently-used order, for one tier of one shard.
/// The owner enforces the budget by calling [`evict_oldest`](Self::evict_oldest).
#[derive(Debug, Default)]
pub(crate) struct Lru {
    heap: BinaryHeap<Reverse<Queued>>,
    /// Heap items whose entry has gone without being evicted from here.
    stale: usize,
    len: usize,
    bytes: usize,
    evictions: u64,
}

impl Lru {
    /// Bytes charged for the entries held.
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

    /// Adds insertion `id` of `key`, charged `size` bytes and used at `stamp`.
    pub(crate) fn insert(&mut self, key: Arc<str>, id: u64, stamp: u64, size: usize) {
        self.heap.push(Reverse(Queued { stamp, id, key }));
        self.len += 1;
        self.bytes += size;
    }

    /// Forgets an entry of `size` bytes that the store removed (replaced, or moved to the
    /// other tier). Its heap item stays until it comes to the top or the heap is compacted.
    pub(crate) fn removed(&mut self, size: usize, current: impl FnMut(&str, u64) -> Current) {
        self.len -= 1;
        self.bytes -= size;
        self.stale += 1;
        if self.stale > self.len / 2 + 64 {
            self.compact(current);
        }
    }

    /// Drops the stale items.
    fn compact(&mut self, mut current: impl FnMut(&str, u64) -> Current) {
        self.heap
            .retain(|Reverse(q)| current(&q.key, q.id).is_some());
        self.stale = 0;
    }

    /// Forgets every entry; returns the keys it held (some more than once), for the store to
    /// remove. Evictions stay counted.
    pub(crate) fn clear(&mut self) -> Vec<Arc<str>> {
        self.len = 0;
        self.bytes = 0;
        self.stale = 0;
        std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(q)| q.key)
            .collect()
    }

    /// Removes the least recently used entry from the order and returns its key, or `None`
    /// when empty; the caller removes the entry itself. `current` tells each queued entry's
    /// last use and charge.
    ///
    /// Entries used since they were queued go back under their latest stamp first. If other
    /// threads keep using entries faster than they can be requeued, after as many requeues as
    /// there are entries the top entry goes anyway (concurrent uses have no exact order).
    pub(crate) fn evict_oldest(
        &mut self,
        mut current: impl FnMut(&str, u64) -> Current,
    ) -> Option<Arc<str>> {
        let mut requeues = 0;
        while let Some(Reverse(mut item)) = self.heap.pop() {
            let Some((used, size)) = current(&item.key, item.id) else {
                self.stale -= 1;
                continue;
            };
            if used > item.stamp && requeues < self.len {
                requeues += 1;
                item.stamp = used;
                self.heap.push(Reverse(item));
                continue;
            }
            self.len -= 1;
            self.bytes -= size;
            self.evictions += 1;
            return Some(item.key);
        }
        None
    }

    /// Keys from the most to the least recently used (tests).
    #[cfg(test)]
    pub(crate) fn keys(&self, mut current: impl FnMut(&str, u64) -> Current) -> Vec<String> {
        let mut live: Vec<(u64, &str)> = self
            .heap
            .iter()
            .filter_map(|Reverse(q)| current(&q.key, q.id).map(|(used, _)| (used, &*q.key)))
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

    /// An `Lru` with its entries (id, last use, size) in a map, as the store keeps them.
    #[derive(Default)]
    struct Model {
        lru: Lru,
        entries: HashMap<String, (u64, u64, usize)>,
        clock: u64,
        ids: u64,
    }

    impl Model {
        fn current(
            entries: &HashMap<String, (u64, u64, usize)>,
        ) -> impl Fn(&str, u64) -> Current + '_ {
            |k, id| entries.get(k).filter(|e| e.0 == id).map(|e| (e.1, e.2))
        }

        fn insert(&mut self, k: &str, size: usize) {
            self.remove(k);
            self.clock += 1;
            self.ids += 1;
            self.entries
                .insert(k.to_owned(), (self.ids, self.clock, size));
            self.lru.insert(k.into(), self.ids, self.clock, size);
        }

        fn remove(&mut self, k: &str) {
            if let Some(e) = self.entries.remove(k) {
                self.lru.removed(e.2, Self::current(&self.entries));
            }
        }

        fn hit(&mut self, k: &str) -> bool {
            self.clock += 1;
            match self.entries.get_mut(k) {
                Some(e) => {
                    e.1 = self.clock;
                    true
                }
                None => false,
            }
        }

        fn evict(&mut self) -> Option<String> {
            let k = self.lru.evict_oldest(Self::current(&self.entries))?;
            self.entries.remove(&*k);
            Some(k.to_string())
        }

        fn keys(&self) -> Vec<String> {
            self.lru.keys(Self::current(&self.entries))
        }
    }

    #[test]
    fn hits_reorder_and_the_oldest_goes() {
        let mut m = Model::default();
        for k in ["a", "b", "c"] {
            m.insert(k, 10);
        }
        assert!(m.hit("a") && !m.hit("x"));
        assert_eq!(m.keys(), ["a", "c", "b"]);
        assert_eq!(m.evict().as_deref(), Some("b"));
        m.insert("c", 30); // replaced: its old item is stale
        assert_eq!(m.keys(), ["c", "a"]);
        assert_eq!((m.lru.len(), m.lru.bytes(), m.lru.evictions()), (2, 40, 1));
        assert_eq!(m.evict().as_deref(), Some("a"));
        assert_eq!(m.evict().as_deref(), Some("c"));
        assert_eq!(m.evict(), None);
        assert_eq!((m.lru.len(), m.lru.bytes(), m.lru.stale), (0, 0, 0));
    }

    #[test]
    fn stale_items_are_compacted() {
        let mut m = Model::default();
        for i in 0..1000 {
            m.insert("k", i);
        }
        assert!(m.lru.heap.len() < 100, "{}", m.lru.heap.len());
        assert_eq!((m.lru.len(), m.lru.bytes()), (1, 999));
    }

    proptest! {
        /// Against a model list: the same keys go, in the same order, and bytes add up.
        #[test]
        fn evicts_in_order_of_last_use(ops in proptest::collection::vec((0u8..12, 0usize..20, 0u8..4), 1..300)) {
            let mut m = Model::default();
            let mut list: Vec<(String, usize)> = Vec::new(); // most recent first
            for (k, size, op) in ops {
                let key = format!("k{k}");
                let pos = list.iter().position(|e| e.0 == key);
                match op {
                    0 => {
                        prop_assert_eq!(m.hit(&key), pos.is_some());
                        if let Some(p) = pos {
                            let e = list.remove(p);
                            list.insert(0, e);
                        }
                    }
                    1 => {
                        m.remove(&key);
                        if let Some(p) = pos {
                            list.remove(p);
                        }
                    }
                    2 => {
                        prop_assert_eq!(m.evict(), list.pop().map(|e| e.0));
                    }
                    _ => {
                        m.insert(&key, size);
                        if let Some(p) = pos {
                            list.remove(p);
                        }
                        list.insert(0, (key, size));
                    }
                }
                let keys: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
                prop_assert_eq!(m.keys(), keys);
                prop_assert_eq!(m.lru.bytes(), list.iter().map(|e| e.1).sum::<usize>());
                prop_assert_eq!(m.lru.len(), list.len());
            }
        }
    }
}
