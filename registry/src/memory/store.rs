//! An in-process mini etcd: revisions, leases that expire without keepalive, ordered watch
//! events with history, and compaction. Time is Tokio time, so `tokio::time::pause` drives
//! lease expiry in tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::error::Error;
use crate::store::{
    ttl_secs, Committed, KeepAlive, KeyValue, LeaseId, Listing, Range, Store, Txn, TxnOp,
    WatchEvent, WatchMessage, WatchStream,
};
use crate::task::OwnedTask;

/// Watch history kept for watchers that start in the past; older events are compacted.
const HISTORY_LIMIT: usize = 10_000;

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug)]
struct Watcher {
    key: Vec<u8>,
    range: Range,
    tx: mpsc::UnboundedSender<WatchMessage>,
}

impl Watcher {
    fn matches(&self, key: &[u8]) -> bool {
        match self.range {
            Range::Key => key == self.key.as_slice(),
            Range::Prefix => key.starts_with(&self.key),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    revision: i64,
    /// Events at or below this revision are no longer in `history`.
    compacted: i64,
    /// key → (value, lease, modification revision).
    kvs: BTreeMap<Vec<u8>, (Vec<u8>, LeaseId, i64)>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    history: VecDeque<WatchEvent>,
    watchers: Vec<Watcher>,
}

impl State {
    /// Records one revision's events and sends them to the matching watchers.
    fn emit(&mut self, events: Vec<WatchEvent>) {
        for watcher in &self.watchers {
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| watcher.matches(event_key(e)))
                .cloned()
                .collect();
            if !mine.is_empty() {
                // A closed receiver is pruned below.
                let _ = watcher.tx.send(WatchMessage::Events(mine));
            }
        }
        self.watchers.retain(|w| !w.tx.is_closed());
        self.history.extend(events);
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.revision());
            }
        }
    }

    fn delete_keys(&mut self, keys: impl IntoIterator<Item = Vec<u8>>) {
        let revision = self.revision + 1;
        let events: Vec<WatchEvent> = keys
            .into_iter()
            .filter_map(|key| unset_key(self, &key, revision))
            .collect();
        if !events.is_empty() {
            self.revision = revision;
            self.emit(events);
        }
    }

    fn remove_lease(&mut self, lease: LeaseId) {
        if let Some(l) = self.leases.remove(&lease) {
            self.delete_keys(l.keys);
        }
    }

    /// Expires every lease whose deadline has passed; returns the next deadline.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            tracing::debug!(lease = id, "in-memory lease expired");
            self.remove_lease(id);
        }
        self.leases.values().map(|l| l.deadline).min()
    }
}

fn event_key(e: &WatchEvent) -> &[u8] {
    match e {
        WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => key,
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Wakes the lease reaper when a deadline moved earlier.
    wake: Arc<Notify>,
    reaper: Mutex<Option<OwnedTask<()>>>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.expire(Instant::now());
        state
    }
}

