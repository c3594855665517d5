//! The small set of etcd primitives the registry is built on.
//!
//! Lease supervision ([`crate::lease`]) and discovery following ([`crate::follow`]) are written
//! once against [`Store`]; [`crate::etcd`] implements it over a real etcd and
//! [`crate::memory`] over an in-process mini etcd, so both backends behave the same.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;
pub(crate) use crate::txn::{Committed, Txn, TxnOp};

/// A lease id as etcd hands it out.
pub(crate) type LeaseId = i64;

/// One key/value pair read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyValue {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    /// The lease the key is attached to; `0` for none.
    pub(crate) lease: LeaseId,
    /// The revision of the key's last change.
    pub(crate) mod_revision: i64,
}

/// A listing of a prefix at one revision.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub(crate) kvs: Vec<KeyValue>,
    /// The store revision the listing was taken at; watch from `revision + 1`.
    pub(crate) revision: i64,
}

/// One change of a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchEvent {
    /// The key was created or updated; `revision` is its modification revision.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        revision: i64,
    },
    /// The key was deleted (explicitly, by a revoked lease or by expiry).
    Delete { key: Vec<u8>, revision: i64 },
}

impl WatchEvent {
    pub(crate) fn revision(&self) -> i64 {
        match self {
            Self::Put { revision, .. } | Self::Delete { revision, .. } => *revision,
        }
    }
}

/// What a watch stream yields next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchMessage {
    /// Events in revision order.
    Events(Vec<WatchEvent>),
    /// The start revision was compacted away: re-list and watch again.
    Compacted { compact_revision: i64 },
    /// The store cancelled the watch.
    Cancelled { reason: String },
}

/// Which keys a watch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    /// Exactly the key.
    Key,
    /// Every key starting with it.
    Prefix,
}

/// The etcd operations the registry needs.
#[async_trait]
pub(crate) trait Store: Send + Sync + fmt::Debug + 'static {
    /// Grants a lease with `ttl` (whole seconds, at least one).
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, Error>;

    /// Puts `key` = `value` attached to `lease`; returns the revision of the put.
    async fn put(&self, key: &[u8], value: &[u8], lease: LeaseId) -> Result<i64, Error>;

    /// Revokes `lease`; the keys attached to it are deleted.
    async fn revoke(&self, lease: LeaseId) -> Result<(), Error>;

    /// Opens a keepalive stream for `lease`.
    async fn keepalive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>, Error>;

    /// Lists every key under `prefix` and the revision of the listing.
    async fn get_prefix(&self, prefix: &[u8]) -> Result<Listing, Error>;

    /// Applies `txn` atomically at one revision, when its condition holds.
    async fn txn(&self, txn: &Txn) -> Result<Committed, Error>;

    /// The seconds left on `lease`; `None` when it no longer exists.
    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<i64>, Error>;

    /// Watches `key` (or every key under it) from `start_revision` (inclusive).
    async fn watch(
        &self,
        key: &[u8],
        range: Range,
        start_revision: i64,
    ) -> Result<Box<dyn WatchStream>, Error>;
}

/// A keepalive stream of one lease.
#[async_trait]
pub(crate) trait KeepAlive: Send + fmt::Debug {
    /// Refreshes the lease once. Returns the remaining TTL in seconds; `0` means the lease is
    /// gone (expired or revoked). An error means the stream broke.
    async fn keep_alive(&mut self) -> Result<i64, Error>;
}

/// A watch stream.
#[async_trait]
pub(crate) trait WatchStream: Send + fmt::Debug {
    /// The next message. An error means the stream broke (connection lost or ended).
    async fn next(&mut self) -> Result<WatchMessage, Error>;
}

/// Lease TTL in whole seconds as etcd takes it (rounded up, at least 1).
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// Runs `fut` bounded by `after`; a timeout becomes [`Error::Timeout`] naming `op`.
pub(crate) async fn timed<T>(
    op: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| Error::Timeout { op, after })?
}
