//! [`RouteLayer`]: tells the server of [`Lifecycle::serve`](crate::Lifecycle::serve) which
//! route template served a request, so its metrics and spans say `/prod/{id}`, never a path.
//!
//! axum puts the matched template ([`MatchedPath`]) into the request's extensions inside the
//! `Router`, out of the server's sight. This layer, applied with `Router::layer` (so it runs
//! after routing), copies it into the response's extensions as a [`Route`], where the server
//! reads it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::{Request, Response};
use tower::{Layer, Service};

/// The route template that served a request, carried in the response's extensions.
///
/// [`RouteLayer`] inserts it for axum routers. Any other service can label its responses
/// itself with [`Route::from_static`]; a response without one is counted as `other`.
#[derive(Clone)]
pub struct Route(Template);

#[derive(Clone)]
enum Template {
    Static(&'static str),
    Matched(MatchedPath),
}

impl Route {
    /// A route named by a template known at compile time (a `&'static str` keeps the label
    /// set bounded: never build one from a request's path).
    pub const fn from_static(template: &'static str) -> Self {
        Self(Template::Static(template))
    }

    /// The template: `/prod/{id}`, or `unmatched` for a request no route matched.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Template::Static(template) => template,
            Template::Matched(matched) => matched.as_str(),
        }
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Route").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

/// A tower [`Layer`] for axum routers that puts the matched route template into each
/// response's extensions as a [`Route`] (`unmatched` when no route matched: axum's fallback).
/// Apply it with `Router::layer`, which runs it after routing; the server of
/// [`Lifecycle::serve`](crate::Lifecycle::serve) then labels the request's metrics and span
/// with the template.
///
/// ```
/// use axum::{body::Body, extract::Path, routing::get, Router};
/// use http::Request;
/// use svckit_registry::{Route, RouteLayer};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new()
///     .route("/prod/{id}", get(|Path(id): Path<u32>| async move { format!("product {id}") }))
///     .layer(RouteLayer);
/// // With `lifecycle.serve(listener, app)`, /prod/1, /prod/2, ... are all counted as
/// // route="/prod/{id}", and /nope as route="unmatched".
/// let get = |path| Request::get(path).body(Body::empty()).unwrap();
/// let response = app.clone().oneshot(get("/prod/7")).await.unwrap();
/// assert_eq!(response.extensions().get::<Route>(), Some(&Route::from_static("/prod/{id}")));
/// let response = app.oneshot(get("/nope")).await.unwrap();
/// assert_eq!(response.extensions().get::<Route>().map(Route::as_str), Some("unmatched"));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteLayer;

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;

    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService { inner }
    }
}

/// The service of [`RouteLayer`].
#[derive(Clone, Debug)]
pub struct RouteService<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RouteService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = match req.extensions().get::<MatchedPath>() {
            Some(matched) => Route(Template::Matched(matched.clone())),
            None => Route::from_static("unmatched"),
        };
        RouteFuture {
            inner: self.inner.call(req),
            route: Some(route),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RouteService`].
    pub struct RouteFuture<F> {
        #[pin]
        inner: F,
        route: Option<Route>,
    }
}

impl<F> fmt::Debug for RouteFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteFuture")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        // A Route set further in (a nested router's layer, a handler) is the more precise one.
        if response.extensions().get::<Route>().is_none() {
            if let Some(route) = this.route.take() {
                response.extensions_mut().insert(route);
            }
        }
        Poll::Ready(Ok(response))
    }
}
