//! The shared discovery view: one per registry client, fed by one watch on `<prefix>/`,
//! serving every service name.
//!
//! A backend (etcd or in-memory) writes into the view through [`ViewWriter`]; users read it
//! through [`Discovery`]: a cheap snapshot per name, a [`ServiceWatch`] to await changes, and
//! [`ServiceDiscover`], an adapter to tower's `Discover`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::watch;
use tower::discover::Change;

use crate::error::{Error, MalformedEntry};
use crate::follow::{DiscoveryState, Follower, Resync};
use crate::instance::{validate_ident, Instance};
use crate::instances::{InstanceChange, Instances};
use crate::store::{Listing, WatchEvent};
use crate::task::OwnedTask;
use crate::telemetry::{DISCOVERY_INSTANCES, DISCOVERY_MALFORMED, DISCOVERY_RESYNCS};

/// How many malformed keys the view remembers having counted.
const MAX_MALFORMED_REMEMBERED: usize = 10_000;

/// Counters of the discovery view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryStats {
    /// Entries under the prefix skipped because they do not fit the layout, each key once
    /// while it stays malformed (a relist does not count it again; a key deleted and written
    /// malformed again counts again once a relist has seen it gone).
    pub malformed_skipped: u64,
    /// Full listings (initial, after a broken or compacted watch, and reconcile).
    pub relists: u64,
    /// Watch events applied.
    pub events: u64,
    /// Watches that had to start over because the revision they resumed from was compacted.
    pub compactions: u64,
}

#[derive(Default)]
struct View {
    /// name → its current snapshot (absent when the service has no instance). The name key
    /// is shared by every instance of the service.
    by_name: HashMap<Arc<str>, Instances>,
    /// One channel per name somebody asked about.
    channels: HashMap<String, watch::Sender<Instances>>,
}

impl View {
    fn snapshot(&self, name: &str) -> Instances {
        self.by_name.get(name).cloned().unwrap_or_default()
    }

    /// Sends the current snapshot of `name` to its watchers, if any, and its size to the
    /// `svckit_discovery_instances` gauge. O(1): a snapshot is a reference count, and only
    /// names that changed are published.
    fn publish(&self, name: &Arc<str>) {
        let snapshot = self.snapshot(name);
        metrics::gauge!(DISCOVERY_INSTANCES, "service" => name.clone()).set(snapshot.len() as f64);
        if let Some(tx) = self.channels.get(&**name) {
            tx.send_replace(snapshot);
        }
    }

    /// The shared name and the set of service `name` (created empty).
    fn service(&mut self, name: &str) -> (Arc<str>, &mut Instances) {
        let key = match self.by_name.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(name);
                self.by_name.insert(key.clone(), Instances::default());
                key
            }
        };
        let set = self
            .by_name
            .get_mut(name)
            .expect("present: found or inserted above");
        (key, set)
    }
}

struct Shared {
    prefix: String,
    view: Mutex<View>,
    state: watch::Sender<DiscoveryState>,
    malformed: AtomicU64,
    /// The malformed keys counted so far (at most [`MAX_MALFORMED_REMEMBERED`]).
    malformed_seen: Mutex<HashSet<String>>,
    relists: AtomicU64,
    events: AtomicU64,
    compactions: AtomicU64,
}

