//! A group: a named, byte-bounded cache of immutable values filled by a getter on a miss
//! (golang/groupcache's `Group`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::error::{short_key, Error, PeerError};
use crate::getter::{Getter, Loaded};
use crate::peers::{Cluster, FetchOptions};
use crate::singleflight::{FlightError, SingleFlight};
use crate::stats::{LoadCounters, Stats};
use crate::store::{default_shards, Store, Ticket, Tier};

/// The default limit on key length: 1 KiB.
pub const DEFAULT_MAX_KEY_LEN: usize = 1024;

/// By default one in this many values fetched from a peer also goes to the hot cache.
pub const DEFAULT_HOT_ONE_IN: u32 = 10;

/// The outcome of one load, shared by every caller waiting for it.
type Outcome = Result<(Loaded, Source), Error>;

/// Where a load found its value: the `outcome` of its `cache_get` span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// In memory after all: an earlier load of the key had just finished.
    Memory,
    /// Fetched from the key's owner.
    Peer,
    /// From the memory of the key's previous owner (the handoff).
    Handoff,
    /// From this node's getter.
    Local,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "hit",
            Source::Peer => "peer",
            Source::Handoff => "handoff",
            Source::Local => "local",
        }
    }
}

/// Whether a local load still has to count itself in `loads_deduped` (a peer's request) or
/// was counted by the flight that fell back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dedup {
    Count,
    Counted,
}

/// The `outcome` of a load's span.
fn outcome(out: &Outcome) -> &'static str {
    match out {
        Ok((_, source)) => source.as_str(),
        Err(_) => "error",
    }
}

pub(crate) struct GroupInner {
    name: String,
    getter: Arc<dyn Getter>,
    store: Store,
    budget: usize,
    max_key_len: usize,
    hot_one_in: u32,
    /// The flush generation this node has seen (see [`crate::flush`]).
    generation: AtomicU64,
    /// Loads started by callers on this node: may fetch from the owning peer.
    flights: SingleFlight<Outcome>,
    /// Loads through the getter, on this node only. Requests from peers join these and
    /// never the flights above, so two nodes that disagree about an owner cannot wait on
    /// each other.
    local_flights: SingleFlight<Outcome>,
    counters: LoadCounters,
    cluster: Arc<Cluster>,
}

/// How far ahead of this node's generation a peer's claimed flush generation may be.
const PEER_GENERATION_LEAD: u64 = 8;

/// A named cache of immutable values with a byte budget, filled by a [`Getter`] on a miss.
///
/// Built by [`Cache::new_group`](crate::Cache::new_group). Cheap to clone; clones share
/// the cache. A get that misses needs a tokio runtime (the load runs in a task of its own).
#[derive(Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
    // Shared with the Cache and every clone: when all are gone, loads in flight stop.
    _owner: Arc<DropGuard>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.inner.name)
            .field("store", &self.inner.store)
            .field("max_key_len", &self.inner.max_key_len)
            .finish_non_exhaustive()
    }
}

/// The groups of a cache by name (golang/groupcache's global group registry, per cache).
#[derive(Debug, Default)]
pub(crate) struct Groups(RwLock<HashMap<String, Group>>);

impl Groups {
    /// The group named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Group> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The names of all groups, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let groups = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = groups.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every group, by name.
    pub(crate) fn all(&self) -> Vec<Group> {
        let groups = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<Group> = groups.values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    fn insert(&self, group: Group) -> Result<(), Error> {
        let mut groups = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if groups.contains_key(group.name()) {
            return Err(Error::DuplicateGroup {
                name: group.name().to_owned(),
            });
        }
        groups.insert(group.name().to_owned(), group);
        Ok(())
    }
}

/// What a new group takes from its cache: where to register, the cluster, and the owner
/// token that stops its loads when the cache and all groups are dropped.
#[derive(Debug)]
pub(crate) struct GroupParts<'a> {
    pub(crate) groups: &'a Groups,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) owner: Arc<DropGuard>,
    pub(crate) cancel: CancellationToken,
}

