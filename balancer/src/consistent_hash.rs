//! The consistent-hash picker: a request's key hashed onto a [`Ring`] of the instance ids,
//! optionally with bounded loads.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pick::{Candidates, Pick, SetChange};
use crate::ring::{xxh3, HashFn, Ring, DEFAULT_VNODES};

/// How long the ring waits after a rebuild before the next, unless configured otherwise.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(100);

/// Consistent hashing over the instance ids (the balancer's [`Ring`]): a request goes to the
/// owner of its key (set with [`EndpointBuilder::hash_key`](crate::EndpointBuilder::hash_key)),
/// so one key keeps going to one instance while the set does not change, and a change moves
/// only the keys of the instances that came or went.
///
/// # When the set changes
///
/// The ring is rebuilt from the previous one by one merge (O(points): 5,000 instances × 160
/// points take a few milliseconds), at most once per coalescing window
/// ([`coalesce`](Self::coalesce), 100 ms by default, stretched to 20 times the last
/// rebuild's duration so that rebuilds never take more than 1/20 of a core), by the one call
/// that updates the Endpoint's table while the others keep picking. The first change after a
/// quiet window is applied at once; the rest of a burst waits for the window to end. Meanwhile an
/// instance that left is skipped (its keys go to the next owner clockwise, as they will
/// after the rebuild) and one that joined gets its keys at the rebuild.
#[derive(Clone, Copy)]
#[must_use]
pub struct ConsistentHash {
    vnodes: usize,
    hash: HashFn,
    epsilon: Option<f64>,
    coalesce: Duration,
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("vnodes", &self.vnodes)
            .field("bounded_load_epsilon", &self.epsilon)
            .finish_non_exhaustive()
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsistentHash {
    /// 160 virtual nodes, XXH3-64 ([`xxh3`]), no load bound.
    pub fn new() -> Self {
        Self {
            vnodes: DEFAULT_VNODES,
            hash: xxh3,
            epsilon: None,
            coalesce: DEFAULT_COALESCE,
        }
    }

    /// The shortest time between two rebuilds of the ring. Default [`DEFAULT_COALESCE`];
    /// zero rebuilds on every change.
    pub fn coalesce(mut self, window: Duration) -> Self {
        self.coalesce = window;
        self
    }

    /// Virtual nodes per instance. Default 160.
    pub fn vnodes(mut self, vnodes: usize) -> Self {
        self.vnodes = vnodes.max(1);
        self
    }

    /// The hash for ring points and keys. Default [`xxh3`].
    pub fn hash(mut self, hash: HashFn) -> Self {
        self.hash = hash;
        self
    }

    /// Bounded-load mode (Mirrokni et al. 2016): no instance takes more than
    /// `⌈(1 + epsilon) · average⌉` requests in flight; a key whose owner is full goes to the
    /// next instance clockwise. Default off. Negative values count as 0.
    pub fn bounded_load(mut self, epsilon: f64) -> Self {
        self.epsilon = Some(if epsilon.is_finite() {
            epsilon.max(0.0)
        } else {
            0.0
        });
        self
    }
}

/// The consistent-hash picker's state: the ring over the instance ids, with each node's
/// position in the Endpoint's table when the ring was built (a hint, checked on use).
#[derive(Clone)]
pub struct RingState {
    ring: Arc<Ring>,
    hints: Arc<[u32]>,
    built: Instant,
    /// How long the last build took.
    took: Duration,
    /// The set changed since the ring was built.
    stale: bool,
}

impl fmt::Debug for RingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingState")
            .field("ring", &self.ring)
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

impl RingState {
    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    fn new(ring: Ring, set: &Candidates<'_>) -> Self {
        let hints = (0..ring.len())
            .map(|m| set.position(ring.name(m)).unwrap_or(0) as u32)
            .collect();
        Self {
            ring: Arc::new(ring),
            hints,
            built: Instant::now(),
            took: Duration::ZERO,
            stale: false,
        }
    }

