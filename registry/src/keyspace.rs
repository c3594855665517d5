//! [`Keyspace`]: svckit's own keys beside the instances (config, cache generations), read,
//! written in transactions, and followed live through the same watch machinery as discovery
//! ([`crate::follow`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use imbl::OrdMap;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::Error;
use crate::follow::{self, DiscoveryState, Follower, Resync};
use crate::store::{timed, Listing, Store, Txn, WatchEvent};
use crate::task::OwnedTask;

/// The keys of one registry client: get, transactional writes, and live prefix watches
/// shared per prefix (two [`watch`](Self::watch) calls for one prefix share one etcd watch).
/// Cheap to clone. Get one from [`Registry::keyspace`](crate::Registry::keyspace).
#[derive(Clone)]
pub struct Keyspace {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    /// The live watches by prefix; an entry lives while a [`PrefixWatch`] holds it.
    watches: Mutex<HashMap<String, Weak<Owner>>>,
}

impl fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let watches = self.lock().len();
        f.debug_struct("Keyspace")
            .field("store", &self.inner.store)
            .field("watches", &watches)
            .finish()
    }
}

impl Keyspace {
    pub(crate) fn new(store: Arc<dyn Store>, config: Arc<Config>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                watches: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Owner>>> {
        self.inner.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every key starting with `prefix`, at one revision.
    ///
    /// # Errors
    /// [`Error::InvalidPrefix`] unless `prefix` starts with `/`; the store's error (or
    /// [`Error::Timeout`]) when etcd does not answer within the request timeout.
    pub async fn get(&self, prefix: &str) -> Result<KeySnapshot, Error> {
        check_prefix(prefix)?;
        let listing = self.list_raw(prefix).await?;
        Ok(KeySnapshot::from_listing(&listing).0)
    }

    /// Every key starting with `prefix` with its lease and modification revision, and the
    /// revision of the listing.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn list(&self, prefix: &str) -> Result<(i64, Vec<KeyEntry>), Error> {
        check_prefix(prefix)?;
        let listing = self.list_raw(prefix).await?;
        let entries = listing
            .kvs
            .into_iter()
            .map(|kv| KeyEntry {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                value: kv.value,
                lease: kv.lease,
                mod_revision: kv.mod_revision,
            })
            .collect();
        Ok((listing.revision, entries))
    }

    async fn list_raw(&self, prefix: &str) -> Result<Listing, Error> {
        let timeout = self.inner.config.request_timeout;
        timed(
            "get",
            timeout,
            self.inner.store.get_prefix(prefix.as_bytes()),
        )
        .await
    }

    /// Applies `txn` atomically: every watcher sees all of its writes at one revision, or
    /// none. Returns the store's revision after it.
    ///
    /// # Errors
    /// [`Error::Conflict`] when its [`if_unchanged_since`](Txn::if_unchanged_since)
    /// condition failed (nothing was written); the store's error otherwise.
    pub async fn commit(&self, txn: Txn) -> Result<i64, Error> {
        let timeout = self.inner.config.request_timeout;
        let committed = timed("txn", timeout, self.inner.store.txn(&txn)).await?;
        match (committed.applied, txn.unchanged_since) {
            (false, Some((prefix, expected))) => Err(Error::Conflict {
                prefix,
                expected,
                current: committed.revision,
            }),
            // An unconditional transaction always applies.
            _ => Ok(committed.revision),
        }
    }

    /// Sets `key` to `value` (no lease). Returns the revision of the write.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn put(&self, key: &str, value: impl AsRef<[u8]>) -> Result<i64, Error> {
        self.commit(Txn::new().put(key, value)).await
    }