/// The in-process store. Clones share the data, like several clients of one etcd.
#[derive(Debug, Clone)]
pub(crate) struct MemoryStore {
    inner: Arc<Inner>,
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next_lease: 1,
                    ..State::default()
                }),
                wake: Arc::new(Notify::new()),
                reaper: Mutex::new(None),
            }),
        }
    }

    /// Starts the task that expires leases on time, once, from async context.
    fn ensure_reaper(&self) {
        let mut reaper = self.inner.reaper.lock().unwrap_or_else(|e| e.into_inner());
        if reaper.is_none() {
            let weak = Arc::downgrade(&self.inner);
            let wake = self.inner.wake.clone();
            let span = tracing::debug_span!("memory_lease_reaper");
            *reaper = Some(OwnedTask::spawn("memory lease reaper", span, |cancel| {
                reap(weak, wake, cancel)
            }));
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Puts a raw key without a lease (tests: foreign or malformed entries).
    pub(crate) fn put_raw(&self, key: &[u8], value: &[u8]) -> i64 {
        let mut state = self.inner.lock();
        put_locked(&mut state, key, value, 0)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Deletes a raw key.
    pub(crate) fn delete_raw(&self, key: &[u8]) {
        self.inner.lock().delete_keys([key.to_vec()]);
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Drops watch history up to and including `revision`.
    pub(crate) fn compact(&self, revision: i64) {
        let mut state = self.inner.lock();
        let revision = revision.min(state.revision);
        while state
            .history
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            state.history.pop_front();
        }
        state.compacted = state.compacted.max(revision);
    }

    #[cfg(any(test, feature = "test-util"))]
    /// The current revision.
    pub(crate) fn revision(&self) -> i64 {
        self.inner.lock().revision
    }
}

async fn reap(weak: Weak<Inner>, wake: Arc<Notify>, cancel: tokio_util::sync::CancellationToken) {
    loop {
        let next = {
            let Some(inner) = weak.upgrade() else { return };
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            state.expire(Instant::now())
        };
        let sleep = async {
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.notified() => {}
            () = sleep => {}
        }
    }
}

fn put_locked(state: &mut State, key: &[u8], value: &[u8], lease: LeaseId) -> i64 {
    state.revision += 1;
    let revision = state.revision;
    let event = set_key(state, key, value, lease, revision);
    state.emit(vec![event]);
    revision
}

/// Sets `key` at `revision` (already counted) and returns its event.
fn set_key(
    state: &mut State,
    key: &[u8],
    value: &[u8],
    lease: LeaseId,
    revision: i64,
) -> WatchEvent {
    if let Some((_, old, _)) = state
        .kvs
        .insert(key.to_vec(), (value.to_vec(), lease, revision))
    {
        if old != lease {
            if let Some(l) = state.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
    }
    if let Some(l) = state.leases.get_mut(&lease) {
        l.keys.insert(key.to_vec());
    }
    WatchEvent::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        revision,
    }
}

/// Deletes `key` at `revision` (already counted); its event if it existed.
fn unset_key(state: &mut State, key: &[u8], revision: i64) -> Option<WatchEvent> {
    let (_, lease, _) = state.kvs.remove(key)?;
    if let Some(l) = state.leases.get_mut(&lease) {
        l.keys.remove(key);
    }
    Some(WatchEvent::Delete {
        key: key.to_vec(),
        revision,
    })
}

/// Applies `txn` as etcd does: the condition, then every write at one new revision (none
/// when nothing changed), published to watchers as one message.
fn txn_locked(state: &mut State, txn: &Txn) -> Committed {
    if let Some((prefix, since)) = &txn.unchanged_since {
        let changed = state
            .kvs
            .range(prefix.as_bytes().to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
            .any(|(_, (_, _, modified))| modified > since);
        if changed {
            return Committed {
                applied: false,
                revision: state.revision,
            };
        }
    }
    let revision = state.revision + 1;
    let mut events = Vec::new();
    for op in &txn.ops {
        match op {
            TxnOp::Put { key, value } => {
                events.push(set_key(state, key.as_bytes(), value, 0, revision));
            }
            TxnOp::Delete { key } => events.extend(unset_key(state, key.as_bytes(), revision)),
            TxnOp::DeletePrefix { prefix } => {
                let keys: Vec<Vec<u8>> = state
                    .kvs
                    .range(prefix.as_bytes().to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    events.extend(unset_key(state, &key, revision));
                }
            }
        }
    }
    if !events.is_empty() {
        state.revision = revision;
        state.emit(events);
    }
    Committed {
        applied: true,
        revision: state.revision,
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, Error> {
        self.ensure_reaper();
        let ttl = Duration::from_secs(ttl_secs(ttl).unsigned_abs());
        let id = {
            let mut state = self.inner.lock();
            let id = state.next_lease;
            state.next_lease += 1;
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            id
        };
        self.inner.wake.notify_one();
        Ok(id)
    }

    async fn put(&self, key: &[u8], value: &[u8], lease: LeaseId) -> Result<i64, Error> {
        let mut state = self.inner.lock();
        if lease != 0 && !state.leases.contains_key(&lease) {
            return Err(Error::LeaseNotFound { lease });
        }
        Ok(put_locked(&mut state, key, value, lease))
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), Error> {
        self.inner.lock().remove_lease(lease);
        Ok(())
    }

    async fn keepalive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>, Error> {
        Ok(Box::new(MemoryKeepAlive {
            store: self.clone(),
            lease,
        }))
    }

    async fn get_prefix(&self, prefix: &[u8]) -> Result<Listing, Error> {
        let state = self.inner.lock();
        let kvs = state
            .kvs
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, lease, modified))| KeyValue {
                key: k.clone(),
                value: v.clone(),
                lease: *lease,
                mod_revision: *modified,
            })
            .collect();
        Ok(Listing {
            kvs,
            revision: state.revision,
        })
    }

    async fn txn(&self, txn: &Txn) -> Result<Committed, Error> {
        Ok(txn_locked(&mut self.inner.lock(), txn))
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<i64>, Error> {
        let state = self.inner.lock();
        Ok(state.leases.get(&lease).map(|l| {
            let left = l.deadline.saturating_duration_since(Instant::now());
            i64::try_from(left.as_secs()).unwrap_or(i64::MAX)
        }))
    }

    async fn watch(
        &self,
        key: &[u8],
        range: Range,
        start_revision: i64,
    ) -> Result<Box<dyn WatchStream>, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.inner.lock();
        let watcher = Watcher {
            key: key.to_vec(),
            range,
            tx,
        };
        if start_revision > 0 && start_revision <= state.compacted {
            let _ = watcher.tx.send(WatchMessage::Compacted {
                compact_revision: state.compacted,
            });
            return Ok(Box::new(MemoryWatch { rx }));
        }
        if start_revision > 0 {
            // Replay the history from the start revision, one message per revision.
            let mut batch: Vec<WatchEvent> = Vec::new();
            for event in state
                .history
                .iter()
                .filter(|e| e.revision() >= start_revision)
            {
                if batch
                    .last()
                    .is_some_and(|b| b.revision() != event.revision())
                {
                    let _ = watcher
                        .tx
                        .send(WatchMessage::Events(std::mem::take(&mut batch)));
                }
                if watcher.matches(event_key(event)) {
                    batch.push(event.clone());
                }
            }
            if !batch.is_empty() {
                let _ = watcher.tx.send(WatchMessage::Events(batch));
            }
        }
        state.watchers.push(watcher);
        Ok(Box::new(MemoryWatch { rx }))
    }
}

#[derive(Debug)]
struct MemoryKeepAlive {
    store: MemoryStore,
    lease: LeaseId,
}

#[async_trait]
impl KeepAlive for MemoryKeepAlive {
    async fn keep_alive(&mut self) -> Result<i64, Error> {
        let mut state = self.store.inner.lock();
        match state.leases.get_mut(&self.lease) {
            Some(l) => {
                l.deadline = Instant::now() + l.ttl;
                Ok(ttl_secs(l.ttl))
            }
            None => Ok(0),
        }
    }
}

#[derive(Debug)]
struct MemoryWatch {
    rx: mpsc::UnboundedReceiver<WatchMessage>,
}

#[async_trait]
impl WatchStream for MemoryWatch {
    async fn next(&mut self) -> Result<WatchMessage, Error> {
        self.rx.recv().await.ok_or(Error::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leases_expire_without_keepalive_and_watchers_see_it_in_order() {
        let store = MemoryStore::new();
        let mut w = store.watch(b"/s/", Range::Prefix, 0).await.unwrap();
        let lease = store.grant(Duration::from_secs(2)).await.unwrap();
        let rev = store.put(b"/s/a/x", b"h:1", lease).await.unwrap();
        let mut ka = store.keepalive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(ka.keep_alive().await.unwrap(), 2);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(store.get_prefix(b"/s/").await.unwrap().kvs.len(), 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.get_prefix(b"/s/").await.unwrap().kvs.len(), 0);
        assert_eq!(ka.keep_alive().await.unwrap(), 0);
        assert!(matches!(
            w.next().await.unwrap(),
            WatchMessage::Events(e) if e == [WatchEvent::Put { key: b"/s/a/x".to_vec(), value: b"h:1".to_vec(), revision: rev }]
        ));
        assert!(matches!(
            w.next().await.unwrap(),
            WatchMessage::Events(e) if e == [WatchEvent::Delete { key: b"/s/a/x".to_vec(), revision: rev + 1 }]
        ));
    }

    #[tokio::test]
    async fn watch_replays_history_and_reports_compaction() {
        let store = MemoryStore::new();
        let r1 = store.put_raw(b"/s/a/x", b"h:1");
        store.put_raw(b"/other", b"h:1");
        store.delete_raw(b"/s/a/x");
        let mut w = store.watch(b"/s/", Range::Prefix, r1).await.unwrap();
        assert!(
            matches!(w.next().await.unwrap(), WatchMessage::Events(e) if e.len() == 1 && e[0].revision() == r1)
        );
        assert!(
            matches!(w.next().await.unwrap(), WatchMessage::Events(e) if matches!(e[0], WatchEvent::Delete { .. }))
        );
        store.compact(store.revision());
        let mut late = store.watch(b"/s/", Range::Prefix, r1).await.unwrap();
        assert!(matches!(
            late.next().await.unwrap(),
            WatchMessage::Compacted { .. }
        ));
        assert_eq!(
            store
                .put(b"/s/b/y", b"h:2", 99)
                .await
                .unwrap_err()
                .to_string(),
            "lease 99 not found"
        );
    }
}
