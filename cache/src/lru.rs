//! A least-recently-used map bounded by bytes (golang/groupcache's `lru`).
//!
//! Entries live in a slab (`Vec<Node>`) linked into a recency list by index, found through a
//! small open-addressing index (linear probing, backward-shift deletion) of 8-byte slots
//! holding a node index and the low half of the key's hash. The caller may pass a hash it
//! already computed (the store hashes a key once for both shard and slot), so a hit is one
//! hash, one short probe and a few index writes: no allocation. An entry's size is its key's length plus
//! its value's length, as in groupcache.

use bytes::Bytes;

#[cfg(test)]
use crate::hash::FastState;

const NIL: u32 = u32::MAX;

/// One index slot: a node index (`NIL` when empty) and the low 32 bits of its key's hash.
#[derive(Clone, Copy)]
struct Slot {
    node: u32,
    tag: u32,
}

const EMPTY: Slot = Slot { node: NIL, tag: 0 };

struct Node {
    key: Box<str>,
    tag: u32,
    value: Bytes,
}

/// A node's place in the recency list, kept apart from the nodes in a dense array: applying
/// buffered hits rewrites only these 12-byte links, a few to a cache line.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// Odd while the slab slot holds an entry, even while it is free: bumped when the slot
    /// is freed and again when it is reused, so a [`NodeRef`] taken earlier matches neither
    /// a free slot nor a later entry reusing it.
    generation: u32,
}

/// Names one entry for as long as it stays in the map: its slab index and the slot's
/// generation. Buffered hits carry one of these and are applied later by
/// [`touch_ref`](Lru::touch_ref), which ignores a reference to an entry since removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeRef {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// A byte-bounded LRU map from string keys to immutable bytes.
///
/// `repr(C)` keeps what a hit reads and writes (index, slab, list ends) at the front.
#[repr(C)]
pub(crate) struct Lru {
    slots: Vec<Slot>,
    nodes: Vec<Node>,
    links: Vec<Link>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    len: usize,
    free: Vec<u32>,
    /// Hashes keys for the test-only methods without a precomputed hash.
    #[cfg(test)]
    hasher: FastState,
    bytes: usize,
    max_bytes: usize,
    evictions: u64,
}

impl std::fmt::Debug for Lru {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru")
            .field("items", &self.len)
            .field("bytes", &self.bytes)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// The size an entry is charged: key bytes plus value bytes.
pub(crate) fn entry_size(key: &str, value: &Bytes) -> usize {
    key.len() + value.len()
}

impl Lru {
    /// An empty LRU holding at most `max_bytes` (use `usize::MAX` when the owner enforces its
    /// own budget through [`evict_oldest`](Self::evict_oldest)). Keys are found by the hash
    /// the caller passes to the `*_hashed` methods, which must be the same function of the
    /// key every time.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            #[cfg(test)]
            hasher: FastState::random(),
            slots: vec![EMPTY; 8],
            len: 0,
            nodes: Vec::new(),
            links: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            max_bytes,
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

    /// The hash the test-only methods use for `key`.
    #[cfg(test)]
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_str(key)
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot position holding `key`, if present.
    #[inline]
    fn find(&self, tag: u32, key: &str) -> Option<usize> {
        let mask = self.mask();
        let mut pos = tag as usize & mask;
        loop {
            let slot = self.slots[pos];
            if slot.node == NIL {
                return None;
            }
            if slot.tag == tag && *self.nodes[slot.node as usize].key == *key {
                return Some(pos);
            }
            pos = (pos + 1) & mask;
        }
    }

    fn place(slots: &mut [Slot], slot: Slot) {
        let mask = slots.len() - 1;
        let mut pos = slot.tag as usize & mask;
        while slots[pos].node != NIL {
            pos = (pos + 1) & mask;
        }
        slots[pos] = slot;
    }

