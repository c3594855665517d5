//! The [`Pick`] trait: how an Endpoint chooses one instance of the current set for a request.
//!
//! The four built-in pickers ([`Random`](crate::Random), [`RoundRobin`](crate::RoundRobin),
//! [`ConsistentHash`](crate::ConsistentHash), [`P2c`](crate::P2c)) implement it, and so does
//! [`Picker`](crate::Picker), which names them for a command-line flag. Any other type that
//! implements it can be given to
//! [`EndpointBuilder::picker`](crate::EndpointBuilder::picker).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use svckit_registry::Instance;

use crate::ring::HashFn;
use crate::slot::Slot;

/// Picks one instance of the current set for a request.
///
/// # How a change of the set reaches a picker
///
/// An Endpoint keeps a table: the instances of one discovery snapshot, their counters, and
/// the picker's [`State`](Pick::State) for that set. When discovery publishes a new snapshot,
/// the first call that sees it builds the next table, calling [`Pick::build`] once; calls
/// running at the same time keep picking from the previous table meanwhile, so no call waits
/// for a rebuild and a set change costs one `build`, never one per call (the exception: while
/// the previous set was empty, concurrent first calls each build rather than fail). Between
/// changes a pick reads the table without a lock.
///
/// ```
/// use svckit_balancer::{Candidates, Pick};
/// use svckit_registry::Instance;
///
/// /// Always the instance with the fewest requests in flight (ties: the first).
/// #[derive(Debug)]
/// struct LeastLoaded;
///
/// impl Pick for LeastLoaded {
///     type State = ();
///     fn build(&self, _instances: &[Instance]) {}
///     fn pick(&self, _state: &(), set: &Candidates<'_>) -> Option<usize> {
///         (0..set.len()).min_by_key(|&i| set.in_flight(i))
///     }
/// }
/// ```
pub trait Pick: Send + Sync + 'static {
    /// What the picker derives from one set of instances (the consistent-hash ring, for
    /// example); `()` when it needs nothing.
    type State: Send + Sync + 'static;

    /// The state for a new set of instances (sorted by id, possibly empty). Called once per
    /// change of the set, off the path of other calls (see [how a change of the set reaches a picker](Pick#how-a-change-of-the-set-reaches-a-picker)).
    fn build(&self, instances: &[Instance]) -> Self::State;

    /// An index into `set.instances()`, or `None` when the set is empty.
    ///
    /// Called once per attempt; must not block. The Endpoint avoids instances that an earlier
    /// attempt of the same call tried or that refused a connect lately: when the choice is
    /// one of those it calls `pick` up to twice more, then follows
    /// [`alternatives`](Self::alternatives).
    fn pick(&self, state: &Self::State, set: &Candidates<'_>) -> Option<usize>;

    /// The instances to consider, in order of preference, when `first` (this picker's
    /// choice) is to be avoided. The default is every instance after `first`, wrapping
    /// around; the consistent-hash picker walks its ring clockwise from the key, so that a
    /// key's second choice is the same on every client.
    fn alternatives<'a>(
        &'a self,
        state: &'a Self::State,
        set: &Candidates<'_>,
        first: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        let _ = state;
        scan_after(first, set.len())
    }

    /// The hash of request keys when this picker uses them ([`Candidates::key`]); `None`
    /// (the default) when it ignores keys, and then the Endpoint computes none. An Endpoint
    /// whose picker returns `Some` needs
    /// [`hash_key`](crate::EndpointBuilder::hash_key).
    fn key_hash(&self) -> Option<HashFn> {
        None
    }
}

/// The current instances as a picker sees them for one request: the set, the requests in
/// flight to each (this Endpoint's), and the request's key hash.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    instances: &'a [Instance],
    slots: &'a [Arc<Slot>],
    total: &'a AtomicUsize,
    key: Option<u64>,
}

impl<'a> Candidates<'a> {
    pub(crate) fn new(
        instances: &'a [Instance],
        slots: &'a [Arc<Slot>],
        total: &'a AtomicUsize,
        key: Option<u64>,
    ) -> Self {
        Self {
            instances,
            slots,
            total,
            key,
        }
    }

    /// The instances, sorted by id.
    #[inline]
    pub fn instances(&self) -> &'a [Instance] {
        self.instances
    }

    /// The number of instances.
    #[inline]
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// True when there is no instance.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Requests of this Endpoint in flight to instance `i`.
    #[inline]
    pub fn in_flight(&self, i: usize) -> usize {
        self.slots[i].in_flight.load(Ordering::Relaxed)
    }

    /// Requests of this Endpoint in flight to all instances.
    #[inline]
    pub fn total_in_flight(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The hash of the request's key ([`Pick::key_hash`] over the bytes of
    /// [`hash_key`](crate::EndpointBuilder::hash_key)); `None` when the picker uses no keys.
    #[inline]
    pub fn key(&self) -> Option<u64> {
        self.key
    }
}

/// Every index of `0..n` after `first`, wrapping around (`first` itself excluded).
pub(crate) fn scan_after(first: usize, n: usize) -> impl Iterator<Item = usize> {
    (1..n).map(move |d| (first + d) % n)
}