/// Builds a [`Group`]; from [`Cache::new_group`](crate::Cache::new_group).
#[must_use = "a GroupBuilder does nothing until `build` is called"]
pub struct GroupBuilder<'a> {
    parts: GroupParts<'a>,
    name: String,
    budget: usize,
    getter: Arc<dyn Getter>,
    max_key_len: usize,
    hot_one_in: u32,
    shards: Option<usize>,
}

impl std::fmt::Debug for GroupBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupBuilder")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .field("max_key_len", &self.max_key_len)
            .field("hot_one_in", &self.hot_one_in)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<'a> GroupBuilder<'a> {
    pub(crate) fn new(
        parts: GroupParts<'a>,
        name: String,
        budget: usize,
        getter: Arc<dyn Getter>,
    ) -> Self {
        Self {
            parts,
            name,
            budget,
            getter,
            max_key_len: DEFAULT_MAX_KEY_LEN,
            hot_one_in: DEFAULT_HOT_ONE_IN,
            shards: None,
        }
    }

    /// Keys longer than this many bytes are refused with [`Error::KeyTooLong`] before any
    /// lookup or load. Default: [`DEFAULT_MAX_KEY_LEN`] (1 KiB).
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = bytes;
        self
    }

    /// One in `n` values fetched from a peer is also kept in the hot cache (golang/groupcache
    /// keeps one in ten); `0` keeps none, `1` keeps all. Default: [`DEFAULT_HOT_ONE_IN`].
    pub fn hot_one_in(mut self, n: u32) -> Self {
        self.hot_one_in = n;
        self
    }

    /// The number of lock shards (rounded up to a power of two). Keys are spread over them
    /// by hash; each shard gets `budget / shards` bytes and evicts its own least recently
    /// used entries, and a value larger than that is not cached; one shard gives one exact
    /// LRU. Default: one per MiB of budget, 1 to 16.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n.max(1));
        self
    }

    /// Builds the group and adds it to the cache. Fails on an empty name or a name the cache
    /// already has.
    pub fn build(self) -> Result<Group, Error> {
        if self.name.is_empty() {
            return Err(Error::EmptyGroupName);
        }
        let GroupParts {
            groups,
            cluster,
            owner,
            cancel,
        } = self.parts;
        let shards = self.shards.unwrap_or_else(|| default_shards(self.budget));
        let inner = GroupInner {
            store: Store::new(self.budget, shards),
            budget: self.budget,
            generation: AtomicU64::new(0),
            flights: SingleFlight::new(cancel.clone()),
            local_flights: SingleFlight::new(cancel),
            name: self.name,
            getter: self.getter,
            max_key_len: self.max_key_len,
            hot_one_in: self.hot_one_in,
            counters: LoadCounters::default(),
            cluster,
        };
        let group = Group {
            inner: Arc::new(inner),
            _owner: owner,
        };
        groups.insert(group.clone())?;
        crate::metrics::register(&group.inner);
        Ok(group)
    }
}

impl Group {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The value of `key`: from memory, else from the peer that owns it, else from the
    /// getter. Concurrent misses of one key share one load; an expired value is a miss.
    pub async fn get(&self, key: &str) -> Result<Bytes, Error> {
        self.inner.check_key(key)?;
        if let Some(v) = self.inner.store.get(key) {
            return Ok(v);
        }
        // Boxed so the hit path's future stays small.
        Box::pin(self.inner.load(key)).await.map(Loaded::into_value)
    }