/// The discovery view of one registry client: every service under the prefix, kept current
/// by one shared watch. Cheap to clone; clones share the view.
#[derive(Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
    // The backend's watcher task: it runs while any clone of this view is alive.
    owner: Option<Arc<OwnedTask<()>>>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("prefix", &self.shared.prefix)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// A new, empty view for keys under `prefix`, and the writer a backend feeds it with.
    pub(crate) fn new(prefix: &str) -> (Self, ViewWriter) {
        let shared = Arc::new(Shared {
            prefix: prefix.trim_end_matches('/').to_owned(),
            view: Mutex::new(View::default()),
            state: watch::Sender::new(DiscoveryState::Connecting),
            malformed: AtomicU64::new(0),
            malformed_seen: Mutex::new(HashSet::new()),
            relists: AtomicU64::new(0),
            events: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
        });
        // The families exist from the start, at 0: a dashboard or an alert on them reads 0
        // rather than "no data" until the first resync or malformed key.
        metrics::counter!(DISCOVERY_MALFORMED).increment(0);
        for reason in [Resync::Compaction, Resync::Reconnect, Resync::Reconcile] {
            metrics::counter!(DISCOVERY_RESYNCS, "reason" => reason.as_str()).increment(0);
        }
        (
            Self {
                shared: shared.clone(),
                owner: None,
            },
            ViewWriter { shared },
        )
    }

    /// Ties the backend's watcher task to this view: it is cancelled when the last clone
    /// (including those inside [`ServiceWatch`]es) is dropped.
    pub(crate) fn owned_by(mut self, task: Arc<OwnedTask<()>>) -> Self {
        self.owner = Some(task);
        self
    }

    /// A fixed view over `instances` that never changes: go-kit's fixed endpointer, for
    /// static configurations and tests.
    pub fn from_static(instances: impl IntoIterator<Item = Instance>) -> Self {
        let (discovery, writer) = Self::new(crate::DEFAULT_PREFIX);
        writer.replace_all(instances.into_iter().map(Ok));
        writer.set_state(DiscoveryState::Static);
        discovery
    }

    /// The key prefix this view follows, without a trailing slash.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The current instances of `name`, sorted by id. Empty when there are none (or the name
    /// is not a valid identifier).
    pub fn instances(&self, name: &str) -> Instances {
        let view = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        match view.channels.get(name) {
            Some(tx) => tx.borrow().clone(),
            None => view.snapshot(name),
        }
    }

    /// Every instance currently known, of every service.
    pub fn all(&self) -> Vec<Instance> {
        let view = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Instance> = view
            .by_name
            .values()
            .flat_map(|set| set.iter().cloned())
            .collect();
        all.sort();
        all
    }

    /// A watch on the instances of `name`: a cheap snapshot plus a way to await the next
    /// change. Fails when `name` is not `[A-Za-z0-9_]+`.
    ///
    /// The view keeps one small channel per name ever watched, for the life of the registry
    /// client; watch names from your configuration, not from untrusted input.
    pub fn watch(&self, name: &str) -> Result<ServiceWatch, Error> {
        validate_ident("name", name)?;
        let mut view = self.shared.view.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match view.channels.get(name) {
            Some(tx) => tx.subscribe(),
            None => {
                let tx = watch::Sender::new(view.snapshot(name));
                let rx = tx.subscribe();
                view.channels.insert(name.to_owned(), tx);
                rx
            }
        };
        Ok(ServiceWatch {
            name: name.into(),
            rx,
            _discovery: self.clone(),
        })
    }

    /// An adapter to tower's `Discover` for `name`: it yields `Change::Insert(id, make(&instance))`
    /// for every instance present now and added later, and `Change::Remove(id)` for every one
    /// that goes away. An instance whose address changes is inserted again under its id.
    pub fn discover<S, F>(&self, name: &str, make: F) -> Result<ServiceDiscover<S, F>, Error>
    where
        F: FnMut(&Instance) -> S,
    {
        let watch = self.watch(name)?;
        Ok(ServiceDiscover::new(watch, make))
    }

    /// Where the view stands with its backend.
    pub fn state(&self) -> DiscoveryState {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn state_watch(&self) -> watch::Receiver<DiscoveryState> {
        self.shared.state.subscribe()
    }

    /// Counters: malformed entries skipped, relists, events applied.
    pub fn stats(&self) -> DiscoveryStats {
        DiscoveryStats {
            malformed_skipped: self.shared.malformed.load(Ordering::Relaxed),
            relists: self.shared.relists.load(Ordering::Relaxed),
            events: self.shared.events.load(Ordering::Relaxed),
            compactions: self.shared.compactions.load(Ordering::Relaxed),
        }
    }
}

/// The write side of a [`Discovery`] view, held by the backend's watcher task.
#[derive(Clone)]
pub(crate) struct ViewWriter {
    shared: Arc<Shared>,
}

