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
/// position in the Endpoint's table (a hint, checked on use), and the joins and leaves not
/// yet in the ring.
#[derive(Clone)]
pub struct RingState {
    ring: Arc<Ring>,
    hints: Arc<[u32]>,
    built: Instant,
    /// How long the last update of the ring took.
    took: Duration,
    /// Ids that joined or left since the ring was made (a few per coalescing window).
    joined: Vec<Arc<str>>,
    left: Vec<Arc<str>>,
    /// Instances that moved to another table position meanwhile (their hints are stale).
    moved: Vec<(Arc<str>, u32)>,
}

impl fmt::Debug for RingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingState")
            .field("ring", &self.ring)
            .field("pending", &(self.joined.len() + self.left.len()))
            .finish_non_exhaustive()
    }
}

impl RingState {
    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The table position of ring node `m`, `None` when it left the set since the build.
    #[inline]
    fn position(&self, set: &Candidates<'_>, m: usize) -> Option<usize> {
        let hint = self.hints.get(m).copied().unwrap_or(0) as usize;
        set.position_hinted(self.ring.shared_name(m)?, hint)
    }

    /// The positions of the ring's nodes still in the set, clockwise from `hash`.
    fn walk<'a>(&'a self, set: Candidates<'a>, hash: u64) -> impl Iterator<Item = usize> + 'a {
        self.ring
            .walk(hash)
            .filter_map(move |m| self.position(&set, m))
    }

    /// Applies the pending joins and leaves to the ring: O(changes), see
    /// [`Ring::with_changes`].
    fn apply(&mut self, set: &Candidates<'_>) {
        let left: HashSet<&str> = self.left.iter().map(|id| &**id).collect();
        // Joined and still here (a join then a leave within the window adds nothing; a leave
        // then a join, or a new address, removes the node and adds it again).
        let mut seen: HashSet<&str> = HashSet::new();
        let added: Vec<Arc<str>> = self
            .joined
            .iter()
            .filter(|id| set.position(id).is_some() && seen.insert(&***id))
            .cloned()
            .collect();
        let ring = &self.ring;
        let (next, indices) = ring.with_changes_at(
            |m| ring.shared_name(m).is_some_and(|n| !left.contains(&**n)),
            added.iter().cloned(),
        );
        let mut hints = self.hints.to_vec();
        hints.resize(next.indices(), 0);
        for (id, m) in added.iter().zip(indices) {
            hints[m] = set.position(id).unwrap_or(0) as u32;
        }
        for (id, to) in &self.moved {
            if let Some(m) = next.index_of(id) {
                hints[m] = *to;
            }
        }
        self.ring = Arc::new(next);
        self.hints = hints.into();
        self.joined.clear();
        self.left.clear();
        self.moved.clear();
        self.built = Instant::now();
    }
}

impl Pick for ConsistentHash {
    /// The ring over the instance ids.
    type State = RingState;

    fn name(&self) -> &str {
        "hash"
    }

    fn build(&self, set: &Candidates<'_>) -> RingState {
        let names = set.iter().map(|i| i.shared_id().clone()).collect();
        let ring = Ring::from_names(names, self.vnodes, self.hash);
        // Node i is the instance at position i.
        let hints = (0..ring.indices() as u32).collect();
        RingState {
            ring: Arc::new(ring),
            hints,
            built: Instant::now(),
            took: Duration::ZERO,
            joined: Vec::new(),
            left: Vec::new(),
            moved: Vec::new(),
        }
    }

    /// Rebuilds the ring when an instance joined or left, at most once per coalescing
    /// window (see [the type's docs](ConsistentHash#when-the-set-changes)).
    fn update(
        &self,
        state: &mut RingState,
        set: &Candidates<'_>,
        changes: &[SetChange<'_>],
    ) -> Option<Duration> {
        for change in changes {
            match *change {
                SetChange::Added { instance, .. } => {
                    state.joined.push(instance.shared_id().clone());
                }
                SetChange::Removed { instance, .. } => {
                    state.left.push(instance.shared_id().clone());
                }
                // A move keeps the node; its hint is stale (looked up on use) until the next
                // update of the ring.
                SetChange::Moved { to, instance, .. } => {
                    state.moved.push((instance.shared_id().clone(), to as u32));
                }
            }
        }
        if state.joined.is_empty() && state.left.is_empty() {
            return None;
        }
        // However large the ring, updates take at most 1/20 of one core.
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
        state.apply(set);
        state.took = started.elapsed();
        tracing::debug!(
            instances = set.len(),
            points = state.ring.len() * state.ring.vnodes(),
            took_us = state.took.as_micros() as u64,
            "consistent-hash ring updated"
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
