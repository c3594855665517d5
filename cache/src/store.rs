//! The two tiers of a group's memory: the main cache (keys this node owns or loaded itself)
//! and the hot cache (popular keys owned by another node), both LRU by bytes, sharing one
//! budget of which the hot cache gets at most an eighth.
//!
//! Keys are spread over shards by hash, as golang/groupcache spreads nothing and locks one
//! mutex per tier: each shard is a mutex over a main and a hot [`Lru`] and gets
//! `budget / shards` bytes. So the order of eviction is exact within a shard and approximate
//! across them (a key is evicted when it is the least recently used of its shard, not of the
//! group; keys spread evenly, so each shard holds about the same slice of recent keys). A
//! value larger than a shard's budget is returned but not cached; one shard gives one exact,
//! global LRU. Entries are charged what they cost in memory (see [`crate::lru`]).

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use hashbrown::DefaultHashBuilder;

use crate::lru::{charge, Lru};
use crate::stats::CacheStats;

/// Which tier a value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Main,
    Hot,
}

/// The tiers of one shard, and its gets (hits are counted by the tiers).
struct Tiers {
    main: Lru,
    hot: Lru,
    gets: u64,
}

/// A shard's lock on a line of its own, so that threads working in different shards do not
/// pass lines back and forth.
#[repr(align(128))]
struct Shard(Mutex<Tiers>);

/// Counters summed over the shards.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoreStats {
    pub(crate) gets: u64,
    pub(crate) main: CacheStats,
    pub(crate) hot: CacheStats,
}

pub(crate) struct Store {
    shards: Box<[Shard]>,
    hasher: DefaultHashBuilder,
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

impl Store {
    /// A store of `budget` bytes over `shards` shards (rounded up to a power of two).
    pub(crate) fn new(budget: usize, shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        // Seeded at random (hashbrown's default, foldhash): in-process only, and keys cannot
        // be chosen in advance to collide.
        let hasher = DefaultHashBuilder::default();
        let shards = (0..n)
            .map(|_| {
                Shard(Mutex::new(Tiers {
                    main: Lru::new(hasher.clone()),
                    hot: Lru::new(hasher.clone()),
                    gets: 0,
                }))
            })
            .collect();
        Self {
            shards,
            hasher,
            shard_budget: budget / n,
        }
    }

    /// The key's hash and its shard, locked. The shard is chosen by bits 32 and up, which the
    /// tables do not use for their positions (the low bits) nor for their tags (the top 7).
    #[inline]
    fn shard(&self, key: &str) -> (u64, MutexGuard<'_, Tiers>) {
        let hash = self.hasher.hash_one(key);
        let i = (hash >> 32) as usize & (self.shards.len() - 1);
        // Nothing panics while a shard is locked but `get_with`'s closure, which runs after
        // every change; the LRUs are consistent whatever it does, so keep serving.
        let tiers = self.shards[i].0.lock().unwrap_or_else(PoisonError::into_inner);
        (hash, tiers)
    }

    /// Counts a get and returns the value if either tier holds it, marking it used.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.get_with(key, Bytes::clone).ok()
    }

    /// Like [`get`](Self::get), but lends the value to `f`, which runs while the key's shard
    /// is locked, and returns what it returns; on a miss, hands `f` back.
    #[inline]
    pub(crate) fn get_with<R, F: FnOnce(&Bytes) -> R>(&self, key: &str, f: F) -> Result<R, F> {
        let (hash, mut guard) = self.shard(key);
        let t = &mut *guard;
        t.gets += 1;
        match t.main.get(hash, key) {
            Some(v) => Ok(f(v)),
            None => match t.hot.get(hash, key) {
                Some(v) => Ok(f(v)),
                None => Err(f),
            },
        }
    }

    /// The value if either tier holds it, without counting a get or marking it used.
    pub(crate) fn peek(&self, key: &str) -> Option<Bytes> {
        let (hash, t) = self.shard(key);
        t.main.peek(hash, key).or_else(|| t.hot.peek(hash, key)).cloned()
    }

    /// Stores `value` in `tier`, then evicts until the hot tier holds at most an eighth of
    /// the shard's budget and both tiers together fit it (golang/groupcache's
    /// `populateCache`, evicting from hot while it is over an eighth of main). A value that
    /// does not fit is not stored, and a hot value does not replace a main one.
    pub(crate) fn populate(&self, key: &str, value: Bytes, tier: Tier) {
        let budget = self.shard_budget;
        let hot_budget = budget / 8;
        let size = charge(key, &value);
        let (hash, mut guard) = self.shard(key);
        let t = &mut *guard;
        match tier {
            Tier::Main if size <= budget => {
                t.hot.remove(hash, key);
                t.main.insert(hash, key, value);
            }
            Tier::Hot if size <= hot_budget && !t.main.contains(hash, key) => {
                t.hot.insert(hash, key, value);
            }
            _ => return,
        }
        while t.hot.bytes() > hot_budget && t.hot.evict_oldest() {}
        while t.main.bytes() + t.hot.bytes() > budget {
            let hot_first = t.hot.bytes() > t.main.bytes() / 8 || t.main.len() == 0;
            let evicted = if hot_first {
                t.hot.evict_oldest()
            } else {
                t.main.evict_oldest()
            };
            if !evicted {
                break;
            }
        }
    }

