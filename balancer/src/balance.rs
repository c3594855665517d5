//! Per-endpoint picker state over the registry's shared view: the current table of
//! instances (with their in-flight counters and the picker's state for that set), rebuilt
//! only when the set changes and without blocking callers.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svckit_registry::{Instance, InstanceChange, Instances, ServiceWatch};

use crate::pick::{Candidates, Pick, SetChange};
use crate::ring::HashFn;
use crate::slot::{Entry, Positions, Slot};

/// One immutable view of the instances at positions `0..len`, with their slots and the
/// picker's state. Persistent: the next table shares all but what changed.
pub(crate) struct Table<S> {
    /// The discovery snapshot this table reflects.
    snapshot: Instances,
    entries: imbl::Vector<Entry>,
    positions: Positions,
    state: S,
    /// When the picker asked to be updated again (see [`Pick::update`]).
    revisit: Option<Instant>,
}

impl<S: Clone> Table<S> {
    fn first<P: Pick<State = S>>(snapshot: Instances, picker: &P, total: &AtomicUsize) -> Self {
        let entries: imbl::Vector<Entry> = snapshot
            .iter()
            .map(|i| Entry::new(i, Arc::default()))
            .collect();
        let positions: Positions = snapshot
            .iter()
            .enumerate()
            .map(|(at, i)| (i.shared_id().clone(), at))
            .collect();
        let state = picker.build(&Candidates::new(&entries, &positions, total, None));
        Self {
            snapshot,
            entries,
            positions,
            state,
            revisit: None,
        }
    }