    /// Empties slot `pos`, shifting later slots of the same probe run back into the hole.
    fn unslot(&mut self, pos: usize) {
        let mask = self.mask();
        let mut hole = pos;
        self.slots[hole] = EMPTY;
        let mut j = (pos + 1) & mask;
        loop {
            let slot = self.slots[j];
            if slot.node == NIL {
                break;
            }
            let ideal = slot.tag as usize & mask;
            // Move it back unless its ideal position lies cyclically within (hole, j].
            if j.wrapping_sub(ideal) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = slot;
                self.slots[j] = EMPTY;
                hole = j;
            }
            j = (j + 1) & mask;
        }
    }

    /// Entries evicted so far to stay within a budget.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The value of `key`, marking it most recently used.
    #[inline]
    #[cfg(test)]
    pub(crate) fn get(&mut self, key: &str) -> Option<&Bytes> {
        self.get_hashed(self.hash(key), key)
    }

    /// [`get`](Self::get) with the key's hash already computed by [`hash`](Self::hash).
    #[inline]
    #[cfg(test)]
    pub(crate) fn get_hashed(&mut self, hash: u64, key: &str) -> Option<&Bytes> {
        let pos = self.find(hash as u32, key)?;
        let idx = self.slots[pos].node;
        self.touch(idx);
        Some(&self.nodes[idx as usize].value)
    }

    /// The value of `key` without changing its recency.
    #[cfg(test)]
    pub(crate) fn peek(&self, key: &str) -> Option<&Bytes> {
        self.peek_hashed(self.hash(key), key)
    }

    /// [`peek`](Self::peek) with the key's hash already computed.
    pub(crate) fn peek_hashed(&self, hash: u64, key: &str) -> Option<&Bytes> {
        let pos = self.find(hash as u32, key)?;
        Some(&self.nodes[self.slots[pos].node as usize].value)
    }

