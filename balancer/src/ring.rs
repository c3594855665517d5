//! The balancer's consistent-hash ring (see [`Ring`]).

use std::fmt;
use std::sync::{Arc, Mutex};

/// A hash function from bytes to a position on the balancer's [`Ring`] (64 bits; the cache's
/// ring has its own 32-bit hash type).
pub type HashFn = fn(&[u8]) -> u64;

/// Virtual nodes per instance unless configured otherwise.
pub const DEFAULT_VNODES: usize = 160;

/// The most virtual nodes per node a ring accepts; larger counts are clamped.
pub const MAX_VNODES: usize = 65_536;

/// The default ring hash: XXH3-64 with seed 0.
#[inline]
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The balancer's consistent-hash ring over nodes `0..len` (instance ids), each with the same
/// number of virtual nodes, 64-bit positions, and an optional bounded-load mode;
/// [`ConsistentHash`](crate::ConsistentHash) picks with it.
///
/// It is not the cache's ring. svckit has two, for two jobs: this one spreads requests over
/// the instances of a service among svckit clients (XXH3-64, `{id}#{i}` points, 160 per
/// instance, a bucket index for speed); the cache's `GroupcacheRing` decides which peer owns
/// a key and must agree with golang/groupcache nodes (crc32 IEEE of `{i}{peer_url}`, 32-bit
/// positions, 50 per peer). They share no code on purpose: each is fixed by a different
/// contract.
///
/// # The hash
///
/// The default hash is **XXH3-64 with seed 0** ([`xxh3`]), a fixed, specified function
/// (<https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md>) whose output does not
/// depend on the process, the platform or the version of this crate, so every client maps a
/// key to the same instance. It is also fast for short keys (a few ns for 32 bytes).
///
/// Virtual node `i` (0-based) of node `name` sits at `hash("{name}#{i}")`; a key sits at
/// `hash(key)` and belongs to the first virtual node at or after it, wrapping around. At a
/// position two nodes share, the node whose name sorts first owns it (the other's point stays,
/// behind it, and takes over if the first leaves), so ownership does not depend on the order
/// nodes were given in. The hash is injectable ([`Ring::with_hash`]) for exact tests.
///
/// A ring is immutable; [`Ring::with_changes`] makes the next one from it in one merge
/// (O(points), no hashing or sorting of the points that stay).
///
/// The points are sorted ring positions with their owners. A lookup reads a bucket index (the
/// top bits of the key's hash give the range of points in that slice of the ring, about four
/// points per bucket), then searches that short range: no allocation, no lock, about two cache
/// lines touched.
pub struct Ring {
    /// Sorted ring positions (a position two nodes share appears twice, the node whose
    /// name sorts first first).
    hashes: Vec<u64>,
    /// `owners[i]` owns `hashes[i]`.
    owners: Vec<u32>,
    /// `starts[j]` = first point whose position is at or above `j << shift`; one extra entry
    /// at the end holds `hashes.len()`.
    starts: Vec<u32>,
    shift: u32,
    names: Vec<Arc<str>>,
    vnodes: usize,
    hash: HashFn,
    /// Where a dropped ring of this lineage leaves its arrays for the next rebuild.
    spare: Arc<Mutex<Option<Storage>>>,
}

/// A ring's arrays, kept for reuse: the memory of a ring of 800,000 points is about 10 MB,
/// and on a VM faulting in that much fresh memory costs more than the merge itself (about
/// 5 ms against 3 ms at 5,000 × 160). A rebuild reuses the arrays of the ring before the
/// current one, which the last call using it has dropped by then.
#[derive(Default)]
struct Storage {
    hashes: Vec<u64>,
    owners: Vec<u32>,
    starts: Vec<u32>,
}

