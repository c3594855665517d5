//! Power of two choices: two distinct random instances, the one with fewer requests in flight.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngCore;

use crate::pick::{Candidates, Pick, SetChange};
use crate::random::SplitMix;

/// Power of two choices (Mitzenmacher) over requests in flight. One random draw and two
/// load reads per pick; no allocation, no lock.
pub struct P2c {
    rng: SplitMix,
}

impl fmt::Debug for P2c {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2c").finish_non_exhaustive()
    }
}

impl Default for P2c {
    fn default() -> Self {
        Self::new()
    }
}

impl P2c {
    /// A p2c picker seeded from the thread RNG.
    pub fn new() -> Self {
        Self {
            rng: SplitMix::new(),
        }
    }

    /// A p2c picker seeded from `rng` (one `u64` is drawn), so tests are exact.
    pub fn from_rng<R: RngCore>(rng: R) -> Self {
        Self {
            rng: SplitMix::from_rng(rng),
        }
    }

    /// A p2c picker with a fixed seed.
    pub fn from_seed(seed: u64) -> Self {
        Self {
            rng: SplitMix::from_seed(seed),
        }
    }

    /// The two distinct candidates of the next pick over `len >= 2` instances.
    #[inline]
    fn candidates(&self, len: usize) -> (usize, usize) {
        let bits = self.rng.next_u64();
        // Two 32-bit halves of one draw: `a` uniform over len, `b` uniform over the others.
        let a = ((u128::from(bits & 0xFFFF_FFFF) * len as u128) >> 32) as usize;
        let b = ((u128::from(bits >> 32) * (len as u128 - 1)) >> 32) as usize;
        (a, if b >= a { b + 1 } else { b })
    }

    /// Picks among `len` instances using `load(i)` (requests in flight of instance `i`).
    /// Ties go to the first candidate. `None` when `len` is 0.
    #[inline]
    pub fn pick_by<L: Fn(usize) -> usize>(&self, len: usize, load: L) -> Option<usize> {
        match len {
            0 => None,
            1 => Some(0),
            _ => {
                let (a, b) = self.candidates(len);
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    /// Picks over a slice of in-flight counters.
    #[inline]
    pub fn pick(&self, in_flight: &[AtomicUsize]) -> Option<usize> {
        self.pick_by(in_flight.len(), |i| in_flight[i].load(Ordering::Relaxed))
    }
}

impl Pick for P2c {
    type State = ();

    fn name(&self) -> &str {
        "p2c"
    }

    fn build(&self, _set: &Candidates<'_>) {}

    fn update(&self, _: &mut (), _: &Candidates<'_>, _: &[SetChange<'_>]) -> Option<Duration> {
        None
    }

    #[inline]
    fn pick(&self, _state: &(), set: &Candidates<'_>) -> Option<usize> {
        self.pick_by(set.len(), |i| set.in_flight(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_less_loaded_and_never_the_busiest_of_three() {
        let p = P2c::from_seed(1);
        let loads = [
            AtomicUsize::new(5),
            AtomicUsize::new(0),
            AtomicUsize::new(9),
        ];
        let mut seen = [0usize; 3];
        for _ in 0..1_000 {
            seen[p.pick(&loads).unwrap()] += 1;
        }
        // The busiest instance loses every comparison; the idle one wins every one it is in.
        assert_eq!(seen[2], 0);
        assert!(seen[1] > 600, "{seen:?}");
        assert_eq!(p.pick(&[]), None);
        assert_eq!(p.pick(&[AtomicUsize::new(3)]), Some(0));
    }

    #[test]
    fn candidates_are_distinct_and_in_range() {
        let p = P2c::from_seed(9);
        for len in 2..50 {
            for _ in 0..200 {
                let (a, b) = p.candidates(len);
                assert!(a < len && b < len && a != b);
            }
        }
    }
}