    /// Deletes `key`. Returns the store's revision after it.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn delete(&self, key: &str) -> Result<i64, Error> {
        self.commit(Txn::new().delete(key)).await
    }

    /// The time left on `lease` (whole seconds, as etcd reports it); `None` when the lease
    /// no longer exists.
    ///
    /// # Errors
    /// The store's error when etcd does not answer.
    pub async fn lease_ttl(&self, lease: i64) -> Result<Option<Duration>, Error> {
        let timeout = self.inner.config.request_timeout;
        let ttl = timed("lease ttl", timeout, self.inner.store.lease_ttl(lease)).await?;
        Ok(ttl.map(|secs| Duration::from_secs(secs.unsigned_abs())))
    }

    /// A live view of every key starting with `prefix`: listed, then watched from the next
    /// revision, re-listed after a compaction, the last known keys kept while etcd is
    /// unreachable (the machinery of discovery). Watches of one prefix share one etcd watch;
    /// it stops when the last of them is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidPrefix`] unless `prefix` starts with `/`.
    ///
    /// # Panics
    /// Outside a Tokio runtime when no watch of `prefix` is running yet.
    pub fn watch(&self, prefix: &str) -> Result<PrefixWatch, Error> {
        check_prefix(prefix)?;
        let mut watches = self.lock();
        if let Some(owner) = watches.get(prefix).and_then(Weak::upgrade) {
            return Ok(PrefixWatch::new(owner));
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let channels = Arc::new(Channels {
            prefix: prefix.to_owned(),
            snapshot: watch::Sender::new(KeySnapshot::default()),
            state: watch::Sender::new(DiscoveryState::Connecting),
            compactions: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        let span = tracing::info_span!("prefix_watch", prefix = %prefix);
        let writer = Writer(channels.clone());
        let (store, config) = (self.inner.store.clone(), self.inner.config.clone());
        let task = OwnedTask::spawn("prefix watch", span, move |cancel| {
            follow::run(store, writer, config, cancel)
        });
        let owner = Arc::new(Owner {
            channels,
            _task: task,
        });
        watches.insert(prefix.to_owned(), Arc::downgrade(&owner));
        Ok(PrefixWatch::new(owner))
    }
}

/// A prefix of svckit's keys starts with `/` (`/` alone is every key, as confd's
/// `keys = ["/"]` asks).
fn check_prefix(prefix: &str) -> Result<(), Error> {
    if prefix.starts_with('/') {
        Ok(())
    } else {
        Err(Error::InvalidPrefix {
            prefix: prefix.to_owned(),
        })
    }
}

/// One key as listed by [`Keyspace::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    key: String,
    value: Vec<u8>,
    lease: i64,
    mod_revision: i64,
}

impl KeyEntry {
    /// The key (lossily decoded when it is not UTF-8).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value as stored.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The lease the key is attached to; `0` for none.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The revision of the key's last change.
    pub fn mod_revision(&self) -> i64 {
        self.mod_revision
    }
}

/// The keys under a prefix at one revision. Cheap to clone (a persistent map: a change
/// copies O(log n), clones share the rest). Keys are whole keys, prefix included.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeySnapshot {
    entries: OrdMap<Arc<str>, Arc<[u8]>>,
    revision: i64,
}

impl fmt::Debug for KeySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySnapshot")
            .field("revision", &self.revision)
            .field("keys", &self.entries.len())
            .finish()
    }
}

impl KeySnapshot {
    /// A snapshot of a listing, and how many keys were skipped (not UTF-8).
    fn from_listing(listing: &Listing) -> (Self, u64) {
        let mut skipped = 0;
        let entries: OrdMap<Arc<str>, Arc<[u8]>> = listing
            .kvs
            .iter()
            .filter_map(|kv| match std::str::from_utf8(&kv.key) {
                Ok(key) => Some((
                    Arc::<str>::from(key),
                    Arc::<[u8]>::from(kv.value.as_slice()),
                )),
                Err(_) => {
                    skipped += 1;
                    None
                }
            })
            .collect();
        let snapshot = Self {
            entries,
            revision: listing.revision,
        };
        (snapshot, skipped)
    }

    /// The etcd revision this snapshot is current at; `0` before the first listing.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(|v| &**v)
    }

    /// Every key and value, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Whether `self` and `other` hold the same keys and values (their revisions aside).
    pub fn same_entries(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

/// A live view of the keys under one prefix (see [`Keyspace::watch`]). Clones share it.
#[derive(Clone)]
pub struct PrefixWatch {
    owner: Arc<Owner>,
    seen: watch::Receiver<KeySnapshot>,
}

impl fmt::Debug for PrefixWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixWatch")
            .field("prefix", &self.owner.channels.prefix)
            .field("state", &self.state())
            .field("revision", &self.seen.borrow().revision)
            .finish()
    }
}

