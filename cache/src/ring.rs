//! The consistent-hash ring of golang/groupcache's `consistenthash`, point for point.
//!
//! Each peer contributes `replicas` points `hash(decimal(i) + peer)` for `i` in
//! `0..replicas`; a key belongs to the peer of the first point at or after `hash(key)`,
//! wrapping around to the first point. The hash is crc32 IEEE unless another is injected.
//! When two points collide, the peer added later owns the point, as in Go's map assignment
//! (both points are kept, so the earlier peer's point takes over if the later one leaves).
//! For the same peer list in the same order, Rust and Go nodes agree on every key's owner.

use std::collections::HashMap;
use std::sync::Arc;

/// A hash function from bytes to a position on a [`GroupcacheRing`].
pub type GroupcacheHashFn = fn(&[u8]) -> u32;

/// crc32 IEEE, golang/groupcache's default (`crc32.ChecksumIEEE`).
pub fn crc32_ieee(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// golang/groupcache's default number of points per peer.
pub const DEFAULT_REPLICAS: usize = 50;

/// golang/groupcache's consistent-hash ring over peer names (base URLs): which peer owns a
/// key. Not the balancer's `Ring`, whose points and hash differ.
#[derive(Clone)]
pub struct GroupcacheRing {
    replicas: usize,
    hash: GroupcacheHashFn,
    peers: Vec<Arc<str>>,
    /// Sorted positions and the index of the peer owning each (a position peers share
    /// appears once per peer, in peer order).
    points: Vec<(u32, u32)>,
}

impl std::fmt::Debug for GroupcacheRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupcacheRing")
            .field("replicas", &self.replicas)
            .field("peers", &self.peers)
            .field("points", &self.points.len())
            .finish()
    }
}

impl GroupcacheRing {
    /// An empty ring with `replicas` points per peer and crc32 IEEE.
    pub fn new(replicas: usize) -> Self {
        Self::with_hash(replicas, crc32_ieee)
    }

    /// An empty ring with an injected hash (tests that want exact owners).
    pub fn with_hash(replicas: usize, hash: GroupcacheHashFn) -> Self {
        Self {
            replicas,
            hash,
            peers: Vec::new(),
            points: Vec::new(),
        }
    }

    /// Adds peers, in order (golang/groupcache's `Map.Add`).
    pub fn add<I, S>(&mut self, peers: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list: Vec<Arc<str>> = self
            .peers
            .iter()
            .cloned()
            .chain(peers.into_iter().map(|p| Arc::from(p.as_ref())))
            .collect();
        *self = self.with_peers(list);
    }

