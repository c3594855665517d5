//! [`Txn`]: several writes that become visible together, at one etcd revision.

/// Writes applied atomically at one revision: every watcher sees all of them or none.
/// Optionally conditional: [`if_unchanged_since`](Self::if_unchanged_since) makes it a
/// compare-and-swap on a prefix. Commit it with [`Keyspace::commit`](crate::Keyspace::commit).
///
/// ```
/// use svckit_registry::Txn;
/// let txn = Txn::new()
///     .put("/config/product/greeting", "hello")
///     .delete("/config/product/old_setting")
///     .if_unchanged_since("/config/product/", 42);
/// assert_eq!(txn.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Txn {
    pub(crate) ops: Vec<TxnOp>,
    pub(crate) unchanged_since: Option<(String, i64)>,
}

/// One write of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
    DeletePrefix { prefix: String },
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` (no lease: the key stays until deleted).
    pub fn put(mut self, key: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.ops.push(TxnOp::Put {
            key: key.into(),
            value: value.as_ref().to_vec(),
        });
        self
    }

    /// Deletes `key` (nothing happens if it does not exist).
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(TxnOp::Delete { key: key.into() });
        self
    }

    /// Deletes every key starting with `prefix`.
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(TxnOp::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }

    /// Applies the writes only if no key starting with `prefix` was created or modified
    /// after `revision` (for example the revision of the snapshot the new value was computed
    /// from); otherwise the commit fails with [`Error::Conflict`](crate::Error::Conflict)
    /// and writes nothing. etcd compares modification revisions, so a key *deleted* since
    /// `revision` does not count as a change.
    pub fn if_unchanged_since(mut self, prefix: impl Into<String>, revision: i64) -> Self {
        self.unchanged_since = Some((prefix.into(), revision));
        self
    }

    /// How many writes it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What the store did with a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Whether the condition held and the writes were applied.
    pub(crate) applied: bool,
    /// The store's revision after the transaction.
    pub(crate) revision: i64,
}
