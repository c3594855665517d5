//! [`InFlightLayer`]: a tower layer that counts requests in flight, so a graceful shutdown
//! can say how many it is still waiting for.
//!
//! A request counts from the call until its response future resolves (or is dropped), that
//! is until the response *headers* are ready: a streamed body still being sent is not
//! counted. The server's own graceful shutdown still waits for such connections; the grace
//! timeout bounds both.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tower::{Layer, Service};

#[derive(Debug, Default)]
struct Counter {
    count: AtomicUsize,
    idle: Notify,
}

/// Counts requests in flight through an [`InFlight`] service. Cheap to clone; clones share
/// the count.
#[derive(Clone, Default)]
pub struct InFlightCounter {
    inner: Arc<Counter>,
}

impl fmt::Debug for InFlightCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightCounter")
            .field("in_flight", &self.get())
            .finish()
    }
}

impl InFlightCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests whose response future has not completed (or been dropped) yet.
    pub fn get(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts one request until the returned guard is dropped.
    pub(crate) fn enter(&self) -> Guard {
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        Guard {
            counter: self.inner.clone(),
        }
    }
}

/// Decrements the count when the response future completes or is dropped.
pub(crate) struct Guard {
    counter: Arc<Counter>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.counter.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.counter.idle.notify_waiters();
        }
    }
}

/// A tower [`Layer`] that wraps a service (an axum `Router`, a hyper service, any tower
/// `Service`) in [`InFlight`]. Get one from [`Lifecycle::layer`](crate::Lifecycle::layer)
/// so the shutdown can report on it, or stand-alone with [`InFlightLayer::new`].
#[derive(Clone, Debug, Default)]
pub struct InFlightLayer {
    counter: InFlightCounter,
}

impl InFlightLayer {
    /// A layer with a fresh counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer counting into `counter`.
    pub fn with_counter(counter: InFlightCounter) -> Self {
        Self { counter }
    }

    /// The shared counter.
    pub fn counter(&self) -> &InFlightCounter {
        &self.counter
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            counter: self.counter.clone(),
        }
    }
}

/// A service that counts its requests in flight; see [`InFlightLayer`].
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    counter: InFlightCounter,
}

impl<S> InFlight<S> {
    /// Wraps `inner`, counting into `counter`.
    pub fn new(inner: S, counter: InFlightCounter) -> Self {
        Self { inner, counter }
    }

    /// The shared counter.
    pub fn counter(&self) -> &InFlightCounter {
        &self.counter
    }
}

impl<S, R> Service<R> for InFlight<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let guard = self.counter.enter();
        InFlightFuture {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`InFlight`]: the request counts as in flight until this
    /// completes or is dropped.
    pub struct InFlightFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F> fmt::Debug for InFlightFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightFuture")
            .field("counted", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for InFlightFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.guard.take();
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn counts_until_completed_or_dropped() {
        let layer = InFlightLayer::new();
        let counter = layer.counter().clone();
        let svc = layer.layer(service_fn(|d: u64| async move {
            tokio::time::sleep(Duration::from_secs(d)).await;
            Ok::<_, std::convert::Infallible>(d)
        }));
        let slow = tokio::spawn(svc.clone().oneshot(10));
        let dropped = svc.clone().oneshot(100);
        tokio::task::yield_now().await;
        let mut dropped = Box::pin(dropped);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(dropped.as_mut().poll(&mut cx).is_pending());
        assert_eq!(counter.get(), 2);
        drop(dropped);
        assert_eq!(counter.get(), 1);
        assert_eq!(slow.await.unwrap().unwrap(), 10);
        assert_eq!(counter.get(), 0);
        tokio::time::timeout(Duration::from_millis(1), counter.idle())
            .await
            .unwrap();
    }
}
