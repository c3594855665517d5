//! svckit: services register themselves in etcd, clients find them by name and call them
//! through go-kit style Endpoints with client-side load balancing, and a groupcache-compatible
//! distributed cache runs as one of those services.
//!
//! This facade re-exports the member crates:
//!
//! - [`registry`]: instances in etcd, leases kept alive, discovery, the tower layer and
//!   graceful shutdown.
//! - [`balancer`]: Endpoints, pickers (random, round robin, consistent hash, power of two
//!   choices), retry and the HTTP transport.
//! - [`cache`]: the groupcache-style distributed cache.

pub use svckit_balancer as balancer;
pub use svckit_cache as cache;
pub use svckit_registry as registry;
