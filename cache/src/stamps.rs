//! Last-use stamps by slot, in one lane per thread, so that hits on the same key from
//! different threads write different cache lines.
//!
//! Every cached entry has a slot number. A hit writes its stamp ([`crate::local`]) into its
//! own thread's lane at that slot; the entry's last use is the greatest stamp over all
//! lanes, read only when eviction needs it. Were the stamp kept in the entry itself, two
//! threads hitting the same keys would pass the entry's cache line back and forth on every
//! hit, which costs more than the rest of the hit.
//!
//! Lanes follow the threads' numbers: a lane of its own (written with plain stores) for
//! each thread numbered below the lane count, and one lane shared by all others (written
//! with `fetch_max`). A lane is an array of buckets of doubling size, each allocated on the
//! first hit that needs it, so the memory is 8 bytes per slot for each thread that has hit
//! entries (in addition to the entries themselves).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The first bucket holds `1 << FIRST_BITS` slots; each next one twice as many.
const FIRST_BITS: u32 = 10;

/// Enough buckets for 2^42 slots.
const BUCKETS: usize = 32;

/// One thread's stamps, by slot.
struct Lane {
    buckets: [OnceLock<Box<[AtomicU64]>>; BUCKETS],
}

/// The bucket of `slot` and its index in it.
#[inline]
fn locate(slot: u64) -> (usize, usize) {
    let s = slot + (1 << FIRST_BITS);
    let bucket = 63 - s.leading_zeros() - FIRST_BITS;
    (bucket as usize, (s - (1 << (bucket + FIRST_BITS))) as usize)
}

impl Lane {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The cell of `slot`, allocating its bucket if this is its first use.
    #[inline]
    fn cell(&self, slot: u64) -> Option<&AtomicU64> {
        let (b, i) = locate(slot);
        let bucket = self.buckets.get(b)?.get_or_init(|| {
            (0..1usize << (b as u32 + FIRST_BITS))
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        bucket.get(i)
    }

    /// The cell of `slot` if its bucket exists.
    fn existing(&self, slot: u64) -> Option<&AtomicU64> {
        let (b, i) = locate(slot);
        self.buckets.get(b)?.get()?.get(i)
    }
}

/// One slot's stamp in one lane, as read by [`Stamps::cell`].
pub(crate) struct StampCell<'a> {
    cell: &'a AtomicU64,
    exclusive: bool,
    seen: u64,
}

impl StampCell<'_> {
    /// Records a use at `stamp`.
    #[inline]
    pub(crate) fn record(self, stamp: u64) {
        if self.exclusive {
            // This thread is the lane's only writer, and its stamps increase.
            if stamp > self.seen {
                self.cell.store(stamp, Ordering::Relaxed);
            }
        } else {
            self.cell.fetch_max(stamp, Ordering::Relaxed);
        }
    }
}

/// Last-use stamps of the slots of one tier of a store.
pub(crate) struct Stamps {
    lanes: Box<[Lane]>,
}

impl Stamps {
    /// Stamps with `exclusive` single-writer lanes plus the shared one.
    pub(crate) fn new(exclusive: usize) -> Self {
        Self {
            lanes: (0..=exclusive).map(|_| Lane::new()).collect(),
        }
    }

    /// Records a use of `slot` at `stamp` by the thread numbered `me` (from
    /// [`crate::local::use_now`]).
    #[inline]
    pub(crate) fn record(&self, me: usize, slot: u64, stamp: u64) {
        if let Some(c) = self.cell(me, slot) {
            c.record(stamp);
        }
    }

    /// The stamp of `slot` in the lane of the thread numbered `me`, read now and written by
    /// [`StampCell::record`].
    #[inline]
    pub(crate) fn cell(&self, me: usize, slot: u64) -> Option<StampCell<'_>> {
        let shared = self.lanes.len() - 1;
        let exclusive = me < shared;
        let cell = self.lanes[if exclusive { me } else { shared }].cell(slot)?;
        Some(StampCell {
            cell,
            exclusive,
            seen: cell.load(Ordering::Relaxed),
        })
    }

    /// The last use of `slot`: its greatest stamp over all lanes (0 if none).
    pub(crate) fn last(&self, slot: u64) -> u64 {
        self.lanes
            .iter()
            .filter_map(|l| l.existing(slot))
            .map(|c| c.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Forgets every use of `slot`, before it names a new entry. A hit that found the old
    /// entry just before it went may still land afterwards and count for the new one.
    pub(crate) fn clear(&self, slot: u64) {
        for c in self.lanes.iter().filter_map(|l| l.existing(slot)) {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_distinct_cells_across_buckets() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        let lane = Lane::new();
        for slot in [0u64, 1, 1023, 1024, 3071, 3072, 100_000] {
            lane.cell(slot).unwrap().store(slot + 1, Ordering::Relaxed);
        }
        for slot in [0u64, 1, 1023, 1024, 3071, 3072, 100_000] {
            assert_eq!(
                lane.existing(slot).unwrap().load(Ordering::Relaxed),
                slot + 1
            );
        }
        // Only the buckets used were allocated.
        assert!(lane.buckets[3].get().is_none());
        assert!(lane.existing(20_000).is_none());
    }

    #[test]
    fn last_use_is_the_greatest_over_lanes_and_clear_forgets_it() {
        let s = Stamps::new(2);
        assert_eq!(s.last(7), 0);
        s.record(0, 7, 10);
        s.record(1, 7, 30);
        s.record(0, 7, 20);
        assert_eq!(s.last(7), 30);
        // Threads beyond the exclusive lanes share one, which keeps the greatest.
        s.record(5, 7, 50);
        s.record(6, 7, 40);
        assert_eq!(s.last(7), 50);
        assert_eq!(s.last(8), 0);
        s.clear(7);
        assert_eq!(s.last(7), 0);
        s.record(1, 7, 60);
        assert_eq!(s.last(7), 60);
    }
}
