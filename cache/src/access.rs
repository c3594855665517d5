//! Access buffers: where hits record themselves instead of touching the LRU (Caffeine's and
//! moka's "read buffers").
//!
//! A hit must not write memory that other threads' hits write too, or two cores spend their
//! time passing cache lines back and forth. So a hit appends a small record (which entry, in
//! which tier) to a *stripe* of its shard's buffer; each thread uses its own stripe (threads
//! are numbered on first use, stripe = number mod stripes), so the lines it writes stay in
//! its core's cache. The shard's owner of the LRU applies the records, in order, under the
//! shard lock: whenever a stripe has gained half a buffer of records (the hitting thread
//! takes the lock then), and always before any eviction decision, so the LRU that eviction
//! consults has every recorded hit applied.
//!
//! The stripe's record counter doubles as its hit counter, so counting a hit costs nothing
//! more, and draining only reads the stripe. A record is lost when a stripe overflows (more
//! than [`SLOTS`] records between two drains, possible only when several threads share a
//! stripe and the lock is contended), and a drain that overtakes a record claimed but not yet
//! written applies instead that slot's previous record, an earlier hit of the same stripe:
//! either way only the recency of entries hit concurrently with the drain can come out
//! slightly off, and never does a record promote an entry removed since (every record names
//! its entry's generation). On one thread the order is exact.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::lru::NodeRef;
use crate::store::Tier;

/// Records one stripe holds; a power of two. The hitting thread drains at every half.
pub(crate) const SLOTS: usize = 64;

const TIER_BIT: u64 = 1 << 31;

/// A buffered hit packed into a `u64`: generation (odd, so never 0) in the high half, the
/// tier in bit 31, the slab index below. 0 marks an empty slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record(u64);

impl Record {
    /// The record of a hit on `node` in `tier`, or `None` for an index too large to pack
    /// (beyond 2^31 entries in one shard; such hits are simply not promoted).
    pub(crate) fn new(tier: Tier, node: NodeRef) -> Option<Self> {
        if u64::from(node.index) >= TIER_BIT {
            return None;
        }
        let tier = match tier {
            Tier::Main => 0,
            Tier::Hot => TIER_BIT,
        };
        Some(Self(
            u64::from(node.generation) << 32 | tier | u64::from(node.index),
        ))
    }

    fn decode(raw: u64) -> Option<(Tier, NodeRef)> {
        if raw == 0 {
            return None;
        }
        let tier = if raw & TIER_BIT == 0 {
            Tier::Main
        } else {
            Tier::Hot
        };
        let node = NodeRef {
            index: (raw & (TIER_BIT - 1)) as u32,
            generation: (raw >> 32) as u32,
        };
        Some((tier, node))
    }
}

/// One thread's stripe of a shard's buffer, on cache lines of its own.
#[repr(align(128))]
struct Stripe {
    /// Records appended so far (= hits counted in this stripe).
    tail: AtomicU64,
    /// Of those, hits in the hot tier.
    hot_hits: AtomicU64,
    slots: [AtomicU64; SLOTS],
}

impl Stripe {
    fn new() -> Self {
        Self {
            tail: AtomicU64::new(0),
            hot_hits: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The stripe this thread uses, numbered on first use.
pub(crate) fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

/// The number of stripes per buffer: twice the cores (so that a core's threads rarely share
/// one), a power of two, 2 to 32.
pub(crate) fn default_stripes() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).next_power_of_two().clamp(2, 32)
}

/// A shard's access buffer: one stripe per thread (modulo the stripe count).
pub(crate) struct AccessBuffer {
    stripes: Box<[Stripe]>,
    mask: usize,
}

/// The drainer's position in each stripe; kept with the LRU, under the shard lock.
#[derive(Debug)]
pub(crate) struct Heads(Box<[u64]>);

impl AccessBuffer {
    /// A buffer of `stripes` stripes (rounded up to a power of two) and its drain positions.
    pub(crate) fn new(stripes: usize) -> (Self, Heads) {
        let n = stripes.max(1).next_power_of_two();
        let buf = Self {
            stripes: (0..n).map(|_| Stripe::new()).collect(),
            mask: n - 1,
        };
        (buf, Heads(vec![0; n].into_boxed_slice()))
    }

