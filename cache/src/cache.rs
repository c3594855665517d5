//! The cache: the owner of a node's groups and its view of the peers (golang/groupcache's
//! `HTTPPool` and its group registry, without process globals).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use svckit_registry::{Discovery, Keyspace};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::Error;
use crate::flush::FlushFollower;
use crate::follower::PeerFollower;
use crate::getter::Getter;
use crate::group::{Group, GroupBuilder, GroupParts, Groups};
use crate::peers::{validate_peer_url, Cluster, PeerClient, Peers};
use crate::ring::{crc32_ieee, GroupcacheHashFn, DEFAULT_REPLICAS};
use crate::server::PeerService;

/// golang/groupcache's default base path of the peer protocol.
pub const DEFAULT_BASE_PATH: &str = "/_groupcache/";

/// The default timeout of one fetch from a peer.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The default limit on the body of a peer's answer: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The default limit on the body of a peer's `PUT` (a set): 64 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 20;

/// How long after a change of the peer list a key's new owner asks the key's previous owner
/// before calling its getter, by default: 30 s (a node's default shutdown grace,
/// [`svckit_registry::DEFAULT_GRACE`]).
pub const DEFAULT_HANDOFF_WINDOW: Duration = Duration::from_secs(30);

struct CacheInner {
    cluster: Arc<Cluster>,
    groups: Arc<Groups>,
    cancel: CancellationToken,
    owner: Arc<DropGuard>,
}

