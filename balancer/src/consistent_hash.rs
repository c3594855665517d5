//! The consistent-hash picker: a request's key hashed onto a [`Ring`] of the instance ids,
//! optionally with bounded loads.

use std::fmt;

use svckit_registry::Instance;

use crate::pick::{Candidates, Pick};
use crate::ring::{xxh3, HashFn, Ring, DEFAULT_VNODES};

/// Consistent hashing over the instance ids (the balancer's [`Ring`]): a request goes to the
/// owner of its key (set with [`EndpointBuilder::hash_key`](crate::EndpointBuilder::hash_key)),
/// so one key keeps going to one instance while the set does not change, and a change moves
/// only the keys of the instances that came or went.
#[derive(Clone, Copy)]
#[must_use]
pub struct ConsistentHash {
    vnodes: usize,
    hash: HashFn,
    epsilon: Option<f64>,
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
        }
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

impl Pick for ConsistentHash {
    /// The ring over the instance ids, rebuilt once per change of the set.
    type State = Ring;

    fn build(&self, instances: &[Instance]) -> Ring {
        let ids: Vec<&str> = instances.iter().map(|i| i.id()).collect();
        Ring::with_hash(&ids, self.vnodes, self.hash)
    }

    #[inline]
    fn pick(&self, ring: &Ring, set: &Candidates<'_>) -> Option<usize> {
        let h = set.key().unwrap_or(0);
        match self.epsilon {
            None => ring.owner_of_hash(h),
            Some(eps) => ring.owner_bounded(h, eps, set.total_in_flight(), |i| set.in_flight(i)),
        }
    }

    /// The ring clockwise from the key: the owners a key falls back to, the same on every
    /// client.
    fn alternatives<'a>(
        &'a self,
        ring: &'a Ring,
        set: &Candidates<'_>,
        _first: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        ring.walk(set.key().unwrap_or(0))
    }

    fn key_hash(&self) -> Option<HashFn> {
        Some(self.hash)
    }
}
