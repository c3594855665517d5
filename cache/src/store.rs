//! The two tiers of a group's memory: the main cache (keys this node owns or loaded itself)
//! and the hot cache (popular keys owned by another node), both LRU by bytes, sharing one
//! budget of which the hot cache gets at most an eighth.
//!
//! Both tiers are split into shards chosen by key hash, each behind its own mutex, so gets on
//! different threads rarely meet on a lock. A shard holds the main and the hot tier of its
//! keys, so a hit takes exactly one lock. Each shard gets `budget / shards` bytes; a value
//! larger than that is returned but not cached (a single shard gives one exact, global LRU).

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::hash::FastState;
use crate::lru::{entry_size, Lru};
use crate::stats::CacheStats;

/// Which tier a value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Main,
    Hot,
}

/// Laid out so that what a main-cache hit writes (the lock, the counters, the main LRU's
/// index and list ends) sits in the first 128 bytes: a hit on a shard last used by another
/// core moves as few cache lines as possible.
#[repr(C)]
struct Shard {
    gets: u64,
    hits_main: u64,
    hits_hot: u64,
    main: Lru,
    hot: Lru,
}

/// One shard on its own cache lines, so two threads on two shards do not share a line.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// Counters summed over the shards.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoreStats {
    pub(crate) gets: u64,
    pub(crate) main: CacheStats,
    pub(crate) hot: CacheStats,
}

pub(crate) struct Store {
    shards: Box<[Padded]>,
    mask: u64,
    hasher: FastState,
    shard_budget: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards.len())
            .field("shard_budget", &self.shard_budget)
            .finish()
    }
}

/// The default number of shards for a budget: one per MiB, a power of two, 1 to 16.
pub(crate) fn default_shards(budget: usize) -> usize {
    let mib = budget >> 20;
    if mib <= 1 {
        1
    } else {
        (1usize << (usize::BITS - 1 - mib.leading_zeros())).min(16)
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Nothing panics while a shard is locked; should it ever, the LRU is still consistent
    // (every mutation completes before the next), so keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// A store of `budget` bytes over `shards` shards (rounded up to a power of two).
    pub(crate) fn new(budget: usize, shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        let hasher = FastState::random();
        let shards = (0..n)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    gets: 0,
                    hits_main: 0,
                    hits_hot: 0,
                    main: Lru::new(usize::MAX),
                    hot: Lru::new(usize::MAX),
                }))
            })
            .collect();
        Self {
            shards,
            mask: (n - 1) as u64,
            hasher,
            shard_budget: budget / n,
        }
    }

    /// The key's hash (computed once per operation) and its shard. The low 32 bits place
    /// the key in the shard's index; bits 40 and up pick the shard.
    #[inline]
    fn shard(&self, key: &str) -> (u64, &Mutex<Shard>) {
        let h = self.hasher.hash_str(key);
        (h, &self.shards[((h >> 40) & self.mask) as usize].0)
    }

    /// Counts a get and returns the value if either tier holds it (main first).
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        let (h, shard) = self.shard(key);
        let mut s = lock(shard);
        s.gets += 1;
        if let Some(v) = s.main.get_hashed(h, key) {
            let v = v.clone();
            s.hits_main += 1;
            return Some(v);
        }
        if let Some(v) = s.hot.get_hashed(h, key) {
            let v = v.clone();
            s.hits_hot += 1;
            return Some(v);
        }
        None
    }

    /// The value if either tier holds it, without counting a get.
    pub(crate) fn peek(&self, key: &str) -> Option<Bytes> {
        let (h, shard) = self.shard(key);
        let s = lock(shard);
        s.main
            .peek_hashed(h, key)
            .or_else(|| s.hot.peek_hashed(h, key))
            .cloned()
    }

    /// Stores `value` in `tier`, then evicts until the hot tier holds at most an eighth of
    /// the shard's budget and both tiers together fit it (golang/groupcache's
    /// `populateCache`, evicting from hot while it is over an eighth of main).
    pub(crate) fn populate(&self, key: &str, value: Bytes, tier: Tier) {
        let budget = self.shard_budget;
        let hot_budget = budget / 8;
        let size = entry_size(key, &value);
        let (h, shard) = self.shard(key);
        let mut s = lock(shard);
        let s = &mut *s;
        match tier {
            Tier::Main => {
                if size > budget {
                    return;
                }
                s.hot.remove_hashed(h, key);
                s.main.insert_hashed(h, key, value);
            }
            Tier::Hot => {
                if size > hot_budget || s.main.peek_hashed(h, key).is_some() {
                    return;
                }
                s.hot.insert_hashed(h, key, value);
            }
        }
        while s.hot.bytes() > hot_budget && s.hot.evict_oldest() {}
        while s.main.bytes() + s.hot.bytes() > budget {
            let hot_first = s.hot.bytes() > s.main.bytes() / 8 || s.main.len() == 0;
            let evicted = if hot_first {
                s.hot.evict_oldest()
            } else {
                s.main.evict_oldest()
            };
            if !evicted {
                break;
            }
        }
    }

    /// Counters summed over all shards.
    pub(crate) fn stats(&self) -> StoreStats {
        let mut out = StoreStats::default();
        for p in self.shards.iter() {
            let s = lock(&p.0);
            out.gets += s.gets;
            add(&mut out.main, &s.main, s.hits_main);
            add(&mut out.hot, &s.hot, s.hits_hot);
        }
        out
    }
}