impl PrefixWatch {
    fn new(owner: Arc<Owner>) -> Self {
        let seen = owner.channels.snapshot.subscribe();
        Self { owner, seen }
    }

    /// The watched prefix.
    pub fn prefix(&self) -> &str {
        &self.owner.channels.prefix
    }

    /// The current keys (revision 0 until the first listing arrived).
    pub fn snapshot(&self) -> KeySnapshot {
        self.seen.borrow().clone()
    }

    /// Waits for a snapshot newer than the last one this watch returned (or, the first
    /// time, than the one current when it was created), and returns it. Changes in between
    /// are folded: the newest snapshot is returned.
    ///
    /// # Errors
    /// [`Error::Closed`] when the watch stopped (it never does while this handle lives).
    pub async fn changed(&mut self) -> Result<KeySnapshot, Error> {
        self.seen.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.seen.borrow_and_update().clone())
    }

    /// Marks the current snapshot as seen and returns it.
    pub fn mark_seen(&mut self) -> KeySnapshot {
        self.seen.borrow_and_update().clone()
    }

    /// Where the watch stands with etcd.
    pub fn state(&self) -> DiscoveryState {
        *self.owner.channels.state.borrow()
    }

    /// A receiver of the watch's state.
    pub fn state_watch(&self) -> watch::Receiver<DiscoveryState> {
        self.owner.channels.state.subscribe()
    }

    /// How many times the watch found its revision compacted and re-listed.
    pub fn compactions(&self) -> u64 {
        self.owner.channels.compactions.load(Ordering::Relaxed)
    }

    /// How many keys were skipped because they are not UTF-8.
    pub fn skipped_keys(&self) -> u64 {
        self.owner.channels.skipped.load(Ordering::Relaxed)
    }
}

/// What readers and the follower share.
struct Channels {
    prefix: String,
    snapshot: watch::Sender<KeySnapshot>,
    state: watch::Sender<DiscoveryState>,
    compactions: AtomicU64,
    skipped: AtomicU64,
}

/// Keeps the follower task alive while a [`PrefixWatch`] holds it.
struct Owner {
    channels: Arc<Channels>,
    _task: OwnedTask<()>,
}

/// The follower's side.
struct Writer(Arc<Channels>);

impl Follower for Writer {
    fn key_prefix(&self) -> String {
        self.0.prefix.clone()
    }

    fn listed(&self, listing: Listing) {
        let (fresh, skipped) = KeySnapshot::from_listing(&listing);
        if skipped > 0 {
            tracing::warn!(skipped, "skipping keys that are not UTF-8");
            self.0.skipped.fetch_add(skipped, Ordering::Relaxed);
        }
        self.0.snapshot.send_if_modified(|current| {
            // A re-list that changed nothing does not wake readers; the first listing does
            // (an empty prefix is news too).
            let news = current.revision == 0 || !current.same_entries(&fresh);
            *current = fresh;
            news
        });
    }

    fn apply(&self, events: Vec<WatchEvent>) {
        self.0.snapshot.send_modify(|current| {
            for event in events {
                current.revision = current.revision.max(event.revision());
                let key = match &event {
                    WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => key,
                };
                let Ok(key) = std::str::from_utf8(key) else {
                    tracing::warn!(key = %String::from_utf8_lossy(key), "skipping a key that is not UTF-8");
                    self.0.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match &event {
                    WatchEvent::Put { value, .. } => {
                        current
                            .entries
                            .insert(Arc::from(key), Arc::from(value.as_slice()));
                    }
                    WatchEvent::Delete { .. } => {
                        current.entries.remove(key);
                    }
                }
            }
        });
    }

    fn state(&self) -> DiscoveryState {
        *self.0.state.borrow()
    }

    fn set_state(&self, state: DiscoveryState) {
        self.0.state.send_if_modified(|current| {
            let news = *current != state;
            *current = state;
            news
        });
    }

    fn resync(&self, reason: Resync) {
        if reason == Resync::Compaction {
            self.0.compactions.fetch_add(1, Ordering::Relaxed);
        }
    }
}
