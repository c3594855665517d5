//! Writing a typed value as keys, in one transaction.

use serde::Serialize;
use svckit_registry::{Keyspace, Txn};

use crate::error::Error;
use crate::tree;

/// Writes `value` under `prefix` (a `/` is added when missing) in one etcd transaction:
/// one key per field (nested structs and maps become directories, lists `0`, `1`, ...),
/// values as text, and deletes the keys under the prefix that `value` no longer has
/// (an absent optional field has no key). Returns the revision of the write.
///
/// Without a condition the keys are read, then written: a key another writer adds under the
/// prefix in between survives (use [`put_if_unchanged`] to exclude that). etcd takes at most
/// `--max-txn-ops` writes (128 by default) in one transaction, puts and deletes together; a
/// larger value is refused whole (`svckit_registry::Error::TxnTooLarge`) and nothing is
/// written.
///
/// # Errors
/// [`Error::Unrepresentable`] when `value` is not a map of fields (or a field name holds a
/// `/`); [`Error::Registry`] when etcd refuses or does not answer.
pub async fn put<T: Serialize>(keyspace: &Keyspace, prefix: &str, value: &T) -> Result<i64, Error> {
    write(keyspace, prefix, value, None).await
}

/// [`put`], only if no key under `prefix` was created or modified after `revision` (the
/// revision of the value the new one was derived from, [`Versioned::revision`](crate::Versioned::revision)):
/// a compare-and-swap. Returns the revision of the write.
///
/// # Errors
/// As [`put`]; a concurrent change is [`Error::Registry`] with
/// `svckit_registry::Error::Conflict` as its source, and nothing is written.
pub async fn put_if_unchanged<T: Serialize>(
    keyspace: &Keyspace,
    prefix: &str,
    value: &T,
    revision: i64,
) -> Result<i64, Error> {
    write(keyspace, prefix, value, Some(revision)).await
}

async fn write<T: Serialize>(
    keyspace: &Keyspace,
    prefix: &str,
    value: &T,
    expected: Option<i64>,
) -> Result<i64, Error> {
    let mut prefix = prefix.to_owned();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    let registry = |op, source| Error::Registry {
        prefix: prefix.clone(),
        op,
        source,
    };
    let keys = tree::to_keys(value, &prefix).map_err(|reason| Error::Unrepresentable {
        prefix: prefix.clone(),
        reason,
    })?;
    let current = keyspace
        .get(&prefix)
        .await
        .map_err(|e| registry("get", e))?;
    let mut txn = Txn::new();
    for (key, _) in current.iter().filter(|(k, _)| !keys.contains_key(*k)) {
        txn = txn.delete(key);
    }
    for (key, text) in &keys {
        txn = txn.put(key.as_str(), text);
    }
    if let Some(revision) = expected {
        txn = txn.if_unchanged_since(prefix.as_str(), revision);
    }
    keyspace.commit(txn).await.map_err(|e| registry("write", e))
}
