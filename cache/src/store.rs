//! The two tiers of a group's memory: the main cache (keys this node owns or loaded itself)
//! and the hot cache (popular keys owned by another node), both LRU by bytes, sharing one
//! budget of which the hot cache gets at most an eighth.
//!
//! Reads go through one lock-free index (`papaya`) of every cached key. A hit takes no lock
//! and writes nothing that another thread's hits write: it records a last-use stamp
//! ([`crate::local`]) in its thread's lane of [`Stamps`] and counts itself in its thread's
//! stripe; the index entry it reads stays unwritten.
//! Recency and budget live in shards chosen by key hash, each behind its own mutex and
//! holding the main and the hot [`Lru`] of its keys, which order entries by those stamps
//! when they evict. Each shard gets `budget / shards` bytes; a value larger than that is
//! returned but not cached (a single shard gives one exact, global LRU).

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::hash::FastState;
use crate::local::{self, default_stripes, Count, Counters};
use crate::lru::{entry_size, Lru, NodeRef};
use crate::stamps::Stamps;
use crate::stats::CacheStats;

/// Which tier a value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Main,
    Hot,
}

/// Keys up to this many bytes are stored inline in the read index.
const INLINE: usize = 22;

/// A key as the read index holds it: short keys inline, so a hit compares them without
/// following another pointer. Hashes and compares as its bytes (`Borrow<[u8]>`).
#[derive(Clone, PartialEq, Eq)]
enum IndexKey {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl IndexKey {
    fn new(key: &str) -> Self {
        let b = key.as_bytes();
        if b.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Self::Inline(b.len() as u8, buf)
        } else {
            Self::Heap(b.into())
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(len, buf) => &buf[..*len as usize],
            Self::Heap(b) => b,
        }
    }
}

impl std::hash::Hash for IndexKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// What the read index holds for a cached key: the value, its slot in the tier's
/// [`Stamps`], and its place in its shard's LRU. On a cache line of its own, which hits
/// only read.
#[repr(align(64))]
struct Entry {
    value: Bytes,
    slot: u64,
    node: NodeRef,
    tier: Tier,
}

/// The recency and budget side of a shard: only touched under its lock.
struct Shard {
    main: Lru,
    hot: Lru,
}

impl Shard {
    fn tier(&mut self, tier: Tier) -> &mut Lru {
        match tier {
            Tier::Main => &mut self.main,
            Tier::Hot => &mut self.hot,
        }
    }
}

#[repr(align(128))]
struct PaddedLock(Mutex<Shard>);

/// A cached value's owner, alone on its cache line: every hit increments the reference count
/// of the value it returns, and with the count next to other data (another value's count, an
/// index entry) two threads hitting different keys would still pass lines back and forth.
#[repr(align(64))]
struct Isolated(Bytes);

impl AsRef<[u8]> for Isolated {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Counters summed over the shards.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoreStats {
    pub(crate) gets: u64,
    pub(crate) main: CacheStats,
    pub(crate) hot: CacheStats,
}

pub(crate) struct Store {
    /// Every cached key of both tiers, read without locks. Written only under the lock of
    /// the key's shard, together with that shard's LRUs, so it holds exactly their keys.
    index: papaya::HashMap<IndexKey, Entry, FastState>,
    shards: Box<[PaddedLock]>,
    /// Last uses of the main and the hot tier's entries, by slot.
    stamps: [Stamps; 2],
    counters: Counters,
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

fn lock(m: &PaddedLock) -> MutexGuard<'_, Shard> {
    // Nothing panics while a shard is locked; should it ever, the LRUs are still consistent
    // (every mutation completes before the next), so keep serving.
    m.0.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// A store of `budget` bytes over `shards` shards (rounded up to a power of two).
    pub(crate) fn new(budget: usize, shards: usize) -> Self {
        Self::with_stripes(budget, shards, default_stripes())
    }

