//! The HTTP transport: a pooled hyper client, and Endpoints that encode a request, pick an
//! instance of a service from discovery, send, and decode the answer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use svckit_registry::Discovery;
use tokio::time::Instant;

use crate::balance::Balancer;
use crate::endpoint::Endpoint;
use crate::error::{chain_message, Attempt, BoxError, Error};
use crate::pick::Picker;
use crate::retry::{Failure, Retry, RetryState};
use crate::ring::HashFn;

/// Default per-call timeout of an HTTP endpoint.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on a response body.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// Default time an instance is avoided after a connect to it failed.
pub const DEFAULT_EJECTION: Duration = Duration::from_secs(1);

type Encode<Req> = Arc<dyn Fn(Req) -> Result<Request<Bytes>, BoxError> + Send + Sync>;
type Decode<Resp> = Arc<dyn Fn(Response<Bytes>) -> Result<Resp, BoxError> + Send + Sync>;
type KeyFn<Req> = Arc<dyn Fn(&Req, HashFn) -> u64 + Send + Sync>;

/// A pooled HTTP/1 client (hyper-util's legacy client over plain TCP). Cheap to clone: clones
/// and every Endpoint built from them share one connection pool.
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
    /// A client with hyper-util's pool defaults (idle connections kept 90 s), `TCP_NODELAY` on.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self { client }
    }

    /// Starts building an Endpoint that calls service `service` found in `discovery`.
    ///
    /// `encode` turns a request value into an `http::Request` with method, path (and query,
    /// headers, body); its URI's scheme and authority, if any, are replaced by the picked
    /// instance's `http://host:port`. `decode` turns the response (status, headers, whole body)
    /// into the response value; it sees every status, including errors.
    pub fn endpoint<Req, Resp, E, D, EE, DE>(
        &self,
        discovery: &Discovery,
        service: &str,
        encode: E,
        decode: D,
    ) -> EndpointBuilder<Req, Resp>
    where
        E: Fn(Req) -> Result<Request<Bytes>, EE> + Send + Sync + 'static,
        EE: Into<BoxError>,
        D: Fn(Response<Bytes>) -> Result<Resp, DE> + Send + Sync + 'static,
        DE: Into<BoxError>,
    {
        EndpointBuilder {
            client: self.clone(),
            discovery: discovery.clone(),
            service: service.to_owned(),
            encode: Arc::new(move |r| encode(r).map_err(Into::into)),
            decode: Arc::new(move |r| decode(r).map_err(Into::into)),
            key: None,
            picker: Picker::default(),
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            retry: None,
            ejection: DEFAULT_EJECTION,
        }
    }

    /// Sends one request as is (absolute URI) and reads the whole body, at most `max_body`
    /// bytes. This is what an Endpoint does after picking; exposed for raw comparisons.
    pub async fn send(
        &self,
        req: Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, SendError> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Full::new(body));
        let resp = self.client.request(req).await.map_err(|e| {
            let connect = e.is_connect();
            SendError::Transport {
                connect,
                source: Box::new(e),
            }
        })?;
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(SendError::TooLarge);
        }
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    SendError::TooLarge
                } else {
                    SendError::Transport {
                        connect: false,
                        source: e,
                    }
                }
            })?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// Why [`HttpClient::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Connecting, sending or receiving failed.
    #[error("transport error")]
    Transport {
        /// True when connecting failed, so the request was never sent.
        connect: bool,
        /// The hyper error.
        #[source]
        source: BoxError,
    },
    /// The body was over the limit.
    #[error("response body over the limit")]
    TooLarge,
}

/// Builds an HTTP [`Endpoint`] for one service. Made by [`HttpClient::endpoint`].
#[must_use]
pub struct EndpointBuilder<Req, Resp> {
    client: HttpClient,
    discovery: Discovery,
    service: String,
    encode: Encode<Req>,
    decode: Decode<Resp>,
    key: Option<KeyFn<Req>>,
    picker: Picker,
    timeout: Duration,
    max_body: usize,
    retry: Option<Retry>,
    ejection: Duration,
}

