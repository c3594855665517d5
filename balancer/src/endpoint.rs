//! go-kit's Endpoint: an async function from request to response, here a cloneable tower
//! [`Service`], plus [`Middleware`] and [`chain`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::error::Error;
use crate::stats::{Counters, EndpointStats};

/// An async function from `Req` to `Resp` (go-kit's `endpoint.Endpoint`): a cloneable,
/// `Send + Sync` tower [`Service`] whose error is [`Error`]. Clones are cheap and share
/// whatever the endpoint was built on (connection pool, picker state).
pub struct Endpoint<Req, Resp> {
    inner: Inner<Req, Resp>,
    /// The counters of the balanced Endpoint this one is (or wraps).
    counters: Option<Arc<Counters>>,
}

type CallFn<Req, Resp> = Arc<dyn Fn(Req) -> BoxFuture<'static, Result<Resp, Error>> + Send + Sync>;

enum Inner<Req, Resp> {
    /// An always-ready function: one allocation (the future) per call, no readiness step.
    Fn(CallFn<Req, Resp>),
    /// Any tower service, with its readiness.
    Service(BoxCloneSyncService<Req, Resp, Error>),
}

impl<Req, Resp> Clone for Endpoint<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            inner: match &self.inner {
                Inner::Fn(f) => Inner::Fn(f.clone()),
                Inner::Service(s) => Inner::Service(s.clone()),
            },
            counters: self.counters.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for Endpoint<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

impl<Req, Resp> Endpoint<Req, Resp>
where
    Req: 'static,
    Resp: 'static,
{
    /// Wraps any cloneable tower service with error type [`Error`].
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Req, Response = Resp, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Inner::Service(BoxCloneSyncService::new(service)),
            counters: None,
        }
    }

    /// An always-ready endpoint from a function returning boxed futures.
    pub(crate) fn from_call(f: CallFn<Req, Resp>) -> Self {
        Self {
            inner: Inner::Fn(f),
            counters: None,
        }
    }

    /// The endpoint reporting `counters` in [`stats`](Self::stats).
    pub(crate) fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// An endpoint from an async closure (go-kit's `func(ctx, request) (response, error)`).
    ///
    /// ```
    /// # async fn demo() -> Result<(), svckit_balancer::Error> {
    /// use svckit_balancer::Endpoint;
    /// let double = Endpoint::from_fn(|n: u32| async move { Ok(n * 2) });
    /// assert_eq!(double.invoke(21).await?, 42);
    /// # Ok(()) }
    /// ```
    pub fn from_fn<F, Fut>(f: F) -> Self
    where
        F: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        Self::from_call(Arc::new(move |req| Box::pin(f(req))))
    }

    /// Calls the endpoint once: waits until it is ready, then sends `req`.
    pub fn invoke(&self, req: Req) -> impl Future<Output = Result<Resp, Error>> + Send + 'static
    where
        Req: Send,
    {
        let call: BoxFuture<'static, Result<Resp, Error>> = match &self.inner {
            Inner::Fn(f) => f(req),
            Inner::Service(s) => Box::pin(s.clone().oneshot(req)),
        };
        call
    }

    /// Wraps this endpoint in a middleware: `m.wrap(self)`. The result keeps this
    /// endpoint's [`stats`](Self::stats) unless the middleware's endpoint has its own.
    #[must_use]
    pub fn with<M: Middleware<Req, Resp>>(self, m: M) -> Self {
        let counters = self.counters.clone();
        let mut wrapped = m.wrap(self);
        if wrapped.counters.is_none() {
            wrapped.counters = counters;
        }
        wrapped
    }

    /// What this endpoint counted since it was built, when it is a balanced Endpoint built by
    /// [`EndpointBuilder`](crate::EndpointBuilder) (shared by its clones, kept by
    /// [`with`](Self::with)); `None` for other endpoints. [`endpoint_stats`](crate::endpoint_stats)
    /// gives every live one.
    pub fn stats(&self) -> Option<EndpointStats> {
        self.counters.as_ref().map(|c| c.snapshot())
    }
}