impl fmt::Debug for ViewWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewWriter")
            .field("prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

impl ViewWriter {
    /// Skips a malformed entry: logged and counted the first time its key is seen malformed.
    fn skip(&self, bad: &MalformedEntry) {
        let mut seen = self
            .shared
            .malformed_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_MALFORMED_REMEMBERED {
            // A flood of bad keys: forget them (they count again) rather than grow.
            seen.clear();
        }
        if seen.insert(bad.key.clone()) {
            self.shared.malformed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(DISCOVERY_MALFORMED).increment(1);
            tracing::warn!(key = %bad.key, reason = bad.reason, "skipping malformed registry entry");
        } else {
            tracing::debug!(key = %bad.key, reason = bad.reason, "skipping malformed registry entry (seen before)");
        }
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        self.shared.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parses a raw entry under the prefix; malformed ones are logged, counted and dropped.
    pub(crate) fn parse(&self, key: &[u8], value: &[u8]) -> Option<Instance> {
        match Instance::from_entry(&self.shared.prefix, key, value) {
            Ok(instance) => Some(instance),
            Err(bad) => {
                self.skip(&bad);
                None
            }
        }
    }

    /// Replaces the whole view with a fresh listing. Malformed entries (already parsed to
    /// `Err`) are counted and skipped.
    ///
    /// The listing is applied as the differences from the current view, so a service whose
    /// instances did not change keeps its very snapshot (watchers are not woken) and one that
    /// changed shares everything else with its previous snapshot (readers compare the two in
    /// O(changes)). O(n log n) for n listed entries.
    pub(crate) fn replace_all(
        &self,
        entries: impl IntoIterator<Item = Result<Instance, MalformedEntry>>,
    ) {
        let mut listed: HashMap<String, Vec<Instance>> = HashMap::new();
        let mut malformed = Vec::new();
        for entry in entries {
            match entry {
                Ok(i) => match listed.get_mut(i.name()) {
                    Some(list) => list.push(i),
                    None => {
                        listed.insert(i.name().to_owned(), vec![i]);
                    }
                },
                Err(bad) => malformed.push(bad),
            }
        }
        // The listing says which keys are malformed now: forget those that are gone, then
        // count the new ones.
        let now: HashSet<&str> = malformed.iter().map(|b| b.key.as_str()).collect();
        self.shared
            .malformed_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| now.contains(k.as_str()));
        for bad in &malformed {
            self.skip(bad);
        }
        self.shared.relists.fetch_add(1, Ordering::Relaxed);
        let mut view = self.lock();
        let gone: Vec<Arc<str>> = view
            .by_name
            .keys()
            .filter(|name| !listed.contains_key(&***name as &str))
            .cloned()
            .collect();
        for name in gone {
            view.by_name.remove(&name);
            view.publish(&name);
        }
        for (name, mut instances) in listed {
            instances.sort_unstable_by(|a, b| a.id().cmp(b.id()));
            instances.dedup_by(|a, b| a.id() == b.id());
            let (shared_name, set) = view.service(&name);
            if set.is_empty() {
                // A service seen for the first time (every service at start): built from the
                // sorted list at once rather than inserted one by one.
                set.map = instances
                    .into_iter()
                    .map(|i| (i.shared_id().clone(), i.sharing_name(&shared_name)))
                    .collect();
                if !set.is_empty() {
                    view.publish(&shared_name);
                }
                continue;
            }
            let mut changed = false;
            let stale: Vec<Arc<str>> = set
                .map
                .keys()
                .filter(|id| instances.binary_search_by(|i| i.id().cmp(id)).is_err())
                .cloned()
                .collect();
            for id in stale {
                changed |= set.remove(&id);
            }
            for instance in instances {
                changed |= set.insert(instance.sharing_name(&shared_name));
            }
            if changed {
                view.publish(&shared_name);
            }
        }
    }

    /// Applies the events of one watch response together: readers see all of them or none,
    /// and each service that changed is published once.
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch {
            writer: self,
            view: self.lock(),
            touched: Vec::new(),
        }
    }

    /// Applies a put of an instance (a batch of one).
    #[cfg(test)]
    pub(crate) fn put(&self, instance: Instance) {
        self.batch().put(instance);
    }

    /// Applies a delete of a raw key (a batch of one).
    #[cfg(test)]
    pub(crate) fn delete(&self, key: &[u8]) {
        self.batch().delete(key);
    }

    fn set_state(&self, state: DiscoveryState) {
        self.shared.state.send_if_modified(|cur| {
            if *cur == state {
                false
            } else {
                *cur = state;
                true
            }
        });
    }
}

impl Follower for ViewWriter {
    fn key_prefix(&self) -> String {
        format!("{}/", self.shared.prefix)
    }

