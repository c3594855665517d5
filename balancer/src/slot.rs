//! What an Endpoint keeps per instance across changes of the set: requests in flight and
//! the ejection deadline.

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Per-instance state that survives table rebuilds (carried over by instance id).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Requests of this Endpoint in flight to the instance.
    pub(crate) in_flight: AtomicUsize,
    /// Milliseconds since the balancer's epoch until which the instance is avoided; 0 = never.
    pub(crate) ejected_until: AtomicU64,
}