    /// The table for `snapshot`, made from this one in O(changes · log n): an instance that
    /// joins takes the next position; one that leaves is replaced by the last (which moves);
    /// one whose address changed keeps its position and its counters.
    fn next<P: Pick<State = S>>(
        &self,
        snapshot: Instances,
        picker: &P,
        total: &AtomicUsize,
    ) -> Self {
        let mut entries = self.entries.clone();
        let mut positions = self.positions.clone();
        let mut moves: Vec<(Instance, Move)> = Vec::new();
        for change in snapshot.changes_since(&self.snapshot) {
            match change {
                InstanceChange::Added(new) => {
                    let at = entries.len();
                    entries.push_back(Entry::new(new, Arc::default()));
                    positions.insert(new.shared_id().clone(), at);
                    moves.push((new.clone(), Move::Added(at)));
                }
                InstanceChange::Updated { old, new } => {
                    let Some(&at) = positions.get(old.id()) else {
                        continue;
                    };
                    let slot = entries[at].slot.clone();
                    entries.set(at, Entry::new(new, slot));
                    moves.push((old.clone(), Move::Removed(at)));
                    moves.push((new.clone(), Move::Added(at)));
                }
                InstanceChange::Removed(old) => {
                    let Some(at) = positions.remove(old.id()) else {
                        continue;
                    };
                    let last = entries.pop_back().expect("a position implies an entry");
                    moves.push((old.clone(), Move::Removed(at)));
                    if at < entries.len() {
                        let from = entries.len();
                        positions.insert(last.instance.shared_id().clone(), at);
                        moves.push((last.instance.clone(), Move::Moved(from, at)));
                        entries.set(at, last);
                    }
                }
            }
        }
        let mut state = self.state.clone();
        let changes: Vec<SetChange<'_>> = moves
            .iter()
            .map(|(instance, m)| match *m {
                Move::Added(at) => SetChange::Added { at, instance },
                Move::Removed(at) => SetChange::Removed { at, instance },
                Move::Moved(from, to) => SetChange::Moved { from, to, instance },
            })
            .collect();
        let again = picker.update(
            &mut state,
            &Candidates::new(&entries, &positions, total, None),
            &changes,
        );
        Self {
            snapshot,
            entries,
            positions,
            state,
            revisit: again.map(|d| Instant::now() + d),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when this table reflects `snapshot` and the picker asked for no revisit yet.
    fn is_current(&self, snapshot: &Instances) -> bool {
        self.snapshot.ptr_eq(snapshot) && self.revisit.is_none_or(|at| Instant::now() < at)
    }

    /// The instance at position `i`.
    pub(crate) fn entry(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    #[cfg(test)]
    fn load(&self, i: usize) -> usize {
        self.entries[i].slot.in_flight.load(Ordering::Relaxed)
    }
}

enum Move {
    Added(usize),
    Removed(usize),
    Moved(usize, usize),
}

/// Decrements the in-flight counters when the attempt ends or its future is dropped. It
/// borrows the table the attempt picked from, which the call holds meanwhile.
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    slot: &'a Slot,
    total: &'a AtomicUsize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The picker state of one endpoint, shared by its clones.
pub(crate) struct Balancer<P: Pick> {
    watch: ServiceWatch,
    picker: P,
    key_hash: Option<HashFn>,
    current: Mutex<Arc<Table<P::State>>>,
    rebuilding: AtomicBool,
    total: AtomicUsize,
    epoch: Instant,
    eject_for: Duration,
    /// The latest ejection deadline of any instance (ms since `epoch`); picks read the clock
    /// only while it lies in the future.
    ejections_until: AtomicU64,
}

impl<P: Pick> fmt::Debug for Balancer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("service", &self.watch.name())
            .field("picker", &std::any::type_name::<P>())
            .field("in_flight", &self.total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Clears `rebuilding` even if building panics.
struct Rebuilding<'a>(&'a AtomicBool);

impl Drop for Rebuilding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<P: Pick> Balancer<P> {
    pub(crate) fn new(watch: ServiceWatch, picker: P, eject_for: Duration) -> Self {
        let total = AtomicUsize::new(0);
        let first = Table::first(watch.snapshot(), &picker, &total);
        Self {
            watch,
            key_hash: picker.key_hash(),
            picker,
            current: Mutex::new(Arc::new(first)),
            rebuilding: AtomicBool::new(false),
            total,
            epoch: Instant::now(),
            eject_for,
            ejections_until: AtomicU64::new(0),
        }
    }

    /// The hash of request keys when the picker uses them.
    pub(crate) fn key_hash(&self) -> Option<HashFn> {
        self.key_hash
    }

    /// The table for the current snapshot. The lock is held only to clone or swap an `Arc`;
    /// an update happens outside it, by one caller, in O(changes), while the others keep
    /// the previous table.
    pub(crate) fn table(&self) -> Arc<Table<P::State>> {
        let snapshot = self.watch.snapshot();
        let cur = self.lock().clone();
        if cur.is_current(&snapshot) {
            return cur;
        }
        let someone_else = self
            .rebuilding
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err();
        if someone_else && !cur.entries.is_empty() {
            return cur;
        }
        let _guard = (!someone_else).then(|| Rebuilding(&self.rebuilding));
        // Another caller may have updated the table between the first look and the flag:
        // look again, so that each change reaches the picker once.
        let (snapshot, cur) = (self.watch.snapshot(), self.lock().clone());
        if cur.is_current(&snapshot) {
            return cur;
        }
        let next = Arc::new(cur.next(snapshot, &self.picker, &self.total));
        tracing::trace!(
            service = %self.watch.name(),
            instances = next.len(),
            "picker table updated"
        );
        // Only over the table it was made from: never replace a newer one (possible when
        // callers build concurrently while the set was empty).
        let mut current = self.lock();
        if Arc::ptr_eq(&current, &cur) {
            *current = next.clone();
        }
        next
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Table<P::State>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Avoid instance `i` for the ejection period (after a failed connect). True when this
    /// sets it aside; false when ejection is off or it already was (its period restarts).
    pub(crate) fn eject(&self, table: &Table<P::State>, i: usize) -> bool {
        if self.eject_for.is_zero() {
            return false;
        }
        let now = self.now_ms();
        let until = now.saturating_add(self.eject_for.as_millis() as u64);
        let before = table.entries[i]
            .slot
            .ejected_until
            .swap(until, Ordering::Relaxed);
        self.ejections_until.fetch_max(until, Ordering::Relaxed);
        // A failed connect to an instance already set aside extends its ejection; it is not
        // another ejection (the metric counts instances set aside, not failed connects).
        let fresh = before <= now;
        if fresh {
            tracing::debug!(
                service = %self.watch.name(),
                addr = %table.entries[i].instance.addr(),
                eject_for = ?self.eject_for,
                "instance ejected after a failed connect"
            );
        }
        fresh
    }

    /// Picks an instance, avoiding those in `tried` (instance ids of earlier attempts) and
    /// ejected ones while others are left: the picker's choice, else up to two more of its
    /// choices, else its [`alternatives`](Pick::alternatives); when every instance is tried
    /// or ejected, an untried one, else the first choice: an answer rather than a failure.
    pub(crate) fn pick(
        &self,
        table: &Table<P::State>,
        key: Option<u64>,
        tried: &[String],
    ) -> Option<usize> {
        let set = Candidates::new(&table.entries, &table.positions, &self.total, key);
        let first = self.picker.pick(&table.state, &set)?;
        // No ejection pending: skip the clock (ejected_until > u64::MAX never holds).
        let until = self.ejections_until.load(Ordering::Relaxed);
        let now = if until == 0 {
            u64::MAX
        } else {
            let now = self.now_ms();
            if now >= until {
                // Every ejection has lapsed. Clear only if no newer one arrived meanwhile.
                let _ = self.ejections_until.compare_exchange(
                    until,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            now
        };
        let fresh = |i: usize| !tried.iter().any(|t| t == table.entries[i].instance.id());
        let good = |i: usize| {
            fresh(i) && table.entries[i].slot.ejected_until.load(Ordering::Relaxed) <= now
        };
        if good(first) {
            return Some(first);
        }
        for _ in 0..2 {
            if let Some(i) = self.picker.pick(&table.state, &set).filter(|&i| good(i)) {
                return Some(i);
            }
        }
        let alternatives = || self.picker.alternatives(&table.state, set, first);
        if let Some(i) = alternatives().find(|&i| good(i)) {
            return Some(i);
        }
        Some(alternatives().find(|&i| fresh(i)).unwrap_or(first))
    }

    /// Counts a call to instance `i` as in flight until the guard drops.
    pub(crate) fn start<'a>(&'a self, table: &'a Table<P::State>, i: usize) -> InFlight<'a> {
        let slot = &*table.entries[i].slot;
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            slot,
            total: &self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picker::Picker;
    use crate::round_robin::RoundRobin;
    use svckit_registry::{Discovery, Instance};

    fn discovery(n: usize) -> Discovery {
        Discovery::from_static((0..n).map(|i| {
            Instance::new(format!("i{i}"), "svc", format!("127.0.0.1:{}", 1000 + i)).unwrap()
        }))
    }

    #[test]
    fn table_is_cached_and_counters_follow_guards() {
        let d = discovery(3);
        let b = Balancer::new(
            d.watch("svc").unwrap(),
            Picker::RoundRobin(RoundRobin::new()),
            Duration::from_secs(1),
        );
        let t1 = b.table();
        assert!(Arc::ptr_eq(&t1, &b.table()));
        let g = b.start(&t1, 1);
        assert_eq!(t1.load(1), 1);
        drop(g);
        assert_eq!(t1.load(1), 0);
        assert_eq!(b.total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn retries_avoid_tried_and_ejected_instances() {
        let d = discovery(3);
        let b = Balancer::new(
            d.watch("svc").unwrap(),
            Picker::RoundRobin(RoundRobin::new()),
            Duration::from_secs(60),
        );
        let t = b.table();
        let tried = vec!["i0".to_owned(), "i1".to_owned()];
        for _ in 0..5 {
            assert_eq!(b.pick(&t, None, &tried), Some(2));
        }
        b.eject(&t, 2);
        for _ in 0..5 {
            assert_ne!(b.pick(&t, None, &[]), Some(2));
        }
        // Everything tried or ejected: still an answer, never a failure.
        let all: Vec<String> = (0..3).map(|i| format!("i{i}")).collect();
        assert!(b.pick(&t, None, &all).is_some());
    }
}

#[cfg(test)]
mod p2c_tests {
    use super::*;
    use crate::p2c::P2c;
    use crate::picker::Picker;
    use svckit_registry::{Discovery, Instance};

    #[test]
    fn p2c_sees_in_flight_counts() {
        let d = Discovery::from_static((0..3).map(|i| {
            Instance::new(format!("i{i}"), "svc", format!("127.0.0.1:{}", 1000 + i)).unwrap()
        }));
        let b = Balancer::new(
            d.watch("svc").unwrap(),
            Picker::P2c(P2c::from_seed(5)),
            Duration::from_secs(1),
        );
        let t = b.table();
        let _busy: Vec<_> = (0..10).map(|_| b.start(&t, 2)).collect();
        for _ in 0..100 {
            let t = b.table();
            assert_ne!(b.pick(&t, None, &[]), Some(2));
        }
    }
}