impl Clone for Ring {
    fn clone(&self) -> Self {
        Self {
            hashes: self.hashes.clone(),
            owners: self.owners.clone(),
            starts: self.starts.clone(),
            shift: self.shift,
            names: self.names.clone(),
            vnodes: self.vnodes,
            hash: self.hash,
            spare: self.spare.clone(),
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let storage = Storage {
            hashes: std::mem::take(&mut self.hashes),
            owners: std::mem::take(&mut self.owners),
            starts: std::mem::take(&mut self.starts),
        };
        if storage.hashes.capacity() > 0 {
            if let Ok(mut spare) = self.spare.try_lock() {
                *spare = Some(storage);
            }
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.names.len())
            .field("vnodes", &self.vnodes)
            .field("points", &self.hashes.len())
            .finish()
    }
}

impl Ring {
    /// A ring over `nodes` (their names, e.g. instance ids) with `vnodes` virtual nodes each
    /// (clamped to `1..=MAX_VNODES`), hashed with [`xxh3`]. Lookups return indices into `nodes`.
    pub fn new<S: AsRef<str>>(nodes: &[S], vnodes: usize) -> Self {
        Self::with_hash(nodes, vnodes, xxh3)
    }

    /// Like [`new`](Self::new) with another hash function.
    pub fn with_hash<S: AsRef<str>>(nodes: &[S], vnodes: usize, hash: HashFn) -> Self {
        Self::from_names(
            nodes.iter().map(|n| Arc::from(n.as_ref())).collect(),
            vnodes,
            hash,
        )
    }

    /// A ring over shared names (no copy of the strings).
    pub(crate) fn from_names(names: Vec<Arc<str>>, vnodes: usize, hash: HashFn) -> Self {
        let empty = Self {
            hashes: Vec::new(),
            owners: Vec::new(),
            starts: Vec::new(),
            shift: 0,
            names: Vec::new(),
            vnodes: vnodes.clamp(1, MAX_VNODES),
            hash,
            spare: Arc::default(),
        };
        empty.with_changes(|_| false, names)
    }

    /// The ring over the nodes of this one that `keep` (by index) plus `added`, in that
    /// order: equal to [`with_hash`](Self::with_hash) over that list, made without hashing or
    /// sorting the kept nodes' points again (one merge, O(points)).
    pub fn with_changes(
        &self,
        keep: impl Fn(usize) -> bool,
        added: impl IntoIterator<Item = Arc<str>>,
    ) -> Self {
        let mut names = Vec::with_capacity(self.names.len());
        let remap: Vec<u32> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if keep(i) && names.len() < u32::MAX as usize {
                    names.push(name.clone());
                    (names.len() - 1) as u32
                } else {
                    u32::MAX
                }
            })
            .collect();
        let mut fresh: Vec<(u64, u32)> = Vec::new();
        let mut buf = String::new();
        for name in added {
            let Ok(idx) = u32::try_from(names.len()) else {
                break;
            };
            for i in 0..self.vnodes {
                buf.clear();
                buf.push_str(&name);
                buf.push('#');
                buf.push_str(&i.to_string());
                fresh.push(((self.hash)(buf.as_bytes()), idx));
            }
            names.push(name);
        }
        let before = |a: (u64, u32), b: (u64, u32)| {
            a.0 < b.0 || (a.0 == b.0 && names[a.1 as usize] < names[b.1 as usize])
        };
        fresh.sort_unstable_by(|&a, &b| {
            a.0.cmp(&b.0)
                .then_with(|| names[a.1 as usize].cmp(&names[b.1 as usize]))
        });
        // Merge the kept points (already sorted) with the new ones.
        let total = self.hashes.len() + fresh.len();
        let Storage {
            mut hashes,
            mut owners,
            mut starts,
        } = self
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        hashes.clear();
        owners.clear();
        starts.clear();
        hashes.reserve(total);
        owners.reserve(total);
        let mut fresh = fresh.into_iter().peekable();
        for (&h, &o) in self.hashes.iter().zip(&self.owners) {
            let o = remap[o as usize];
            if o == u32::MAX {
                continue;
            }
            while let Some(&f) = fresh.peek() {
                if !before(f, (h, o)) {
                    break;
                }
                hashes.push(f.0);
                owners.push(f.1);
                fresh.next();
            }
            hashes.push(h);
            owners.push(o);
        }
        for (h, o) in fresh {
            hashes.push(h);
            owners.push(o);
        }
        // About four points per bucket, at most 2^20 buckets.
        let bits = (usize::BITS - hashes.len().leading_zeros())
            .saturating_sub(2)
            .clamp(1, 20);
        let shift = 64 - bits;
        starts.reserve((1 << bits) + 1);
        let mut i = 0usize;
        for bucket in 0..(1u64 << bits) {
            let floor = bucket << shift;
            while i < hashes.len() && hashes[i] < floor {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(hashes.len() as u32);
        Self {
            hashes,
            owners,
            starts,
            shift,
            names,
            vnodes: self.vnodes,
            hash: self.hash,
            spare: self.spare.clone(),
        }
    }

    /// The name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The shared name of node `i`.
    pub(crate) fn shared_name(&self, i: usize) -> &Arc<str> {
        &self.names[i]
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the ring has no node.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Virtual nodes per node.
    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// The ring position of `key`.
    #[inline]
    pub fn hash_key(&self, key: &[u8]) -> u64 {
        (self.hash)(key)
    }

    /// Index of the first point at or after `hash`, wrapping to 0.
    #[inline]
    fn position(&self, hash: u64) -> usize {
        let bucket = (hash >> self.shift) as usize;
        let (lo, hi) = (
            self.starts[bucket] as usize,
            self.starts[bucket + 1] as usize,
        );
        // Every point of later buckets is above `hash`, so the answer is in lo..=hi.
        let i = lo + self.hashes[lo..hi].partition_point(|&p| p < hash);
        if i == self.hashes.len() {
            0
        } else {
            i
        }
    }

    /// The node owning `key`, `None` on an empty ring.
    #[inline]
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        self.owner_of_hash(self.hash_key(key))
    }

    /// The node owning ring position `hash`.
    #[inline]
    pub fn owner_of_hash(&self, hash: u64) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        Some(self.owners[self.position(hash)] as usize)
    }