impl<Req, Resp> Service<Req> for Endpoint<Req, Resp> {
    type Response = Resp;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Resp, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match &mut self.inner {
            Inner::Fn(_) => Poll::Ready(Ok(())),
            Inner::Service(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match &mut self.inner {
            Inner::Fn(f) => f(req),
            Inner::Service(s) => s.call(req),
        }
    }
}

/// go-kit's `endpoint.Middleware`: turns an endpoint into another one (logging, metrics,
/// auth, ...). Any `Fn(Endpoint) -> Endpoint` closure is a middleware.
pub trait Middleware<Req, Resp>: Send + Sync + 'static {
    /// Wraps `next`.
    fn wrap(&self, next: Endpoint<Req, Resp>) -> Endpoint<Req, Resp>;
}

impl<Req, Resp, F> Middleware<Req, Resp> for F
where
    F: Fn(Endpoint<Req, Resp>) -> Endpoint<Req, Resp> + Send + Sync + 'static,
{
    fn wrap(&self, next: Endpoint<Req, Resp>) -> Endpoint<Req, Resp> {
        self(next)
    }
}

/// Middlewares composed into one (go-kit's `endpoint.Chain`). Built by [`chain`].
pub struct Chain<Req, Resp> {
    // Outermost first.
    layers: Vec<Arc<dyn Middleware<Req, Resp>>>,
}

impl<Req, Resp> Clone for Chain<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            layers: self.layers.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for Chain<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("middlewares", &self.layers.len())
            .finish()
    }
}

impl<Req: 'static, Resp: 'static> Chain<Req, Resp> {
    /// Appends a middleware inside the ones already in the chain.
    #[must_use]
    pub fn then<M: Middleware<Req, Resp>>(mut self, m: M) -> Self {
        self.layers.push(Arc::new(m));
        self
    }
}

impl<Req: 'static, Resp: 'static> Middleware<Req, Resp> for Chain<Req, Resp> {
    fn wrap(&self, next: Endpoint<Req, Resp>) -> Endpoint<Req, Resp> {
        self.layers.iter().rev().fold(next, |e, m| m.wrap(e))
    }
}

/// go-kit's `endpoint.Chain(outer, others...)`: the first middleware is the outermost, so
/// `chain(a, [b, c]).wrap(e)` is `a(b(c(e)))` and a request passes `a`, then `b`, then `c`.
pub fn chain<Req: 'static, Resp: 'static>(
    outer: impl Middleware<Req, Resp>,
    others: impl IntoIterator<Item = Arc<dyn Middleware<Req, Resp>>>,
) -> Chain<Req, Resp> {
    let mut layers: Vec<Arc<dyn Middleware<Req, Resp>>> = vec![Arc::new(outer)];
    layers.extend(others);
    Chain { layers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn tag(log: Arc<Mutex<Vec<String>>>, name: &'static str) -> impl Middleware<String, String> {
        move |next: Endpoint<String, String>| {
            let log = log.clone();
            Endpoint::from_fn(move |req: String| {
                log.lock().unwrap().push(name.to_owned());
                let next = next.clone();
                async move { next.invoke(format!("{req}>{name}")).await }
            })
        }
    }

    #[tokio::test]
    async fn chain_runs_outer_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let echo = Endpoint::from_fn(|s: String| async move { Ok(s) });
        let mw = chain(
            tag(log.clone(), "a"),
            [
                Arc::new(tag(log.clone(), "b")) as Arc<dyn Middleware<_, _>>,
                Arc::new(tag(log.clone(), "c")),
            ],
        );
        let e = echo.with(mw);
        assert_eq!(e.invoke("x".into()).await.unwrap(), "x>a>b>c");
        assert_eq!(*log.lock().unwrap(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let fail: Endpoint<(), ()> = Endpoint::from_fn(|()| async { Err(Error::endpoint("nope")) });
        let err = fail.clone().oneshot(()).await.unwrap_err();
        assert!(matches!(err, Error::Endpoint { .. }));
        assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "nope");
    }
}
