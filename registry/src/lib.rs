//! Service instances in etcd: register with a supervised lease, discover through one shared
//! watch, and shut down gracefully behind a tower layer.

mod backoff;
mod discover;
mod error;
mod etcd;
mod instance;
mod layer;
mod lease;
mod memory;
mod registry;
mod shutdown;
mod store;
mod task;
mod watcher;

pub use discover::{
    Discovery, DiscoveryState, DiscoveryStats, Instances, ServiceDiscover, ServiceWatch,
};
pub use error::{Error, MalformedEntry};
pub use etcd::{EtcdOptions, EtcdRegistry};
pub use instance::{is_ident, random_id, validate_ident, Instance, DEFAULT_PREFIX};
pub use layer::{InFlight, InFlightCounter, InFlightFuture, InFlightLayer};
pub use lease::{Registration, RegistrationState};
pub use memory::{MemoryRegistry, DEFAULT_MEMORY_TTL};
pub use registry::Registry;
pub use shutdown::{Lifecycle, LifecycleBuilder, ShutdownSignal, DEFAULT_GRACE};
