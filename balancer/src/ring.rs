//! The balancer's consistent-hash ring (see [`Ring`]).

use std::fmt;
use std::sync::Arc;

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

/// The balancer's consistent-hash ring over nodes (instance ids), each with the same number
/// of virtual nodes, 64-bit positions, and an optional bounded-load mode;
/// [`ConsistentHash`](crate::ConsistentHash) picks with it.
///
/// It is not the cache's ring. svckit has two, for two jobs: this one spreads requests over
/// the instances of a service among svckit clients (XXH3-64, `{id}#{i}` points, 160 per
/// instance); the cache's `GroupcacheRing` decides which peer owns a key and must agree with
/// golang/groupcache nodes (crc32 IEEE of `{i}{peer_url}`, 32-bit positions, 50 per peer).
/// They share no code on purpose: each is fixed by a different contract.
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
/// # Layout: chunks shared between rings
///
/// The points are cut by the top bits of their position into chunks of about 128 (a
/// power-of-two number of chunks), each a sorted array shared by reference. A lookup reads the
/// chunk the key's top bits name and searches it: no allocation, no lock, a few cache lines.
/// [`Ring::with_changes`] makes the next ring by copying only the chunks that gain or lose a
/// point (a node's 160 points touch at most 160 of them) and the array of chunk pointers:
/// one instance joining a ring of 5,000 × 160 points costs tens of microseconds, not a pass
/// over 800,000 points. Node numbers are stable: a node keeps its index while it stays, and
/// a new node takes the lowest free index.
pub struct Ring {
    /// `2^bits` chunks; chunk `c` holds the points whose position's top `bits` bits are `c`.
    chunks: Arc<[Arc<Chunk>]>,
    bits: u32,
    /// Node names by index; `None` for a free index.
    names: Vec<Option<Arc<str>>>,
    /// Node index by name (persistent: updated in O(log n) per change).
    index: imbl::HashMap<Arc<str>, u32>,
    /// Nodes present.
    live: usize,
    /// Points in all chunks.
    points: usize,
    vnodes: usize,
    hash: HashFn,
}

/// Sorted points of one slice of the ring (positions, and at equal positions node names,
/// ascending), their owners, and an index of 32 sub-slices: `starts[j]` = the first point of
/// sub-slice `j` (the next 5 bits of the position), so a lookup searches about 4 points.
struct Chunk {
    hashes: Vec<u64>,
    owners: Vec<u32>,
    starts: [u16; SUBS + 1],
}

/// Sub-slices per chunk.
const SUBS: usize = 32;

impl Chunk {
    fn new(hashes: Vec<u64>, owners: Vec<u32>, bits: u32) -> Self {
        let mut starts = [0u16; SUBS + 1];
        let mut i = 0usize;
        for (j, start) in starts.iter_mut().enumerate().take(SUBS) {
            while i < hashes.len() && sub_of(hashes[i], bits) < j {
                i += 1;
            }
            *start = i.min(u16::MAX as usize) as u16;
        }
        starts[SUBS] = hashes.len().min(u16::MAX as usize) as u16;
        Self {
            hashes,
            owners,
            starts,
        }
    }

    /// The first point at or after `hash` in this chunk, if any.
    #[inline]
    fn find(&self, hash: u64, bits: u32) -> Option<usize> {
        let j = sub_of(hash, bits);
        let (lo, hi) = (self.starts[j] as usize, self.starts[j + 1] as usize);
        // A chunk too large for the u16 index (never at ~128 points) searches all of it.
        let hi = if self.hashes.len() > u16::MAX as usize {
            self.hashes.len()
        } else {
            hi
        };
        // About four points: a linear scan beats a binary search.
        let i = lo
            + self.hashes[lo..hi]
                .iter()
                .take_while(|&&p| p < hash)
                .count();
        (i < self.hashes.len()).then_some(i)
    }
}

/// About this many points per chunk.
const CHUNK_POINTS: usize = 128;

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.live)
            .field("vnodes", &self.vnodes)
            .field("points", &self.points)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl Clone for Ring {
    /// Cheap: the chunks are shared.
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            bits: self.bits,
            names: self.names.clone(),
            index: self.index.clone(),
            live: self.live,
            points: self.points,
            vnodes: self.vnodes,
            hash: self.hash,
        }
    }
}