    /// Like [`get`](Self::get), but lends the value to `f` instead of returning a handle to
    /// it, and returns what `f` returns (golang/groupcache's `Get` into a `Sink`).
    ///
    /// A hit then takes no reference to the value: `f` runs on the cached bytes in place,
    /// which saves the two atomic reference-count operations that a returned [`Bytes`] costs
    /// (its clone and its drop; see `BENCHMARKS.md`). Use it when the value is only read:
    /// parsed, hashed, or copied into a buffer of the caller's. `f` runs once, after the load
    /// on a miss. It should be quick: on a hit it runs while the cache's lock-free index is
    /// pinned, which holds back the freeing of entries evicted meanwhile (no lock is held).
    /// `f` may clone the `Bytes` to keep it.
    ///
    /// ```
    /// # async fn demo(group: svckit_cache::Group) -> Result<(), svckit_cache::Error> {
    /// let len = group.get_with("/v1/item/7", |value| value.len()).await?;
    /// # let _ = len;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_with<R>(&self, key: &str, f: impl FnOnce(&Bytes) -> R) -> Result<R, Error> {
        self.inner.check_key(key)?;
        let f = match self.inner.store.get_with(key, f) {
            Ok(r) => return Ok(r),
            Err(f) => f,
        };
        let v = Box::pin(self.inner.load(key)).await?;
        Ok(f(v.value()))
    }

    /// Stores `value` for `key` on the key's owner (over the wire when that is a peer,
    /// mailgun/groupcache's `Set`), expiring at `expire` (`None`: never). With `hot`, this
    /// node keeps a copy in its hot cache too; without, it drops any copy it had.
    ///
    /// A load of the key in flight meanwhile does not overwrite the value with the one it
    /// read (each shard counts its writes; a load older than a write of its key is not
    /// stored). Fails, storing nothing here, when the owner cannot be
    /// reached or refuses ([`Error::Peer`]).
    pub async fn set(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expire: Option<SystemTime>,
        hot: bool,
    ) -> Result<(), Error> {
        self.inner.check_key(key)?;
        let mut loaded = Loaded::new(value);
        if let Some(at) = expire {
            loaded = loaded.expires_at(at);
        }
        let inner = &self.inner;
        let Some(owner) = inner.cluster.peers.pick(key) else {
            inner.check_fits(key, &loaded)?;
            inner.store.set(key, &loaded, Tier::Main);
            return Ok(());
        };
        inner
            .cluster
            .client
            .set(&owner, &inner.name, key, &loaded)
            .await
            .map_err(|e| Error::Peer {
                op: "set",
                group: inner.name.clone(),
                key: short_key(key),
                source: Arc::new(e),
            })?;
        if hot {
            inner.store.set(key, &loaded, Tier::Hot);
        } else {
            inner.store.remove(key);
        }
        Ok(())
    }

    /// Removes `key` from every node (mailgun/groupcache's `Remove`): from its owner first,
    /// then from every other peer at once (each request bounded by the peer timeout), then
    /// from this node. A peer that fails does not stop the others; the result names them.
    ///
    /// Loads of the key in flight on a node when the removal reaches it do not bring the old
    /// value back, and an owner that has just removed it does not take it back from the
    /// key's previous owner (the handoff).
    pub async fn remove(&self, key: &str) -> Result<Removed, Error> {
        self.inner.check_key(key)?;
        let inner = &self.inner;
        let (peers, client) = (&inner.cluster.peers, &inner.cluster.client);
        let mut failed = Vec::new();
        let owner = peers.pick(key);
        if let Some(owner) = &owner {
            if let Err(e) = client.remove(owner, &inner.name, key).await {
                failed.push(e);
            }
        }
        let mut others = peers.others();
        // A previous owner that left the list may still serve its grace period.
        others.extend(peers.previous_owners(key));
        others.sort();
        others.dedup();
        others.retain(|p| Some(p) != owner.as_ref());
        let removals = others
            .iter()
            .map(|peer| client.remove(peer, &inner.name, key));
        for result in futures_util::future::join_all(removals).await {
            if let Err(e) = result {
                failed.push(e);
            }
        }
        inner.store.remove(key);
        for e in &failed {
            tracing::warn!(group = %inner.name, key = %short_key(key), peer = %e.peer(), error = %e, "remove failed on a peer");
        }
        Ok(Removed { failed })
    }

    /// A request from a peer: served from memory or the getter on this node, never
    /// forwarded to another peer. A handoff ask is served from memory only (either tier: a
    /// node that took over a key it held as a hot copy serves that copy, so it hands that
    /// over too); its miss is `None`.
    pub(crate) async fn get_for_peer(
        &self,
        key: &str,
        ask: FetchOptions,
    ) -> Result<Option<Loaded>, Error> {
        LoadCounters::inc(&self.inner.counters.server_requests);
        self.inner.check_key(key)?;
        self.inner.adopt_peer_generation(ask.generation);
        if let Some(v) = self.inner.store.get_loaded(key) {
            return Ok(Some(v));
        }
        if ask.handoff {
            return Ok(None);
        }
        LoadCounters::inc(&self.inner.counters.loads);
        let inner = &self.inner;
        inner
            .traced(true, inner.load_local(key, Dedup::Count))
            .await
            .map(Some)
    }

    /// A set from a peer: this node is the owner (mailgun/groupcache's `localSet` into the
    /// main cache).
    pub(crate) fn set_for_peer(&self, key: &str, loaded: &Loaded) -> Result<(), Error> {
        LoadCounters::inc(&self.inner.counters.server_requests);
        self.inner.check_key(key)?;
        self.inner.check_fits(key, loaded)?;
        self.inner.store.set(key, loaded, Tier::Main);
        Ok(())
    }

    /// A remove from a peer.
    pub(crate) fn remove_for_peer(&self, key: &str) -> Result<(), Error> {
        LoadCounters::inc(&self.inner.counters.server_requests);
        self.inner.check_key(key)?;
        self.inner.store.remove(key);
        Ok(())
    }

    /// Hands this node's keys over to their owners in the current ring, as a node that has
    /// left the ring does before it stops (mailgun/groupcache's set, at most 16 at a time):
    /// the keys move without their new owners asking for them, whatever the load. Returns
    /// how many keys were handed over; the others stay to be asked for (or loaded anew).
    pub async fn hand_over(&self) -> usize {
        use futures_util::StreamExt;
        let inner = &self.inner;
        let moves: Vec<(Arc<str>, Arc<str>, Loaded)> = inner
            .store
            .main_entries()
            .into_iter()
            .filter_map(|(key, loaded)| Some((inner.cluster.peers.pick(&key)?, key, loaded)))
            .collect();
        let total = moves.len();
        let done = futures_util::stream::iter(moves)
            .map(|(owner, key, loaded)| async move {
                inner
                    .cluster
                    .client
                    .set(&owner, &inner.name, &key, &loaded)
                    .await
                    .is_ok()
            })
            .buffer_unordered(16)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        tracing::info!(group = %inner.name, handed_over = done, of = total, "handed keys over to their new owners");
        done
    }

    /// The flush generation this node has seen: 0 until the first flush it hears of.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Moves this node to flush generation `generation` if it is newer: drops every entry,
    /// and loads in flight will not populate. Returns whether it was newer.
    pub(crate) fn adopt_generation(&self, generation: u64) -> bool {
        self.inner.adopt_generation(generation)
    }

    /// A snapshot of the group's counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The group's byte budget, main and hot cache together, as given to
    /// [`Cache::new_group`](crate::Cache::new_group); compare with the
    /// [`bytes`](crate::CacheStats::bytes) of [`stats`](Self::stats)' two tiers.
    pub fn budget_bytes(&self) -> usize {
        self.inner.budget
    }

    /// Loads in flight on this node now (both peer fetches and getter calls). Zero when the
    /// node is idle: no outcome of a load leaks an entry.
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len() + self.inner.local_flights.len()
    }
}