    /// Counters summed over all shards.
    pub(crate) fn stats(&self) -> StoreStats {
        let mut out = StoreStats::default();
        for shard in self.shards.iter() {
            let t = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            out.gets += t.gets;
            add(&mut out.main, &t.main);
            add(&mut out.hot, &t.hot);
        }
        out
    }

    /// Keys of each tier, each shard's from the most to the least recently used (tests).
    #[cfg(test)]
    fn recency(&self) -> (Vec<String>, Vec<String>) {
        let (mut main, mut hot) = (Vec::new(), Vec::new());
        for shard in self.shards.iter() {
            let t = shard.0.lock().unwrap();
            main.extend(t.main.keys());
            hot.extend(t.hot.keys());
        }
        (main, hot)
    }
}

fn add(c: &mut CacheStats, lru: &Lru) {
    c.bytes += lru.bytes() as u64;
    c.items += lru.len() as u64;
    c.hits += lru.hits();
    c.evictions += lru.evictions();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An 8-byte value.
    fn v8() -> Bytes {
        Bytes::from_static(b"01234567")
    }

    /// The charge of an 8-byte value under a key of 1 to 24 bytes: the unit of these tests.
    fn e() -> usize {
        charge("k", &v8())
    }

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
        let e = e();
        assert_eq!(e, 164);
        let s = Store::new(48 * e, 1); // the hot tier gets 6 entries
        for i in 1..=7 {
            s.populate(&format!("h{i}"), v8(), Tier::Hot);
        }
        assert!(s.peek("h1").is_none(), "the seventh hot entry pushed out the first");
        assert!(s.peek("h7").is_some());
        s.populate("big", Bytes::from(vec![0; 6 * e]), Tier::Hot); // over 1/8: not stored
        assert!(s.peek("big").is_none());
        for i in 0..60 {
            s.populate(&format!("m{i}"), v8(), Tier::Main);
        }
        let st = s.stats();
        assert!(st.main.bytes + st.hot.bytes <= 48 * e as u64, "{st:?}");
        assert!(st.hot.bytes <= 6 * e as u64);
        assert!(s.peek("m59").is_some());
        assert!(s.peek("m0").is_none());
        assert!(s.get("m59").is_some());
        let hot = s.recency().1[0].clone();
        assert!(s.get(&hot).is_some());
        assert!(s.get("nope").is_none());
        let st = s.stats();
        assert_eq!((st.gets, st.main.hits, st.hot.hits), (3, 1, 1));
        // A hot value does not replace a main one; a main one replaces a hot one.
        s.populate("m59", Bytes::from_static(b"hot"), Tier::Hot);
        assert_eq!(s.peek("m59"), Some(v8()));
        s.populate(&hot, v8(), Tier::Main);
        let (main, hot_keys) = s.recency();
        assert!(main.contains(&hot) && !hot_keys.contains(&hot));
    }

    #[test]
    fn hits_decide_what_is_evicted() {
        // 10 entries fill the budget; hit the oldest, then k1, then add one more: the least
        // recently *used* goes.
        let s = Store::new(10 * e(), 1);
        for i in 0..10 {
            s.populate(&format!("k{i}"), v8(), Tier::Main);
        }
        for _ in 0..1000 {
            assert!(s.get("k0").is_some());
        }
        assert!(s.get("k1").is_some());
        s.populate("new", v8(), Tier::Main);
        assert!(s.peek("k0").is_some() && s.peek("k1").is_some());
        assert!(s.peek("k2").is_none(), "k2 was the least recently used");
        let (main, _) = s.recency();
        assert_eq!(main[..3], ["new", "k1", "k0"]);
        let st = s.stats();
        assert_eq!((st.gets, st.main.hits, st.main.evictions), (1001, 1001, 1));
    }

    #[test]
    fn hits_on_other_threads_count_for_recency() {
        let s = Store::new(10 * e(), 1);
        for i in 0..10 {
            s.populate(&format!("k{i}"), v8(), Tier::Main);
        }
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(s.get("k0").is_some()));
        });
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(s.get("k1").is_some()));
        });
        s.populate("new", v8(), Tier::Main);
        assert!(s.peek("k0").is_some() && s.peek("k1").is_some());
        assert!(s.peek("k2").is_none(), "k2 was the least recently used");
        s.populate("newer", v8(), Tier::Main);
        assert!(s.peek("k3").is_none());
        let (main, _) = s.recency();
        assert_eq!(main[..4], ["newer", "new", "k1", "k0"]);
    }

    #[test]
    fn a_hit_on_an_evicted_entry_promotes_nothing() {
        let s = Store::new(3 * e(), 1);
        s.populate("a", v8(), Tier::Main);
        s.populate("b", v8(), Tier::Main);
        assert!(s.get("a").is_some()); // a is now the most recent
        s.populate("c", v8(), Tier::Main);
        s.populate("d", v8(), Tier::Main); // b goes, then...
        assert!(s.peek("b").is_none());
        assert!(s.get("b").is_none());
        assert!(s.get("a").is_some());
        let big = Bytes::from(vec![0; 100]); // between one and two entries
        assert!(charge("e", &big) > e() && charge("e", &big) < 2 * e());
        s.populate("e", big, Tier::Main); // ...c and d go
        assert_eq!(s.recency().0, ["e", "a"]);
        s.populate("f", v8(), Tier::Main);
        assert_eq!(s.recency().0, ["f", "e"]);
    }

    #[test]
    fn concurrent_hits_are_all_counted_and_the_budget_holds() {
        let s = Store::new(40 * 200, 2);
        for i in 0..40 {
            s.populate(&format!("k{i}"), Bytes::from(vec![0; 40]), Tier::Main);
        }
        std::thread::scope(|scope| {
            for t in 0..3u64 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..5000u64 {
                        let k = format!("k{}", (i * 7 + t) % 60);
                        if s.get(&k).is_none() && i % 5 == 0 {
                            s.populate(&k, Bytes::from(vec![0; 40 + t as usize]), Tier::Main);
                        }
                    }
                });
            }
        });
        let st = s.stats();
        assert_eq!(st.gets, 15_000);
        assert!(st.main.bytes + st.hot.bytes <= 8000, "{st:?}");
        let (main, hot) = s.recency();
        assert_eq!((main.len() + hot.len()) as u64, st.main.items + st.hot.items);
    }

    #[test]
    fn short_and_long_keys_are_found_and_forgotten() {
        let s = Store::new(20_000, 1);
        let keys = ["", "k", &"x".repeat(22), &"y".repeat(23), &"z".repeat(1024)];
        for k in keys {
            s.populate(k, Bytes::from_static(b"v"), Tier::Main);
        }
        for k in keys {
            assert_eq!(s.get(k).as_deref(), Some(&b"v"[..]), "{}", k.len());
        }
        assert!(s.get(&"x".repeat(21)).is_none());
        // Fill the budget with other keys: all five are evicted.
        for i in 0..40 {
            s.populate(&format!("n{i}"), Bytes::from(vec![0; 900]), Tier::Main);
        }
        for k in keys {
            assert!(s.peek(k).is_none(), "{}", k.len());
        }
    }

    /// One entry of the LRU model: key and charged size.
    type ModelEntry = (String, usize);

    proptest! {
        /// Gets and populates on one shard against an exact LRU model: the entries present
        /// after every step are exactly the model's (so eviction always took the least
        /// recently used), and the final recency order is the model's.
        #[test]
        fn one_shard_is_an_exact_lru(
            budget in 100usize..2000,
            ops in proptest::collection::vec((0u8..16, 0usize..400, any::<bool>()), 1..300),
        ) {
            let s = Store::new(budget, 1);
            let mut model: Vec<ModelEntry> = Vec::new(); // most recent first
            for (k, len, is_get) in ops {
                let key = format!("k{k}");
                if is_get {
                    let got = s.get(&key).is_some();
                    let pos = model.iter().position(|e| e.0 == key);
                    prop_assert_eq!(got, pos.is_some());
                    if let Some(p) = pos {
                        let e = model.remove(p);
                        model.insert(0, e);
                    }
                } else {
                    let value = Bytes::from(vec![k; len]);
                    let size = charge(&key, &value);
                    s.populate(&key, value, Tier::Main);
                    if size <= budget {
                        model.retain(|e| e.0 != key);
                        model.insert(0, (key, size));
                        while model.iter().map(|e| e.1).sum::<usize>() > budget {
                            model.pop();
                        }
                    }
                }
                for i in 0..16u8 {
                    let key = format!("k{i}");
                    prop_assert_eq!(s.peek(&key).is_some(), model.iter().any(|e| e.0 == key));
                }
            }
            let keys: Vec<String> = model.iter().map(|e| e.0.clone()).collect();
            prop_assert_eq!(s.recency().0, keys);
        }

        /// Whatever the sequence of populates, the two tiers together never exceed the budget
        /// and the hot tier never exceeds an eighth of it.
        #[test]
        fn budget_and_hot_eighth_hold(
            budget in 0usize..8000,
            shards in 1usize..5,
            ops in proptest::collection::vec((0u16..64, 0usize..600, 0u8..3), 1..200),
        ) {
            let s = Store::new(budget, shards);
            let n = shards.next_power_of_two();
            for (k, len, op) in ops {
                let key = format!("key{k}");
                let tier = match op {
                    0 => Tier::Main,
                    1 => Tier::Hot,
                    _ => {
                        s.get(&key); // hits in between populates
                        continue;
                    }
                };
                s.populate(&key, Bytes::from(vec![1; len]), tier);
                let st = s.stats();
                prop_assert!(st.main.bytes + st.hot.bytes <= budget as u64);
                prop_assert!(st.hot.bytes <= (budget / n / 8 * n) as u64);
            }
        }
    }
}