/// The groups of one node and its peers: golang/groupcache's `HTTPPool` plus its group
/// registry, as an explicit object instead of process globals.
///
/// Cheap to clone; clones share everything. When the last clone of the cache and of its
/// groups is dropped, loads still in flight are stopped.
///
/// ```
/// # async fn demo() -> Result<(), svckit_cache::Error> {
/// use bytes::Bytes;
/// use svckit_cache::{getter_fn, BoxError, Cache};
///
/// let cache = Cache::builder("http://127.0.0.1:9101").build()?;
/// let thumbs = cache
///     .new_group("thumbs", 64 << 20, getter_fn(|key: String| async move {
///         Ok::<_, BoxError>(Bytes::from(format!("thumbnail of {key}")))
///     }))
///     .build()?;
/// cache.set_peers(["http://127.0.0.1:9101", "http://127.0.0.1:9102"])?;
/// let app = axum::Router::new().merge(cache.router()); // serve the peer protocol
/// let value = thumbs.get("/img/1.png").await?;
/// # let _ = (app, value);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<CacheInner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.group_names();
        f.debug_struct("Cache")
            .field("self_url", &self.inner.cluster.peers.self_url())
            .field("base_path", &self.inner.cluster.base_path)
            .field("groups", &groups)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Cache`]; from [`Cache::builder`].
#[derive(Debug, Clone)]
#[must_use = "a CacheBuilder does nothing until `build` is called"]
pub struct CacheBuilder {
    self_url: String,
    base_path: String,
    replicas: usize,
    hash: GroupcacheHashFn,
    peer_timeout: Duration,
    max_response_bytes: usize,
    max_request_bytes: usize,
    handoff_window: Duration,
    secret: Option<String>,
}

impl CacheBuilder {
    /// The path the peer protocol is served under and asked at; must start and end with
    /// `/`. Default: [`DEFAULT_BASE_PATH`] (`/_groupcache/`), as golang/groupcache.
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.base_path = path.into();
        self
    }

    /// Points per peer on the ring. Default: [`DEFAULT_REPLICAS`] (50), as golang/groupcache.
    /// Every node of a cluster, Go or Rust, must use the same value.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n.max(1);
        self
    }

    /// The ring's hash. Default: crc32 IEEE, as golang/groupcache. Only for tests that want
    /// exact owners: every node of a cluster must use the same hash.
    pub fn hash_fn(mut self, hash: GroupcacheHashFn) -> Self {
        self.hash = hash;
        self
    }

    /// How long one fetch from a peer may take, connecting included, before the group loads
    /// locally instead. Default: [`DEFAULT_PEER_TIMEOUT`] (5 s).
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// The largest answer body accepted from a peer; a larger one is a peer error and the
    /// group loads locally. Default: [`DEFAULT_MAX_RESPONSE_BYTES`] (64 MiB).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The largest `PUT` body (a set from a peer) accepted; a larger one is answered 413.
    /// Default: [`DEFAULT_MAX_REQUEST_BYTES`] (64 MiB).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// For how long after the peer list changes a key's new owner, on a miss, first asks
    /// the key's owner before the change for the value in its memory (the handoff: a
    /// rolling restart then moves keys without reloading them from the origin). A previous
    /// owner that left the list is asked too: a node shutting down keeps serving through
    /// its grace period. `Duration::ZERO` turns the handoff off. Default:
    /// [`DEFAULT_HANDOFF_WINDOW`] (30 s).
    pub fn handoff_window(mut self, window: Duration) -> Self {
        self.handoff_window = window;
        self
    }

    /// A secret sent to peers in the [`SECRET_HEADER`](crate::SECRET_HEADER) header and
    /// required from them: requests without it (gets and writes alike) get 403. Default: none (golang/groupcache
    /// peers do not send it, so a mixed cluster must leave it off).
    pub fn shared_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Builds the cache. Fails on a self URL that is not `http://host:port`, a base path
    /// that does not start and end with `/`, or a secret that cannot be a header value.
    pub fn build(self) -> Result<Cache, Error> {
        validate_peer_url(&self.self_url)?;
        if !self.base_path.starts_with('/') || !self.base_path.ends_with('/') {
            return Err(Error::InvalidBasePath {
                path: self.base_path,
            });
        }
        let secret = match self.secret {
            Some(s) => Some(HeaderValue::from_str(&s).map_err(|_| Error::InvalidSecret)?),
            None => None,
        };
        let cluster = Cluster {
            peers: Peers::new(self.self_url, self.replicas, self.hash, self.handoff_window),
            client: PeerClient::new(
                self.base_path.clone(),
                self.peer_timeout,
                self.max_response_bytes,
                secret.clone(),
            ),
            base_path: self.base_path,
            secret,
            max_request_bytes: self.max_request_bytes,
        };
        let cancel = CancellationToken::new();
        Ok(Cache {
            inner: Arc::new(CacheInner {
                cluster: Arc::new(cluster),
                groups: Arc::default(),
                owner: Arc::new(cancel.clone().drop_guard()),
                cancel,
            }),
        })
    }
}

impl Cache {
    /// A builder for a node whose own base URL (as the other peers list it) is `self_url`,
    /// e.g. `http://10.0.0.1:8080`. Keys the ring gives to this URL are loaded here.
    pub fn builder(self_url: impl Into<String>) -> CacheBuilder {
        CacheBuilder {
            self_url: self_url.into(),
            base_path: DEFAULT_BASE_PATH.to_owned(),
            replicas: DEFAULT_REPLICAS,
            hash: crc32_ieee,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            handoff_window: DEFAULT_HANDOFF_WINDOW,
            secret: None,
        }
    }

    /// Starts a group named `name` holding at most `budget` bytes (main and hot cache
    /// together), filled by `getter`. Finish with [`GroupBuilder::build`].
    pub fn new_group(
        &self,
        name: impl Into<String>,
        budget: usize,
        getter: impl Getter,
    ) -> GroupBuilder<'_> {
        let parts = GroupParts {
            groups: &self.inner.groups,
            cluster: self.inner.cluster.clone(),
            owner: self.inner.owner.clone(),
            cancel: self.inner.cancel.clone(),
        };
        GroupBuilder::new(parts, name.into(), budget, Arc::new(getter))
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<Group> {
        self.inner.groups.get(name)
    }