/// What [`Group::remove`] did: which peers failed to remove the key.
#[derive(Debug)]
pub struct Removed {
    failed: Vec<PeerError>,
}

impl Removed {
    /// The peers that failed, each error naming its peer ([`PeerError::peer`]).
    pub fn failed(&self) -> &[PeerError] {
        &self.failed
    }

    /// Whether every peer removed the key.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

impl crate::metrics::Counted for GroupInner {
    fn name(&self) -> &str {
        GroupInner::name(self)
    }

    fn stats(&self) -> Stats {
        GroupInner::stats(self)
    }

    fn budget(&self) -> usize {
        GroupInner::budget(self)
    }
}

impl Drop for GroupInner {
    fn drop(&mut self) {
        crate::metrics::retire(&self.name, self.stats());
    }
}

impl GroupInner {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    pub(crate) fn stats(&self) -> Stats {
        let s = self.store.stats();
        let c = &self.counters;
        Stats {
            gets: s.gets,
            cache_hits: s.main.hits + s.hot.hits,
            peer_loads: LoadCounters::get(&c.peer_loads),
            peer_errors: LoadCounters::get(&c.peer_errors),
            peer_unreachable: LoadCounters::get(&c.peer_unreachable),
            loads: LoadCounters::get(&c.loads),
            loads_deduped: LoadCounters::get(&c.loads_deduped),
            local_loads: LoadCounters::get(&c.local_loads),
            local_load_errors: LoadCounters::get(&c.local_load_errors),
            handoff_loads: LoadCounters::get(&c.handoff_loads),
            server_requests: LoadCounters::get(&c.server_requests),
            main_cache: s.main,
            hot_cache: s.hot,
        }
    }

