//! Service instances in etcd: register with a supervised lease, discover through one shared
//! watch, and shut down gracefully behind a tower layer.

mod discover;
mod error;
mod instance;

pub use discover::{
    Discovery, DiscoveryState, DiscoveryStats, Instances, ServiceDiscover, ServiceWatch,
};
pub use error::{Error, MalformedEntry};
pub use instance::{is_ident, random_id, validate_ident, Instance, DEFAULT_PREFIX};
