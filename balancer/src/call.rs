//! One call of an HTTP Endpoint: pick, send with a timeout, retry on another instance,
//! decode.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::balance::Balancer;
use crate::client::{HttpClient, SendError};
use crate::error::{chain_message, Attempt, BoxError, Error};
use crate::retry::{Failure, RetryState};
use crate::ring::HashFn;

pub(crate) type Encode<Req> = Arc<dyn Fn(Req) -> Result<Request<Bytes>, BoxError> + Send + Sync>;
pub(crate) type Decode<Resp> = Arc<dyn Fn(Response<Bytes>) -> Result<Resp, BoxError> + Send + Sync>;
pub(crate) type KeyFn<Req> = Arc<dyn Fn(&Req, HashFn) -> u64 + Send + Sync>;

/// Everything an HTTP Endpoint's calls share.
pub(crate) struct Inner<Req, Resp> {
    pub(crate) client: HttpClient,
    pub(crate) service: String,
    pub(crate) balancer: Balancer,
    pub(crate) encode: Encode<Req>,
    pub(crate) decode: Decode<Resp>,
    pub(crate) key: Option<KeyFn<Req>>,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) retry: Option<RetryState>,
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
    pub(crate) async fn call(self: Arc<Self>, req: Req) -> Result<Resp, Error> {
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
