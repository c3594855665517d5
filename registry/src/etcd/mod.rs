//! [`EtcdRegistry`]: the registry in etcd.

mod options;
mod store;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::discover::Discovery;
use crate::error::Error;
use crate::instance::Instance;
use crate::keyspace::Keyspace;
use crate::lease::Registration;
use crate::registry::{Core, Registry};

pub use options::EtcdOptions;
use store::EtcdStore;

/// The registry in etcd: one client connection, registrations with supervised leases, and
/// one shared watch on `<prefix>/` serving discovery of every service name.
///
/// Cheap to clone; clones share the connection and the discovery view.
///
/// ```no_run
/// # async fn demo() -> Result<(), svckit_registry::Error> {
/// use svckit_registry::{EtcdOptions, EtcdRegistry, Instance, Registry};
///
/// let registry = EtcdRegistry::connect(EtcdOptions::new(["127.0.0.1:2379"])).await?;
/// let registration = registry
///     .register(Instance::with_random_id("productservice", "127.0.0.1:8081")?)
///     .await?;
/// let products = registry.discovery().instances("productservice");
/// # drop(products);
/// registration.deregister().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    core: Arc<Core>,
    options: Arc<EtcdOptions>,
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("options", &self.options)
            .field("core", &self.core)
            .finish()
    }
}

impl EtcdRegistry {
    /// Connects to etcd and checks that it answers within the dial timeout. Starts no task:
    /// the discovery watch starts on the first [`discovery`](Registry::discovery) call, and
    /// each registration owns its keepalive.
    ///
    /// Fails with [`Error::InvalidPrefix`] for a bad prefix, [`Error::Timeout`] or
    /// [`Error::Etcd`] when etcd cannot be reached.
    pub async fn connect(options: EtcdOptions) -> Result<Self, Error> {
        let config = options.config()?;
        let store = EtcdStore::connect(&options, &format!("{}/", config.prefix)).await?;
        tracing::debug!(endpoints = ?options.endpoints, prefix = %config.prefix, "connected to etcd");
        Ok(Self {
            core: Arc::new(Core::new(Arc::new(store), config)),
            options: Arc::new(options),
        })
    }

    /// The options this registry was connected with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
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