    #[inline]
    fn check_key(&self, key: &str) -> Result<(), Error> {
        if key.len() > self.max_key_len {
            return Err(Error::KeyTooLong {
                len: key.len(),
                limit: self.max_key_len,
            });
        }
        Ok(())
    }

    fn adopt_generation(&self, generation: u64) -> bool {
        if self.generation.fetch_max(generation, Ordering::AcqRel) >= generation {
            return false;
        }
        self.store.clear();
        tracing::info!(group = %self.name, generation, "flushed");
        true
    }

    /// Refuses a value the store could not hold (it would be dropped silently).
    fn check_fits(&self, key: &str, loaded: &Loaded) -> Result<(), Error> {
        let (bytes, limit) = self.store.entry_size(key, loaded.value());
        if bytes > limit {
            return Err(Error::ValueTooLarge {
                key: short_key(key),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// A generation a peer sent with a get. Peers are not authenticated unless a shared
    /// secret is set, so the claim is bounded: at most [`PEER_GENERATION_LEAD`] ahead of the
    /// generation this node knows (a peer that heard of a flush first is one or a few
    /// ahead). A forged `u64::MAX` cannot disable later flushes.
    fn adopt_peer_generation(&self, generation: u64) -> bool {
        let known = self.generation.load(Ordering::Acquire);
        if generation > known.saturating_add(PEER_GENERATION_LEAD) {
            tracing::debug!(group = %self.name, generation, known, "ignoring a peer's flush generation far ahead of this node's");
            return false;
        }
        self.adopt_generation(generation)
    }

    /// The key of a flight: a load started before a flush must not answer a get made after
    /// it, so flights of different generations do not merge.
    fn flight_key(&self, key: &str) -> (u64, String) {
        let generation = self.generation.load(Ordering::Acquire);
        if generation == 0 {
            (0, key.to_owned())
        } else {
            (generation, format!("{generation}\0{key}"))
        }
    }

    fn flight_error(&self, key: &str, e: FlightError) -> Error {
        match e {
            FlightError::Panicked => Error::GetterPanicked {
                group: self.name.clone(),
                key: short_key(key),
            },
            FlightError::Stopped => Error::Closed {
                key: short_key(key),
            },
        }
    }

    fn keep_hot(&self) -> bool {
        match self.hot_one_in {
            0 => false,
            1 => true,
            n => rand::random::<u32>() % n == 0,
        }
    }

    /// Stores what a load with `ticket` read, unless the key was written since; then the
    /// newer value is what the load's callers get, if the write left one.
    fn keep(&self, key: &str, loaded: Loaded, tier: Tier, ticket: Ticket) -> Loaded {
        if self.store.populate(key, &loaded, tier, ticket) {
            return loaded;
        }
        self.store.peek(key).unwrap_or(loaded)
    }

    /// Runs a load in a `cache_get` span with the group's name and whether a peer asked,
    /// and records its outcome there once known (the crate docs' "Metrics and traces").
    async fn traced(
        &self,
        peer_request: bool,
        load: impl Future<Output = Outcome>,
    ) -> Result<Loaded, Error> {
        let span = tracing::info_span!(
            "cache_get",
            group = %self.name,
            peer_request,
            outcome = tracing::field::Empty,
        );
        let out = load.instrument(span.clone()).await;
        span.record("outcome", outcome(&out));
        out.map(|(v, _)| v)
    }

    /// A miss from a caller on this node, in its span: the fetch from the key's owner runs in
    /// it, so the trace context the request carries makes the owner's spans its children.
    async fn load(self: &Arc<Self>, key: &str) -> Result<Loaded, Error> {
        LoadCounters::inc(&self.counters.loads);
        self.traced(false, self.fetch(key)).await
    }

    /// Fetches from the owner, or loads locally.
    async fn fetch(self: &Arc<Self>, key: &str) -> Outcome {
        let this = self.clone();
        let k = key.to_owned();
        let (generation, flight) = self.flight_key(key);
        let (out, _led) = self
            .flights
            .run(&flight, move || async move {
                let ticket = this.store.ticket(&k);
                // Between our caller's cache lookup and this flight starting, an earlier
                // flight of the same key may have finished and cached its value (it left the
                // flight table after populating the cache). Look again, or that key would be
                // loaded twice.
                if let Some(v) = this.store.peek(&k) {
                    return Ok((v, Source::Memory));
                }
                LoadCounters::inc(&this.counters.loads_deduped);
                if let Some(peer) = this.cluster.peers.pick(&k) {
                    let ask = FetchOptions {
                        generation,
                        handoff: false,
                    };
                    match this.cluster.client.fetch(&peer, &this.name, &k, ask).await {
                        Ok(v) => {
                            LoadCounters::inc(&this.counters.peer_loads);
                            let v = if this.keep_hot() {
                                this.keep(&k, v, Tier::Hot, ticket)
                            } else {
                                v
                            };
                            return Ok((v, Source::Peer));
                        }
                        Err(e) => {
                            LoadCounters::inc(&this.counters.peer_errors);
                            if matches!(e, PeerError::Transport { .. } | PeerError::Timeout { .. })
                            {
                                LoadCounters::inc(&this.counters.peer_unreachable);
                            }
                            tracing::warn!(
                                group = %this.name,
                                peer = %peer,
                                error = %e,
                                "peer fetch failed; loading locally"
                            );
                        }
                    }
                }
                // This flight counted its load already (`loads_deduped` above).
                this.load_local(&k, Dedup::Counted).await
            })
            .await;
        out.unwrap_or_else(|e| Err(self.flight_error(key, e)))
    }

    /// A load on this node (the key's owner, or a fallback), shared with every concurrent
    /// local load of the key (from callers here and from peers): from the key's previous
    /// owner's memory if the ring changed lately, else through the getter.
    async fn load_local(self: &Arc<Self>, key: &str, dedup: Dedup) -> Outcome {
        let this = self.clone();
        let k = key.to_owned();
        let (generation, flight) = self.flight_key(key);
        let (out, led) = self
            .local_flights
            .run(&flight, move || async move {
                let ticket = this.store.ticket(&k);
                // Same race as in `fetch`: a just-finished local load may have cached it.
                if let Some(v) = this.store.peek(&k) {
                    return Ok((v, Source::Memory));
                }
                // A peer's request reaches here without `fetch`'s flight: its load is counted
                // here (golang/groupcache counts a peer's load as any other).
                if dedup == Dedup::Count {
                    LoadCounters::inc(&this.counters.loads_deduped);
                }
                if let Some(v) = this.handoff(&k, generation).await {
                    LoadCounters::inc(&this.counters.handoff_loads);
                    return Ok((this.keep(&k, v, Tier::Main, ticket), Source::Handoff));
                }
                match this.getter.load(&k).await {
                    Ok(v) => {
                        LoadCounters::inc(&this.counters.local_loads);
                        Ok((this.keep(&k, v, Tier::Main, ticket), Source::Local))
                    }
                    Err(e) => {
                        LoadCounters::inc(&this.counters.local_load_errors);
                        tracing::debug!(group = %this.name, key = %short_key(&k), error = %e, "getter failed");
                        Err(Error::Getter {
                            group: this.name.clone(),
                            key: short_key(&k),
                            source: Arc::from(e),
                        })
                    }
                }
            })
            .await;
        out.unwrap_or_else(|e| {
            if led && e == FlightError::Panicked {
                LoadCounters::inc(&self.counters.local_load_errors);
            }
            Err(self.flight_error(key, e))
        })
    }

    /// The value of `key` from the memory of its owner before the ring's last change, when
    /// that was another node (issue 13's handoff: a rolling restart moves keys away and back
    /// without reloading them from the origin). `None` on its miss or failure.
    async fn handoff(&self, key: &str, generation: u64) -> Option<Loaded> {
        let previous = self.cluster.peers.previous_owners(key);
        if previous.is_empty() {
            return None;
        }
        // The race: remove(k) reaches this node (the owner) first and the previous owner
        // later; a load in between would take the old value back from the previous owner's
        // memory. A key written here lately is this node's to answer.
        if self.store.recently_written(key) {
            return None;
        }
        let ask = FetchOptions {
            generation,
            handoff: true,
        };
        // Newest owner first: the one most likely to hold the value.
        for peer in previous {
            match self.cluster.client.fetch(&peer, &self.name, key, ask).await {
                Ok(v) => return Some(v),
                Err(PeerError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {}
                Err(e) => {
                    tracing::debug!(group = %self.name, peer = %peer, error = %e, "handoff ask failed");
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::getter::loader_fn;
    use crate::{clock, BoxError, Cache};

    /// A getter counting its calls, answering `v<n>` for its nth call, expiring after `ttl`
    /// when set, and waiting for `gate` (when closed) before answering.
    fn counting(ttl: Option<Duration>) -> (impl Getter, Arc<AtomicUsize>, watch::Sender<bool>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let (gate, rx) = watch::channel(true);
        let c = calls.clone();
        let getter = loader_fn(move |_key: String| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|open| *open).await;
                let v = Loaded::new(format!("v{n}"));
                Ok::<_, BoxError>(match ttl {
                    Some(ttl) => v.expires_in(ttl),
                    None => v,
                })
            }
        });
        (getter, calls, gate)
    }

    fn group(getter: impl Getter) -> (Cache, Group) {
        let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
        let group = cache.new_group("g", 1 << 20, getter).build().unwrap();
        (cache, group)
    }

    /// Waits until the getter has been called `n` times (and so read its value).
    async fn until_calls(calls: &AtomicUsize, n: usize) {
        while calls.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_value_is_a_miss_loaded_once() {
        let (getter, calls, _gate) = counting(Some(Duration::from_secs(10)));
        let (_cache, g) = group(getter);
        assert_eq!(g.get("k").await.unwrap(), "v1");
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(g.get("k").await.unwrap(), "v1", "not yet expired");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        // Expired: a hundred concurrent gets load it once.
        let gets: Vec<_> = (0..100)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move { g.get("k").await })
            })
            .collect();
        for t in gets {
            assert_eq!(t.await.unwrap().unwrap(), "v2");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(g.get_with("k", |v| v.len()).await.unwrap(), 2);
        let s = g.stats();
        assert_eq!((s.local_loads, s.main_cache.items), (2, 1), "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn set_stores_locally_when_this_node_owns_the_key_and_expires() {
        let (getter, calls, _gate) = counting(None);
        let (_cache, g) = group(getter);
        let at = clock::now() + Duration::from_secs(5);
        g.set("k", "set", Some(at), false).await.unwrap();
        assert_eq!(g.get("k").await.unwrap(), "set");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(g.get("k").await.unwrap(), "v1", "expired: loaded");
        g.set("k", "forever", None, true).await.unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(g.get("k").await.unwrap(), "forever");
        // A value already expired replaces nothing but removes the old one.
        g.set("k", "stale", Some(clock::now()), false)
            .await
            .unwrap();
        assert_eq!(g.get("k").await.unwrap(), "v2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_in_flight_does_not_overwrite_a_newer_set() {
        let (getter, calls, gate) = counting(None);
        let (_cache, g) = group(getter);
        gate.send_replace(false);
        let get = tokio::spawn({
            let g = g.clone();
            async move { g.get("k").await }
        });
        until_calls(&calls, 1).await;
        // The getter has been called and read its (older) value; the set lands meanwhile.
        g.set("k", "newer", None, false).await.unwrap();
        gate.send_replace(true);
        assert_eq!(
            get.await.unwrap().unwrap(),
            "newer",
            "the load's callers get the set"
        );
        assert_eq!(g.get("k").await.unwrap(), "newer");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_in_flight_does_not_bring_back_a_removed_key() {
        let (getter, calls, gate) = counting(None);
        let (_cache, g) = group(getter);
        assert_eq!(g.get("k").await.unwrap(), "v1");
        // Expire it by a set in the past, then reload with the gate closed.
        g.set("k", "x", Some(clock::now()), false).await.unwrap();
        gate.send_replace(false);
        let get = tokio::spawn({
            let g = g.clone();
            async move { g.get("k").await }
        });
        until_calls(&calls, 2).await;
        let removed = g.remove("k").await.unwrap();
        assert!(removed.is_complete() && removed.failed().is_empty());
        gate.send_replace(true);
        assert_eq!(
            get.await.unwrap().unwrap(),
            "v2",
            "loaded before the remove"
        );
        assert_eq!(g.stats().main_cache.items, 0, "but not cached");
        assert_eq!(g.get("k").await.unwrap(), "v3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_generation_drops_entries_and_loads_in_flight() {
        let (getter, calls, gate) = counting(None);
        let (_cache, g) = group(getter);
        for k in ["a", "b", "c"] {
            g.get(k).await.unwrap();
        }
        assert_eq!(g.stats().main_cache.items, 3);
        gate.send_replace(false);
        let get = tokio::spawn({
            let g = g.clone();
            async move { g.get("d").await }
        });
        until_calls(&calls, 4).await;
        assert!(g.adopt_generation(1));
        assert!(!g.adopt_generation(1), "once per generation");
        assert_eq!(g.generation(), 1);
        let s = g.stats();
        assert_eq!((s.main_cache.items, s.main_cache.bytes), (0, 0));
        // A get after the flush does not join the flight begun before it.
        let after = tokio::spawn({
            let g = g.clone();
            async move { g.get("d").await }
        });
        until_calls(&calls, 5).await;
        gate.send_replace(true);
        // The load begun before the flush is not kept; its callers get what the cache holds
        // when it ends, if anything (the later load's value), else what it read.
        let first = get.await.unwrap().unwrap();
        assert!(first == "v4" || first == "v5", "{first:?}");
        assert_eq!(after.await.unwrap().unwrap(), "v5");
        assert_eq!(
            g.get("d").await.unwrap(),
            "v5",
            "only the post-flush load was kept"
        );
        assert_eq!(g.get("a").await.unwrap(), "v6");
        assert!(!g.adopt_generation(0));
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }
}