    /// The names of all groups.
    pub fn group_names(&self) -> Vec<String> {
        self.inner.groups.names()
    }

    /// All groups, sorted by name (for a status page: each one's
    /// [`name`](Group::name), [`stats`](Group::stats) and
    /// [`budget_bytes`](Group::budget_bytes)).
    pub fn groups(&self) -> Vec<Group> {
        self.inner.groups.all()
    }

    /// This node's own base URL.
    pub fn self_url(&self) -> &str {
        self.inner.cluster.peers.self_url()
    }

    /// The base path of the peer protocol.
    pub fn base_path(&self) -> &str {
        &self.inner.cluster.base_path
    }

    /// Replaces the peer list with base URLs such as `http://10.0.0.1:8080`, normally
    /// including this node's own (golang/groupcache's `HTTPPool.Set`). The order only
    /// matters when two ring points collide; give Go and Rust nodes the same list. On an
    /// invalid URL nothing changes.
    pub fn set_peers<I, S>(&self, urls: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.inner.cluster.peers.set(urls)
    }

    /// The current peer list.
    pub fn peers(&self) -> Vec<String> {
        self.inner
            .cluster
            .peers
            .ring()
            .peers()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// Hands every group's keys over to their owners in the current ring
    /// ([`Group::hand_over`]): for a node that has left the ring (deregistered, its ring no
    /// longer holding it) and is about to stop. Returns how many keys moved.
    pub async fn hand_over(&self) -> usize {
        let mut moved = 0;
        for name in self.group_names() {
            if let Some(group) = self.group(&name) {
                moved += group.hand_over().await;
            }
        }
        moved
    }

    /// Each peer of the current ring (as [`peers`](Self::peers) lists them) with the
    /// fraction of the key hash space it owns, summing to 1
    /// ([`GroupcacheRing::shares`](crate::GroupcacheRing::shares)); empty while the peer list
    /// is.
    pub fn ring_shares(&self) -> Vec<(String, f64)> {
        self.inner
            .cluster
            .peers
            .ring()
            .shares()
            .into_iter()
            .map(|(peer, share)| (peer.to_string(), share))
            .collect()
    }

    /// The base URL of the peer that owns `key`; `None` while the peer list is empty.
    pub fn owner(&self, key: &str) -> Option<String> {
        self.inner
            .cluster
            .peers
            .ring()
            .get(key)
            .map(|p| p.to_string())
    }

    /// The peer protocol as a tower service.
    pub fn service(&self) -> PeerService {
        PeerService::new(self.inner.groups.clone(), self.inner.cluster.clone())
    }

    /// An axum router serving the peer protocol under the base path; merge it into an
    /// application's router or serve it alone.
    pub fn router(&self) -> axum::Router {
        let base = self.base_path();
        axum::Router::new()
            .route_service(&format!("{base}{{*rest}}"), self.service())
            .route_service(base, self.service())
    }

    /// Follows the flush generations of this cache's groups in `keyspace`
    /// (`/svckit/cache/<group>/generation`, see [`Group::flush`]): a group drops its entries
    /// as soon as the watch brings a newer generation. The task is owned by the returned
    /// handle. Must be called within a tokio runtime.
    pub fn follow_flushes(&self, keyspace: &Keyspace) -> Result<FlushFollower, Error> {
        FlushFollower::start(
            keyspace,
            self.inner.groups.clone(),
            self.inner.cancel.child_token(),
        )
    }

    /// Takes the peer list from `discovery`'s instances of `service` now, and keeps following
    /// them in a task owned by the returned handle. Must be called within a tokio runtime.
    pub fn follow(&self, discovery: &Discovery, service: &str) -> Result<PeerFollower, Error> {
        PeerFollower::start(
            discovery,
            service,
            self.inner.cluster.clone(),
            self.inner.cancel.child_token(),
        )
    }
}
