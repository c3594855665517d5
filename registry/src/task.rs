//! An owned background task: a `JoinHandle` plus the token that cancels it.
//!
//! Every task the registry spawns is held by one of these. Dropping the owner cancels the
//! task; the task sees the token and returns on its own (it is not aborted mid-operation).

use std::fmt;
use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The owner of one spawned task.
pub(crate) struct OwnedTask<T> {
    name: &'static str,
    cancel: CancellationToken,
    handle: Option<JoinHandle<T>>,
}

impl<T> fmt::Debug for OwnedTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedTask")
            .field("name", &self.name)
            .field("cancelled", &self.cancel.is_cancelled())
            .field(
                "finished",
                &self.handle.as_ref().is_none_or(JoinHandle::is_finished),
            )
            .finish()
    }
}

impl<T: Send + 'static> OwnedTask<T> {
    /// Spawns `make(token)` on the current Tokio runtime inside `span`.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub(crate) fn spawn<F, Fut>(name: &'static str, span: tracing::Span, make: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(make(cancel.clone()).instrument(span));
        Self {
            name,
            cancel,
            handle: Some(handle),
        }
    }

    /// Cancels the task and waits until it has returned. `None` when it panicked.
    pub(crate) async fn stop(mut self) -> Option<T> {
        self.cancel.cancel();
        let handle = self.handle.take()?;
        handle.await.ok()
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Sleeps for `d` unless `cancel` fires first; returns false when cancelled.
pub(crate) async fn sleep_or_cancel(d: std::time::Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}
