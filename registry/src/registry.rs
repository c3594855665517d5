//! The [`Registry`] trait and the machinery both backends share.

use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::config::Config;
use crate::discover::Discovery;
use crate::error::Error;
use crate::follow;
use crate::instance::Instance;
use crate::keyspace::Keyspace;
use crate::lease::Registration;
use crate::store::Store;
use crate::task::OwnedTask;

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

    /// svckit's own keys beside the instances (config, cache generations): get, write in
    /// transactions, and watch prefixes live through the same machinery as discovery.
    fn keyspace(&self) -> Keyspace;
}

#[async_trait]
impl<R: Registry + ?Sized> Registry for Arc<R> {
    async fn register(&self, instance: Instance) -> Result<Registration, Error> {
        (**self).register(instance).await
    }

    fn discovery(&self) -> Discovery {
        (**self).discovery()
    }

    fn keyspace(&self) -> Keyspace {
        (**self).keyspace()
    }
}

/// What both registries are made of: a store, the configuration and the lazily started
/// discovery view.
pub(crate) struct Core {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    discovery: OnceLock<Discovery>,
    keyspace: Keyspace,
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
        let config = Arc::new(config);
        Self {
            keyspace: Keyspace::new(store.clone(), config.clone()),
            store,
            config,
            discovery: OnceLock::new(),
        }
    }

    pub(crate) fn keyspace(&self) -> Keyspace {
        self.keyspace.clone()
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
                    follow::run(store, writer, config, cancel)
                });
                discovery.owned_by(Arc::new(task))
            })
            .clone()
    }
}
