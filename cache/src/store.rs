//! The two tiers of a group's memory: the main cache (keys this node owns or loaded itself)
//! and the hot cache (popular keys owned by another node), both LRU by bytes, sharing one
//! budget of which the hot cache gets at most an eighth.
//!
//! Reads go through one lock-free index (`papaya`) of every cached key. A hit takes no lock:
//! it counts itself in a stripe of counters picked by its thread's id and stores a last-use
//! stamp made from that count ([`Store::stamp`]) in the key's entry, so two threads hitting
//! different keys write no common line. Recency and budget live in shards chosen by key hash, each behind its own mutex and
//! holding the main and the hot [`Lru`] of its keys, which order entries by those stamps when
//! they evict (golang/groupcache locks one mutex per tier on every hit instead; measured in
//! `BENCHMARKS.md`, a lock per hit, sharded or not, does not let two threads scale).
//!
//! Each shard gets `budget / shards` bytes: eviction is exact least-recently-used order
//! within a shard, and approximate across them (keys spread evenly by hash, so each shard
//! holds about the same slice of recent keys). A value larger than a shard's budget is
//! returned but not cached; one shard gives one exact, global LRU.
//!
//! # Expiry, and writes racing loads
//!
//! An entry may carry an expiry time ([`crate::clock`]); a read past it is a miss, and the
//! entry stays until a load of the key replaces it or eviction reclaims it. Entries that never
//! expire cost the hit path one compare, no clock read.
//!
//! A load reads the origin (or a peer) *before* it populates, so a write of the same key in
//! between ([`Store::set`], [`Store::remove`], [`Store::clear`]) must win over it. Each shard
//! counts its writes; a load takes the count when it starts ([`Store::ticket`]) and its
//! populate is dropped if the key was written since ([`Store::populate`]). See the comment in
//! [`Store::populate`] for the race.
//!
//! # What an entry is charged
//!
//! The budget counts what an entry costs in memory ([`charge`]), not only its key and value:
//! the heap blocks of its key, its value and the value's shared `Bytes` header, its entry in
//! the index (one heap block and its share of the table), its item in the LRU's heap, and a
//! measured allocator slack: 206 bytes besides the key's and the value's blocks, 286 bytes for
//! a 12-byte key and a 10-byte value (golang/groupcache counts key and value only, and costs
//! about 330 bytes besides).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use foldhash::fast::RandomState;

use crate::clock::{self, Expire};
use crate::getter::Loaded;
use crate::lru::{Current, Lru, QUEUED_BYTES};
use crate::stats::CacheStats;

/// Which tier a value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Main,
    Hot,
}

/// What the index holds for a cached key.
struct Entry {
    value: Bytes,
    /// The stamp of the last hit, or of the insertion ([`Store::stamp`]).
    last_use: AtomicU64,
    /// Which insertion of the key this is (the LRU's heap items name it), shifted left by
    /// one, the low bit set in the hot tier (one word where two would grow the entry).
    id_tier: u64,
    /// When it expires, in Unix nanoseconds; [`clock::NEVER`] for never.
    expire: Expire,
}

impl Entry {
    fn id(&self) -> u64 {
        self.id_tier >> 1
    }

    #[inline]
    fn tier(&self) -> Tier {
        if self.id_tier & 1 == 1 {
            Tier::Hot
        } else {
            Tier::Main
        }
    }

    #[inline]
    fn is_expired(&self) -> bool {
        self.expire != clock::NEVER && clock::expired(self.expire, clock::now_nanos())
    }

    fn loaded(&self) -> Loaded {
        Loaded::from_parts(self.value.clone(), self.expire)
    }
}

/// Which load a populate comes from: its shard's write count when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// Keys written recently per shard, kept to tell a load whether its key was written since it
/// started; past this many the shard forgets them and refuses older loads' populates.
const RECENT_WRITES: usize = 256;

/// The heap block glibc's malloc gives a request of `n` bytes: `n` plus an 8-byte header,
/// rounded up to 16 bytes, at least 32; nothing for 0 bytes, which `Arc`, `Box` and `Bytes`
/// do not allocate.
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