    /// The virtual-node owners from `hash` clockwise around the whole ring (nodes repeat).
    /// The first item is [`owner_of_hash`](Self::owner_of_hash).
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = if self.hashes.is_empty() {
            0
        } else {
            self.position(hash)
        };
        let (tail, head) = self.owners.split_at(start);
        head.iter().chain(tail).map(|&o| o as usize)
    }

    /// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016): the
    /// first node clockwise from `hash` whose load is below
    /// `⌈(1 + epsilon) · (total + 1) / len⌉`, where `total` is the sum of `load` over all nodes
    /// (the load the new request joins). Such a node always exists; `None` on an empty ring.
    pub fn owner_bounded<L: Fn(usize) -> usize>(
        &self,
        hash: u64,
        epsilon: f64,
        total: usize,
        load: L,
    ) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        let avg = (total as f64 + 1.0) / self.names.len() as f64;
        let cap = ((1.0 + epsilon.max(0.0)) * avg).ceil().max(1.0) as usize;
        let mut walk = self.walk(hash);
        let first = walk.next()?;
        if load(first) < cap {
            return Some(first);
        }
        Some(walk.find(|&n| load(n) < cap).unwrap_or(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node{i:03}")).collect()
    }

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[4..8].copy_from_slice(b"key_");
        k
    }

    #[test]
    fn xxh3_is_the_documented_function() {
        // Reference values of XXH3_64bits(input, len) with seed 0 from the xxHash project.
        assert_eq!(xxh3(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(xxh3(b"a"), 0xE6C6_32B6_1E96_4E1F);
    }

    #[test]
    fn peak_to_mean_load_with_160_vnodes_and_100_nodes() {
        let nodes = names(100);
        let ring = Ring::new(&nodes, DEFAULT_VNODES);
        let keys = 200_000;
        let mut load = vec![0usize; 100];
        for k in 0..keys {
            load[ring.owner(&key(k)).unwrap()] += 1;
        }
        let mean = keys as f64 / 100.0;
        let peak = *load.iter().max().unwrap() as f64;
        assert!(peak / mean <= 1.25, "peak/mean = {}", peak / mean);
    }

    #[test]
    fn adding_one_node_to_ten_moves_only_its_share() {
        let old = names(10);
        let mut new = old.clone();
        new.push("node_new".into());
        let (a, b) = (Ring::new(&old, 160), Ring::new(&new, 160));
        let keys = 100_000u32;
        let mut moved = 0;
        for k in 0..keys {
            let (o, n) = (a.owner(&key(k)).unwrap(), b.owner(&key(k)).unwrap());
            if old[o] != new[n] {
                // A key that moves can only move to the new node.
                assert_eq!(new[n], "node_new", "key {k} moved between two old nodes");
                moved += 1;
            }
        }
        let bound = 1.2 / 11.0 * f64::from(keys);
        assert!(f64::from(moved) <= bound, "moved {moved} > {bound}");
        assert!(moved > 0);
    }

    #[test]
    fn ownership_does_not_depend_on_insertion_order() {
        let nodes = names(20);
        let mut rev = nodes.clone();
        rev.reverse();
        let mut shuffled = nodes.clone();
        shuffled.rotate_left(7);
        shuffled.swap(1, 12);
        let rings = [
            Ring::new(&nodes, 50),
            Ring::new(&rev, 50),
            Ring::new(&shuffled, 50),
        ];
        let lists = [&nodes, &rev, &shuffled];
        for k in 0..20_000 {
            let owners: Vec<&str> = rings
                .iter()
                .zip(lists)
                .map(|(r, l)| l[r.owner(&key(k)).unwrap()].as_str())
                .collect();
            assert!(owners.iter().all(|o| *o == owners[0]), "{owners:?}");
        }
    }

    #[test]
    fn bucket_index_agrees_with_a_plain_binary_search() {
        for (n, vnodes) in [(1, 1), (3, 7), (10, 160), (100, 50)] {
            let ring = Ring::new(&names(n), vnodes);
            let probes = (0..5_000u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .chain(
                    ring.hashes
                        .iter()
                        .flat_map(|&h| [h, h.wrapping_add(1), h.wrapping_sub(1)]),
                )
                .chain([0, u64::MAX]);
            for h in probes {
                let i = ring.hashes.partition_point(|&p| p < h);
                let want = ring.owners[if i == ring.hashes.len() { 0 } else { i }] as usize;
                assert_eq!(ring.owner_of_hash(h), Some(want), "n {n} hash {h:#x}");
            }
        }
    }

    #[test]
    fn injected_hash_gives_exact_owners() {
        // Positions: a#0 = 10, b#0 = 20; key hash = first byte.
        fn h(bytes: &[u8]) -> u64 {
            match bytes {
                b"a#0" => 10,
                b"b#0" => 20,
                other => u64::from(other[0]),
            }
        }
        let ring = Ring::with_hash(&["a", "b"], 1, h);
        assert_eq!(ring.owner(&[5]), Some(0));
        assert_eq!(ring.owner(&[10]), Some(0));
        assert_eq!(ring.owner(&[11]), Some(1));
        assert_eq!(ring.owner(&[21]), Some(0)); // wraps around
        assert_eq!(ring.walk(15).collect::<Vec<_>>(), [1, 0]);
        assert_eq!(Ring::new::<&str>(&[], 10).owner(b"x"), None);
    }

    #[test]
    fn bounded_load_caps_every_node() {
        let nodes = names(10);
        let ring = Ring::new(&nodes, 160);
        let mut load: HashMap<usize, usize> = HashMap::new();
        let eps = 0.25;
        // Every request hashes to the same place: without the bound one node would take all.
        for total in 0..1_000usize {
            let n = ring
                .owner_bounded(42, eps, total, |n| *load.get(&n).unwrap_or(&0))
                .unwrap();
            *load.entry(n).or_default() += 1;
            let cap = ((1.0 + eps) * (total as f64 + 1.0) / 10.0).ceil() as usize;
            assert!(load.values().all(|&l| l <= cap), "total {total}: {load:?}");
        }
    }
}
