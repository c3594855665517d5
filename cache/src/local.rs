//! What a hit needs of its own thread: a number that gives the thread single-writer stripes
//! of counters, and a clock that stamps each use for the LRU.
//!
//! A hit must not write memory that other threads' hits write too, or two cores spend their
//! time passing cache lines back and forth. So a hit writes only its entry's last-use stamp,
//! in its thread's lane of [`crate::stamps`], and a counter in its thread's stripe.
//!
//! **Numbers.** A thread holds a number for its lifetime (the lowest free one). The stripe
//! of that number is its alone: it counts with plain loads and stores, no atomic
//! read-modify-write, and the lines stay in its core's cache. Threads beyond the stripes
//! share one more stripe and count with `fetch_add`.
//!
//! **Stamps.** A stamp is `epoch << 20 | n`: the process-wide epoch the thread last saw and
//! the thread's count of uses within it. The epoch advances at every store into a cache
//! ([`tick`]) and whenever one thread has taken [`WINDOW`] stamps in one epoch, so it is
//! written rarely and otherwise read from every core's cache. A thread's stamps strictly
//! increase, and a tick is greater than every stamp taken before it by the ticking thread or
//! by any thread that synchronised with it: on one thread the order of stamps is exactly the
//! order of uses and stores. Uses on different threads within one epoch (at most
//! [`WINDOW`] per thread) are ordered by their counts, not by time.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Stamps one thread takes in one epoch before it advances the epoch itself.
pub(crate) const WINDOW: u64 = 256;

const SEQ_BITS: u32 = 20;

/// The process-wide epoch, alone on its cache line.
#[repr(align(128))]
struct Epoch(AtomicU64);

static EPOCH: Epoch = Epoch(AtomicU64::new(1));

/// Numbers held by live threads (bit i: number i).
static CLAIMED: Mutex<u64> = Mutex::new(0);

/// A thread's number when it holds none (beyond 64 live threads, or during its teardown).
pub(crate) const NONE: usize = usize::MAX;

/// A thread's number and clock.
struct Local {
    number: usize,
    epoch: Cell<u64>,
    seq: Cell<u64>,
}

impl Local {
    fn take() -> Self {
        let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
        let free = (!*claimed).trailing_zeros() as usize;
        let number = if free < 64 {
            *claimed |= 1 << free;
            free
        } else {
            NONE
        };
        Self {
            number,
            epoch: Cell::new(0),
            seq: Cell::new(0),
        }
    }

    #[inline]
    fn stamp(&self) -> u64 {
        let epoch = EPOCH.0.load(Ordering::Relaxed);
        let mut seq = self.seq.get();
        if epoch != self.epoch.get() {
            self.epoch.set(epoch);
            seq = 0;
        }
        seq += 1;
        if seq >= WINDOW {
            return self.tick();
        }
        self.seq.set(seq);
        epoch << SEQ_BITS | seq
    }

    fn tick(&self) -> u64 {
        let epoch = advance();
        self.epoch.set(epoch);
        self.seq.set(0);
        epoch << SEQ_BITS
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if self.number < 64 {
            let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
            *claimed &= !(1u64 << self.number);
        }
    }
}

thread_local! {
    static LOCAL: Local = Local::take();
}

/// This thread's number: the lowest not held by another live thread ([`NONE`] beyond 64
/// live threads, or while the thread is being torn down).
pub(crate) fn thread_number() -> usize {
    LOCAL.try_with(|l| l.number).unwrap_or(NONE)
}

/// This thread's number and a stamp for a use now, in one thread-local access.
#[inline]
pub(crate) fn use_now() -> (usize, u64) {
    LOCAL
        .try_with(|l| (l.number, l.stamp()))
        .unwrap_or_else(|_| (NONE, tick()))
}

/// Advances the epoch and returns a stamp greater than every stamp this thread took before.
pub(crate) fn tick() -> u64 {
    LOCAL
        .try_with(Local::tick)
        .unwrap_or_else(|_| advance() << SEQ_BITS)
}

/// Advances the epoch and returns its new value.
fn advance() -> u64 {
    EPOCH.0.fetch_add(1, Ordering::Relaxed) + 1
}

/// The number of single-writer stripes per set of counters: four per core (tokio's
/// workers, its blocking threads and the caller's own threads), 8 to 64.
pub(crate) fn default_stripes() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(8, 64)
}

/// One stripe of [`Counters`], on cache lines of its own.
#[repr(align(128))]
struct Stripe([AtomicU64; 3]);

/// What a [`Counters`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    MainHit = 0,
    HotHit = 1,
    Miss = 2,
}

/// Counters striped by thread number: a stripe of its own for each thread numbered below
/// the stripe count, and one stripe shared by all others. Exact: the single-writer stripes
/// lose nothing and the shared one counts with `fetch_add`.
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

impl Counters {
    /// Counters with `exclusive` single-writer stripes plus the shared one.
    pub(crate) fn new(exclusive: usize) -> Self {
        let stripes = (0..=exclusive)
            .map(|_| Stripe(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Self { stripes }
    }

    /// Counts one `what` for the thread numbered `me` (from [`use_now`]).
    #[inline]
    pub(crate) fn count(&self, me: usize, what: Count) {
        let shared = self.stripes.len() - 1;
        if me < shared {
            // This thread is the stripe's only writer: no read-modify-write needed.
            let c = &self.stripes[me].0[what as usize];
            c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        } else {
            self.stripes[shared].0[what as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The total of `what` over all stripes.
    pub(crate) fn total(&self, what: Count) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[what as usize].load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_threads_stamps_and_ticks_strictly_increase() {
        let mut last = 0;
        for i in 0..(WINDOW * 5) {
            let s = if i % 97 == 0 { tick() } else { use_now().1 };
            assert!(s > last, "step {i}: {s} after {last}");
            last = s;
        }
    }

    #[test]
    fn a_tick_comes_after_every_stamp_another_thread_took_before_it() {
        let theirs = std::thread::spawn(|| (0..1000).map(|_| use_now().1).max().unwrap())
            .join()
            .unwrap();
        assert!(tick() > theirs);
        assert!(use_now().1 > theirs);
    }

    #[test]
    fn exclusive_and_shared_stripes_both_count_exactly() {
        let c = Counters::new(1);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for i in 0..10_000 {
                        let what = if i % 4 == 0 {
                            Count::HotHit
                        } else {
                            Count::MainHit
                        };
                        // Numbers 0 and up: one thread gets the exclusive stripe at most.
                        c.count(thread_number(), what);
                    }
                    c.count(NONE, Count::Miss);
                });
            }
        });
        assert_eq!(c.total(Count::MainHit), 3 * 7_500);
        assert_eq!(c.total(Count::HotHit), 3 * 2_500);
        assert_eq!(c.total(Count::Miss), 3);
    }
}
