//! Cluster-wide flush of a group: a generation number in the registry's key space,
//! `/svckit/cache/<group>/generation` (decimal), followed by every node through the registry's
//! one watch machinery ([`Keyspace::watch`]).
//!
//! [`Group::flush`] bumps it with a compare-and-swap. A node that sees a newer generation
//! drops the group's entries at once, and loads in flight on it will not populate
//! ([`crate::store`]). Gets to a peer carry the sender's generation, and an owner that has
//! not yet seen it adopts it before answering, so a node that heard of the flush first is
//! never answered from the owner's older entries, and the owner still loads each key once.

use std::sync::Arc;

use svckit_registry::{KeySnapshot, Keyspace, Txn};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::Error;
use crate::group::{Group, Groups};

/// The registry prefix under which the flush generations of every group live.
pub const GENERATION_PREFIX: &str = "/svckit/cache/";

/// How many times [`Group::flush`] retries its compare-and-swap when another flush of the
/// group wins the race.
const FLUSH_ATTEMPTS: usize = 8;

/// The registry key of `group`'s flush generation: `/svckit/cache/<group>/generation`.
pub fn generation_key(group: &str) -> String {
    format!("{GENERATION_PREFIX}{group}/generation")
}

fn registry_error(key: &str, what: &'static str, e: svckit_registry::Error) -> Error {
    Error::Generation {
        key: key.to_owned(),
        what,
        source: Some(Arc::new(e)),
    }
}

impl Group {
    /// Flushes the group on every node: bumps its generation in `keyspace` (a
    /// compare-and-swap increment, retried when another flush races it) and drops this
    /// node's entries; every node following the generations
    /// ([`Cache::follow_flushes`](crate::Cache::follow_flushes)) drops its own within one
    /// watch round trip. Returns the new generation.
    pub async fn flush(&self, keyspace: &Keyspace) -> Result<u64, Error> {
        let next = bump_generation(keyspace, self.name(), self.generation()).await?;
        self.adopt_generation(next);
        Ok(next)
    }
}

/// Flushes `group` on every node following its generation, from anywhere (a tool, a node
/// without that group): bumps `/svckit/cache/<group>/generation` in `keyspace` with a
/// compare-and-swap increment, retried when another flush races it. Returns the new
/// generation. [`Group::flush`] does the same and drops its own node's entries at once.
pub async fn flush_group(keyspace: &Keyspace, group: &str) -> Result<u64, Error> {
    bump_generation(keyspace, group, 0).await
}

/// The compare-and-swap increment; the new generation is above `at_least` too.
async fn bump_generation(keyspace: &Keyspace, group: &str, at_least: u64) -> Result<u64, Error> {
    let key = generation_key(group);
    for _ in 0..FLUSH_ATTEMPTS {
        let (revision, entries) = keyspace
            .list(&key)
            .await
            .map_err(|e| registry_error(&key, "reading it failed", e))?;
        let current = match entries.iter().find(|e| e.key() == key) {
            Some(e) => parse(e.value()).ok_or_else(|| Error::Generation {
                key: key.clone(),
                what: "its value is not a decimal number",
                source: None,
            })?,
            None => 0,
        };
        let next = current.max(at_least).saturating_add(1);
        let txn = Txn::new()
            .put(&key, next.to_string())
            .if_unchanged_since(&key, revision);
        match keyspace.commit(txn).await {
            Ok(_) => return Ok(next),
            Err(svckit_registry::Error::Conflict { .. }) => continue,
            Err(e) => return Err(registry_error(&key, "bumping it failed", e)),
        }
    }
    Err(Error::Generation {
        key,
        what: "other flushes kept winning the compare-and-swap",
        source: None,
    })
}

fn parse(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Applies a snapshot of the generations to the groups it names: a higher one is a flush.
/// Returns the generations found *below* a group's own (the key was lost and written anew,
/// by a restore or a tool flushing from scratch): those are repaired, see [`repair`].
fn apply(groups: &Groups, snapshot: &KeySnapshot) -> Vec<(String, u64, u64)> {
    let mut behind = Vec::new();
    for name in groups.names() {
        let key = generation_key(&name);
        let Some(value) = snapshot.get(&key) else {
            continue;
        };
        match (parse(value), groups.get(&name)) {
            (Some(generation), Some(group)) => {
                if generation < group.generation() {
                    behind.push((key, generation, group.generation()));
                } else {
                    group.adopt_generation(generation);
                }
            }
            (None, _) => tracing::warn!(%key, "skipping a flush generation that is not a number"),
            _ => {}
        }
    }
    behind
}

/// etcd holds a generation below this node's: someone wrote the key anew (it was lost, or a
/// tool flushed from scratch). That write meant a flush, and etcd must hold the highest
/// generation again for later flushes to count: write this node's + 1 if the key still
/// holds what was read. Every node (this one too) takes it from the watch; when several
/// nodes try, one wins and the others see its value.
async fn repair(keyspace: &Keyspace, revision: i64, behind: Vec<(String, u64, u64)>) {
    for (key, found, own) in behind {
        let next = own.saturating_add(1);
        tracing::info!(%key, found, own, next, "generation in etcd below this node's; flushing to above both");
        let txn = Txn::new()
            .put(&key, next.to_string())
            .if_unchanged_since(&key, revision);
        match keyspace.commit(txn).await {
            Ok(_) | Err(svckit_registry::Error::Conflict { .. }) => {}
            Err(e) => tracing::warn!(%key, error = %e, "repairing the generation failed"),
        }
    }
}

/// Follows the flush generations of a cache's groups; from
/// [`Cache::follow_flushes`](crate::Cache::follow_flushes). Stops when dropped, when
/// [`stop`](Self::stop) is called, or when the cache is dropped.
#[derive(Debug)]
#[must_use = "flushes are no longer followed when the FlushFollower is dropped"]
pub struct FlushFollower {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FlushFollower {
    pub(crate) fn start(
        keyspace: &Keyspace,
        groups: Arc<Groups>,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let mut watch = keyspace
            .watch(GENERATION_PREFIX)
            .map_err(|e| registry_error(GENERATION_PREFIX, "watching it failed", e))?;
        let first = watch.mark_seen();
        let mut pending = (first.revision(), apply(&groups, &first));
        let keyspace = keyspace.clone();
        let stop = cancel.clone();
        let span = tracing::info_span!("cache_flushes", prefix = GENERATION_PREFIX);
        let task = tokio::spawn(
            async move {
                loop {
                    let (revision, behind) = std::mem::take(&mut pending);
                    if !behind.is_empty() {
                        repair(&keyspace, revision, behind).await;
                    }
                    let snapshot = tokio::select! {
                        _ = stop.cancelled() => break,
                        s = watch.changed() => s,
                    };
                    match snapshot {
                        Ok(snapshot) => pending = (snapshot.revision(), apply(&groups, &snapshot)),
                        Err(e) => {
                            tracing::warn!(error = %e, "generation watch closed");
                            break;
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Self {
            cancel,
            task: Some(task),
        })
    }

    /// Stops following and waits for the task to end.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FlushFollower {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