    fn listed(&self, listing: Listing) {
        self.replace_all(
            listing
                .kvs
                .iter()
                .map(|kv| Instance::from_entry(&self.shared.prefix, &kv.key, &kv.value)),
        );
    }

    fn apply(&self, events: Vec<WatchEvent>) {
        // One response (often one etcd transaction) becomes visible at once.
        let mut batch = self.batch();
        for event in events {
            match event {
                WatchEvent::Put { key, value, .. } => match self.parse(&key, &value) {
                    Some(instance) => batch.put(instance),
                    // A valid key whose new value is malformed no longer names a usable instance.
                    None => batch.delete(&key),
                },
                WatchEvent::Delete { key, .. } => batch.delete(&key),
            }
        }
    }

    fn state(&self) -> DiscoveryState {
        *self.shared.state.borrow()
    }

    fn set_state(&self, state: DiscoveryState) {
        ViewWriter::set_state(self, state);
    }

    fn resync(&self, reason: Resync) {
        if reason == Resync::Compaction {
            self.shared.compactions.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!(DISCOVERY_RESYNCS, "reason" => reason.as_str()).increment(1);
    }
}

/// Changes applied under one lock of the view and published together when dropped: O(log n)
/// per change, O(1) per service published.
pub(crate) struct Batch<'a> {
    writer: &'a ViewWriter,
    view: MutexGuard<'a, View>,
    /// Services changed by this batch (few: a linear scan beats hashing).
    touched: Vec<Arc<str>>,
}

impl Batch<'_> {
    fn touch(&mut self, name: Arc<str>) {
        if !self.touched.contains(&name) {
            self.touched.push(name);
        }
    }

    /// A put of an instance.
    pub(crate) fn put(&mut self, instance: Instance) {
        self.writer.shared.events.fetch_add(1, Ordering::Relaxed);
        let (name, set) = self.view.service(instance.name());
        if set.insert(instance.sharing_name(&name)) {
            self.touch(name);
        }
    }

    /// A delete of a raw key. Keys that do not fit the layout were never in the view.
    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.writer.shared.events.fetch_add(1, Ordering::Relaxed);
        // The value is gone with a delete; parse the key with a placeholder address.
        let Ok(parsed) = Instance::from_entry(&self.writer.shared.prefix, key, b"0:0") else {
            return;
        };
        let Some(name) = self
            .view
            .by_name
            .get_key_value(parsed.name())
            .map(|(name, _)| name.clone())
        else {
            return;
        };
        let set = self.view.by_name.get_mut(&name).expect("found above");
        if set.remove(parsed.id()) {
            if set.is_empty() {
                self.view.by_name.remove(&name);
            }
            self.touch(name);
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for name in &self.touched {
            self.view.publish(name);
        }
    }
}

/// The instances of one service name: a snapshot now and a way to await the next change.
pub struct ServiceWatch {
    name: Arc<str>,
    rx: watch::Receiver<Instances>,
    // Keeps the view (and so the backend's watcher) alive while somebody watches.
    _discovery: Discovery,
}

impl fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceWatch")
            .field("name", &self.name)
            .field("instances", &*self.rx.borrow())
            .finish()
    }
}

impl Clone for ServiceWatch {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            rx: self.rx.clone(),
            _discovery: self._discovery.clone(),
        }
    }
}

impl ServiceWatch {
    /// The service name watched.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current instances, sorted by id (an `Arc` clone: cheap).
    pub fn snapshot(&self) -> Instances {
        self.rx.borrow().clone()
    }

    /// True when the set changed since this watch last returned from
    /// [`changed`](Self::changed) or [`mark_seen`](Self::mark_seen).
    pub fn has_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(false)
    }

    /// The current instances, marking them seen.
    pub fn mark_seen(&mut self) -> Instances {
        self.rx.borrow_and_update().clone()
    }

    /// Waits until the set differs from the one last seen, then returns the new set.
    pub async fn changed(&mut self) -> Result<Instances, Error> {
        self.rx.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.rx.borrow_and_update().clone())
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Instances> + Send>>;

/// tower `Discover` over one service name: a stream of `Change::Insert(id, service)` and
/// `Change::Remove(id)`. Built by [`Discovery::discover`].
///
/// Each new snapshot is compared with the last one seen ([`Instances::changes_since`]), so
/// a change costs O(changes · log n) whatever the size of the set. A consumer that stops
/// polling holds at most two snapshots (they share structure), never a queue of changes.
pub struct ServiceDiscover<S, F> {
    name: Arc<str>,
    sets: ChangeStream,
    seen: Instances,
    pending: VecDeque<Change<String, S>>,
    make: F,
}

