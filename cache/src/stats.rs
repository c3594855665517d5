//! Counters of a group (golang/groupcache's `Stats` and `CacheStats`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one group. Cheap to take: a snapshot summed over the group's shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Gets, from callers on this node and from peers.
    pub gets: u64,
    /// Gets answered from memory (main or hot cache).
    pub cache_hits: u64,
    /// Values fetched from the peer that owns the key.
    pub peer_loads: u64,
    /// Failed fetches from a peer (each followed by a local load).
    pub peer_errors: u64,
    /// Of `peer_errors`, those where the peer could not be reached or did not answer in
    /// time; the others are answers with an error (its getter failed, say).
    pub peer_unreachable: u64,
    /// Gets that missed memory: `gets - cache_hits`.
    pub loads: u64,
    /// Loads that were actually run after singleflight merged concurrent misses.
    pub loads_deduped: u64,
    /// Successful calls of the getter on this node.
    pub local_loads: u64,
    /// Failed (or panicked) calls of the getter on this node.
    pub local_load_errors: u64,
    /// Values a new owner took from the memory of the key's previous owner after the ring
    /// changed, instead of calling the getter (the handoff).
    pub handoff_loads: u64,
    /// Requests served to peers over the wire protocol.
    pub server_requests: u64,
    /// The main cache: keys this node owns or loaded itself.
    pub main_cache: CacheStats,
    /// The hot cache: popular keys owned by other nodes.
    pub hot_cache: CacheStats,
}

/// Counters of one cache tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Bytes held, as the budget counts them: keys, values and what each entry costs
    /// besides (its index entry, table slot, LRU item, heap block rounding and allocator
    /// slack: about 200 bytes; see `BENCHMARKS.md`).
    pub bytes: u64,
    /// Entries held.
    pub items: u64,
    /// Gets answered by this tier.
    pub hits: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
}

impl Stats {
    /// The sum of two groups' counters (nodes of one group living in one process).
    pub(crate) fn plus(self, o: Stats) -> Stats {
        Stats {
            gets: self.gets + o.gets,
            cache_hits: self.cache_hits + o.cache_hits,
            peer_loads: self.peer_loads + o.peer_loads,
            peer_errors: self.peer_errors + o.peer_errors,
            peer_unreachable: self.peer_unreachable + o.peer_unreachable,
            loads: self.loads + o.loads,
            loads_deduped: self.loads_deduped + o.loads_deduped,
            local_loads: self.local_loads + o.local_loads,
            local_load_errors: self.local_load_errors + o.local_load_errors,
            handoff_loads: self.handoff_loads + o.handoff_loads,
            server_requests: self.server_requests + o.server_requests,
            main_cache: self.main_cache.plus(o.main_cache),
            hot_cache: self.hot_cache.plus(o.hot_cache),
        }
    }
}

impl CacheStats {
    fn plus(self, o: CacheStats) -> CacheStats {
        CacheStats {
            bytes: self.bytes + o.bytes,
            items: self.items + o.items,
            hits: self.hits + o.hits,
            evictions: self.evictions + o.evictions,
        }
    }
}

/// The counters of the miss path (hits and gets are counted by the store's shards).
#[derive(Debug, Default)]
pub(crate) struct LoadCounters {
    pub(crate) peer_loads: AtomicU64,
    pub(crate) peer_errors: AtomicU64,
    pub(crate) peer_unreachable: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) loads_deduped: AtomicU64,
    pub(crate) local_loads: AtomicU64,
    pub(crate) local_load_errors: AtomicU64,
    pub(crate) handoff_loads: AtomicU64,
    pub(crate) server_requests: AtomicU64,
}

impl LoadCounters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