    /// Appends a hit (counting it); returns true when the caller should drain now.
    #[inline]
    pub(crate) fn record(&self, record: Option<Record>, tier: Tier) -> bool {
        let stripe = &self.stripes[thread_number() & self.mask];
        let t = stripe.tail.fetch_add(1, Ordering::Relaxed);
        if tier == Tier::Hot {
            stripe.hot_hits.fetch_add(1, Ordering::Relaxed);
        }
        let raw = record.map_or(0, |r| r.0);
        stripe.slots[t as usize & (SLOTS - 1)].store(raw, Ordering::Release);
        (t + 1) % (SLOTS as u64 / 2) == 0
    }

    /// Hits counted so far: (main, hot).
    pub(crate) fn hits(&self) -> (u64, u64) {
        let (mut main, mut hot) = (0, 0);
        for s in self.stripes.iter() {
            // Hot first: a hit counts in `tail` before `hot_hits`, so `tail >= hot` here.
            let h = s.hot_hits.load(Ordering::Relaxed);
            let t = s.tail.load(Ordering::Relaxed);
            hot += h;
            main += t.saturating_sub(h);
        }
        (main, hot)
    }

    /// Hands every record appended since the last drain to `apply`, stripe by stripe, each
    /// stripe oldest first. Must be called with the shard lock held (`heads` lives there).
    pub(crate) fn drain(&self, heads: &mut Heads, mut apply: impl FnMut(Tier, NodeRef)) {
        for (stripe, head) in self.stripes.iter().zip(heads.0.iter_mut()) {
            let tail = stripe.tail.load(Ordering::Acquire);
            if tail == *head {
                continue;
            }
            // Overflowed: the oldest records were overwritten; keep the newest SLOTS.
            let from = (*head).max(tail.saturating_sub(SLOTS as u64));
            for t in from..tail {
                let raw = stripe.slots[t as usize & (SLOTS - 1)].load(Ordering::Acquire);
                if let Some((tier, node)) = Record::decode(raw) {
                    apply(tier, node);
                }
            }
            *head = tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: u32, generation: u32) -> NodeRef {
        NodeRef { index, generation }
    }

    #[test]
    fn records_round_trip_and_drain_in_order() {
        let (buf, mut heads) = AccessBuffer::new(4);
        let hits = [
            (Tier::Main, node(3, 1)),
            (Tier::Hot, node(0, 7)),
            (Tier::Main, node(9, 5)),
        ];
        for (tier, n) in hits {
            assert!(!buf.record(Record::new(tier, n), tier));
        }
        assert_eq!(buf.hits(), (2, 1));
        let mut seen = Vec::new();
        buf.drain(&mut heads, |t, n| seen.push((t, n)));
        assert_eq!(seen, hits);
        seen.clear();
        buf.drain(&mut heads, |t, n| seen.push((t, n)));
        assert!(seen.is_empty(), "a record is applied once");
        assert_eq!(buf.hits(), (2, 1), "draining does not change the counts");
    }

    #[test]
    fn asks_for_a_drain_every_half_buffer_and_keeps_the_newest_on_overflow() {
        let (buf, mut heads) = AccessBuffer::new(1);
        let mut asked = 0;
        for i in 0..(SLOTS as u32 * 3) {
            if buf.record(Record::new(Tier::Main, node(i, 1)), Tier::Main) {
                asked += 1;
            }
        }
        assert_eq!(asked, 6); // every SLOTS / 2
        let mut seen = Vec::new();
        buf.drain(&mut heads, |_, n| seen.push(n.index));
        let expected: Vec<u32> = (SLOTS as u32 * 2..SLOTS as u32 * 3).collect();
        assert_eq!(seen, expected);
        assert_eq!(buf.hits(), (SLOTS as u64 * 3, 0));
    }

    #[test]
    fn too_large_an_index_is_not_recorded_but_still_counted() {
        assert!(Record::new(Tier::Main, node(u32::MAX - 1, 1)).is_none());
        let (buf, mut heads) = AccessBuffer::new(1);
        buf.record(None, Tier::Hot);
        let mut n = 0;
        buf.drain(&mut heads, |_, _| n += 1);
        assert_eq!((n, buf.hits()), (0, (0, 1)));
    }
}