impl<Req, Resp> fmt::Debug for EndpointBuilder<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointBuilder")
            .field("service", &self.service)
            .field("picker", &self.picker)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .field("retry", &self.retry)
            .field("ejection", &self.ejection)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> EndpointBuilder<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// How instances are picked. Default [`Picker::P2c`].
    pub fn picker(mut self, picker: Picker) -> Self {
        self.picker = picker;
        self
    }

    /// The key of a request for [`Picker::ConsistentHash`]: the bytes hashed onto the ring.
    /// Required with that picker, ignored by the others.
    pub fn hash_key<K, F>(mut self, f: F) -> Self
    where
        K: AsRef<[u8]>,
        F: Fn(&Req) -> K + Send + Sync + 'static,
    {
        self.key = Some(Arc::new(move |req, hash| hash(f(req).as_ref())));
        self
    }

    /// The timeout of each attempt: connect, send and read the whole body. Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest response body accepted, in bytes; larger ones fail with
    /// [`Error::BodyTooLarge`]. Default 4 MiB.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Retries failed calls on other instances. Default: no retry (one attempt).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// How long an instance is avoided after a connect to it failed (while other instances are
    /// left). Default 1 s; `Duration::ZERO` turns it off.
    pub fn ejection(mut self, period: Duration) -> Self {
        self.ejection = period;
        self
    }

    /// The Endpoint. Fails when the service name is not a valid identifier, or the consistent
    /// hash picker has no [`hash_key`](Self::hash_key).
    pub fn build(self) -> Result<Endpoint<Req, Resp>, Error> {
        let watch = self
            .discovery
            .watch(&self.service)
            .map_err(|source| Error::Discovery {
                service: self.service.clone(),
                source,
            })?;
        let balancer = Balancer::new(watch, self.picker, self.ejection);
        if balancer.uses_keys() && self.key.is_none() {
            return Err(Error::Config {
                reason: format!(
                    "the consistent hash picker for `{}` needs a hash_key function",
                    self.service
                ),
            });
        }
        let inner = Arc::new(Inner {
            client: self.client,
            service: self.service,
            balancer,
            encode: self.encode,
            decode: self.decode,
            key: self.key,
            timeout: self.timeout,
            max_body: self.max_body,
            retry: self.retry.map(RetryState::new),
        });
        Ok(Endpoint::from_call(Arc::new(move |req| {
            Box::pin(inner.clone().call(req))
        })))
    }
}

struct Inner<Req, Resp> {
    client: HttpClient,
    service: String,
    balancer: Balancer,
    encode: Encode<Req>,
    decode: Decode<Resp>,
    key: Option<KeyFn<Req>>,
    timeout: Duration,
    max_body: usize,
    retry: Option<RetryState>,
}