    /// [`new`](Self::new) with `stripes` single-writer counter stripes (plus one shared by
    /// threads numbered beyond).
    pub(crate) fn with_stripes(budget: usize, shards: usize, stripes: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        let hasher = FastState::random();
        let shards = (0..n)
            .map(|_| {
                PaddedLock(Mutex::new(Shard {
                    main: Lru::new(),
                    hot: Lru::new(),
                }))
            })
            .collect();
        Self {
            index: papaya::HashMap::builder()
                .hasher(hasher)
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            shards,
            stamps: [Stamps::new(stripes), Stamps::new(stripes)],
            counters: Counters::new(stripes),
            mask: (n - 1) as u64,
            hasher,
            shard_budget: budget / n,
        }
    }

    /// The key's shard: bits 40 and up of its hash.
    #[inline]
    fn shard_of(&self, key: &str) -> usize {
        ((self.hasher.hash_str(key) >> 40) & self.mask) as usize
    }

    /// Counts a get and returns the value if either tier holds it, marking it used.
    ///
    /// The index is read without a lock, the stamp goes to this thread's lane and the count
    /// to this thread's stripe. The one write that other threads' hits share is the value's
    /// reference count, which the returned clone increments; [`get_with`](Self::get_with)
    /// has none.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.get_with(key, Bytes::clone).ok()
    }

    /// Like [`get`](Self::get), but lends the value to `f` and returns what it returns; on a
    /// miss, hands `f` back.
    #[inline]
    pub(crate) fn get_with<R, F: FnOnce(&Bytes) -> R>(&self, key: &str, f: F) -> Result<R, F> {
        let guard = self.index.guard();
        let (me, now) = local::use_now();
        let Some(e) = self.index.get(key.as_bytes(), &guard) else {
            self.counters.count(me, Count::Miss);
            return Err(f);
        };
        // Reads the thread's stamp of the entry first, so that its cache line is on its way
        // while `f` runs, and the stamp is written after.
        let stamp = self.stamps[e.tier as usize].cell(me, e.slot);
        let r = f(&e.value);
        if let Some(c) = stamp {
            c.record(now);
        }
        let hit = match e.tier {
            Tier::Main => Count::MainHit,
            Tier::Hot => Count::HotHit,
        };
        self.counters.count(me, hit);
        Ok(r)
    }

    /// The value if either tier holds it, without counting a get or marking it used.
    pub(crate) fn peek(&self, key: &str) -> Option<Bytes> {
        let guard = self.index.guard();
        self.index
            .get(key.as_bytes(), &guard)
            .map(|e| e.value.clone())
    }

    /// Stores `value` in `tier`, then evicts until the hot tier holds at most an eighth of
    /// the shard's budget and both tiers together fit it (golang/groupcache's
    /// `populateCache`, evicting from hot while it is over an eighth of main). The value is
    /// stored as used now, after every use this thread has made of any entry.
    pub(crate) fn populate(&self, key: &str, value: Bytes, tier: Tier) {
        let budget = self.shard_budget;
        let hot_budget = budget / 8;
        let size = entry_size(key, &value);
        let shard = self.shard_of(key);
        let mut s = lock(&self.shards[shard]);
        let s = &mut *s;
        let guard = self.index.guard();
        let present = self
            .index
            .get(key.as_bytes(), &guard)
            .map(|e| (e.tier, e.node));
        let fits = match tier {
            Tier::Main => size <= budget,
            Tier::Hot => size <= hot_budget && !matches!(present, Some((Tier::Main, _))),
        };
        if !fits {
            return;
        }
        if let Some((t, node)) = present {
            s.tier(t).remove(node);
        }
        let now = local::tick();
        let node = s.tier(tier).insert(key, size, now);
        // Slots interleave the shards' LRU slots, so they stay dense.
        let slot = u64::from(node.index) * self.shards.len() as u64 + shard as u64;
        let stamps = &self.stamps[tier as usize];
        stamps.clear(slot);
        stamps.record(local::thread_number(), slot, now);
        let entry = Entry {
            value: Bytes::from_owner(Isolated(value)),
            slot,
            node,
            tier,
        };
        self.index.insert(IndexKey::new(key), entry, &guard);

        let last_use = |k: &str| self.last_use(k, &guard);
        let forget = |k: Box<str>| {
            self.index.remove(k.as_bytes(), &guard);
        };
        while s.hot.bytes() > hot_budget {
            match s.hot.evict_oldest(last_use) {
                Some(k) => forget(k),
                None => break,
            }
        }
        while s.main.bytes() + s.hot.bytes() > budget {
            let hot_first = s.hot.bytes() > s.main.bytes() / 8 || s.main.len() == 0;
            let evicted = if hot_first {
                s.hot.evict_oldest(last_use)
            } else {
                s.main.evict_oldest(last_use)
            };
            match evicted {
                Some(k) => forget(k),
                None => break,
            }
        }
    }

