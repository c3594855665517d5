//! The [`Registry`] trait and the machinery both backends share.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::discover::Discovery;
use crate::error::Error;
use crate::instance::Instance;
use crate::lease::Registration;
use crate::store::Store;
use crate::task::OwnedTask;
use crate::watcher;

/// A place where service instances register and are discovered: etcd
/// ([`EtcdRegistry`](crate::EtcdRegistry)) or in-process ([`MemoryRegistry`](crate::MemoryRegistry)).
/// Both have the same semantics.
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Registers `instance`: grants a lease, puts `<prefix>/<id>/<name>` = `host:port` with it,
    /// and returns the handle that keeps the lease alive until it is deregistered or dropped.
    async fn register(&self, instance: Instance) -> Result<Registration, Error>;

    /// The shared discovery view of this registry client: every service under the prefix,
    /// kept current by one watch. The watch starts on the first call and runs while any
    /// [`Discovery`] clone (or the registry) is alive.
    ///
    /// # Panics
    /// When first called outside a Tokio runtime.
    fn discovery(&self) -> Discovery;
}

#[async_trait]
impl<R: Registry + ?Sized> Registry for Arc<R> {
    async fn register(&self, instance: Instance) -> Result<Registration, Error> {
        (**self).register(instance).await
    }

    fn discovery(&self) -> Discovery {
        (**self).discovery()
    }
}

/// Timings shared by lease supervision and discovery.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) deregister_timeout: Duration,
    pub(crate) reconcile_interval: Duration,
    /// First retry delay after a failure (re-registration, reconnect).
    pub(crate) backoff_base: Duration,
    /// Longest retry delay.
    pub(crate) backoff_max: Duration,
}

impl Config {
    pub(crate) fn new(prefix: &str, ttl: Duration) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
            ttl,
            request_timeout: Duration::from_secs(5),
            deregister_timeout: Duration::from_secs(2),
            reconcile_interval: Duration::from_secs(30),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }

    /// The retry cap used while a registration is lost: short enough to come back well
    /// within one TTL once the store is reachable again.
    pub(crate) fn recovery_backoff_max(&self) -> Duration {
        (self.ttl / 3).clamp(self.backoff_base, self.backoff_max)
    }
}

/// What both registries are made of: a store, the configuration and the lazily started
/// discovery view.
pub(crate) struct Core {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    discovery: OnceLock<Discovery>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("store", &self.store)
            .field("prefix", &self.config.prefix)
            .field("ttl", &self.config.ttl)
            .field("discovery_started", &self.discovery.get().is_some())
            .finish()
    }
}

impl Core {
    pub(crate) fn new(store: Arc<dyn Store>, config: Config) -> Self {
        Self {
            store,
            config: Arc::new(config),
            discovery: OnceLock::new(),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) async fn register(&self, instance: Instance) -> Result<Registration, Error> {
        Registration::start(self.store.clone(), self.config.clone(), instance).await
    }

    pub(crate) fn discovery(&self) -> Discovery {
        self.discovery
            .get_or_init(|| {
                let (discovery, writer) = Discovery::new(&self.config.prefix);
                let span = tracing::info_span!("discovery_watch", prefix = %self.config.prefix);
                let store = self.store.clone();
                let config = self.config.clone();
                let task = OwnedTask::spawn("discovery watch", span, move |cancel| {
                    watcher::run(store, writer, config, cancel)
                });
                discovery.owned_by(Arc::new(task))
            })
            .clone()
    }
}
