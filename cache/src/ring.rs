//! The consistent-hash ring of golang/groupcache's `consistenthash`, point for point.
//!
//! Each peer contributes `replicas` points `hash(decimal(i) + peer)` for `i` in
//! `0..replicas`; a key belongs to the peer of the first point at or after `hash(key)`,
//! wrapping around to the first point. The hash is crc32 IEEE unless another is injected.
//! When two points collide, the peer added later owns the point, as in Go's map assignment.
//! For the same peer list in the same order, Rust and Go nodes agree on every key's owner.

use std::collections::BTreeMap;
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
    /// Sorted positions and the index of the peer owning each.
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
        let mut owners: BTreeMap<u32, u32> = self.points.iter().copied().collect();
        for peer in peers {
            let peer = peer.as_ref();
            let idx = self.peers.len() as u32;
            self.peers.push(Arc::from(peer));
            let mut buf = String::with_capacity(peer.len() + 4);
            for i in 0..self.replicas {
                buf.clear();
                buf.push_str(&i.to_string());
                buf.push_str(peer);
                // A later peer wins a colliding point, as `m.hashMap[hash] = key` does.
                owners.insert((self.hash)(buf.as_bytes()), idx);
            }
        }
        self.points = owners.into_iter().collect();
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
        let i = self.points.partition_point(|&(p, _)| p < h);
        let (_, owner) = self.points[if i == self.points.len() { 0 } else { i }];
        Some(&self.peers[owner as usize])
    }

    /// The ring positions, sorted (tests).
    #[cfg(test)]
    fn positions(&self) -> Vec<u32> {
        self.points.iter().map(|p| p.0).collect()
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
}