    /// The stamp of `key`'s last use (0 when absent), for the LRUs' eviction order.
    fn last_use(&self, key: &str, guard: &impl papaya::Guard) -> u64 {
        self.index
            .get(key.as_bytes(), guard)
            .map_or(0, |e| self.stamps[e.tier as usize].last(e.slot))
    }

    /// Counters summed over all shards.
    pub(crate) fn stats(&self) -> StoreStats {
        let mut out = StoreStats {
            gets: 0,
            main: CacheStats {
                hits: self.counters.total(Count::MainHit),
                ..CacheStats::default()
            },
            hot: CacheStats {
                hits: self.counters.total(Count::HotHit),
                ..CacheStats::default()
            },
        };
        out.gets = out.main.hits + out.hot.hits + self.counters.total(Count::Miss);
        for slot in self.shards.iter() {
            let s = lock(slot);
            add(&mut out.main, &s.main);
            add(&mut out.hot, &s.hot);
        }
        out
    }

    /// Keys of each tier from most to least recently used (tests).
    #[cfg(test)]
    fn recency(&self) -> (Vec<String>, Vec<String>) {
        let guard = self.index.guard();
        let last_use = |k: &str| self.last_use(k, &guard);
        let (mut main, mut hot) = (Vec::new(), Vec::new());
        for slot in self.shards.iter() {
            let s = lock(slot);
            main.extend(s.main.keys_by_recency(last_use));
            hot.extend(s.hot.keys_by_recency(last_use));
        }
        (main, hot)
    }
}

