//! One request through the server of [`Lifecycle::serve`](crate::Lifecycle::serve): counted
//! in flight from its head until its response body has been sent (or dropped), timed,
//! labelled by route template and status class, and served inside an `http.server` span.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};
use tracing::instrument::Instrumented;
use tracing::Instrument;

use crate::layer::{Guard, InFlightCounter};
use crate::route::Route;
use crate::telemetry::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS};

/// The status classes counted, in order: 1xx to 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A server's metric handles, resolved once per server; those of a route once per route.
pub(crate) struct ServerMetrics {
    service: Arc<str>,
    in_flight: Gauge,
    /// Route template → its handles. Bounded by the app's routes (plus `other`, `unmatched`).
    routes: RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>,
}

struct RouteMetrics {
    requests: [Counter; 5],
    duration: Histogram,
}

impl ServerMetrics {
    pub(crate) fn new(service: &str) -> Self {
        let service: Arc<str> = Arc::from(service);
        Self {
            in_flight: metrics::gauge!(HTTP_IN_FLIGHT, "service" => service.clone()),
            service,
            routes: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn route(&self, route: &str) -> Arc<RouteMetrics> {
        let known = self.routes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(handles) = known.get(route) {
            return handles.clone();
        }
        drop(known);
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let handles = routes.entry(route.into()).or_insert_with(|| {
            let route: Arc<str> = Arc::from(route);
            let service = &self.service;
            Arc::new(RouteMetrics {
                requests: CLASSES.map(|class| {
                    metrics::counter!(HTTP_REQUESTS,
                        "service" => service.clone(), "route" => route.clone(), "status" => class)
                }),
                duration: metrics::histogram!(HTTP_DURATION,
                    "service" => service.clone(), "route" => route.clone()),
            })
        });
        handles.clone()
    }
}

/// The index of `status`'s class in [`CLASSES`]. Codes from 600 up, which no standard
/// defines, count as 5xx.
fn class(status: http::StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// The app, as one connection serves it.
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    pub(crate) inner: S,
    /// The connection's requests in flight.
    pub(crate) busy: Arc<watch::Sender<usize>>,
    /// The lifecycle's.
    pub(crate) counter: InFlightCounter,
    pub(crate) metrics: Arc<ServerMetrics>,
}

impl<S> fmt::Debug for Tracked<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("service", &self.metrics.service)
            .field("busy", &*self.busy.borrow())
            .finish_non_exhaustive()
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<Oneshot<S, Request<Incoming>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.busy.send_modify(|n| *n += 1);
        self.metrics.in_flight.increment(1.0);
        // A request starts its own trace (or continues the caller's, below), whatever span
        // the server itself runs in: one trace per request, not one per process.
        let span = tracing::info_span!(
            parent: None,
            "http.server",
            service = %self.metrics.service,
            method = %req.method(),
            route = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        // An incoming `traceparent` becomes the span's parent (`otel` feature), so the
        // handler's outgoing calls continue the caller's trace.
        crate::trace::extract(req.headers(), &span);
        TrackedFuture {
            inner: self.inner.clone().oneshot(req).instrument(span),
            guard: Some(Busy {
                busy: self.busy.clone(),
                _counted: self.counter.enter(),
                metrics: self.metrics.clone(),
                started: Instant::now(),
                outcome: None,
            }),
        }
    }
}

/// One request in flight, on its connection, in the lifecycle's count and in the in-flight
/// gauge; when dropped (the response body sent or abandoned) it is counted down, and counted
/// and timed by route and status class if a response was made.
struct Busy {
    busy: Arc<watch::Sender<usize>>,
    _counted: Guard,
    metrics: Arc<ServerMetrics>,
    started: Instant,
    /// The route's handles and the status class, once the response head is known.
    outcome: Option<(Arc<RouteMetrics>, usize)>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Counted first, then let go: whoever sees the request leave the in-flight count
        // (a drain, a test) sees it counted too.
        if let Some((route, class)) = &self.outcome {
            route.requests[*class].increment(1);
            route.duration.record(self.started.elapsed());
        }
        self.metrics.in_flight.decrement(1.0);
        self.busy.send_modify(|n| *n -= 1);
    }
}

pin_project_lite::pin_project! {
    /// The response future; labels the request and hands its [`Busy`] on to the body.
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        guard: Option<Busy>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = std::task::ready!(this.inner.as_mut().poll(cx));
        let mut guard = this.guard.take();
        let span = this.inner.span();
        // No response (the service failed; hyper closes the connection): a 5xx of no route.
        let (route, status) = match &result {
            Ok(response) => (
                response.extensions().get::<Route>().map(Route::as_str),
                response.status(),
            ),
            Err(_) => (None, http::StatusCode::INTERNAL_SERVER_ERROR),
        };
        let route = route.unwrap_or("other");
        span.record("route", route);
        span.record("status", status.as_u16());
        if let Some(busy) = guard.as_mut() {
            busy.outcome = Some((busy.metrics.route(route), class(status)));
        }
        let response = result?;
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it is dropped.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<Busy>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let of = |code: u16| CLASSES[class(http::StatusCode::from_u16(code).unwrap())];
        assert_eq!(
            [100, 204, 301, 404, 503, 999].map(of),
            ["1xx", "2xx", "3xx", "4xx", "5xx", "5xx"]
        );
    }
}
