//! What an Endpoint keeps per instance: the entry a pick and an attempt read (the instance,
//! its parsed address) and, across changes of the set, requests in flight and the ejection
//! deadline.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use svckit_registry::Instance;

/// Per-instance state that survives table rebuilds (carried over by instance id).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Requests of this Endpoint in flight to the instance.
    pub(crate) in_flight: AtomicUsize,
    /// Milliseconds since the balancer's epoch until which the instance is avoided; 0 = never.
    pub(crate) ejected_until: AtomicU64,
}

/// Instance id → position in a table.
pub(crate) type Positions = imbl::HashMap<Arc<str>, usize>;

/// One instance in a table: what a pick and an attempt need of it.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) instance: Instance,
    /// The address parsed once (`None` if it is not a URI authority).
    pub(crate) authority: Option<http::uri::Authority>,
    /// Counters kept across tables while the instance stays in the set.
    pub(crate) slot: Arc<Slot>,
}

impl Entry {
    pub(crate) fn new(instance: &Instance, slot: Arc<Slot>) -> Self {
        Self {
            authority: instance.addr().parse().ok(),
            instance: instance.clone(),
            slot,
        }
    }
}
