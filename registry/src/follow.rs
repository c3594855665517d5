//! The watch machinery every followed prefix goes through (the [`Discovery`](crate::Discovery)
//! view of `/services/`, each [`PrefixWatch`](crate::PrefixWatch) of config or cache keys),
//! written once over [`Store`] for both backends and once for every kind of [`Follower`].
//!
//! List the prefix, then watch from the listing's revision + 1 so nothing falls in between.
//! A broken stream resumes from the next unseen revision; a compacted or cancelled watch, and
//! the periodic reconcile, re-list. While the store is unreachable the follower keeps the
//! last known keys and the state says `Reconnecting`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::Error;
use crate::store::{timed, Listing, Range, Store, WatchEvent, WatchMessage, WatchStream};
use crate::task::sleep_or_cancel;

/// Where the discovery view (or a [`PrefixWatch`](crate::PrefixWatch)) stands with its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryState {
    /// The first listing has not completed yet; the view is empty.
    Connecting,
    /// Listed and watching: the view follows the backend.
    Live,
    /// The backend is unreachable, the watch broke, or it must start over with a fresh
    /// listing (its revision was compacted). The view keeps the last known instances while
    /// the watcher reconnects with backoff.
    Reconnecting,
    /// A fixed view that never changes (see [`Discovery::from_static`](crate::Discovery::from_static)).
    Static,
}

/// What a followed prefix feeds: the discovery view, a prefix watch's key snapshot.
pub(crate) trait Follower: Send + Sync + 'static {
    /// The watched keys: every key starting with this.
    fn key_prefix(&self) -> String;
    /// Replaces everything with a fresh listing.
    fn listed(&self, listing: Listing);
    /// Applies the events of one watch response; they become visible together (a response
    /// never splits an etcd revision).
    fn apply(&self, events: Vec<WatchEvent>);
    /// The connection state readers see.
    fn state(&self) -> DiscoveryState;
    /// Sets the state.
    fn set_state(&self, state: DiscoveryState);
    /// Counts a watch that starts over, and why.
    fn resync(&self, reason: Resync);
}

/// Why a watch starts over: from a fresh listing (compaction, reconcile, or a watch the store
/// cancelled), or from the next unseen revision (a broken stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resync {
    /// The revision to resume from was compacted away.
    Compaction,
    /// The stream broke or the store cancelled the watch.
    Reconnect,
    /// The periodic re-list, in case an event was lost.
    Reconcile,
}

impl Resync {
    /// The `reason` label and log field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Compaction => "compaction",
            Self::Reconnect => "reconnect",
            Self::Reconcile => "reconcile",
        }
    }
}

/// A watch that lasted this long counts as healthy even without events.
const HEALTHY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// How a watch ended.
enum Next {
    /// Start over with a fresh listing (the reconcile timer).
    Relist,
    /// The store compacted or cancelled the watch: a fresh listing, after a backoff, so a
    /// store that keeps doing so cannot drive a tight loop of full listings.
    Restart(Resync),
    /// The stream broke; resume from this revision after a backoff.
    Resume(i64),
}

impl Next {
    fn reason(&self) -> Resync {
        match self {
            Self::Relist => Resync::Reconcile,
            Self::Restart(reason) => *reason,
            Self::Resume(_) => Resync::Reconnect,
        }
    }
}

