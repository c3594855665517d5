//! A least-recently-used map bounded by bytes (golang/groupcache's `lru`).
//!
//! Entries live in a slab (`Vec<Node>`) linked into a recency list by index, so a hit is one
//! map probe and a few index writes: no allocation. An entry's size is its key's length plus
//! its value's length, as in groupcache.

use std::collections::HashMap;

use bytes::Bytes;

use crate::hash::FastState;

const NIL: u32 = u32::MAX;

struct Node {
    key: Box<str>,
    value: Bytes,
    prev: u32,
    next: u32,
}

/// A byte-bounded LRU map from string keys to immutable bytes.
pub(crate) struct Lru {
    map: HashMap<Box<str>, u32, FastState>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    bytes: usize,
    max_bytes: usize,
    evictions: u64,
}

impl std::fmt::Debug for Lru {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru")
            .field("items", &self.map.len())
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
    /// own budget through [`remove_oldest`](Self::remove_oldest)).
    pub(crate) fn new(max_bytes: usize, hasher: FastState) -> Self {
        Self {
            map: HashMap::with_hasher(hasher),
            nodes: Vec::new(),
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
        self.map.len()
    }

    /// Entries evicted so far to stay within a budget.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The value of `key`, marking it most recently used.
    #[inline]
    pub(crate) fn get(&mut self, key: &str) -> Option<&Bytes> {
        let idx = *self.map.get(key)?;
        self.touch(idx);
        Some(&self.nodes[idx as usize].value)
    }

    /// The value of `key` without changing its recency.
    pub(crate) fn peek(&self, key: &str) -> Option<&Bytes> {
        let idx = *self.map.get(key)?;
        Some(&self.nodes[idx as usize].value)
    }

    /// Adds or replaces `key`, marks it most recently used and evicts least recently used
    /// entries until the budget holds. An entry larger than the whole budget is not stored
    /// (and nothing is evicted for it); returns whether it was stored.
    pub(crate) fn insert(&mut self, key: &str, value: Bytes) -> bool {
        let size = entry_size(key, &value);
        if size > self.max_bytes {
            return false;
        }
        if let Some(&idx) = self.map.get(key) {
            let node = &mut self.nodes[idx as usize];
            self.bytes = self.bytes - node.value.len() + value.len();
            node.value = value;
            self.touch(idx);
        } else {
            let node = Node {
                key: key.into(),
                value,
                prev: NIL,
                next: NIL,
            };
            let idx = match self.free.pop() {
                Some(idx) => {
                    self.nodes[idx as usize] = node;
                    idx
                }
                None => {
                    self.nodes.push(node);
                    (self.nodes.len() - 1) as u32
                }
            };
            self.map.insert(key.into(), idx);
            self.push_front(idx);
            self.bytes += size;
        }
        while self.bytes > self.max_bytes {
            if self.remove_oldest().is_none() {
                break;
            }
            self.evictions += 1;
        }
        true
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

    /// Evicts the least recently used entry to make room; returns false when empty.
    pub(crate) fn evict_oldest(&mut self) -> bool {
        let removed = self.remove_oldest().is_some();
        if removed {
            self.evictions += 1;
        }
        removed
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Bytes> {
        let idx = *self.map.get(key)?;
        Some(self.remove_idx(idx).1)
    }

    /// Keys from most to least recently used (tests and debugging).
    #[cfg(test)]
    pub(crate) fn keys_by_recency(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.map.len());
        let mut idx = self.head;
        while idx != NIL {
            let n = &self.nodes[idx as usize];
            out.push(n.key.to_string());
            idx = n.next;
        }
        out
    }

    fn remove_idx(&mut self, idx: u32) -> (Box<str>, Bytes) {
        self.unlink(idx);
        let node = &mut self.nodes[idx as usize];
        let key = std::mem::take(&mut node.key);
        let value = std::mem::take(&mut node.value);
        self.map.remove(&*key);
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
        let (prev, next) = {
            let n = &self.nodes[idx as usize];
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    #[inline]
    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[idx as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old == NIL {
            self.tail = idx;
        } else {
            self.nodes[old as usize].prev = idx;
        }
        self.head = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lru(max: usize) -> Lru {
        Lru::new(max, FastState::random())
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
        assert_eq!(l.bytes(), 25);
        assert_eq!(l.evictions(), 1);
        assert!(!l.insert("big", Bytes::from(vec![0; 40])));
        assert_eq!(l.len(), 3);
        assert_eq!(l.remove("a"), Some(Bytes::from_static(b"123456789")));
        assert_eq!(l.keys_by_recency(), ["d", "c"]);
        assert_eq!(l.bytes(), 15);
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
