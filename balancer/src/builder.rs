//! Building an HTTP Endpoint: [`HttpClient::endpoint`] and [`EndpointBuilder`] (encode,
//! decode, picker, key, timeout, body limit, retry policy, ejection).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use svckit_registry::Discovery;

use crate::balance::Balancer;
use crate::call::{Decode, Encode, Inner, KeyFn};
use crate::endpoint::Endpoint;
use crate::error::{BoxError, Error};
use crate::pick::Pick;
use crate::picker::Picker;
use crate::retry::{RetryPolicy, RetryState};
use crate::telemetry::Instruments;
use crate::transport::{HttpClient, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT};

/// Default time an instance is avoided after a connect to it failed.
pub const DEFAULT_EJECTION: Duration = Duration::from_secs(1);

impl HttpClient {
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
}

/// Builds an HTTP [`Endpoint`] for one service. Made by [`HttpClient::endpoint`]; `P` is the
/// picker ([`Picker`] unless [`picker`](Self::picker) sets another [`Pick`]).
#[must_use]
pub struct EndpointBuilder<Req, Resp, P = Picker> {
    client: HttpClient,
    discovery: Discovery,
    service: String,
    encode: Encode<Req>,
    decode: Decode<Resp>,
    key: Option<KeyFn<Req>>,
    picker: P,
    timeout: Duration,
    max_body: usize,
    retry: Option<RetryPolicy>,
    ejection: Duration,
}

impl<Req, Resp, P: fmt::Debug> fmt::Debug for EndpointBuilder<Req, Resp, P> {
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

impl<Req, Resp, P> EndpointBuilder<Req, Resp, P>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    P: Pick,
{
    /// How instances are picked: a built-in picker ([`P2c`](crate::P2c),
    /// [`RoundRobin`](crate::RoundRobin), ...), one chosen by name ([`Picker::by_name`]), or
    /// any other [`Pick`]. Default [`Picker::P2c`].
    pub fn picker<Q: Pick>(self, picker: Q) -> EndpointBuilder<Req, Resp, Q> {
        EndpointBuilder {
            client: self.client,
            discovery: self.discovery,
            service: self.service,
            encode: self.encode,
            decode: self.decode,
            key: self.key,
            picker,
            timeout: self.timeout,
            max_body: self.max_body,
            retry: self.retry,
            ejection: self.ejection,
        }
    }

    /// The key of a request for a picker that hashes keys ([`ConsistentHash`](crate::ConsistentHash),
    /// or any [`Pick`] whose [`key_hash`](Pick::key_hash) is `Some`): the bytes hashed onto
    /// the ring. Required with such a picker, ignored by the others.
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
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// How long an instance is avoided after a connect to it failed (while other instances are
    /// left). Default 1 s; `Duration::ZERO` turns it off.
    pub fn ejection(mut self, period: Duration) -> Self {
        self.ejection = period;
        self
    }

    /// The Endpoint. Fails when the service name is not a valid identifier, or the picker
    /// hashes keys and there is no [`hash_key`](Self::hash_key).
    ///
    /// Its metric handles come from the `metrics` recorder installed at this moment: install
    /// the application's recorder before building Endpoints. From here on it is listed in
    /// [`endpoint_stats`](crate::endpoint_stats) until its last clone is dropped.
    pub fn build(self) -> Result<Endpoint<Req, Resp>, Error> {
        let watch = self
            .discovery
            .watch(&self.service)
            .map_err(|source| Error::Discovery {
                service: self.service.clone(),
                source,
            })?;
        if self.picker.key_hash().is_some() && self.key.is_none() {
            return Err(Error::Config {
                reason: format!(
                    "the picker for `{}` hashes request keys and needs a hash_key function",
                    self.service
                ),
            });
        }
        // Only for an Endpoint that is built: its series and its place in endpoint_stats().
        let instruments = Instruments::new(&self.service, self.picker.name());
        let balancer = Balancer::new(watch, self.picker, self.ejection);
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
            instruments,
        });
        let counters = inner.instruments.counters().clone();
        let call = Endpoint::from_call(Arc::new(move |req| Box::pin(inner.clone().call(req))));
        Ok(call.with_counters(counters))
    }
}