/// The encoded request, kept so each attempt can send a copy.
struct Prepared {
    method: Method,
    path: PathAndQuery,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    fn to(&self, authority: Option<&Authority>) -> Result<Request<Bytes>, BoxError> {
        let authority = authority.ok_or("the instance address is not a valid `host:port`")?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(self.path.clone());
        let uri = Uri::from_parts(parts)?;
        let mut req = Request::new(self.body.clone());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

/// How one attempt ended.
enum Outcome {
    Done(Response<Bytes>),
    Failed(Error),
}

impl<Req: Send + 'static, Resp: Send + 'static> Inner<Req, Resp> {
    async fn call(self: Arc<Self>, req: Req) -> Result<Resp, Error> {
        let service = &self.service;
        let key = self
            .key
            .as_ref()
            .filter(|_| self.balancer.uses_keys())
            .map(|k| k(&req, self.balancer.hash_fn()));
        let encoded = (self.encode)(req).map_err(|source| Error::Encode {
            service: service.clone(),
            source,
        })?;
        let (parts, body) = encoded.into_parts();
        let prepared = Prepared {
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            method: parts.method,
            version: parts.version,
            headers: parts.headers,
            body,
        };
        let (max_attempts, deadline) = match &self.retry {
            Some(r) => {
                r.deposit();
                (
                    r.settings.max_attempts,
                    Some((Instant::now() + r.settings.deadline, r.settings.deadline)),
                )
            }
            None => (1, None),
        };
        let mut tried: Vec<String> = Vec::new();
        let mut attempts: Vec<Attempt> = Vec::new();
        loop {
            let table = self.balancer.table();
            let Some(idx) = self.balancer.pick(&table, key, &tried) else {
                let err = Error::NoInstances {
                    service: service.clone(),
                };
                return Err(self.finish(attempts, String::new(), err));
            };
            let instance = &table.instances[idx];
            let addr = instance.addr();
            let mut limit = self.timeout;
            let mut limit_is_deadline = false;
            if let Some((at, _)) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                if left < limit {
                    limit = left;
                    limit_is_deadline = true;
                }
            }
            let outcome = {
                let _in_flight = self.balancer.start(&table, idx);
                let authority = table.authorities[idx].as_ref();
                self.attempt(
                    &prepared,
                    authority,
                    addr,
                    limit,
                    limit_is_deadline,
                    deadline,
                )
                .await
            };
            let err = match outcome {
                Outcome::Done(resp) => {
                    let status = resp.status();
                    let retryable = attempts.len() + 1 < max_attempts
                        && is_gateway_status(status)
                        && self.retry.as_ref().is_some_and(|r| {
                            (r.settings.predicate)(&prepared.method, &Failure::Status(status))
                        });
                    if !retryable || !self.may_retry(deadline) {
                        return (self.decode)(resp).map_err(|source| Error::Decode {
                            service: service.clone(),
                            addr: addr.to_owned(),
                            source,
                        });
                    }
                    attempts.push(Attempt::new(addr, format!("answered {status}")));
                    tracing::debug!(service = %service, addr = %addr, %status, attempt = attempts.len(), "retrying after a gateway status");
                    tried.push(instance.id().to_owned());
                    continue;
                }
                Outcome::Failed(err) => err,
            };
            if matches!(err, Error::Transport { connect: true, .. }) {
                self.balancer.eject(&table, idx);
            }
            let retry = attempts.len() + 1 < max_attempts
                && self.retry.as_ref().is_some_and(|r| {
                    (r.settings.predicate)(&prepared.method, &Failure::Error(&err))
                })
                && self.may_retry(deadline);
            if !retry {
                return Err(self.finish(attempts, addr.to_owned(), err));
            }
            tracing::debug!(service = %service, addr = %addr, error = %chain_message(&err), attempt = attempts.len() + 1, "retrying on another instance");
            attempts.push(Attempt::new(addr, chain_message(&err)));
            tried.push(instance.id().to_owned());
        }
    }

    /// True when time is left and the budget grants a retry.
    fn may_retry(&self, deadline: Option<(Instant, Duration)>) -> bool {
        deadline.is_some_and(|(at, _)| Instant::now() < at)
            && self.retry.as_ref().is_some_and(RetryState::withdraw)
    }

    async fn attempt(
        &self,
        prepared: &Prepared,
        authority: Option<&Authority>,
        addr: &str,
        limit: Duration,
        limit_is_deadline: bool,
        deadline: Option<(Instant, Duration)>,
    ) -> Outcome {
        let service = &self.service;
        let req = match prepared.to(authority) {
            Ok(r) => r,
            Err(source) => {
                return Outcome::Failed(Error::Transport {
                    service: service.clone(),
                    addr: addr.to_owned(),
                    connect: true,
                    source,
                })
            }
        };
        match tokio::time::timeout(limit, self.client.send(req, self.max_body)).await {
            Ok(Ok(resp)) => Outcome::Done(resp),
            Ok(Err(SendError::TooLarge)) => Outcome::Failed(Error::BodyTooLarge {
                service: service.clone(),
                addr: addr.to_owned(),
                limit: self.max_body,
            }),
            Ok(Err(SendError::Transport { connect, source })) => {
                Outcome::Failed(Error::Transport {
                    service: service.clone(),
                    addr: addr.to_owned(),
                    connect,
                    source,
                })
            }
            Err(_) => Outcome::Failed(Error::Timeout {
                service: service.clone(),
                addr: addr.to_owned(),
                after: match deadline {
                    Some((_, total)) if limit_is_deadline => total,
                    _ => limit,
                },
            }),
        }
    }

    /// The final error: `err` alone after one attempt, or all attempts listed.
    fn finish(&self, mut attempts: Vec<Attempt>, addr: String, err: Error) -> Error {
        if attempts.is_empty() {
            return err;
        }
        attempts.push(Attempt::new(addr, chain_message(&err)));
        Error::RetriesExhausted {
            service: self.service.clone(),
            attempts,
            last: Box::new(err),
        }
    }
}

fn is_gateway_status(s: StatusCode) -> bool {
    matches!(
        s,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}
