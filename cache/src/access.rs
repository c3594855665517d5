//! Access buffers: where hits record themselves instead of touching the LRU (Caffeine's and
//! moka's "read buffers").
//!
//! A hit must not write memory that other threads' hits write too, or two cores spend their
//! time passing cache lines back and forth. So a hit appends a small record (which entry, in
//! which tier) to a *stripe* of its shard's buffer. A thread holds a number for its lifetime
//! (the lowest free one) and the stripe of that number is its alone: it appends with plain
//! loads and stores, no atomic read-modify-write, and the lines stay in its core's cache.
//! Threads beyond the buffer's stripes share one more stripe, appending with `fetch_add`. The shard's owner of the LRU applies the records, in order, under the
//! shard lock: whenever a stripe has gained half a buffer of records (the hitting thread
//! takes the lock then), and always before any eviction decision, so the LRU that eviction
//! consults has every recorded hit applied.
//!
//! The stripe's record counter doubles as its hit counter, so counting a hit costs nothing
//! more, and draining only reads the stripe. A record is lost when a stripe overflows (more
//! than [`SLOTS`] records between two drains, possible only when several threads share the
//! shared stripe and the lock is contended), and a drain that overtakes a record claimed but
//! not yet written there applies instead that slot's previous record, an earlier hit:
//! either way only the recency of entries hit concurrently with the drain can come out
//! slightly off, and never does a record promote an entry removed since (every record names
//! its entry's generation). On one thread the order is exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::lru::NodeRef;
use crate::store::Tier;

/// Records one stripe holds; a power of two. The hitting thread drains at every half.
pub(crate) const SLOTS: usize = 128;

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

/// Numbers held by live threads (bit i: number i); a thread holds one for its lifetime, so
/// a stripe with that number has a single writer.
static CLAIMED: Mutex<u64> = Mutex::new(0);

/// A thread's number, released when the thread ends. `NONE` when 64 threads hold one.
struct Claim(usize);

const NONE: usize = usize::MAX;

impl Claim {
    fn take() -> Self {
        let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
        let free = (!*claimed).trailing_zeros() as usize;
        if free >= 64 {
            return Self(NONE);
        }
        *claimed |= 1 << free;
        Self(free)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.0 < 64 {
            let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
            *claimed &= !(1u64 << self.0);
        }
    }
}

/// This thread's number: the lowest not held by another live thread (`usize::MAX` beyond
/// 64 live threads, or while the thread is being torn down).
pub(crate) fn thread_number() -> usize {
    thread_local! {
        static CLAIM: Claim = Claim::take();
    }
    CLAIM.try_with(|c| c.0).unwrap_or(NONE)
}

/// The number of single-writer stripes per buffer: four per core (tokio's workers, its
/// blocking threads and the caller's own threads), 8 to 64.
pub(crate) fn default_stripes() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(8, 64)
}

/// A shard's access buffer: a stripe of its own for each thread numbered below `exclusive`,
/// and one stripe shared by all others.
pub(crate) struct AccessBuffer {
    stripes: Box<[Stripe]>,
    exclusive: usize,
}

/// The drainer's position in each stripe; kept with the LRU, under the shard lock.
#[derive(Debug)]
pub(crate) struct Heads(Box<[u64]>);

impl AccessBuffer {
    /// A buffer with `exclusive` single-writer stripes plus the shared one, and its drain
    /// positions.
    pub(crate) fn new(exclusive: usize) -> (Self, Heads) {
        let n = exclusive + 1;
        let buf = Self {
            stripes: (0..n).map(|_| Stripe::new()).collect(),
            exclusive,
        };
        (buf, Heads(vec![0; n].into_boxed_slice()))
    }

    /// Appends a hit (counting it); returns true when the caller should drain now.
    #[inline]
    pub(crate) fn record(&self, record: Option<Record>, tier: Tier) -> bool {
        let raw = record.map_or(0, |r| r.0);
        let me = thread_number();
        let t = if me < self.exclusive {
            // This thread is the stripe's only writer: plain loads and stores, no
            // read-modify-write. The record is published by the release store of `tail`.
            let stripe = &self.stripes[me];
            let t = stripe.tail.load(Ordering::Relaxed);
            stripe.slots[t as usize & (SLOTS - 1)].store(raw, Ordering::Relaxed);
            stripe.tail.store(t + 1, Ordering::Release);
            if tier == Tier::Hot {
                let h = stripe.hot_hits.load(Ordering::Relaxed);
                stripe.hot_hits.store(h + 1, Ordering::Release);
            }
            t
        } else {
            let stripe = &self.stripes[self.exclusive];
            let t = stripe.tail.fetch_add(1, Ordering::AcqRel);
            if tier == Tier::Hot {
                stripe.hot_hits.fetch_add(1, Ordering::Release);
            }
            stripe.slots[t as usize & (SLOTS - 1)].store(raw, Ordering::Release);
            t
        };
        (t + 1) % (SLOTS as u64 / 2) == 0
    }

    /// Hits counted so far: (main, hot).
    pub(crate) fn hits(&self) -> (u64, u64) {
        let (mut main, mut hot) = (0, 0);
        for s in self.stripes.iter() {
            // Hot first: a hit counts in `tail` before `hot_hits`, so `tail >= hot` here.
            let h = s.hot_hits.load(Ordering::Acquire);
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
        let (buf, mut heads) = AccessBuffer::new(0); // the shared stripe only
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
    fn live_threads_hold_distinct_numbers() {
        let mine = thread_number();
        let barrier = std::sync::Barrier::new(4);
        let numbers: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let n = thread_number();
                        barrier.wait(); // all four alive at once
                        assert_eq!(thread_number(), n, "a thread keeps its number");
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = numbers.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{numbers:?}");
        assert!(!numbers.contains(&mine));
    }

    #[test]
    fn exclusive_and_shared_stripes_both_count_and_drain() {
        let (buf, mut heads) = AccessBuffer::new(64);
        let (shared, mut shared_heads) = AccessBuffer::new(0);
        for i in 0..5 {
            for b in [&buf, &shared] {
                b.record(Record::new(Tier::Main, node(i, 1)), Tier::Main);
            }
        }
        for (b, h) in [(&buf, &mut heads), (&shared, &mut shared_heads)] {
            let mut seen = Vec::new();
            b.drain(h, |_, n| seen.push(n.index));
            assert_eq!(seen, [0, 1, 2, 3, 4]);
            assert_eq!(b.hits(), (5, 0));
        }
    }

    #[test]
    fn too_large_an_index_is_not_recorded_but_still_counted() {
        assert!(Record::new(Tier::Main, node(u32::MAX - 1, 1)).is_none());
        let (buf, mut heads) = AccessBuffer::new(0);
        buf.record(None, Tier::Hot);
        let mut n = 0;
        buf.drain(&mut heads, |_, _| n += 1);
        assert_eq!((n, buf.hits()), (0, (0, 1)));
    }
}
