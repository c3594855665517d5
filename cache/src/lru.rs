//! A least-recently-used cache of values by bytes, for one tier of one shard (golang/groupcache's
//! `lru`, counting bytes as its `cache` does).
//!
//! The entries live in a slab, linked from the most to the least recently used by slab
//! index; a hash table of slab indices finds a key's entry. A hit moves its entry to the
//! front, an eviction takes the back. The caller locks it and supplies the key's hash.
//!
//! An entry is charged what it really costs ([`charge`]): its key's and its value's heap
//! blocks, the `Bytes` header shared by the value's clones, its slab node and its share of
//! the hash table. So a budget of N bytes holds entries whose memory is about N bytes.

use std::hash::BuildHasher;
use std::mem::size_of;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};

/// No entry: the end of the list, or of the free list.
const NIL: u32 = u32::MAX;

/// One slot of the slab: an entry, or a free slot (empty key and value, `next` in the free
/// list).
struct Node {
    key: Box<str>,
    value: Bytes,
    /// Towards the front (more recently used).
    prev: u32,
    /// Towards the back (less recently used).
    next: u32,
}

/// The heap block glibc's malloc gives a request of `n` bytes: `n` plus an 8-byte header,
/// rounded up to 16 bytes, at least 32 (`MINSIZE`); nothing for 0 bytes, which `Box<str>` and
/// `Bytes` do not allocate.
const fn heap_block(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let block = (n + 8 + 15) & !15;
    if block < 32 {
        32
    } else {
        block
    }
}

/// The hash table's bytes per entry, at most: a bucket is a `u32` index and a control byte,
/// and the table grows to twice its buckets when it is 7/8 full, so it has at most 16/7
/// buckets per entry (5 × 16/7 = 11.4).
const TABLE_BYTES: usize = 12;

/// The header a `Bytes` value's clones share (`bytes`' `Shared`: buffer, capacity and
/// reference count, 24 bytes), allocated when a value made from a `Vec` is first cloned.
const SHARED_HEADER: usize = heap_block(24);

/// What an entry costs besides its key's and its value's heap blocks: its slab node, its
/// share of the hash table and its value's shared header (56 + 12 + 32 = 100 bytes on 64-bit
/// targets).
pub(crate) const ENTRY_OVERHEAD: usize = size_of::<Node>() + TABLE_BYTES + SHARED_HEADER;

/// The bytes an entry of `key` and `value` is charged against the budget.
///
/// The value's heap block is taken from its length: a `Bytes` does not tell its capacity, so
/// a value kept in a larger buffer (a `Vec` with spare capacity, a slice of a bigger `Bytes`)
/// costs more than it is charged.
pub(crate) fn charge(key: &str, value: &Bytes) -> usize {
    heap_block(key.len()) + heap_block(value.len()) + ENTRY_OVERHEAD
}

/// A byte-counted least-recently-used map from keys to values. The owner enforces the budget
/// by calling [`evict_oldest`](Self::evict_oldest).
pub(crate) struct Lru {
    table: HashTable<u32>,
    nodes: Vec<Node>,
    hasher: DefaultHashBuilder,
    head: u32,
    tail: u32,
    free: u32,
    len: usize,
    bytes: usize,
    hits: u64,
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

impl Lru {
    /// An empty map whose keys hash with `hasher` (the one the caller's hashes come from).
    pub(crate) fn new(hasher: DefaultHashBuilder) -> Self {
        Self {
            table: HashTable::new(),
            nodes: Vec::new(),
            hasher,
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
            bytes: 0,
            hits: 0,
            evictions: 0,
        }
    }

    /// Bytes charged for the entries held (see [`charge`]).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Hits so far ([`get`](Self::get) calls that found their key).
    pub(crate) fn hits(&self) -> u64 {
        self.hits
    }

    /// Entries evicted so far.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        let nodes = &self.nodes;
        self.table
            .find(hash, |&i| *nodes[i as usize].key == *key)
            .copied()
    }

    /// The value of `key` (whose hash is `hash`), made the most recently used and counted as
    /// a hit.
    pub(crate) fn get(&mut self, hash: u64, key: &str) -> Option<&Bytes> {
        let i = self.find(hash, key)?;
        self.hits += 1;
        self.unlink(i);
        self.push_front(i);
        Some(&self.nodes[i as usize].value)
    }

    /// The value of `key`, without counting or reordering anything.
    pub(crate) fn peek(&self, hash: u64, key: &str) -> Option<&Bytes> {
        self.find(hash, key).map(|i| &self.nodes[i as usize].value)
    }

    /// Whether `key` is held.
    pub(crate) fn contains(&self, hash: u64, key: &str) -> bool {
        self.find(hash, key).is_some()
    }

    /// Adds `key` (whose hash is `hash`) as the most recently used entry, replacing any
    /// entry of the same key.
    pub(crate) fn insert(&mut self, hash: u64, key: &str, value: Bytes) {
        self.remove(hash, key);
        self.bytes += charge(key, &value);
        self.len += 1;
        let node = Node {
            key: key.into(),
            value,
            prev: NIL,
            next: NIL,
        };
        let i = if self.free == NIL {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        } else {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = node;
            i
        };
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.table.insert_unique(hash, i, |&j| {
            hasher.hash_one(&*nodes[j as usize].key)
        });
        self.push_front(i);
    }