/// The index's bytes per entry besides the entry's own block: a table slot (a pointer and a
/// metadata byte) at papaya's lowest load (it grows at about 85 % full to twice the slots, so
/// at least 42 % full): 9 / 0.42 = 21.4.
const TABLE_BYTES: usize = 22;

/// What an entry costs besides its key's and its value's bytes: the index entry's block
/// (papaya boxes each key and value), its table share, the LRU's heap item, the key's `Arc`
/// counts and the value's shared `Bytes` header (`bytes`' `Shared`, 24 bytes, allocated when
/// a value made from a `Vec` is first cloned).
pub(crate) const fn overhead() -> usize {
    heap_block(size_of::<Arc<str>>() + size_of::<Entry>())
        + TABLE_BYTES
        + QUEUED_BYTES
        + heap_block(24)
        + MEASURED_SLACK
}

/// What the process grows per entry beyond the blocks counted above, measured by
/// `cache/benches/memory.rs` (3 M entries through a 64 MiB group: 286 bytes per entry held
/// against 262 counted): the allocator's free lists and fragmentation after the churn of
/// evictions, and papaya's retired entries and tables awaiting reclamation.
const MEASURED_SLACK: usize = 24;

/// The bytes an entry of `key` and `value` is charged against the budget: [`overhead`] plus
/// the heap blocks of the key (with its `Arc` counts) and of the value.
///
/// The value's block is taken from its length: a `Bytes` does not tell its capacity, so a
/// value kept in a larger buffer (a `Vec` with spare capacity, a slice of a bigger `Bytes`)
/// costs more than it is charged.
pub(crate) fn charge(key: &str, value: &Bytes) -> usize {
    heap_block(16 + key.len()) + heap_block(value.len()) + overhead()
}

/// The LRUs of one shard; `next_id` numbers its insertions; `writes` counts its writes
/// (sets, removes, clears), `written` tells the count of each key's last write, and loads
/// that started before `floor` may have missed a write it forgot.
#[derive(Default)]
struct Tiers {
    main: Lru,
    hot: Lru,
    next_id: u64,
    writes: u64,
    written: HashMap<Arc<str>, u64>,
    floor: u64,
}

impl Tiers {
    fn tier(&mut self, tier: Tier) -> &mut Lru {
        match tier {
            Tier::Main => &mut self.main,
            Tier::Hot => &mut self.hot,
        }
    }

    /// Counts a write of `key`.
    fn wrote(&mut self, key: &Arc<str>) {
        self.writes += 1;
        if self.written.len() >= RECENT_WRITES {
            self.written.clear();
            self.floor = self.writes;
        }
        self.written.insert(key.clone(), self.writes);
    }

    /// Whether a load with `ticket` may still populate `key`: no write of it since.
    fn current(&self, key: &str, ticket: Ticket) -> bool {
        ticket.0 >= self.floor && self.written.get(key).is_none_or(|&w| w <= ticket.0)
    }
}

/// A shard's lock, on lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Tiers>);

/// Hit and miss counts of the threads whose id falls on this stripe, on lines of their own.
#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    /// Hits of both tiers; also the sequence number of a hit in its stamp.
    hits: AtomicU64,
    hot_hits: AtomicU64,
    misses: AtomicU64,
}

/// Stripes of counters: threads share one only when their ids collide.
const STRIPES: usize = 64;