pub(crate) async fn run(
    store: Arc<dyn Store>,
    writer: impl Follower,
    config: Arc<Config>,
    cancel: CancellationToken,
) {
    let writer = &writer;
    let prefix = writer.key_prefix();
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    let mut resume: Option<i64> = None;
    loop {
        let (from, listing) = match resume.take() {
            Some(revision) => (revision, None),
            None => match tokio::select! {
                () = cancel.cancelled() => return,
                listed = timed("list", config.request_timeout, store.get_prefix(prefix.as_bytes())) => listed,
            } {
                Ok(listing) => (listing.revision + 1, Some(listing)),
                Err(error) => {
                    unreachable(writer, &error, &mut backoff, "listing failed");
                    if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                        return;
                    }
                    continue;
                }
            },
        };
        // The watch is opened before the listing is applied: the revision it starts from is
        // the least likely to be compacted meanwhile (applying a large listing takes time).
        let watch = tokio::select! {
            () = cancel.cancelled() => return,
            w = timed("watch", config.request_timeout, store.watch(prefix.as_bytes(), Range::Prefix, from)) => w,
        };
        if let Some(listing) = listing {
            let (revision, keys) = (listing.revision, listing.kvs.len());
            writer.listed(listing);
            tracing::debug!(revision, keys, "listed prefix");
        }
        let stream = match watch {
            Ok(stream) => stream,
            Err(error) => {
                unreachable(writer, &error, &mut backoff, "starting the watch failed");
                resume = Some(from);
                if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                    return;
                }
                continue;
            }
        };
        if writer.state() != DiscoveryState::Live {
            tracing::info!(revision = from, "watch live");
        }
        writer.set_state(DiscoveryState::Live);
        let opened = tokio::time::Instant::now();
        let (next, progressed) = tokio::select! {
            () = cancel.cancelled() => return,
            next = follow(stream, writer, from, &config) => next,
        };
        // The backoff starts over once a watch delivered events or held for a while: a watch
        // the store ends at once (compacted, cancelled, broken) keeps backing off.
        if progressed || opened.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        writer.resync(next.reason());
        match next {
            Next::Relist => {}
            Next::Restart(_) => {
                if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                    return;
                }
            }
            Next::Resume(revision) => {
                resume = Some(revision);
                if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                    return;
                }
            }
        }
    }
}

fn unreachable(writer: &impl Follower, error: &Error, backoff: &mut Backoff, what: &'static str) {
    if writer.state() == DiscoveryState::Live {
        tracing::warn!(error = %crate::error::Chain(error), "{what}; keeping the last known keys while reconnecting");
    } else {
        tracing::debug!(error = %crate::error::Chain(error), attempt = backoff.attempts(), "{what}; retrying");
    }
    writer.set_state(DiscoveryState::Reconnecting);
}

/// Applies watch messages until the watch ends, the reconcile timer fires, or it breaks.
/// Also says whether any events arrived.
async fn follow(
    mut stream: Box<dyn WatchStream>,
    writer: &impl Follower,
    from: i64,
    config: &Config,
) -> (Next, bool) {
    let mut next_revision = from;
    let mut progressed = false;
    let reconcile = tokio::time::sleep(config.reconcile_interval);
    tokio::pin!(reconcile);
    loop {
        let message = tokio::select! {
            () = &mut reconcile => {
                tracing::debug!(reason = Resync::Reconcile.as_str(), "reconcile: re-listing");
                return (Next::Relist, progressed);
            }
            m = stream.next() => m,
        };
        match message {
            Ok(WatchMessage::Events(events)) => {
                progressed = true;
                if let Some(last) = events.iter().map(WatchEvent::revision).max() {
                    next_revision = next_revision.max(last + 1);
                }
                writer.apply(events);
            }
            Ok(WatchMessage::Compacted { compact_revision }) => {
                writer.set_state(DiscoveryState::Reconnecting);
                tracing::warn!(
                    reason = Resync::Compaction.as_str(),
                    from = next_revision,
                    compact_revision,
                    "watch revision compacted; re-listing"
                );
                return (Next::Restart(Resync::Compaction), progressed);
            }
            Ok(WatchMessage::Cancelled { reason: why }) => {
                writer.set_state(DiscoveryState::Reconnecting);
                tracing::warn!(
                    reason = Resync::Reconnect.as_str(),
                    cancelled = %why,
                    "watch cancelled by the store; re-listing"
                );
                return (Next::Restart(Resync::Reconnect), progressed);
            }
            Err(error) => {
                writer.set_state(DiscoveryState::Reconnecting);
                tracing::warn!(
                    reason = Resync::Reconnect.as_str(),
                    error = %error,
                    resume_from = next_revision,
                    "watch broke; keeping the last known keys while reconnecting"
                );
                return (Next::Resume(next_revision), progressed);
            }
        }
    }
}