    /// Removes `key`'s entry, if held.
    pub(crate) fn remove(&mut self, hash: u64, key: &str) -> bool {
        let nodes = &self.nodes;
        let Ok(entry) = self
            .table
            .find_entry(hash, |&i| *nodes[i as usize].key == *key)
        else {
            return false;
        };
        let (i, _) = entry.remove();
        self.release(i);
        true
    }

    /// Removes the least recently used entry; `false` when there is none.
    pub(crate) fn evict_oldest(&mut self) -> bool {
        let i = self.tail;
        if i == NIL {
            return false;
        }
        let hash = self.hasher.hash_one(&*self.nodes[i as usize].key);
        let found = self.table.find_entry(hash, |&j| j == i);
        if let Ok(entry) = found {
            entry.remove();
        }
        self.release(i);
        self.evictions += 1;
        true
    }

    /// Unlinks slot `i` (no longer in the table), frees its key and value and puts it on the
    /// free list.
    fn release(&mut self, i: u32) {
        self.unlink(i);
        let node = &mut self.nodes[i as usize];
        let key = std::mem::take(&mut node.key);
        let value = std::mem::take(&mut node.value);
        node.next = self.free;
        self.free = i;
        self.bytes -= charge(&key, &value);
        self.len -= 1;
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        let node = &mut self.nodes[i as usize];
        node.prev = NIL;
        node.next = old;
        match old {
            NIL => self.tail = i,
            o => self.nodes[o as usize].prev = i,
        }
        self.head = i;
    }

    /// Keys from the most to the least recently used (tests).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len);
        let mut i = self.head;
        while i != NIL {
            out.push(self.nodes[i as usize].key.to_string());
            i = self.nodes[i as usize].next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lru() -> (Lru, impl Fn(&str) -> u64) {
        let hasher = DefaultHashBuilder::default();
        (Lru::new(hasher.clone()), move |k: &str| hasher.hash_one(k))
    }

    #[test]
    fn the_charge_counts_blocks_and_overhead() {
        assert_eq!(size_of::<Node>(), 56);
        assert_eq!(ENTRY_OVERHEAD, 100);
        assert_eq!((heap_block(1), heap_block(24), heap_block(25)), (32, 32, 48));
        // The memory test's entry: a 12-byte key and a 10-byte value.
        let v = Bytes::from_static(b"0123456789");
        assert_eq!(charge("000000000001", &v), 32 + 32 + 100);
        assert_eq!(charge("", &Bytes::new()), 100);
    }

    #[test]
    fn hits_reorder_and_the_oldest_goes() {
        let (mut l, h) = lru();
        for k in ["a", "b", "c"] {
            l.insert(h(k), k, Bytes::from_static(b"v"));
        }
        assert_eq!(l.keys(), ["c", "b", "a"]);
        assert_eq!(l.get(h("a"), "a").map(|v| v.len()), Some(1));
        assert!(l.get(h("x"), "x").is_none());
        assert_eq!(l.keys(), ["a", "c", "b"]);
        assert!(l.evict_oldest());
        assert_eq!(l.keys(), ["a", "c"]);
        assert!(l.peek(h("b"), "b").is_none());
        // Replacing a key charges the new value only; a freed slot is reused.
        l.insert(h("c"), "c", Bytes::from_static(b"longer"));
        assert_eq!(l.keys(), ["c", "a"]);
        let want = charge("a", &Bytes::from_static(b"v")) + charge("c", &Bytes::from_static(b"longer"));
        assert_eq!((l.len(), l.bytes(), l.hits(), l.evictions()), (2, want, 1, 1));
        assert!(l.remove(h("a"), "a") && !l.remove(h("a"), "a"));
        assert!(l.evict_oldest() && !l.evict_oldest());
        assert_eq!((l.len(), l.bytes(), l.nodes.len()), (0, 0, 3));
    }

    proptest! {
        /// Against a model list: same keys in the same order, same bytes, after every step.
        #[test]
        fn behaves_like_a_list(ops in proptest::collection::vec((0u8..12, 0usize..20, 0u8..4), 1..300)) {
            let (mut l, h) = lru();
            let mut model: Vec<(String, usize)> = Vec::new(); // most recent first
            for (k, len, op) in ops {
                let key = format!("k{k}");
                let pos = model.iter().position(|e| e.0 == key);
                match op {
                    0 => {
                        prop_assert_eq!(l.get(h(&key), &key).is_some(), pos.is_some());
                        if let Some(p) = pos {
                            let e = model.remove(p);
                            model.insert(0, e);
                        }
                    }
                    1 => {
                        prop_assert_eq!(l.remove(h(&key), &key), pos.is_some());
                        if let Some(p) = pos {
                            model.remove(p);
                        }
                    }
                    2 => {
                        prop_assert_eq!(l.evict_oldest(), !model.is_empty());
                        model.pop();
                    }
                    _ => {
                        let v = Bytes::from(vec![k; len]);
                        if let Some(p) = pos {
                            model.remove(p);
                        }
                        model.insert(0, (key.clone(), charge(&key, &v)));
                        l.insert(h(&key), &key, v);
                    }
                }
                let keys: Vec<&str> = model.iter().map(|e| e.0.as_str()).collect();
                prop_assert_eq!(l.keys(), keys);
                prop_assert_eq!(l.bytes(), model.iter().map(|e| e.1).sum::<usize>());
                prop_assert_eq!(l.len(), model.len());
            }
        }
    }
}