/// A stripe moves the stamp clock's epoch once in this many hits.
const WINDOW: u64 = 256;
/// The low bits of a stamp: 1 + a hit's number in its stripe modulo 2^24 (a multiple of
/// [`WINDOW`]); 0 for an insertion.
const SEQ_BITS: u32 = 25;
const SEQ_MASK: u64 = (1 << 24) - 1;

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
    index: papaya::HashMap<Arc<str>, Entry, RandomState>,
    shards: Box<[Shard]>,
    stripes: Box<[Stripe]>,
    /// Seeded at random: in-process only (shards, stripes, the index), and keys cannot be
    /// chosen in advance to collide.
    hasher: RandomState,
    /// The coarse part of every stamp (see [`stamp`](Self::stamp)).
    epoch: AtomicU64,
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
        let hasher = RandomState::default();
        Self {
            index: papaya::HashMap::builder()
                .hasher(hasher)
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            shards: (0..n).map(|_| Shard::default()).collect(),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher,
            epoch: AtomicU64::new(0),
            shard_budget: budget / n,
        }
    }

    /// The stamp of a hit that is its stripe's `n`th: the clock's epoch, then `n`.
    ///
    /// A thread's stamps strictly increase: its stripe's count does, and the epoch never goes
    /// back. A stripe's hit number 0 mod [`WINDOW`] moves the epoch on first, so the hits of a
    /// stripe in one epoch lie within one window and the count's low bits never wrap within
    /// an epoch. An insertion moves the epoch too and takes sequence 0, below every hit's
    /// ([`insertion_stamp`](Self::insertion_stamp)). Hits of different threads within one
    /// epoch have no order between them: they were concurrent.
    #[inline]
    fn stamp(&self, n: u64) -> u64 {
        if n % WINDOW == 0 {
            self.epoch.fetch_add(1, Relaxed);
        }
        (self.epoch.load(Relaxed) << SEQ_BITS) | ((n & SEQ_MASK) + 1)
    }

    /// The stamp of an insertion: a new epoch, so the entry is newer than every use before.
    fn insertion_stamp(&self) -> u64 {
        (self.epoch.fetch_add(1, Relaxed) + 1) << SEQ_BITS
    }

    fn stripe(&self) -> &Stripe {
        let i = self.hasher.hash_one(std::thread::current().id()) as usize;
        &self.stripes[i % STRIPES]
    }

    /// The key's shard, locked: chosen by bits 32 and up of its hash.
    fn lock(&self, key: &str) -> MutexGuard<'_, Tiers> {
        let i = (self.hasher.hash_one(key) >> 32) as usize & (self.shards.len() - 1);
        // Nothing panics while a shard is locked; should it ever, the LRUs are still
        // consistent (every mutation completes before the next), so keep serving.
        self.shards[i]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a get and returns the value if either tier holds it unexpired, marking it used.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.get_with(key, Bytes::clone).ok()
    }

    /// Like [`get`](Self::get), but lends the value to `f` and returns what it returns; on a
    /// miss, hands `f` back.
    #[inline]
    pub(crate) fn get_with<R, F: FnOnce(&Bytes) -> R>(&self, key: &str, f: F) -> Result<R, F> {
        let guard = self.index.guard();
        match self.hit(key, &guard) {
            Some(e) => Ok(f(&e.value)),
            None => Err(f),
        }
    }

    /// Like [`get`](Self::get), with the value's expiry (what a peer is sent).
    pub(crate) fn get_loaded(&self, key: &str) -> Option<Loaded> {
        let guard = self.index.guard();
        self.hit(key, &guard).map(Entry::loaded)
    }

    /// Whether `key` was set or removed lately (among its shard's last writes).
    pub(crate) fn recently_written(&self, key: &str) -> bool {
        self.lock(key).written.contains_key(key)
    }

    /// The entry of `key` if either tier holds it unexpired, marked used; counts a hit or a
    /// miss. An expired entry is a miss and stays until replaced or evicted.
    #[inline]
    fn hit<'g>(&self, key: &str, guard: &'g impl papaya::Guard) -> Option<&'g Entry> {
        let stripe = self.stripe();
        let Some(e) = self.index.get(key, guard).filter(|e| !e.is_expired()) else {
            stripe.misses.fetch_add(1, Relaxed);
            return None;
        };
        let stamp = self.stamp(stripe.hits.fetch_add(1, Relaxed));
        // Raised only, and only written when it rises: a thread's own stamps always do, so
        // one thread's order of uses is kept, while two threads hitting one key at the same
        // time (stamps of one epoch, no order between them) leave it to the one with the
        // greater stamp, and the other only reads the entry's line. A race between the two
        // can store the lesser stamp of two concurrent uses, which have no order anyway.
        if e.last_use.load(Relaxed) < stamp {
            e.last_use.store(stamp, Relaxed);
        }
        if e.tier() == Tier::Hot {
            stripe.hot_hits.fetch_add(1, Relaxed);
        }
        Some(e)
    }

    /// The value and its expiry if either tier holds it unexpired, without counting a get or
    /// marking it used.
    pub(crate) fn peek(&self, key: &str) -> Option<Loaded> {
        let guard = self.index.guard();
        self.index
            .get(key, &guard)
            .filter(|e| !e.is_expired())
            .map(Entry::loaded)
    }

    /// What a load of `key` starting now takes, to populate with.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        Ticket(self.lock(key).writes)
    }

    /// Stores a loaded value in `tier` unless `key` was written since the load took
    /// `ticket`; returns whether it stored it. Then evicts until the hot tier holds at most
    /// an eighth of the shard's budget and both tiers together fit it (golang/groupcache's
    /// `populateCache`). A value that does not fit or has expired is not stored, and a hot
    /// value does not replace a main one.
    pub(crate) fn populate(&self, key: &str, loaded: &Loaded, tier: Tier, ticket: Ticket) -> bool {
        let mut shard = self.lock(key);
        // The race: a load of k takes its ticket and asks the origin (or a peer), which
        // answers v1; meanwhile set(k, v2) stores v2, or remove(k) drops k on every node.
        // Stored now, v1 would overwrite the newer v2 (or bring back the removed value) until
        // it is evicted. Every write counts itself under this lock before it changes the
        // entry, so a write after the ticket is seen here and the older value is dropped.
        if !shard.current(key, ticket) {
            return false;
        }
        self.put_locked(&mut shard, key, loaded, tier, false)
    }

    /// Writes `key`: stores `loaded` in `tier`, replacing whatever either tier held (a value
    /// that does not fit or has expired only removes the old one). Loads of the key in
    /// flight will not overwrite it.
    /// Every unexpired entry of the main tier: the keys this node owned, for a node that
    /// hands them over as it leaves.
    pub(crate) fn main_entries(&self) -> Vec<(Arc<str>, Loaded)> {
        let guard = self.index.guard();
        self.index
            .iter(&guard)
            .filter(|(_, e)| e.tier() == Tier::Main && !e.is_expired())
            .map(|(k, e)| (k.clone(), e.loaded()))
            .collect()
    }

    /// What one entry of `key` and `value` would be charged, and the most a main-cache entry
    /// may be: a larger one is never stored.
    pub(crate) fn entry_size(&self, key: &str, value: &Bytes) -> (usize, usize) {
        (charge(key, value), self.shard_budget)
    }

    pub(crate) fn set(&self, key: &str, loaded: &Loaded, tier: Tier) {
        let mut shard = self.lock(key);
        shard.wrote(&Arc::from(key));
        if !self.put_locked(&mut shard, key, loaded, tier, true) {
            self.remove_locked(&mut shard, key);
        }
    }

    /// Writes `key` away: removes it from either tier. Loads of the key in flight will not
    /// bring it back.
    pub(crate) fn remove(&self, key: &str) {
        let mut shard = self.lock(key);
        shard.wrote(&Arc::from(key));
        self.remove_locked(&mut shard, key);
    }

    /// Removes every entry; loads in flight will not populate (a flush).
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut t = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            t.writes += 1;
            t.floor = t.writes;
            t.written.clear();
            let guard = self.index.guard();
            let keys = t.main.clear().into_iter().chain(t.hot.clear());
            for k in keys {
                self.index.remove(&*k, &guard);
            }
        }
    }

    fn remove_locked(&self, t: &mut Tiers, key: &str) {
        let guard = self.index.guard();
        let Some(e) = self.index.remove(key, &guard) else {
            return;
        };
        let (tier, size) = (e.tier(), charge(key, &e.value));
        let current = |k: &str, id: u64| -> Current {
            let e = self.index.get(k, &guard).filter(|e| e.id() == id)?;
            Some((e.last_use.load(Relaxed), charge(k, &e.value)))
        };
        t.tier(tier).removed(size, current);
    }

    /// Stores `loaded` under the shard's lock and evicts; a `write` replaces a main entry
    /// with a hot one, a load does not. Returns whether it stored it.
    fn put_locked(
        &self,
        t: &mut Tiers,
        key: &str,
        loaded: &Loaded,
        tier: Tier,
        write: bool,
    ) -> bool {
        let budget = self.shard_budget;
        let hot_budget = budget / 8;
        let value = loaded.value();
        let size = charge(key, value);
        let guard = self.index.guard();
        let current = |k: &str, id: u64| -> Current {
            let e = self.index.get(k, &guard).filter(|e| e.id() == id)?;
            Some((e.last_use.load(Relaxed), charge(k, &e.value)))
        };
        let present = self
            .index
            .get(key, &guard)
            .map(|e| (e.tier(), charge(key, &e.value)));
        let fits = !loaded.is_expired()
            && match tier {
                Tier::Main => size <= budget,
                Tier::Hot => {
                    size <= hot_budget && (write || !matches!(present, Some((Tier::Main, _))))
                }
            };
        if !fits {
            return false;
        }
        let id = t.next_id;
        t.next_id += 1;
        let key: Arc<str> = Arc::from(key);
        let now = self.insertion_stamp();
        let entry = Entry {
            value: value.clone(),
            last_use: AtomicU64::new(now),
            id_tier: id << 1 | u64::from(tier == Tier::Hot),
            expire: loaded.expire_nanos(),
        };
        self.index.insert(key.clone(), entry, &guard);
        if let Some((old_tier, old_size)) = present {
            t.tier(old_tier).removed(old_size, current);
        }
        t.tier(tier).insert(key, id, now, size);

        let forget = |k: Arc<str>| {
            self.index.remove(&*k, &guard);
        };
        while t.hot.bytes() > hot_budget {
            match t.hot.evict_oldest(current) {
                Some(k) => forget(k),
                None => break,
            }
        }
        while t.main.bytes() + t.hot.bytes() > budget {
            let hot_first = t.hot.bytes() > t.main.bytes() / 8 || t.main.len() == 0;
            let evicted = if hot_first {
                t.hot.evict_oldest(current)
            } else {
                t.main.evict_oldest(current)
            };
            match evicted {
                Some(k) => forget(k),
                None => break,
            }
        }
        true
    }

    /// Counters summed over all shards and stripes.
    pub(crate) fn stats(&self) -> StoreStats {
        let mut out = StoreStats::default();
        for s in self.stripes.iter() {
            let (hits, hot) = (s.hits.load(Relaxed), s.hot_hits.load(Relaxed));
            out.main.hits += hits.saturating_sub(hot);
            out.hot.hits += hot;
            out.gets += s.misses.load(Relaxed);
        }
        out.gets += out.main.hits + out.hot.hits;
        for shard in self.shards.iter() {
            let t = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            add(&mut out.main, &t.main);
            add(&mut out.hot, &t.hot);
        }
        out
    }

    /// Keys of each tier, each shard's from the most to the least recently used (tests).
    #[cfg(test)]
    fn recency(&self) -> (Vec<String>, Vec<String>) {
        let guard = self.index.guard();
        let current = |k: &str, id: u64| -> Current {
            let e = self.index.get(k, &guard).filter(|e| e.id() == id)?;
            Some((e.last_use.load(Relaxed), 0))
        };
        let (mut main, mut hot) = (Vec::new(), Vec::new());
        for shard in self.shards.iter() {
            let t = shard.0.lock().unwrap();
            main.extend(t.main.keys(current));
            hot.extend(t.hot.keys(current));
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
    use proptest::prelude::*;

    /// Stores a value as a load that started just now.
    fn put(s: &Store, key: &str, value: Bytes, tier: Tier) {
        s.populate(key, &Loaded::new(value), tier, s.ticket(key));
    }

    /// An 8-byte value.
    fn v8() -> Bytes {
        Bytes::from_static(b"01234567")
    }

    /// The charge of an 8-byte value under a key of 1 to 24 bytes: the unit of these tests.
    fn e() -> usize {
        charge("k", &v8())
    }

    #[test]
    fn the_charge_counts_blocks_and_overhead() {
        assert_eq!(size_of::<Entry>(), 56);
        // Index entry 80, table 22, heap item 48, `Bytes` header 32, measured slack 24.
        assert_eq!(overhead(), 206);
        assert_eq!(
            (heap_block(1), heap_block(24), heap_block(25)),
            (32, 32, 48)
        );
        // The memory test's entry: a 12-byte key (48 with its `Arc` counts), a 10-byte value.
        let v = Bytes::from_static(b"0123456789");
        assert_eq!(charge("000000000001", &v), 48 + 32 + 206);
        assert_eq!(charge("", &Bytes::new()), 32 + 206);
        assert_eq!(e(), 270);
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
        let s = Store::new(48 * e, 1); // the hot tier gets 6 entries
        for i in 1..=7 {
            put(&s, &format!("h{i}"), v8(), Tier::Hot);
        }
        assert!(
            s.peek("h1").is_none(),
            "the seventh hot entry pushed out the first"
        );
        assert!(s.peek("h7").is_some());
        put(&s, "big", Bytes::from(vec![0; 6 * e]), Tier::Hot); // over 1/8: not stored
        assert!(s.peek("big").is_none());
        for i in 0..60 {
            put(&s, &format!("m{i}"), v8(), Tier::Main);
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
        put(&s, "m59", Bytes::from_static(b"hot"), Tier::Hot);
        assert_eq!(s.peek("m59").map(Loaded::into_value), Some(v8()));
        put(&s, &hot, v8(), Tier::Main);
        let (main, hot_keys) = s.recency();
        assert!(main.contains(&hot) && !hot_keys.contains(&hot));
    }

    #[test]
    fn hits_decide_what_is_evicted() {
        // 10 entries fill the budget; hit the oldest, then k1, then add one more: the least
        // recently *used* goes.
        let s = Store::new(10 * e(), 1);
        for i in 0..10 {
            put(&s, &format!("k{i}"), v8(), Tier::Main);
        }
        for _ in 0..1000 {
            assert!(s.get("k0").is_some());
        }
        assert!(s.get("k1").is_some());
        put(&s, "new", v8(), Tier::Main);
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
            put(&s, &format!("k{i}"), v8(), Tier::Main);
        }
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(s.get("k0").is_some()));
        });
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(s.get("k1").is_some()));
        });
        put(&s, "new", v8(), Tier::Main);
        assert!(s.peek("k0").is_some() && s.peek("k1").is_some());
        assert!(s.peek("k2").is_none(), "k2 was the least recently used");
        put(&s, "newer", v8(), Tier::Main);
        assert!(s.peek("k3").is_none());
        let (main, _) = s.recency();
        assert_eq!(main[..4], ["newer", "new", "k1", "k0"]);
    }

    #[test]
    fn a_hit_on_an_evicted_entry_promotes_nothing() {
        let s = Store::new(3 * e(), 1);
        put(&s, "a", v8(), Tier::Main);
        put(&s, "b", v8(), Tier::Main);
        assert!(s.get("a").is_some()); // a is now the most recent
        put(&s, "c", v8(), Tier::Main);
        put(&s, "d", v8(), Tier::Main); // b goes, then...
        assert!(s.peek("b").is_none());
        assert!(s.get("b").is_none());
        assert!(s.get("a").is_some());
        let big = Bytes::from(vec![0; 100]); // between one and two entries
        assert!(charge("e", &big) > e() && charge("e", &big) < 2 * e());
        put(&s, "e", big, Tier::Main); // ...c and d go
        assert_eq!(s.recency().0, ["e", "a"]);
        put(&s, "f", v8(), Tier::Main);
        assert_eq!(s.recency().0, ["f", "e"]);
    }

    #[test]
    fn concurrent_hits_are_all_counted_and_the_budget_holds() {
        let s = Store::new(40 * 200, 2);
        for i in 0..40 {
            put(&s, &format!("k{i}"), Bytes::from(vec![0; 40]), Tier::Main);
        }
        std::thread::scope(|scope| {
            for t in 0..3u64 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..5000u64 {
                        let k = format!("k{}", (i * 7 + t) % 60);
                        if s.get(&k).is_none() && i % 5 == 0 {
                            put(s, &k, Bytes::from(vec![0; 40 + t as usize]), Tier::Main);
                        }
                    }
                });
            }
        });
        let st = s.stats();
        assert_eq!(st.gets, 15_000);
        assert!(st.main.bytes + st.hot.bytes <= 8000, "{st:?}");
        let (main, hot) = s.recency();
        assert_eq!(
            (main.len() + hot.len()) as u64,
            st.main.items + st.hot.items
        );
    }

    #[test]
    fn short_and_long_keys_are_found_and_forgotten() {
        let s = Store::new(20_000, 1);
        let keys = ["", "k", &"x".repeat(22), &"y".repeat(23), &"z".repeat(1024)];
        for k in keys {
            put(&s, k, Bytes::from_static(b"v"), Tier::Main);
        }
        for k in keys {
            assert_eq!(s.get(k).as_deref(), Some(&b"v"[..]), "{}", k.len());
        }
        assert!(s.get(&"x".repeat(21)).is_none());
        // Fill the budget with other keys: all five are evicted.
        for i in 0..40 {
            put(&s, &format!("n{i}"), Bytes::from(vec![0; 900]), Tier::Main);
        }
        for k in keys {
            assert!(s.peek(k).is_none(), "{}", k.len());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_misses_and_evicted_like_others() {
        let s = Store::new(3 * e(), 1);
        let soon = Loaded::new(v8()).expires_in(std::time::Duration::from_secs(1));
        s.populate("a", &soon, Tier::Main, s.ticket("a"));
        put(&s, "b", v8(), Tier::Main);
        assert_eq!(s.peek("a"), Some(soon.clone()));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(s.get("a").is_none() && s.peek("a").is_none());
        assert!(s.get_with("a", |_| ()).is_err());
        assert_eq!(
            s.stats().main.items,
            2,
            "still held until evicted or replaced"
        );
        put(&s, "c", v8(), Tier::Main);
        put(&s, "d", v8(), Tier::Main);
        let (main, _) = s.recency();
        assert_eq!(
            main,
            ["d", "c", "b"],
            "the expired entry went first (least recent)"
        );
        // An already expired value is not stored.
        assert!(!s.populate("e", &soon, Tier::Main, s.ticket("e")));
    }

    #[test]
    fn writes_refuse_older_loads_and_forgetting_them_stays_safe() {
        let s = Store::new(1 << 20, 1);
        let old = s.ticket("k");
        s.set("k", &Loaded::new(v8()), Tier::Main);
        assert!(!s.populate("k", &Loaded::new("old"), Tier::Main, old));
        assert_eq!(s.peek("k").map(Loaded::into_value), Some(v8()));
        assert!(s.recently_written("k") && !s.recently_written("j"));
        // A load of another key is not refused for it.
        assert!(s.populate("j", &Loaded::new("j"), Tier::Main, old));
        // Past RECENT_WRITES other writes the shard forgets "k" and refuses every older load.
        let before = s.ticket("x");
        for i in 0..RECENT_WRITES + 1 {
            s.remove(&format!("w{i}"));
        }
        assert!(!s.recently_written("k"));
        assert!(!s.populate("x", &Loaded::new("x"), Tier::Main, before));
        assert!(s.populate("x", &Loaded::new("x"), Tier::Main, s.ticket("x")));
        // A hot set replaces a main entry (a load's hot value would not).
        s.set("x", &Loaded::new("hot"), Tier::Hot);
        assert_eq!(s.recency().1, ["x"]);
        s.clear();
        assert!(s.peek("x").is_none() && s.peek("j").is_none());
        let st = s.stats();
        assert_eq!((st.main.items, st.hot.items, st.main.bytes), (0, 0, 0));
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
                    put(&s, &key, value, Tier::Main);
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
                put(&s, &key, Bytes::from(vec![1; len]), tier);
                let st = s.stats();
                prop_assert!(st.main.bytes + st.hot.bytes <= budget as u64);
                prop_assert!(st.hot.bytes <= (budget / n / 8 * n) as u64);
            }
        }
    }
}