    /// The table position of ring node `m`, `None` when it left the set since the build.
    #[inline]
    fn position(&self, set: &Candidates<'_>, m: usize) -> Option<usize> {
        set.position_hinted(self.ring.shared_name(m), self.hints[m] as usize)
    }

    /// The positions of the ring's nodes still in the set, clockwise from `hash`.
    fn walk<'a>(&'a self, set: Candidates<'a>, hash: u64) -> impl Iterator<Item = usize> + 'a {
        self.ring
            .walk(hash)
            .filter_map(move |m| self.position(&set, m))
    }
}

impl ConsistentHash {
    fn rebuild(&self, old: &Ring, set: &Candidates<'_>) -> RingState {
        let kept: HashSet<&str> = (0..old.len())
            .map(|m| old.name(m))
            .filter(|name| set.position(name).is_some())
            .collect();
        let added: Vec<Arc<str>> = set
            .iter()
            .filter(|i| !kept.contains(i.id()))
            .map(|i| i.shared_id().clone())
            .collect();
        let ring = old.with_changes(|m| kept.contains(old.name(m)), added);
        RingState::new(ring, set)
    }
}

impl Pick for ConsistentHash {
    /// The ring over the instance ids.
    type State = RingState;

    fn build(&self, set: &Candidates<'_>) -> RingState {
        let names = set.iter().map(|i| i.shared_id().clone()).collect();
        RingState::new(Ring::from_names(names, self.vnodes, self.hash), set)
    }

    /// Rebuilds the ring when an instance joined or left, at most once per coalescing
    /// window (see [the type's docs](ConsistentHash#when-the-set-changes)).
    fn update(
        &self,
        state: &mut RingState,
        set: &Candidates<'_>,
        changes: &[SetChange<'_>],
    ) -> Option<Duration> {
        if changes
            .iter()
            .any(|c| !matches!(c, SetChange::Moved { .. }))
        {
            state.stale = true;
        }
        if !state.stale {
            return None;
        }
        // However large the ring, rebuilds take at most 1/20 of one core.
        let window = if self.coalesce.is_zero() {
            Duration::ZERO
        } else {
            self.coalesce.max(state.took * 20)
        };
        let since = state.built.elapsed();
        if since < window && !state.ring.is_empty() {
            return Some(window - since);
        }
        let started = Instant::now();
        *state = self.rebuild(&state.ring, set);
        state.took = started.elapsed();
        tracing::debug!(
            instances = set.len(),
            points = state.ring.len() * state.ring.vnodes(),
            took_us = started.elapsed().as_micros() as u64,
            "consistent-hash ring rebuilt"
        );
        None
    }

    #[inline]
    fn pick(&self, state: &RingState, set: &Candidates<'_>) -> Option<usize> {
        if set.is_empty() {
            return None;
        }
        let h = set.key().unwrap_or(0);
        let first = match self.epsilon {
            None => state.walk(*set, h).next(),
            Some(eps) => {
                let avg = (set.total_in_flight() as f64 + 1.0) / set.len() as f64;
                let cap = ((1.0 + eps) * avg).ceil().max(1.0) as usize;
                let mut walk = state.walk(*set, h);
                walk.next().map(|first| {
                    if set.in_flight(first) < cap {
                        first
                    } else {
                        walk.take(state.ring.len() * state.ring.vnodes())
                            .find(|&i| set.in_flight(i) < cap)
                            .unwrap_or(first)
                    }
                })
            }
        };
        // Every node of the ring left since it was built: any instance rather than none.
        first.or_else(|| Some(crate::random::below(h, set.len())))
    }

    /// The ring clockwise from the key: the owners a key falls back to, the same on every
    /// client.
    fn alternatives<'a>(
        &'a self,
        state: &'a RingState,
        set: Candidates<'a>,
        _first: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        state.walk(set, set.key().unwrap_or(0))
    }

    fn key_hash(&self) -> Option<HashFn> {
        Some(self.hash)
    }
}
