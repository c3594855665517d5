//! The round-robin picker: an exact cycle over the current instances.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::pick::{Candidates, Pick, SetChange};

/// Cycles through the instances in order: 0, 1, ..., len-1, 0, ... One atomic add per pick.
/// When the set changes the cycle continues from the same counter over the new set.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin picker starting at the first instance.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A round-robin picker whose first pick is `start % len`.
    pub fn starting_at(start: usize) -> Self {
        Self {
            next: AtomicUsize::new(start),
        }
    }

    /// An index in `0..len`, or `None` when `len` is 0. No allocation, no lock.
    #[inline]
    pub fn pick(&self, len: usize) -> Option<usize> {
        (len > 0).then(|| self.next.fetch_add(1, Ordering::Relaxed) % len)
    }
}

impl Pick for RoundRobin {
    type State = ();

    fn name(&self) -> &str {
        "round_robin"
    }

    fn build(&self, _set: &Candidates<'_>) {}

    fn update(&self, _: &mut (), _: &Candidates<'_>, _: &[SetChange<'_>]) -> Option<Duration> {
        None
    }

    #[inline]
    fn pick(&self, _state: &(), set: &Candidates<'_>) -> Option<usize> {
        RoundRobin::pick(self, set.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_cycle() {
        let rr = RoundRobin::new();
        let picks: Vec<_> = (0..7).map(|_| rr.pick(3).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(rr.pick(0), None);
        assert_eq!(RoundRobin::starting_at(5).pick(3), Some(2));
    }
}