/// The number of chunk bits for `points` points.
fn bits_for(points: usize) -> u32 {
    let chunks = (points / CHUNK_POINTS).max(1);
    (usize::BITS - 1 - chunks.leading_zeros()).min(20)
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

    /// A ring over shared names (no copy of the strings); indices are positions in `names`.
    pub(crate) fn from_names(names: Vec<Arc<str>>, vnodes: usize, hash: HashFn) -> Self {
        let vnodes = vnodes.clamp(1, MAX_VNODES);
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(names.len() * vnodes);
        for (n, name) in names.iter().enumerate() {
            let Ok(idx) = u32::try_from(n) else { break };
            points_of(hash, name, vnodes, |h| points.push((h, idx)));
        }
        let names: Vec<Option<Arc<str>>> = names.into_iter().map(Some).collect();
        points.sort_unstable_by(|a, b| by_position(&names, *a, *b));
        Self::chunked(points, names, vnodes, hash)
    }

    /// Cuts sorted points into chunks.
    fn chunked(
        points: Vec<(u64, u32)>,
        names: Vec<Option<Arc<str>>>,
        vnodes: usize,
        hash: HashFn,
    ) -> Self {
        let bits = bits_for(points.len());
        let mut parts: Vec<(Vec<u64>, Vec<u32>)> = vec![Default::default(); 1usize << bits];
        for &(h, o) in &points {
            let part = &mut parts[chunk_of(h, bits)];
            part.0.push(h);
            part.1.push(o);
        }
        Self {
            chunks: parts
                .into_iter()
                .map(|(hashes, owners)| Arc::new(Chunk::new(hashes, owners, bits)))
                .collect(),
            bits,
            index: names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| Some((n.clone()?, i as u32)))
                .collect(),
            live: names.iter().flatten().count(),
            points: points.len(),
            names,
            vnodes,
            hash,
        }
    }

    /// The ring without the nodes that `keep` refuses (by index) and with `added` nodes:
    /// owners are those of [`with_hash`](Self::with_hash) over the remaining and added names.
    /// Kept nodes keep their index; added ones take the lowest free indices, then new ones.
    ///
    /// Only the chunks that lose or gain a point are copied, and the array of chunk
    /// pointers: O(changed nodes × virtual nodes × points per chunk + chunks). When the
    /// ring has grown or shrunk fourfold since its chunks were cut, they are cut again
    /// (O(points), amortized over the changes that led there).
    pub fn with_changes(
        &self,
        keep: impl Fn(usize) -> bool,
        added: impl IntoIterator<Item = Arc<str>>,
    ) -> Self {
        self.with_changes_at(keep, added).0
    }

    /// [`with_changes`](Self::with_changes), and the index each added node took.
    pub(crate) fn with_changes_at(
        &self,
        keep: impl Fn(usize) -> bool,
        added: impl IntoIterator<Item = Arc<str>>,
    ) -> (Self, Vec<usize>) {
        let mut names = self.names.clone();
        let mut index = self.index.clone();
        let mut indices = Vec::new();
        let mut edits: Vec<(u64, u32, bool)> = Vec::new(); // (position, node, added?)
        let mut removed = 0usize;
        for (i, slot) in names.iter_mut().enumerate() {
            if slot.is_some() && !keep(i) {
                let name = slot.take().expect("checked above");
                index.remove(&name);
                points_of(self.hash, &name, self.vnodes, |h| {
                    edits.push((h, i as u32, false))
                });
                removed += 1;
            }
        }
        let mut free = names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_none())
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
            .into_iter();
        let mut joined = 0usize;
        for name in added {
            let idx = match free.next() {
                Some(i) => i,
                None if names.len() < u32::MAX as usize => {
                    names.push(None);
                    names.len() - 1
                }
                None => break,
            };
            points_of(self.hash, &name, self.vnodes, |h| {
                edits.push((h, idx as u32, true))
            });
            index.insert(name.clone(), idx as u32);
            names[idx] = Some(name);
            indices.push(idx);
            joined += 1;
        }
        let live = self.live - removed + joined;
        let points = self.points - removed * self.vnodes + joined * self.vnodes;
        let bits = bits_for(points);
        if bits.abs_diff(self.bits) >= 2 {
            // Cut again: every point, in order.
            let mut gone = vec![false; names.len()];
            for e in edits.iter().filter(|e| !e.2) {
                gone[e.1 as usize] = true;
            }
            let mut all: Vec<(u64, u32)> = Vec::with_capacity(points);
            for chunk in self.chunks.iter() {
                for (&h, &o) in chunk.hashes.iter().zip(&chunk.owners) {
                    if !gone[o as usize] {
                        all.push((h, o));
                    }
                }
            }
            all.extend(edits.iter().filter(|e| e.2).map(|e| (e.0, e.1)));
            all.sort_unstable_by(|a, b| by_position(&names, *a, *b));
            return (Self::chunked(all, names, self.vnodes, self.hash), indices);
        }
        edits.sort_unstable_by_key(|e| chunk_of(e.0, self.bits));
        let mut chunks: Vec<Arc<Chunk>> = self.chunks.to_vec();
        for group in edits.chunk_by(|a, b| chunk_of(a.0, self.bits) == chunk_of(b.0, self.bits)) {
            let c = chunk_of(group[0].0, self.bits);
            let old = &chunks[c];
            let gone = |o: u32| group.iter().any(|e| !e.2 && e.1 == o);
            let mut next: Vec<(u64, u32)> = old
                .hashes
                .iter()
                .zip(&old.owners)
                .filter(|(_, &o)| !gone(o))
                .map(|(&h, &o)| (h, o))
                .collect();
            for e in group.iter().filter(|e| e.2) {
                let point = (e.0, e.1);
                let at = next.partition_point(|&p| by_position(&names, p, point).is_lt());
                next.insert(at, point);
            }
            chunks[c] = Arc::new(Chunk::new(
                next.iter().map(|p| p.0).collect(),
                next.iter().map(|p| p.1).collect(),
                self.bits,
            ));
        }
        let ring = Self {
            chunks: chunks.into(),
            bits: self.bits,
            names,
            index,
            live,
            points,
            vnodes: self.vnodes,
            hash: self.hash,
        };
        (ring, indices)
    }

    /// The name of node `i` (empty for an index no node holds).
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).and_then(Option::as_deref).unwrap_or("")
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&i| i as usize)
    }

    /// The shared name of node `i`, if a node holds that index.
    pub(crate) fn shared_name(&self, i: usize) -> Option<&Arc<str>> {
        self.names.get(i).and_then(Option::as_ref)
    }

    /// The number of node indices (present nodes and free indices): indices are below it.
    pub fn indices(&self) -> usize {
        self.names.len()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when the ring has no node.
    pub fn is_empty(&self) -> bool {
        self.live == 0
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

    /// The first point at or after `hash` (chunk, index in it), wrapping around; `None` on
    /// an empty ring.
    #[inline]
    fn position(&self, hash: u64) -> Option<(usize, usize)> {
        if self.points == 0 {
            return None;
        }
        let c = chunk_of(hash, self.bits);
        if let Some(i) = self.chunks[c].find(hash, self.bits) {
            return Some((c, i));
        }
        // Past this chunk's last point: the first point of the next non-empty chunk.
        let n = self.chunks.len();
        (1..=n)
            .map(|d| (c + d) % n)
            .find(|&c| !self.chunks[c].hashes.is_empty())
            .map(|c| (c, 0))
    }

    /// The node owning `key`, `None` on an empty ring.
    #[inline]
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        self.owner_of_hash(self.hash_key(key))
    }

    /// The node owning ring position `hash`.
    #[inline]
    pub fn owner_of_hash(&self, hash: u64) -> Option<usize> {
        let (c, i) = self.position(hash)?;
        Some(self.chunks[c].owners[i] as usize)
    }

    /// The virtual-node owners from `hash` clockwise around the whole ring (nodes repeat).
    /// The first item is [`owner_of_hash`](Self::owner_of_hash).
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let (c, i) = self.position(hash).unwrap_or((0, 0));
        let n = self.chunks.len();
        let points = self.points;
        (0..n)
            .flat_map(move |d| {
                let chunk = &self.chunks[(c + d) % n];
                let from = if d == 0 { i } else { 0 };
                chunk.owners[from.min(chunk.owners.len())..].iter()
            })
            .chain(self.chunks[c].owners[..i.min(self.chunks[c].owners.len())].iter())
            .take(points)
            .map(|&o| o as usize)
    }
    /// Every point in ring order, with its owner (tests).
    #[cfg(test)]
    fn all_points(&self) -> Vec<(u64, usize)> {
        self.chunks
            .iter()
            .flat_map(|c| {
                c.hashes
                    .iter()
                    .zip(&c.owners)
                    .map(|(&h, &o)| (h, o as usize))
            })
            .collect()
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
        if self.points == 0 {
            return None;
        }
        let avg = (total as f64 + 1.0) / self.live as f64;
        let cap = ((1.0 + epsilon.max(0.0)) * avg).ceil().max(1.0) as usize;
        let mut walk = self.walk(hash);
        let first = walk.next()?;
        if load(first) < cap {
            return Some(first);
        }
        Some(walk.find(|&n| load(n) < cap).unwrap_or(first))
    }
}

