//! [`Instances`]: the snapshot of one service's instances, persistent so that a change costs
//! O(log n) and comparing two snapshots O(changes).

use std::fmt;
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use imbl::OrdMap;

use crate::instance::Instance;

/// The instances of one service name at one moment, sorted by id.
///
/// A snapshot is immutable and shares its structure with the snapshots before and after it
/// (a persistent B-tree: imbl's `OrdMap`, id → instance). Taking one costs a reference
/// count; the view applies a change in O(log n) without copying the set; and
/// [`changes_since`](Self::changes_since) compares two snapshots of the same service in
/// O(changes · log n) by skipping the parts they share. See docs/DESIGN.md, "Discovery at
/// scale".
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Instances {
    pub(crate) map: OrdMap<Arc<str>, Instance>,
}

/// How a service's set changed between two [`Instances`] snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceChange<'a> {
    /// An instance joined.
    Added(&'a Instance),
    /// An instance left.
    Removed(&'a Instance),
    /// An instance kept its id and changed its address.
    Updated {
        /// As it was.
        old: &'a Instance,
        /// As it is now.
        new: &'a Instance,
    },
}

impl Instances {
    /// The number of instances.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there is no instance.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The instances, sorted by id.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.map.values())
    }

    /// The instance with this id.
    pub fn get(&self, id: &str) -> Option<&Instance> {
        self.map.get(id)
    }

    /// The instances in a `Vec`, sorted by id.
    pub fn to_vec(&self) -> Vec<Instance> {
        self.map.values().cloned().collect()
    }

    /// What changed from `older` to this snapshot, in id order. In O(changes · log n) when
    /// both are snapshots of the same service from one view (they share all but the changed
    /// parts), in O(n) for unrelated sets.
    pub fn changes_since<'a>(
        &'a self,
        older: &'a Instances,
    ) -> impl Iterator<Item = InstanceChange<'a>> + 'a {
        older.map.diff(&self.map).map(|item| match item {
            DiffItem::Add(_, new) => InstanceChange::Added(new),
            DiffItem::Remove(_, old) => InstanceChange::Removed(old),
            DiffItem::Update { old, new } => InstanceChange::Updated {
                old: old.1,
                new: new.1,
            },
        })
    }

    /// True when both are the very same snapshot (a pointer comparison; two equal sets built
    /// apart are not).
    pub fn ptr_eq(&self, other: &Instances) -> bool {
        self.map.ptr_eq(&other.map)
    }

    /// Puts `instance`; false when it was already there as it is.
    pub(crate) fn insert(&mut self, instance: Instance) -> bool {
        let id = instance.shared_id().clone();
        match self.map.get(&id) {
            Some(old) if *old == instance => false,
            _ => {
                self.map.insert(id, instance);
                true
            }
        }
    }

    /// Removes the instance `id`; false when there was none.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        self.map.remove(id).is_some()
    }
}

impl fmt::Debug for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.map.values()).finish()
    }
}

impl FromIterator<Instance> for Instances {
    fn from_iter<I: IntoIterator<Item = Instance>>(iter: I) -> Self {
        let mut set = Self::default();
        for instance in iter {
            set.insert(instance);
        }
        set
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = &'a Instance;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The instances of an [`Instances`] snapshot, sorted by id.
pub struct Iter<'a>(
    imbl::ordmap::Values<'a, Arc<str>, Instance, imbl::shared_ptr::DefaultSharedPtr>,
);

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("remaining", &self.0.len())
            .finish()
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Instance;

    fn next(&mut self) -> Option<&'a Instance> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for Iter<'_> {}
