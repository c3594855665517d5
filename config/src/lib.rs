//! Configuration that lives in etcd: a live typed value in the process ([`ConfigWatch`]), and
//! files rendered from it for programs that only read files ([`confd`], compatible with
//! confd's resource files and Go templates).
//!
//! Both follow an etcd prefix through the registry's one watch machinery
//! ([`Keyspace::watch`](svckit_registry::Keyspace::watch)): a listing, a watch from the next
//! revision, a re-list after compaction, the last known keys kept through an outage.

pub mod confd;
mod error;
mod tree;
mod watch;
mod write;

pub use error::{Error, Rejected};
pub use watch::{ConfigWatch, ConfigWatchBuilder, Versioned, DEFAULT_STARTUP_TIMEOUT};
pub use write::{put, put_if_unchanged};