    /// The ring of `peers` (in that order), equal to an empty ring after
    /// [`add`](Self::add)`(peers)`, made from this one: the points of peers in both lists
    /// are not hashed or sorted again when they keep their relative order (a sorted list
    /// after a sorted list always does), only merged with the new peers' points. O(points).
    pub fn with_peers(&self, peers: Vec<Arc<str>>) -> Self {
        let index: HashMap<&str, u32> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (&**p, i as u32))
            .collect();
        let remap: Vec<Option<u32>> = self
            .peers
            .iter()
            .map(|p| index.get(&**p).copied())
            .collect();
        // Kept peers must keep their order, since a collision goes to the later peer.
        let in_order = remap
            .iter()
            .flatten()
            .zip(remap.iter().flatten().skip(1))
            .all(|(a, b)| a < b);
        let (old, kept): (&[(u32, u32)], Vec<bool>) = if in_order {
            let mut kept = vec![false; peers.len()];
            for &i in remap.iter().flatten() {
                kept[i as usize] = true;
            }
            (&self.points, kept)
        } else {
            (&[], vec![false; peers.len()])
        };
        let mut fresh: Vec<(u32, u32)> = Vec::new();
        let mut buf = String::new();
        for (idx, peer) in peers.iter().enumerate() {
            if kept[idx] {
                continue;
            }
            for i in 0..self.replicas {
                buf.clear();
                buf.push_str(&i.to_string());
                buf.push_str(peer);
                fresh.push(((self.hash)(buf.as_bytes()), idx as u32));
            }
        }
        fresh.sort_unstable();
        let mut points = Vec::with_capacity(old.len() + fresh.len());
        let mut fresh = fresh.into_iter().peekable();
        for &(h, o) in old {
            let Some(o) = remap[o as usize] else { continue };
            while let Some(&f) = fresh.peek() {
                if f >= (h, o) {
                    break;
                }
                points.push(f);
                fresh.next();
            }
            points.push((h, o));
        }
        points.extend(fresh);
        Self {
            replicas: self.replicas,
            hash: self.hash,
            peers,
            points,
        }
    }

    /// True when no peer was added.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The peers, in the order added.
    pub fn peers(&self) -> &[Arc<str>] {
        &self.peers
    }

    /// The owner of `key` (golang/groupcache's `Map.Get`); `None` on an empty ring.
    pub fn get(&self, key: &str) -> Option<&Arc<str>> {
        if self.points.is_empty() {
            return None;
        }
        let h = (self.hash)(key.as_bytes());
        let mut i = self.points.partition_point(|&(p, _)| p < h);
        if i == self.points.len() {
            i = 0;
        }
        // Points that collide are sorted by peer order: the last one added owns them.
        let at = self.points[i].0;
        while self.points.get(i + 1).is_some_and(|p| p.0 == at) {
            i += 1;
        }
        Some(&self.peers[self.points[i].1 as usize])
    }

    /// Each peer (in the order added) with the fraction of the hash space it owns: the keys
    /// whose hash falls after the previous point and at or before one of the peer's points
    /// (the first point also owns the wrap-around). The fractions sum to 1 on a ring with
    /// peers; a peer whose every point collides with a later peer's owns 0.
    pub fn shares(&self) -> Vec<(Arc<str>, f64)> {
        const SPACE: f64 = (1u64 << 32) as f64;
        let mut owned = vec![0u64; self.peers.len()];
        let Some(&(last, _)) = self.points.last() else {
            return Vec::new();
        };
        let mut prev = last;
        for (i, &(at, _)) in self.points.iter().enumerate() {
            // Colliding points: the last of them (the peer added last) owns the position.
            if self.points.get(i + 1).is_some_and(|p| p.0 == at) {
                continue;
            }
            let arc = match u64::from(at.wrapping_sub(prev)) {
                // A single position owns the whole space.
                0 => 1 << 32,
                n => n,
            };
            owned[self.points[i].1 as usize] += arc;
            prev = at;
        }
        self.peers
            .iter()
            .zip(owned)
            .map(|(p, n)| (p.clone(), n as f64 / SPACE))
            .collect()
    }

    /// The ring positions, sorted (tests).
    #[cfg(test)]
    fn positions(&self) -> Vec<u32> {
        let mut positions: Vec<u32> = self.points.iter().map(|p| p.0).collect();
        positions.dedup();
        positions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors printed by an independent implementation over Python's zlib.crc32 that
    // mirrors Go's consistenthash line by line: cache/tests/ring_vectors.py.
    // Re-generate with `python3 cache/tests/ring_vectors.py`.
    const CRC_VECTORS: &[(&str, u32)] = &[
        ("", 0x00000000),
        ("a", 0xe8b7be43),
        ("0http://127.0.0.1:9101", 0x87b02379),
        ("49http://127.0.0.1:9103", 0x1e97be76),
        ("hello world", 0x0d4a1185),
    ];
    const FIRST_POINTS: &[u32] = &[0x00751467, 0x01971dcc, 0x02530e9a, 0x046177da, 0x05837e71];
    const OWNERS_3: &[(&str, usize)] = &[
        ("", 1),
        ("a", 1),
        ("foo", 2),
        ("bar", 2),
        ("hello world", 0),
        ("/v1/image/gif/001/icon=100x100", 0),
        ("key-0", 1),
        ("key-1", 0),
        ("key-2", 0),
        ("key-3", 0),
        ("key-4", 2),
        ("key-5", 1),
        ("key-6", 0),
        ("key-7", 0),
        ("key-8", 2),
        ("key-9", 1),
        ("user:42", 1),
        ("ünïcødé", 0),
        ("..", 0),
        ("//", 0),
    ];
    const OWNERS_5_R3: &[(&str, usize)] = &[
        ("k0", 0),
        ("k1", 0),
        ("k2", 1),
        ("k3", 4),
        ("k4", 4),
        ("k5", 0),
        ("k6", 1),
        ("k7", 0),
        ("k8", 1),
        ("k9", 2),
        ("k10", 1),
        ("k11", 3),
        ("k12", 3),
        ("k13", 3),
        ("k14", 1),
        ("k15", 3),
        ("k16", 3),
        ("k17", 3),
        ("k18", 1),
        ("k19", 3),
        ("k20", 4),
        ("k21", 1),
        ("k22", 2),
        ("k23", 1),
        ("k24", 4),
        ("k25", 4),
        ("k26", 2),
        ("k27", 1),
        ("k28", 0),
        ("k29", 1),
        ("k30", 4),
        ("k31", 1),
        ("k32", 0),
        ("k33", 1),
        ("k34", 4),
        ("k35", 1),
        ("k36", 0),
        ("k37", 1),
        ("k38", 4),
        ("k39", 1),
        ("wrap12", 4),
        ("wrap16", 4),
    ];

    const PEERS: [&str; 3] = [
        "http://127.0.0.1:9101",
        "http://127.0.0.1:9102",
        "http://127.0.0.1:9103",
    ];

    #[test]
    fn crc32_matches_zlib() {
        for &(s, want) in CRC_VECTORS {
            assert_eq!(crc32_ieee(s.as_bytes()), want, "{s:?}");
        }
    }

    #[test]
    fn owners_match_go_consistenthash_three_peers() {
        let mut ring = GroupcacheRing::new(DEFAULT_REPLICAS);
        ring.add(PEERS);
        assert_eq!(ring.positions().len(), 150);
        assert_eq!(&ring.positions()[..5], FIRST_POINTS);
        for &(key, owner) in OWNERS_3 {
            assert_eq!(&**ring.get(key).unwrap(), PEERS[owner], "key {key:?}");
        }
    }

    #[test]
    fn owners_match_go_consistenthash_five_peers_three_replicas_with_wrap() {
        let peers: Vec<String> = (1..=5).map(|i| format!("http://10.0.0.{i}:8080")).collect();
        let mut ring = GroupcacheRing::new(3);
        ring.add(&peers);
        let last = *ring.positions().last().unwrap();
        let mut wrapped = 0;
        for &(key, owner) in OWNERS_5_R3 {
            assert_eq!(&**ring.get(key).unwrap(), peers[owner], "key {key:?}");
            if crc32_ieee(key.as_bytes()) > last {
                wrapped += 1;
            }
        }
        assert_eq!(wrapped, 2, "the vectors exercise the wrap-around");
    }

    #[test]
    fn a_ring_made_from_the_last_one_equals_one_built_afresh() {
        // A tiny hash space so points collide often: ownership of shared points must follow
        // peer order whichever way the ring was made.
        fn small(b: &[u8]) -> u32 {
            crc32_ieee(b) % 97
        }
        let all: Vec<Arc<str>> = (0..40)
            .map(|i| Arc::from(format!("http://10.0.0.{i}:80")))
            .collect();
        let mut state = 12345u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ring = GroupcacheRing::with_hash(5, small);
        for round in 0..200 {
            let mut peers: Vec<Arc<str>> = all.iter().filter(|_| rnd() % 3 != 0).cloned().collect();
            if round % 7 == 0 {
                peers.reverse(); // out of order: built afresh
            }
            ring = ring.with_peers(peers.clone());
            let mut fresh = GroupcacheRing::with_hash(5, small);
            fresh.add(&peers);
            assert_eq!(ring.points, fresh.points, "round {round}");
            for k in 0..200 {
                let key = format!("k{k}");
                assert_eq!(ring.get(&key), fresh.get(&key), "round {round} key {key}");
            }
        }
    }

    #[test]
    fn injected_hash_gives_exact_owners() {
        // groupcache's own test: the hash is the decimal value of the string.
        fn atoi(b: &[u8]) -> u32 {
            std::str::from_utf8(b).unwrap().parse().unwrap()
        }
        let mut ring = GroupcacheRing::with_hash(3, atoi);
        ring.add(["6", "4", "2"]); // points 2,4,6,12,14,16,22,24,26
        for (key, owner) in [("2", "2"), ("11", "2"), ("23", "4"), ("27", "2")] {
            assert_eq!(&**ring.get(key).unwrap(), owner, "key {key}");
        }
        ring.add(["8"]); // 8, 18, 28
        assert_eq!(&**ring.get("27").unwrap(), "8");
        assert!(GroupcacheRing::new(50).get("x").is_none());
    }

    #[test]
    fn shares_are_the_arcs_each_peer_owns() {
        fn atoi(b: &[u8]) -> u32 {
            std::str::from_utf8(b).unwrap().parse().unwrap()
        }
        let mut ring = GroupcacheRing::with_hash(3, atoi);
        ring.add(["6", "4", "2"]); // points 2,4,6,12,14,16,22,24,26
        let space = (1u64 << 32) as f64;
        // "4" owns (2, 4], (12, 14] and (22, 24]; "6" owns (4, 6], (14, 16] and (24, 26];
        // "2" owns the rest: (26, 2^32) with [0, 2] (the wrap-around), (6, 12] and (16, 22].
        let want = [
            ("6", 6.0 / space),
            ("4", 6.0 / space),
            ("2", (space - 12.0) / space),
        ];
        let got = ring.shares();
        assert_eq!(got.len(), 3);
        for ((peer, share), (want_peer, want_share)) in got.iter().zip(want) {
            assert_eq!(&**peer, want_peer);
            assert!((share - want_share).abs() < 1e-15, "{peer}: {share}");
        }
        assert!(GroupcacheRing::new(50).shares().is_empty());
        let mut one = GroupcacheRing::with_hash(1, atoi);
        one.add(["7"]);
        assert_eq!(one.shares(), vec![(Arc::from("7"), 1.0)]);
    }

    #[test]
    fn shares_match_the_owners_of_sampled_keys_and_sum_to_one() {
        let mut ring = GroupcacheRing::new(DEFAULT_REPLICAS);
        ring.add(PEERS);
        let shares = ring.shares();
        let total: f64 = shares.iter().map(|s| s.1).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        let n = 100_000;
        for (peer, share) in &shares {
            let owned = (0..n)
                .filter(|i| ring.get(&format!("key-{i}")) == Some(peer))
                .count();
            let sampled = owned as f64 / n as f64;
            assert!(
                (sampled - share).abs() < 0.01,
                "{peer}: {sampled} vs {share}"
            );
        }
        // Colliding points: the later peer owns them, the shares still sum to 1.
        fn small(b: &[u8]) -> u32 {
            crc32_ieee(b) % 97
        }
        let mut ring = GroupcacheRing::with_hash(5, small);
        ring.add((0..40).map(|i| format!("http://10.0.0.{i}:80")));
        let total: f64 = ring.shares().iter().map(|s| s.1).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        let owners: std::collections::HashSet<_> = (0..10_000)
            .filter_map(|i| ring.get(&format!("k{i}")).cloned())
            .collect();
        for (peer, share) in ring.shares() {
            assert_eq!(share > 0.0, owners.contains(&peer), "{peer}: {share}");
        }
    }
}