fn add(c: &mut CacheStats, lru: &Lru) {
    c.bytes += lru.bytes() as u64;
    c.items += lru.len() as u64;
    c.evictions += lru.evictions();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::WINDOW;
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

    /// Every key the LRUs hold is in the read index and the other way round.
    fn assert_index_matches(s: &Store) {
        let (main, hot) = s.recency();
        assert_eq!(s.index.len(), main.len() + hot.len());
        for k in main.iter().chain(&hot) {
            assert!(s.peek(k).is_some(), "{k} in an LRU but not in the index");
        }
    }

    #[test]
    fn hits_decide_what_is_evicted() {
        // 10 entries of 10 bytes fill the budget; hit the oldest across several epochs of
        // the clock, then k1 once, then add one more: the least recently *used* goes.
        let s = Store::new(100, 1);
        for i in 0..10 {
            s.populate(&format!("k{i}"), Bytes::from(vec![0; 8]), Tier::Main);
        }
        let hits = 3 * WINDOW + 1;
        for _ in 0..hits {
            assert!(s.get("k0").is_some());
        }
        assert!(s.get("k1").is_some());
        s.populate("new", Bytes::from(vec![0; 7]), Tier::Main);
        assert!(s.peek("k0").is_some() && s.peek("k1").is_some());
        assert!(s.peek("k2").is_none(), "k2 was the least recently used");
        let (main, _) = s.recency();
        assert_eq!(main[..3], ["new", "k1", "k0"]);
        assert_index_matches(&s);
        let st = s.stats();
        assert_eq!(
            (st.gets, st.main.hits, st.main.evictions),
            (hits + 1, hits + 1, 1)
        );
    }

    #[test]
    fn hits_on_other_threads_count_for_recency() {
        // Each thread records its hits in a lane of its own; eviction takes the greatest.
        let s = Store::new(100, 1);
        for i in 0..10 {
            s.populate(&format!("k{i}"), Bytes::from(vec![0; 8]), Tier::Main);
        }
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(s.get("k0").is_some()));
        });
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(s.get("k1").is_some()));
        });
        s.populate("new", Bytes::from(vec![0; 7]), Tier::Main);
        assert!(s.peek("k0").is_some() && s.peek("k1").is_some());
        assert!(s.peek("k2").is_none(), "k2 was the least recently used");
        // A slot freed by an eviction starts afresh for the entry that reuses it.
        s.populate("newer", Bytes::from(vec![0; 5]), Tier::Main);
        assert!(s.peek("k3").is_none());
        let (main, _) = s.recency();
        assert_eq!(main[..2], ["newer", "new"]);
        // Uses on different threads in one epoch have no order between them.
        let mut hit = main[2..4].to_vec();
        hit.sort();
        assert_eq!(hit, ["k0", "k1"]);
        assert_index_matches(&s);
    }

    #[test]
    fn a_hit_on_an_evicted_entry_promotes_nothing() {
        let s = Store::new(30, 1);
        s.populate("a", Bytes::from(vec![0; 9]), Tier::Main);
        s.populate("b", Bytes::from(vec![0; 9]), Tier::Main);
        assert!(s.get("a").is_some()); // a is now the most recent
        s.populate("c", Bytes::from(vec![0; 9]), Tier::Main);
        s.populate("d", Bytes::from(vec![0; 9]), Tier::Main); // b goes, then...
        assert!(s.peek("b").is_none());
        assert!(s.get("a").is_some());
        s.populate("e", Bytes::from(vec![0; 19]), Tier::Main); // ...c and d go
        assert_eq!(s.recency().0, ["e", "a"]);
        s.populate("f", Bytes::from(vec![0; 9]), Tier::Main);
        assert_eq!(s.recency().0, ["f", "e"]);
        assert_index_matches(&s);
    }

    #[test]
    fn concurrent_hits_are_all_counted_and_the_budget_holds() {
        let s = Store::with_stripes(4000, 2, 2);
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
        assert!(st.main.bytes + st.hot.bytes <= 4000, "{st:?}");
        assert_index_matches(&s);
    }

    #[test]
    fn short_and_long_keys_are_found_and_forgotten() {
        let s = Store::new(10_000, 1);
        let keys = [
            "",
            "k",
            &"x".repeat(INLINE),
            &"y".repeat(INLINE + 1),
            &"z".repeat(1024),
        ];
        for k in keys {
            s.populate(k, Bytes::from_static(b"v"), Tier::Main);
        }
        for k in keys {
            assert_eq!(s.get(k).as_deref(), Some(&b"v"[..]), "{}", k.len());
        }
        assert!(s.get(&"x".repeat(INLINE - 1)).is_none());
        // Fill the budget with other keys: all five are evicted and leave the index.
        for i in 0..20 {
            s.populate(&format!("n{i}"), Bytes::from(vec![0; 900]), Tier::Main);
        }
        for k in keys {
            assert!(s.peek(k).is_none(), "{}", k.len());
        }
        assert_index_matches(&s);
    }

    /// One entry of the LRU model: key and charged size.
    type ModelEntry = (String, usize);

    proptest! {
        /// Gets and populates on one shard against an exact LRU model: with hits stamped,
        /// the entries present after every step are exactly the model's (so eviction always
        /// took the least recently used), and the final recency order is the model's.
        #[test]
        fn stamped_lru_behaves_like_the_model(
            budget in 20usize..200,
            ops in proptest::collection::vec((0u8..16, 0usize..40, any::<bool>()), 1..300),
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
                    let size = key.len() + len;
                    s.populate(&key, Bytes::from(vec![k; len]), Tier::Main);
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
            budget in 0usize..4000,
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
            assert_index_matches(&s);
        }
    }
}