/// The chunk of position `hash` in a ring of `2^bits` chunks.
#[inline]
fn chunk_of(hash: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as usize
    }
}

/// The sub-slice of position `hash` within its chunk (the 5 bits after the chunk's).
#[inline]
fn sub_of(hash: u64, bits: u32) -> usize {
    ((hash << bits) >> (64 - 5)) as usize
}

/// Calls `f` with the position of each virtual node of `name`.
fn points_of(hash: HashFn, name: &str, vnodes: usize, mut f: impl FnMut(u64)) {
    let mut buf = String::with_capacity(name.len() + 6);
    for i in 0..vnodes {
        buf.clear();
        buf.push_str(name);
        buf.push('#');
        buf.push_str(&i.to_string());
        f(hash(buf.as_bytes()));
    }
}

/// Ring order: by position, then by owner name.
fn by_position(names: &[Option<Arc<str>>], a: (u64, u32), b: (u64, u32)) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then_with(|| names[a.1 as usize].cmp(&names[b.1 as usize]))
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
    fn chunked_lookup_agrees_with_a_plain_binary_search() {
        for (n, vnodes) in [(1, 1), (3, 7), (10, 160), (100, 50), (500, 40)] {
            let ring = Ring::new(&names(n), vnodes);
            let all = ring.all_points();
            assert!(
                all.windows(2).all(|w| w[0].0 <= w[1].0),
                "sorted across chunks"
            );
            let probes = (0..5_000u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .chain(
                    all.iter()
                        .flat_map(|&(h, _)| [h, h.wrapping_add(1), h.wrapping_sub(1)]),
                )
                .chain([0, u64::MAX]);
            for (k, h) in probes.enumerate() {
                let i = all.partition_point(|&(p, _)| p < h);
                let at = if i == all.len() { 0 } else { i };
                assert_eq!(ring.owner_of_hash(h), Some(all[at].1), "n {n} hash {h:#x}");
                if k % 997 == 0 {
                    // The whole walk: every point once, clockwise from the owner, wrapping.
                    let walk: Vec<usize> = ring.walk(h).collect();
                    let want: Vec<usize> =
                        all[at..].iter().chain(&all[..at]).map(|p| p.1).collect();
                    assert_eq!(walk, want, "n {n} hash {h:#x}");
                }
            }
        }
    }

    #[test]
    fn a_changed_ring_copies_only_the_chunks_it_touches_and_agrees_with_a_fresh_one() {
        let nodes = names(1_000);
        let ring = Ring::new(&nodes, 160);
        let next = ring.with_changes(|i| i != 500, [Arc::from("joined")]);
        let shared = ring
            .chunks
            .iter()
            .zip(next.chunks.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(
            shared >= ring.chunks.len() - 2 * 160,
            "{shared} of {} chunks shared",
            ring.chunks.len()
        );
        // The index of the node that left is reused by the one that joined.
        assert_eq!(next.name(500), "joined");
        let mut list: Vec<String> = nodes.clone();
        list.remove(500);
        list.push("joined".into());
        let fresh = Ring::new(&list, 160);
        for k in 0..20_000 {
            let a = next.name(next.owner(&key(k)).unwrap());
            let b = fresh.name(fresh.owner(&key(k)).unwrap());
            assert_eq!(a, b, "key {k}");
        }
        // Growing fourfold cuts the chunks again, with the same owners.
        let more: Vec<Arc<str>> = (0..3_000).map(|i| Arc::from(format!("more{i}"))).collect();
        let grown = next.with_changes(|_| true, more.clone());
        assert!(grown.chunks.len() > next.chunks.len());
        let mut list2 = list.clone();
        list2.extend(more.iter().map(|m| m.to_string()));
        let fresh2 = Ring::new(&list2, 160);
        for k in 0..20_000 {
            let a = grown.name(grown.owner(&key(k)).unwrap());
            let b = fresh2.name(fresh2.owner(&key(k)).unwrap());
            assert_eq!(a, b, "key {k}");
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
