//! The HTTP transport: one pooled client ([`HttpClient`]) that sends a request and reads its
//! whole body within [`Limits`], failing with a typed [`TransportError`].
//!
//! It is the only HTTP client svckit builds: Endpoints send through it after picking an
//! instance, the cache fetches from its peers through it, and programs that only need
//! `GET url` use [`HttpClient::get`].

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::TransportError;

/// How long [`HttpClient::new`] waits for a TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`HttpClient::new`] keeps an idle pooled connection.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default time a request may take, connect and whole body included (also an Endpoint's
/// default per-attempt timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on a response body (also an Endpoint's default).
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// svckit's HTTP transport: a pooled HTTP/1 client over plain TCP (hyper-util's legacy
/// client, `TCP_NODELAY` on, a connect timeout, idle connections closed after a while).
///
/// It is the one HTTP client of svckit: Endpoints send through it after picking an instance,
/// the cache fetches from its peers through it, and programs that only need `GET url` call
/// [`get`](Self::get).
///
/// Cheap to clone: clones, and every Endpoint built from them with
/// [`endpoint`](Self::endpoint), share one connection pool. Build one per process (or per
/// kind of peer) and pass it around.
///
/// ```no_run
/// use svckit_balancer::{HttpClient, Limits};
/// # async fn demo() -> Result<(), svckit_balancer::TransportError> {
/// let client = HttpClient::new();
/// let resp = client.get("http://127.0.0.1:9300/images/a.png", Limits::default()).await?;
/// let (status, body) = (resp.status(), resp.into_body());
/// # Ok(()) }
/// ```
///
/// The type keeps the name `HttpClient` (rather than `Transport`) because that is what it is
/// to its users: the one client every svckit HTTP call goes through, in the balancer, the
/// cache and the examples.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with the defaults of [`HttpClientBuilder`]: connect timeout 2 s, idle
    /// connections kept 90 s, no limit on idle connections per host.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a client.
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder::default()
    }

    /// Sends `req` (its URI absolute: `http://host:port/path`) and reads the whole body,
    /// at most `limits.max_body()` bytes, all within `limits.timeout()`.
    ///
    /// Every status is returned as a response; only the transport fails. A body declared
    /// (`Content-Length`) or found larger than the limit fails with
    /// [`TransportError::BodyTooLarge`] without reading the rest.
    ///
    /// With the `otel` feature the request carries the current span's trace context
    /// (`traceparent`, [`svckit_registry::trace::inject`]), so the callee's span becomes a
    /// child of the caller's.
    pub async fn send(
        &self,
        mut req: Request<Bytes>,
        limits: Limits,
    ) -> Result<Response<Bytes>, TransportError> {
        svckit_registry::trace::inject(req.headers_mut());
        match tokio::time::timeout(limits.timeout, self.exchange(req, limits.max_body)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                after: limits.timeout,
            }),
        }
    }

    /// `GET url` (absolute, `http://host:port/path?query`) with an empty body, read as
    /// [`send`](Self::send) does. A URL that is not an absolute `http://` URL fails with
    /// [`TransportError::InvalidUrl`] before anything is sent.
    pub async fn get(&self, url: &str, limits: Limits) -> Result<Response<Bytes>, TransportError> {
        let invalid = |reason: String| TransportError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(invalid(
                "expected an absolute http://host:port/... URL".into(),
            ));
        }
        let mut req = Request::new(Bytes::new());
        *req.uri_mut() = uri;
        self.send(req, limits).await
    }

    /// The request and the bounded body read, without the timeout.
    async fn exchange(
        &self,
        req: Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, TransportError> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Full::new(body));
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                TransportError::Connect {
                    source: Box::new(e),
                }
            } else {
                TransportError::Request {
                    source: Box::new(e),
                }
            }
        })?;
        let status = resp.status();
        let too_large = || TransportError::BodyTooLarge {
            status,
            limit: max_body,
        };
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(too_large());
        }
        let (parts, body) = resp.into_parts();
        let body = if declared.is_some() {
            // hyper reads exactly the declared length, checked above, and fails on less.
            body.collect().await.map_err(|e| TransportError::Body {
                status,
                source: Box::new(e),
            })?
        } else {
            Limited::new(body, max_body).collect().await.map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    too_large()
                } else {
                    TransportError::Body { status, source: e }
                }
            })?
        }
        .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// Configures an [`HttpClient`]. Made by [`HttpClient::builder`]; every setter names its
/// default.
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpClientBuilder {
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
}

impl Default for HttpClientBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: usize::MAX,
        }
    }
}

impl HttpClientBuilder {
    /// How long a TCP connect may take. Default 2 s ([`DEFAULT_CONNECT_TIMEOUT`]).
    ///
    /// A connect that takes longer fails as [`TransportError::Connect`]: the request was
    /// never sent, so an Endpoint retries it on another instance whatever its method and
    /// avoids the instance for a while, instead of the call hanging until its own timeout on
    /// a host that drops packets.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept. Default 90 s
    /// ([`DEFAULT_POOL_IDLE_TIMEOUT`]).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most idle connections kept per host. Default unlimited (`usize::MAX`).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The client. No I/O happens here: connections open on the first request to a host.
    pub fn build(self) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(connector);
        HttpClient { client }
    }
}

/// What one request may take: a timeout over the whole exchange (connect, send, read the
/// whole body) and the largest body accepted. `Limits::default()` is 10 s and 4 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    timeout: Duration,
    max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT, DEFAULT_MAX_BODY)
    }
}

impl Limits {
    /// At most `timeout` for the whole exchange and `max_body` bytes of body.
    pub const fn new(timeout: Duration, max_body: usize) -> Self {
        Self { timeout, max_body }
    }

    /// The timeout over the whole exchange.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The largest body accepted, in bytes.
    pub const fn max_body(&self) -> usize {
        self.max_body
    }
}