impl<S, F> fmt::Debug for ServiceDiscover<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDiscover")
            .field("name", &self.name)
            .field("seen", &self.seen.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<S, F: FnMut(&Instance) -> S> ServiceDiscover<S, F> {
    fn new(mut watch: ServiceWatch, make: F) -> Self {
        let name = watch.name.clone();
        let first = watch.mark_seen();
        let rest = futures_util::stream::unfold(watch, |mut w| async move {
            let next = w.changed().await.ok()?;
            Some((next, w))
        });
        let sets: ChangeStream = Box::pin(futures_util::stream::StreamExt::chain(
            futures_util::stream::iter([first]),
            rest,
        ));
        Self {
            name,
            sets,
            seen: Instances::default(),
            pending: VecDeque::new(),
            make,
        }
    }

    fn diff(&mut self, next: Instances) {
        for change in next.changes_since(&self.seen) {
            match change {
                InstanceChange::Removed(old) => {
                    self.pending.push_back(Change::Remove(old.id().to_owned()));
                }
                InstanceChange::Added(new) | InstanceChange::Updated { new, .. } => {
                    let svc = (self.make)(new);
                    self.pending
                        .push_back(Change::Insert(new.id().to_owned(), svc));
                }
            }
        }
        self.seen = next;
    }
}

impl<S, F> Stream for ServiceDiscover<S, F>
where
    F: FnMut(&Instance) -> S + Unpin,
    S: Unpin,
{
    type Item = Result<Change<String, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match this.sets.as_mut().poll_next(cx) {
                Poll::Ready(Some(set)) => this.diff(set),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn inst(id: &str, name: &str, port: u16) -> Instance {
        Instance::new(id, name, format!("127.0.0.1:{port}")).unwrap()
    }

    #[tokio::test]
    async fn watch_sees_puts_and_deletes_per_name() {
        let (d, w) = Discovery::new("/services");
        let mut a = d.watch("a").unwrap();
        let b = d.watch("b").unwrap();
        w.put(inst("1", "a", 1));
        assert_eq!(a.changed().await.unwrap().len(), 1);
        assert!(!b.has_changed());
        w.put(inst("2", "a", 2));
        w.delete(b"/services/1/a");
        let now = a.changed().await.unwrap();
        assert_eq!(now.iter().map(|i| i.id()).collect::<Vec<_>>(), ["2"]);
        assert_eq!(d.instances("a").len(), 1);
        assert_eq!(d.instances("b").len(), 0);
    }

    #[tokio::test]
    async fn malformed_entries_are_counted() {
        let (d, w) = Discovery::new("/services");
        w.replace_all([
            Ok(inst("1", "a", 1)),
            Instance::from_entry("/services", b"/services/x", b"1:1"),
        ]);
        assert!(w.parse(b"/services/a/b/c", b"h:1").is_none());
        assert_eq!(d.stats().malformed_skipped, 2);
        assert_eq!(d.instances("a").len(), 1);
    }

    #[tokio::test]
    async fn discover_yields_inserts_and_removes() {
        let (d, w) = Discovery::new("/services");
        w.put(inst("1", "a", 1));
        let mut disc = d.discover("a", |i: &Instance| i.addr().to_owned()).unwrap();
        match disc.next().await.unwrap().unwrap() {
            Change::Insert(id, addr) => {
                assert_eq!((id.as_str(), addr.as_str()), ("1", "127.0.0.1:1"))
            }
            Change::Remove(_) => panic!("expected insert"),
        }
        w.delete(b"/services/1/a");
        assert!(matches!(disc.next().await.unwrap().unwrap(), Change::Remove(id) if id == "1"));
    }

    #[tokio::test]
    async fn a_batch_is_published_once_and_whole() {
        let (d, w) = Discovery::new("/services");
        let mut a = d.watch("a").unwrap();
        {
            let mut batch = w.batch();
            batch.put(inst("1", "a", 1));
            batch.put(inst("2", "a", 2));
            batch.put(inst("3", "b", 3));
            // Nothing is visible before the batch ends.
            assert!(!a.has_changed());
            assert!(a.snapshot().is_empty());
        }
        assert_eq!(a.changed().await.unwrap().len(), 2);
        assert!(!a.has_changed(), "two puts, one publication");
        assert_eq!(d.instances("b").len(), 1);
    }

    #[tokio::test]
    async fn a_relist_keeps_unchanged_snapshots_and_shares_the_rest() {
        let (d, w) = Discovery::new("/services");
        let many: Vec<Instance> = (0..1000)
            .map(|i| inst(&format!("i{i:04}"), "a", 1))
            .collect();
        w.replace_all(many.iter().cloned().map(Ok).chain([Ok(inst("x", "b", 9))]));
        let mut a = d.watch("a").unwrap();
        let b = d.watch("b").unwrap();
        let before = a.mark_seen();
        // Same listing but one instance of `a` moved and one left: `b` is not woken at all.
        let mut next = many.clone();
        next[10] = inst("i0010", "a", 2);
        next.remove(500);
        w.replace_all(next.into_iter().map(Ok).chain([Ok(inst("x", "b", 9))]));
        assert!(!b.has_changed());
        let after = a.changed().await.unwrap();
        let changes: Vec<InstanceChange<'_>> = after.changes_since(&before).collect();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            matches!(changes[0], InstanceChange::Updated { new, .. } if new.addr() == "127.0.0.1:2")
        );
        assert!(matches!(changes[1], InstanceChange::Removed(old) if old.id() == "i0500"));
        // An empty listing removes every service.
        w.replace_all([]);
        assert!(d.instances("a").is_empty() && d.instances("b").is_empty());
    }

    #[tokio::test]
    async fn discover_reinserts_an_instance_whose_address_changed() {
        let (d, w) = Discovery::new("/services");
        w.put(inst("1", "a", 1));
        let mut disc = d.discover("a", |i: &Instance| i.addr().to_owned()).unwrap();
        assert!(matches!(
            disc.next().await.unwrap().unwrap(),
            Change::Insert(..)
        ));
        w.put(inst("1", "a", 7));
        match disc.next().await.unwrap().unwrap() {
            Change::Insert(id, addr) => {
                assert_eq!((id.as_str(), addr.as_str()), ("1", "127.0.0.1:7"))
            }
            Change::Remove(_) => panic!("expected insert"),
        }
    }

    #[tokio::test]
    async fn a_reader_that_does_not_read_holds_no_backlog() {
        let (d, w) = Discovery::new("/services");
        for i in 0..1000 {
            w.put(inst(&format!("base{i:04}"), "a", 1));
        }
        let mut disc = d.discover("a", |i: &Instance| i.id().to_owned()).unwrap();
        for _ in 0..1000 {
            assert!(matches!(
                disc.next().await.unwrap().unwrap(),
                Change::Insert(..)
            ));
        }
        // 20,000 changes the reader does not read: nothing is queued for it, and when it reads
        // again it gets only the net differences (3 joined, 1 left, 1 moved).
        for round in 0..5_000 {
            w.put(inst("flap", "a", 2));
            w.delete(b"/services/flap/a");
            w.put(inst(&format!("base{:04}", round % 1000), "a", 1));
            w.put(inst("x", "b", 1));
        }
        assert_eq!(disc.pending.len(), 0);
        w.put(inst("new1", "a", 1));
        w.put(inst("new2", "a", 1));
        w.put(inst("new3", "a", 1));
        w.delete(b"/services/base0001/a");
        w.put(inst("base0002", "a", 9));
        let mut changes = Vec::new();
        while changes.len() < 5 {
            changes.push(match disc.next().await.unwrap().unwrap() {
                Change::Insert(id, _) => format!("+{id}"),
                Change::Remove(id) => format!("-{id}"),
            });
        }
        assert_eq!(
            changes,
            ["-base0001", "+base0002", "+new1", "+new2", "+new3"]
        );
        assert!(disc.pending.is_empty());
        assert_eq!(d.stats().events, 1000 + 20_000 + 5);
    }

    #[test]
    fn invalid_name_is_refused() {
        let d = Discovery::from_static([]);
        assert!(matches!(d.watch("a-b"), Err(Error::InvalidIdent { .. })));
        assert_eq!(d.state(), DiscoveryState::Static);
    }
}
