//! [`MemoryRegistry`]: the registry in process memory, with etcd's semantics.

mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::Config;
use crate::discover::Discovery;
use crate::error::Error;
use crate::instance::{Instance, DEFAULT_PREFIX};
use crate::keyspace::Keyspace;
use crate::lease::Registration;
use crate::registry::{Core, Registry};

pub(crate) use store::MemoryStore;

/// The default lease TTL of a [`MemoryRegistry`], as for etcd.
pub const DEFAULT_MEMORY_TTL: Duration = crate::config::DEFAULT_TTL;

/// A registry that lives in process memory: for tests and single-process programs.
///
/// It behaves like [`EtcdRegistry`](crate::EtcdRegistry): keys live under `/services` and
/// hang on leases that expire when no keepalive arrives within the TTL, and the discovery view
/// sees changes in order. Time is Tokio time, so tests can use `tokio::time::pause`.
///
/// Clones share the data *and* the discovery view. [`client`](Self::client) returns another
/// client over the same data with its own view, like a second process on one etcd.
///
/// ```
/// # async fn demo() -> Result<(), svckit_registry::Error> {
/// use svckit_registry::{Instance, MemoryRegistry, Registry};
///
/// let registry = MemoryRegistry::new();
/// let reg = registry.register(Instance::with_random_id("products", "127.0.0.1:8081")?).await?;
/// let mut products = registry.discovery().watch("products")?;
/// # let _ = &mut products;
/// reg.deregister().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryRegistry {
    store: MemoryStore,
    core: Arc<Core>,
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("core", &self.core)
            .finish()
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    /// An empty registry with the default lease TTL of 10 s. Starts no task and needs no
    /// runtime: tasks start on first use.
    pub fn new() -> Self {
        Self::with_ttl(DEFAULT_MEMORY_TTL)
    }

    /// An empty registry whose registrations use lease `ttl` (rounded up to whole seconds,
    /// at least 1 s, as etcd does).
    pub fn with_ttl(ttl: Duration) -> Self {
        let store = MemoryStore::new();
        let config = Config::new(DEFAULT_PREFIX, ttl);
        Self {
            core: Arc::new(Core::new(Arc::new(store.clone()), config)),
            store,
        }
    }

    /// Another client of the same data with its own discovery view and its own settings
    /// (`ttl`), like a second process talking to the same etcd.
    pub fn client(&self, ttl: Duration) -> Self {
        let config = Config::new(DEFAULT_PREFIX, ttl);
        Self {
            core: Arc::new(Core::new(Arc::new(self.store.clone()), config)),
            store: self.store.clone(),
        }
    }

    /// The lease TTL registrations get.
    pub fn ttl(&self) -> Duration {
        self.core.config().ttl
    }

    /// Writes a raw key and value without a lease, bypassing validation: for tests of how
    /// discovery treats foreign or malformed entries. Returns the revision.
    #[cfg(feature = "test-util")]
    pub fn put_raw(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> i64 {
        self.store.put_raw(key.as_ref(), value.as_ref())
    }

    /// Deletes a raw key.
    #[cfg(feature = "test-util")]
    pub fn delete_raw(&self, key: impl AsRef<[u8]>) {
        self.store.delete_raw(key.as_ref());
    }

    /// Drops watch history up to `revision`, as etcd's compaction does. A watcher that has
    /// to resume from before it re-lists.
    #[cfg(feature = "test-util")]
    pub fn compact(&self, revision: i64) {
        self.store.compact(revision);
    }

    /// The current revision of the data.
    #[cfg(feature = "test-util")]
    pub fn revision(&self) -> i64 {
        self.store.revision()
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, instance: Instance) -> Result<Registration, Error> {
        self.core.register(instance).await
    }

    fn discovery(&self) -> Discovery {
        self.core.discovery()
    }

    fn keyspace(&self) -> Keyspace {
        self.core.keyspace()
    }
}
