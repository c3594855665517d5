//! Peers from the registry: the ring follows the instances of one service name.

use std::sync::Arc;
use std::time::Duration;

use svckit_registry::{Discovery, Instances};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::Error;
use crate::peers::{validate_peer_url, Cluster};

/// Follows a service in the registry and keeps the cache's peer list equal to its instances
/// (`http://{addr}` each). Stops when dropped, when [`stop`](Self::stop) is called, or when
/// the cache is dropped.
#[derive(Debug)]
#[must_use = "the peer list stops following discovery when the PeerFollower is dropped"]
pub struct PeerFollower {
    service: String,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// The shortest time between two rebuilds of the peer ring: the first change after a quiet
/// window applies at once, the rest of a burst (a rolling deploy) once the window ends.
pub const PEER_COALESCE: Duration = Duration::from_millis(100);

/// The peer URLs of a set of instances, sorted; addresses that do not make a valid URL are
/// skipped with a warning.
fn urls(service: &str, instances: &Instances) -> Vec<String> {
    let mut urls: Vec<String> = instances
        .iter()
        .filter_map(|i| {
            let url = format!("http://{}", i.addr());
            match validate_peer_url(&url) {
                Ok(()) => Some(url),
                Err(e) => {
                    tracing::warn!(%service, id = %i.id(), addr = %i.addr(), error = %e, "skipping instance");
                    None
                }
            }
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

impl PeerFollower {
    /// Sets `cluster`'s peers from `discovery`'s instances of `service` now, and keeps
    /// following them until `cancel` (a child of the cache's token) or the handle's drop.
    pub(crate) fn start(
        discovery: &Discovery,
        service: &str,
        cluster: Arc<Cluster>,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let mut watch = discovery.watch(service).map_err(|e| Error::Discovery {
            service: service.to_owned(),
            source: e.into(),
        })?;
        let service_name = service.to_owned();
        cluster.peers.set(urls(service, &watch.mark_seen()))?;
        let stop = cancel.clone();
        let span = tracing::info_span!("cache_peers", service = %service);
        let task = tokio::spawn(
            async move {
                let mut last = tokio::time::Instant::now();
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => break,
                        next = watch.changed() => next,
                    };
                    // At most one rebuild per window, with the latest set when it ends.
                    let next = match next {
                        Ok(_) if last.elapsed() < PEER_COALESCE => {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                () = tokio::time::sleep_until(last + PEER_COALESCE) => {}
                            }
                            Ok(watch.mark_seen())
                        }
                        other => other,
                    };
                    match next {
                        Ok(instances) => {
                            last = tokio::time::Instant::now();
                            let list = urls(&service_name, &instances);
                            tracing::info!(peers = list.len(), "peer list follows discovery");
                            if let Err(e) = cluster.peers.set(list) {
                                tracing::warn!(error = %e, "peer list refused");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "discovery closed; keeping the last peer list");
                            break;
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(PeerFollower {
            service: service.to_owned(),
            cancel,
            task: Some(task),
        })
    }

    /// The service name followed.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Stops following and waits for the task to end. The peer list keeps its last value.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PeerFollower {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
