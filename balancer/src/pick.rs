//! The [`Pick`] trait: how an Endpoint chooses one instance of the current set for a request.
//!
//! The four built-in pickers ([`Random`](crate::Random), [`RoundRobin`](crate::RoundRobin),
//! [`ConsistentHash`](crate::ConsistentHash), [`P2c`](crate::P2c)) implement it, and so does
//! [`Picker`](crate::Picker), which names them for a command-line flag. Any other type that
//! implements it can be given to
//! [`EndpointBuilder::picker`](crate::EndpointBuilder::picker).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use svckit_registry::Instance;

use crate::ring::HashFn;
use crate::slot::{Entry, Positions};

/// Picks one instance of the current set for a request.
///
/// # How a change of the set reaches a picker
///
/// An Endpoint keeps a table: the instances of one discovery snapshot at positions
/// `0..len`, their counters, and the picker's [`State`](Pick::State). When discovery
/// publishes a new snapshot, the first call that sees it brings the table up to date in
/// O(changes): an instance that joins takes the next position, one that leaves is replaced
/// by the last one (which moves), and the picker's [`update`](Pick::update) hears of those
/// moves once per batch. Calls running at the same time keep picking from the previous table
/// meanwhile (tables are persistent: the new one shares all but the changed parts), so no
/// call waits and a change costs one update, never one per call. Between changes a pick
/// reads the table without a lock.
///
/// ```
/// use svckit_balancer::{Candidates, Pick};
///
/// /// Always the instance with the fewest requests in flight (ties: the first).
/// #[derive(Debug)]
/// struct LeastLoaded;
///
/// impl Pick for LeastLoaded {
///     type State = ();
///     fn build(&self, _set: &Candidates<'_>) {}
///     fn pick(&self, _state: &(), set: &Candidates<'_>) -> Option<usize> {
///         (0..set.len()).min_by_key(|&i| set.in_flight(i))
///     }
/// }
/// ```
pub trait Pick: Send + Sync + 'static {
    /// What the picker derives from the set (the consistent-hash ring, for example); `()`
    /// when it needs nothing. Cloned when a table is updated, so keep it cheap to clone
    /// (shared or persistent).
    type State: Clone + Send + Sync + 'static;

    /// The state for a set seen for the first time (possibly empty), at positions
    /// `0..set.len()` in id order.
    fn build(&self, set: &Candidates<'_>) -> Self::State;

    /// Brings `state` up to date after the set changed: `set` is the new table, `changes`
    /// says how positions changed since the state was last built or updated, in order.
    /// Called once per batch of changes, off the path of other calls.
    ///
    /// Returns `Some(delay)` to be called again (with no changes) once `delay` has passed,
    /// for a picker that defers costly work to coalesce bursts of changes; `None` otherwise.
    ///
    /// The default builds the state again ([`build`](Self::build)): right for `()`; a
    /// picker whose state grows with the set should apply the changes instead.
    fn update(
        &self,
        state: &mut Self::State,
        set: &Candidates<'_>,
        changes: &[SetChange<'_>],
    ) -> Option<Duration> {
        let _ = changes;
        *state = self.build(set);
        None
    }

    /// A position in `0..set.len()`, or `None` when the set is empty.
    ///
    /// Called once per attempt; must not block. The Endpoint avoids instances that an earlier
    /// attempt of the same call tried or that refused a connect lately: when the choice is
    /// one of those it calls `pick` up to twice more, then follows
    /// [`alternatives`](Self::alternatives).
    fn pick(&self, state: &Self::State, set: &Candidates<'_>) -> Option<usize>;

    /// The positions to consider, in order of preference, when `first` (this picker's
    /// choice) is to be avoided. The default is every position after `first`, wrapping
    /// around; the consistent-hash picker walks its ring clockwise from the key, so that a
    /// key's second choice is the same on every client.
    fn alternatives<'a>(
        &'a self,
        state: &'a Self::State,
        set: Candidates<'a>,
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

    /// The picker's name in an Endpoint's `invoke` span and in
    /// [`endpoint_stats`](crate::endpoint_stats). The built-in pickers answer the name
    /// [`Picker::by_name`](crate::Picker::by_name) takes (`random`, `round_robin`, `hash`,
    /// `p2c`); the default is the type's name without its module path (`LeastLoaded`).
    fn name(&self) -> &str {
        short_type_name(std::any::type_name::<Self>())
    }
}

/// `a::b::Foo<c::Bar>` -> `Foo`.
fn short_type_name(full: &str) -> &str {
    let path = full.split('<').next().unwrap_or(full);
    path.rsplit("::").next().unwrap_or(path)
}

/// How the positions of an Endpoint's table changed (see [`Pick::update`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetChange<'a> {
    /// `instance` joined the set at position `at` (an instance whose address changed leaves
    /// and joins again at the same position).
    Added {
        /// Its position.
        at: usize,
        /// The instance.
        instance: &'a Instance,
    },
    /// `instance`, at position `at`, left the set.
    Removed {
        /// The position it had.
        at: usize,
        /// The instance.
        instance: &'a Instance,
    },
    /// `instance` moved from position `from` (the last) to position `to`, in place of one
    /// that left.
    Moved {
        /// Where it was.
        from: usize,
        /// Where it is now.
        to: usize,
        /// The instance.
        instance: &'a Instance,
    },
}

/// The current instances as a picker sees them for one request: the set at positions
/// `0..len`, the requests in flight to each (this Endpoint's), and the request's key hash.
#[derive(Clone, Copy)]
pub struct Candidates<'a> {
    entries: &'a imbl::Vector<Entry>,
    positions: &'a Positions,
    total: &'a AtomicUsize,
    key: Option<u64>,
}

impl std::fmt::Debug for Candidates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidates")
            .field("len", &self.entries.len())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<'a> Candidates<'a> {
    pub(crate) fn new(
        entries: &'a imbl::Vector<Entry>,
        positions: &'a Positions,
        total: &'a AtomicUsize,
        key: Option<u64>,
    ) -> Self {
        Self {
            entries,
            positions,
            total,
            key,
        }
    }

    /// The instance at position `i` (`i < len()`).
    #[inline]
    pub fn instance(&self, i: usize) -> &'a Instance {
        &self.entries[i].instance
    }

    /// The instances, by position.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a Instance> + 'a {
        self.entries.iter().map(|e| &e.instance)
    }

    /// The position of the instance with this id, if it is in the set.
    #[inline]
    pub fn position(&self, id: &str) -> Option<usize> {
        self.positions.get(id).copied()
    }

    /// The position of `id` when `hint` is it (a pointer comparison), else looked up.
    #[inline]
    pub(crate) fn position_hinted(&self, id: &Arc<str>, hint: usize) -> Option<usize> {
        match self.entries.get(hint) {
            Some(e) if Arc::ptr_eq(e.instance.shared_id(), id) => Some(hint),
            _ => self.position(id),
        }
    }

    /// The number of instances.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no instance.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests of this Endpoint in flight to instance `i`.
    #[inline]
    pub fn in_flight(&self, i: usize) -> usize {
        self.entries[i].slot.in_flight.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picker_is_named_by_its_type_without_path_or_parameters() {
        assert_eq!(
            short_type_name("my_crate::pickers::LeastLoaded"),
            "LeastLoaded"
        );
        assert_eq!(short_type_name("a::Wrap<b::Inner>"), "Wrap");
        assert_eq!(short_type_name("Plain"), "Plain");
        assert_eq!(Pick::name(&crate::RoundRobin::new()), "round_robin");
        assert_eq!(Pick::name(&crate::Picker::by_name("ring").unwrap()), "hash");
    }
}
