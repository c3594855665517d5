//! What the live balanced Endpoints counted, for a status page: [`endpoint_stats`] and
//! [`Endpoint::stats`](crate::Endpoint::stats) read [`EndpointStats`].
//!
//! Every Endpoint built by [`EndpointBuilder`](crate::EndpointBuilder) keeps its counters in
//! one [`Counters`], shared by its clones; a process-wide list holds a weak reference to each,
//! so an Endpoint whose last clone is dropped leaves the view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// What balanced Endpoints of one service with one picker counted since they were built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The service called.
    pub service: String,
    /// The picker's [`name`](crate::Pick::name): `random`, `round_robin`, `hash`, `p2c`, or a
    /// custom picker's.
    pub picker: String,
    /// How many live Endpoints these numbers add up: separately built ones count apart,
    /// clones of one are one.
    pub endpoints: usize,
    /// Calls that ended, each `invoke` once whatever its retries (cancelled calls included).
    pub requests: u64,
    /// Calls that ended in an error or a 5xx answer: every outcome but `ok` and `cancelled`.
    pub failures: u64,
    /// Attempts after the first of a call (on another instance).
    pub retries: u64,
    /// Instances avoided for the ejection period after a failed connect.
    pub ejections: u64,
    /// Calls under way now.
    pub in_flight: u64,
}

/// One Endpoint's counters, shared by its clones.
#[derive(Debug)]
pub(crate) struct Counters {
    service: String,
    picker: String,
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

/// Every Endpoint's counters that may still be alive.
static LIVE: Mutex<Vec<Weak<Counters>>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<Weak<Counters>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Counters {
    /// New counters, listed in [`endpoint_stats`] until the last reference drops.
    pub(crate) fn register(service: &str, picker: &str) -> Arc<Self> {
        let counters = Arc::new(Self {
            service: service.to_owned(),
            picker: picker.to_owned(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        });
        let mut live = live();
        // Dropped Endpoints leave here, so a program that builds many keeps a short list.
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&counters));
        counters
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    pub(crate) fn picker(&self) -> &str {
        &self.picker
    }

    /// The counters now, as one Endpoint's stats.
    pub(crate) fn snapshot(&self) -> EndpointStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EndpointStats {
            service: self.service.clone(),
            picker: self.picker.clone(),
            endpoints: 1,
            requests: read(&self.requests),
            failures: read(&self.failures),
            retries: read(&self.retries),
            ejections: read(&self.ejections),
            in_flight: read(&self.in_flight),
        }
    }
}

/// The balanced Endpoints alive in this process (built by
/// [`EndpointBuilder`](crate::EndpointBuilder), not yet dropped), added up per service and
/// picker, sorted by service then picker.
///
/// The counters are read one by one without a lock, so a call ending meanwhile may show in
/// one and not yet in another.
pub fn endpoint_stats() -> Vec<EndpointStats> {
    let alive: Vec<Arc<Counters>> = {
        let mut live = live();
        live.retain(|w| w.strong_count() > 0);
        live.iter().filter_map(Weak::upgrade).collect()
    };
    let mut by_name: BTreeMap<(&str, &str), EndpointStats> = BTreeMap::new();
    for c in &alive {
        let s = c.snapshot();
        match by_name.get_mut(&(c.service(), c.picker())) {
            Some(sum) => {
                sum.endpoints += 1;
                sum.requests += s.requests;
                sum.failures += s.failures;
                sum.retries += s.retries;
                sum.ejections += s.ejections;
                sum.in_flight += s.in_flight;
            }
            None => {
                by_name.insert((c.service(), c.picker()), s);
            }
        }
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(service: &str) -> Vec<EndpointStats> {
        endpoint_stats()
            .into_iter()
            .filter(|s| s.service == service)
            .collect()
    }

    #[test]
    fn endpoints_add_up_per_service_and_picker_and_leave_when_dropped() {
        let a = Counters::register("stats_unit", "p2c");
        let b = Counters::register("stats_unit", "p2c");
        let c = Counters::register("stats_unit", "hash");
        a.requests.fetch_add(3, Ordering::Relaxed);
        b.requests.fetch_add(4, Ordering::Relaxed);
        b.failures.fetch_add(1, Ordering::Relaxed);
        c.in_flight.fetch_add(2, Ordering::Relaxed);
        let got = find("stats_unit");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].picker.as_str(), got[0].in_flight), ("hash", 2));
        let p2c = &got[1];
        assert_eq!(
            (
                p2c.picker.as_str(),
                p2c.endpoints,
                p2c.requests,
                p2c.failures
            ),
            ("p2c", 2, 7, 1)
        );
        drop((a, c));
        let got = find("stats_unit");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].endpoints, got[0].requests), (1, 4));
        drop(b);
        assert!(find("stats_unit").is_empty());
    }
}
