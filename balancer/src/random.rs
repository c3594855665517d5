//! The random picker: uniform over the current instances.
//!
//! Randomness comes from a lock-free SplitMix64 sequence (no locked instruction per pick), seeded
//! from the thread RNG by [`Random::new`] or from an injected RNG or seed so tests are exact.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::RngCore;

use crate::pick::{Candidates, Pick, SetChange};

/// The SplitMix64 increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A lock-free pseudo random sequence shared by every caller: SplitMix64 over an atomic
/// counter. Deterministic for a given seed and a given order of calls.
pub(crate) struct SplitMix {
    state: AtomicU64,
}

impl SplitMix {
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn from_rng<R: RngCore>(mut rng: R) -> Self {
        Self::from_seed(rng.next_u64())
    }

    pub(crate) fn new() -> Self {
        Self::from_rng(rand::rng())
    }

    /// The next 64 random bits.
    ///
    /// The state advances with a relaxed load and store rather than an atomic add: a pick
    /// costs no locked instruction. Two threads racing may draw the same number (and the
    /// sequence then skips one step), which is harmless for balancing; one thread alone sees
    /// the exact SplitMix64 sequence of its seed.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self.state.load(Ordering::Relaxed).wrapping_add(GAMMA);
        self.state.store(z, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Maps 64 random bits onto `0..len` (Lemire's multiply-shift; the bias is below
/// `len / 2^64`).
#[inline]
pub(crate) fn below(bits: u64, len: usize) -> usize {
    ((u128::from(bits) * len as u128) >> 64) as usize
}

/// Picks uniformly at random among the current instances.
pub struct Random {
    rng: SplitMix,
}

impl fmt::Debug for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Random").finish_non_exhaustive()
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

impl Random {
    /// A random picker seeded from the thread RNG.
    pub fn new() -> Self {
        Self {
            rng: SplitMix::new(),
        }
    }

    /// A random picker seeded from `rng` (one `u64` is drawn): the same RNG state gives the
    /// same sequence of picks.
    pub fn from_rng<R: RngCore>(rng: R) -> Self {
        Self {
            rng: SplitMix::from_rng(rng),
        }
    }

    /// A random picker with a fixed seed.
    pub fn from_seed(seed: u64) -> Self {
        Self {
            rng: SplitMix::from_seed(seed),
        }
    }

    /// An index in `0..len`, or `None` when `len` is 0. No allocation, no lock.
    #[inline]
    pub fn pick(&self, len: usize) -> Option<usize> {
        (len > 0).then(|| below(self.rng.next_u64(), len))
    }
}

impl Pick for Random {
    type State = ();

    fn name(&self) -> &str {
        "random"
    }

    fn build(&self, _set: &Candidates<'_>) {}

    fn update(&self, _: &mut (), _: &Candidates<'_>, _: &[SetChange<'_>]) -> Option<Duration> {
        None
    }

    #[inline]
    fn pick(&self, _state: &(), set: &Candidates<'_>) -> Option<usize> {
        Random::pick(self, set.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_picks_and_roughly_uniform() {
        let a = Random::from_seed(7);
        let b = Random::from_seed(7);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            let i = a.pick(3).unwrap();
            assert_eq!(Some(i), b.pick(3));
            counts[i] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(a.pick(0), None);
    }
}