fn add(c: &mut CacheStats, lru: &Lru, hits: u64) {
    c.bytes += lru.bytes() as u64;
    c.items += lru.len() as u64;
    c.hits += hits;
    c.evictions += lru.evictions();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shard_count_follows_budget() {
        assert_eq!(default_shards(0), 1);
        assert_eq!(default_shards(1 << 20), 1);
        assert_eq!(default_shards(3 << 20), 2);
        assert_eq!(default_shards(8 << 20), 8);
        assert_eq!(default_shards(1 << 30), 16);
    }

    #[test]
    fn main_and_hot_share_the_budget() {
        let s = Store::new(800, 1);
        s.populate("h1", Bytes::from(vec![0; 40]), Tier::Hot); // 42 <= 100
        s.populate("h2", Bytes::from(vec![0; 40]), Tier::Hot); // 84
        s.populate("h3", Bytes::from(vec![0; 40]), Tier::Hot); // 126 > 100: h1 goes
        assert!(s.peek("h1").is_none());
        assert!(s.peek("h3").is_some());
        s.populate("big", Bytes::from(vec![0; 200]), Tier::Hot); // over 1/8: not stored
        assert!(s.peek("big").is_none());
        for i in 0..10 {
            s.populate(&format!("m{i}"), Bytes::from(vec![0; 98]), Tier::Main);
        }
        let st = s.stats();
        assert!(st.main.bytes + st.hot.bytes <= 800, "{st:?}");
        assert!(st.hot.bytes <= 100);
        assert!(s.peek("m9").is_some());
        assert!(s.peek("m0").is_none());
        assert_eq!(s.get("m9").map(|v| v.len()), Some(98));
        assert_eq!(s.get("h3").map(|v| v.len()), Some(40));
        assert!(s.get("nope").is_none());
        let st = s.stats();
        assert_eq!((st.gets, st.main.hits, st.hot.hits), (3, 1, 1));
    }

    proptest! {
        /// Whatever the sequence of populates, the two tiers together never exceed the budget
        /// and the hot tier never exceeds an eighth of it.
        #[test]
        fn budget_and_hot_eighth_hold(
            budget in 0usize..4000,
            shards in 1usize..5,
            ops in proptest::collection::vec((0u16..64, 0usize..600, any::<bool>()), 1..200),
        ) {
            let s = Store::new(budget, shards);
            let n = shards.next_power_of_two();
            for (k, len, hot) in ops {
                let tier = if hot { Tier::Hot } else { Tier::Main };
                s.populate(&format!("key{k}"), Bytes::from(vec![1; len]), tier);
                let st = s.stats();
                prop_assert!(st.main.bytes + st.hot.bytes <= budget as u64);
                prop_assert!(st.hot.bytes <= (budget / n / 8 * n) as u64);
            }
        }
    }
}