    /// Adds or replaces `key`, marks it most recently used and evicts least recently used
    /// entries until the budget holds. An entry larger than the whole budget is not stored
    /// (and nothing is evicted for it); returns whether it was stored.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, key: &str, value: Bytes) -> bool {
        self.insert_hashed(self.hash(key), key, value).is_some()
    }

    /// [`insert`](Self::insert) with the key's hash already computed; returns a reference
    /// to the stored entry (`None` when it was too large to store).
    pub(crate) fn insert_hashed(&mut self, hash: u64, key: &str, value: Bytes) -> Option<NodeRef> {
        let size = entry_size(key, &value);
        if size > self.max_bytes {
            return None;
        }
        let tag = hash as u32;
        let idx;
        if let Some(pos) = self.find(tag, key) {
            idx = self.slots[pos].node;
            let node = &mut self.nodes[idx as usize];
            self.bytes = self.bytes - node.value.len() + value.len();
            node.value = value;
            self.touch(idx);
        } else {
            idx = match self.free.pop() {
                Some(idx) => {
                    let node = &mut self.nodes[idx as usize];
                    node.key = key.into();
                    node.tag = tag;
                    let link = &mut self.links[idx as usize];
                    link.generation = link.generation.wrapping_add(1);
                    node.value = value;
                    idx
                }
                None => {
                    self.nodes.push(Node {
                        key: key.into(),
                        tag,
                        value,
                    });
                    self.links.push(Link {
                        prev: NIL,
                        next: NIL,
                        generation: 1,
                    });
                    (self.nodes.len() - 1) as u32
                }
            };
            self.len += 1;
            if self.len * 2 > self.slots.len() {
                let mut slots = vec![EMPTY; self.slots.len() * 2];
                for &s in self.slots.iter().filter(|s| s.node != NIL) {
                    Self::place(&mut slots, s);
                }
                self.slots = slots;
            }
            Self::place(&mut self.slots, Slot { node: idx, tag });
            self.push_front(idx);
            self.bytes += size;
        }
        let node = NodeRef {
            index: idx,
            generation: self.links[idx as usize].generation,
        };
        while self.bytes > self.max_bytes {
            if self.remove_oldest().is_none() {
                break;
            }
            self.evictions += 1;
        }
        // Evicting for this entry never evicts the entry itself: it is the most recent and
        // fits the budget on its own.
        Some(node)
    }

    /// Marks the entry `node` names most recently used; returns false (and changes nothing)
    /// when that entry has been removed since the reference was taken.
    pub(crate) fn touch_ref(&mut self, node: NodeRef) -> bool {
        match self.links.get(node.index as usize) {
            Some(l) if l.generation == node.generation => {
                self.touch(node.index);
                true
            }
            _ => false,
        }
    }

    /// Removes and returns the least recently used entry. Counted as an eviction by
    /// [`evict_oldest`](Self::evict_oldest), not here.
    pub(crate) fn remove_oldest(&mut self) -> Option<(Box<str>, Bytes)> {
        if self.tail == NIL {
            return None;
        }
        let idx = self.tail;
        Some(self.remove_idx(idx))
    }

    /// Evicts the least recently used entry to make room, returning its key (`None` when
    /// empty).
    pub(crate) fn evict_oldest(&mut self) -> Option<Box<str>> {
        let (key, _) = self.remove_oldest()?;
        self.evictions += 1;
        Some(key)
    }

    /// Removes `key`, returning its value.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &str) -> Option<Bytes> {
        self.remove_hashed(self.hash(key), key)
    }

    /// [`remove`](Self::remove) with the key's hash already computed.
    pub(crate) fn remove_hashed(&mut self, hash: u64, key: &str) -> Option<Bytes> {
        let pos = self.find(hash as u32, key)?;
        let idx = self.slots[pos].node;
        Some(self.remove_idx(idx).1)
    }

    /// Keys from most to least recently used (tests and debugging).
    #[cfg(test)]
    pub(crate) fn keys_by_recency(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len);
        let mut idx = self.head;
        while idx != NIL {
            out.push(self.nodes[idx as usize].key.to_string());
            idx = self.links[idx as usize].next;
        }
        out
    }

    fn remove_idx(&mut self, idx: u32) -> (Box<str>, Bytes) {
        let tag = self.nodes[idx as usize].tag;
        let mask = self.mask();
        let mut pos = tag as usize & mask;
        while self.slots[pos].node != idx {
            pos = (pos + 1) & mask;
        }
        self.unslot(pos);
        self.len -= 1;
        self.unlink(idx);
        let node = &mut self.nodes[idx as usize];
        let key = std::mem::take(&mut node.key);
        let value = std::mem::take(&mut node.value);
        let link = &mut self.links[idx as usize];
        link.generation = link.generation.wrapping_add(1);
        self.bytes -= entry_size(&key, &value);
        self.free.push(idx);
        (key, value)
    }

    #[inline]
    fn touch(&mut self, idx: u32) {
        if self.head != idx {
            self.unlink(idx);
            self.push_front(idx);
        }
    }

    #[inline]
    fn unlink(&mut self, idx: u32) {
        let Link { prev, next, .. } = self.links[idx as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
    }

    #[inline]
    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let l = &mut self.links[idx as usize];
            l.prev = NIL;
            l.next = old;
        }
        if old == NIL {
            self.tail = idx;
        } else {
            self.links[old as usize].prev = idx;
        }
        self.head = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lru(max: usize) -> Lru {
        Lru::new(max)
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let mut l = lru(30);
        l.insert("a", Bytes::from_static(b"123456789")); // 10
        l.insert("b", Bytes::from_static(b"123456789")); // 20
        l.insert("c", Bytes::from_static(b"123456789")); // 30
        assert!(l.get("a").is_some()); // a is now most recent
        l.insert("d", Bytes::from_static(b"1234")); // 35 > 30: b goes
        assert_eq!(l.keys_by_recency(), ["d", "a", "c"]);
        assert!(l.peek("c").is_some(), "peek does not touch");
        assert_eq!(l.keys_by_recency(), ["d", "a", "c"]);
        assert_eq!(l.bytes(), 25);
        assert_eq!(l.evictions(), 1);
        assert!(!l.insert("big", Bytes::from(vec![0; 40])));
        assert_eq!(l.len(), 3);
        assert_eq!(l.remove("a"), Some(Bytes::from_static(b"123456789")));
        assert_eq!(l.keys_by_recency(), ["d", "c"]);
        assert_eq!(l.bytes(), 15);
    }

    #[test]
    fn a_reference_outlives_neither_removal_nor_reuse() {
        let mut l = lru(usize::MAX);
        let a = l.insert_hashed(1, "a", Bytes::new()).unwrap();
        let b = l.insert_hashed(2, "b", Bytes::new()).unwrap();
        assert!(l.touch_ref(a));
        assert_eq!(l.keys_by_recency(), ["a", "b"]);
        l.remove_hashed(1, "a");
        assert!(!l.touch_ref(a), "a freed slot");
        let c = l.insert_hashed(3, "c", Bytes::new()).unwrap();
        assert_eq!(c.index, a.index, "c reuses a's slot");
        assert!(!l.touch_ref(a), "a reused slot");
        assert!(l.touch_ref(b));
        assert_eq!(l.keys_by_recency(), ["b", "c"]);
        let c2 = l.insert_hashed(3, "c", Bytes::from_static(b"x")).unwrap();
        assert_eq!(c2, c, "replacing a value keeps the entry");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, usize),
        Get(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..24, 0usize..40).prop_map(|(k, n)| Op::Insert(k, n)),
            (0u8..24).prop_map(Op::Get),
            (0u8..24).prop_map(Op::Remove),
        ]
    }

    #[test]
    fn many_keys_with_removals_stay_findable() {
        let mut l = lru(usize::MAX);
        for i in 0..5000 {
            l.insert(&format!("k{i}"), Bytes::from_static(b"v"));
        }
        for i in (0..5000).step_by(3) {
            assert!(l.remove(&format!("k{i}")).is_some());
        }
        for i in 0..5000 {
            assert_eq!(l.get(&format!("k{i}")).is_some(), i % 3 != 0, "k{i}");
        }
        assert_eq!(l.len(), 3333);
    }

    proptest! {
        /// Against a model (a Vec ordered by recency): same contents, same order, the budget
        /// never exceeded, and evictions always take the least recently used entry.
        #[test]
        fn behaves_like_the_model(max in 1usize..120, ops in proptest::collection::vec(op(), 1..200)) {
            let mut l = lru(max);
            // Model: most recent first.
            let mut model: Vec<(String, usize)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, n) => {
                        let key = format!("k{k}");
                        let value = Bytes::from(vec![k; n]);
                        let size = key.len() + n;
                        let stored = l.insert(&key, value);
                        prop_assert_eq!(stored, size <= max);
                        if stored {
                            model.retain(|(mk, _)| *mk != key);
                            model.insert(0, (key, size));
                            while model.iter().map(|e| e.1).sum::<usize>() > max {
                                model.pop(); // the least recently used goes first
                            }
                        }
                    }
                    Op::Get(k) => {
                        let key = format!("k{k}");
                        let got = l.get(&key).map(|v| v.len());
                        let pos = model.iter().position(|(mk, _)| *mk == key);
                        prop_assert_eq!(got.is_some(), pos.is_some());
                        if let Some(p) = pos {
                            let e = model.remove(p);
                            prop_assert_eq!(got, Some(e.1 - e.0.len()));
                            model.insert(0, e);
                        }
                    }
                    Op::Remove(k) => {
                        let key = format!("k{k}");
                        let got = l.remove(&key).is_some();
                        let before = model.len();
                        model.retain(|(mk, _)| *mk != key);
                        prop_assert_eq!(got, model.len() < before);
                    }
                }
                prop_assert!(l.bytes() <= max);
                prop_assert_eq!(l.bytes(), model.iter().map(|e| e.1).sum::<usize>());
                let keys: Vec<String> = model.iter().map(|e| e.0.clone()).collect();
                prop_assert_eq!(l.keys_by_recency(), keys);
            }
        }
    }
}
