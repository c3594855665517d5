//! One call of an HTTP Endpoint: pick, send with a timeout, retry on another instance,
//! decode.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use tokio::time::Instant;

use crate::balance::Balancer;
use crate::error::{chain_message, Attempt, BoxError, Error, TransportError};
use crate::pick::Pick;
use crate::retry::{Failure, RetryState};
use crate::ring::HashFn;
use crate::transport::{HttpClient, Limits};

pub(crate) type Encode<Req> = Arc<dyn Fn(Req) -> Result<Request<Bytes>, BoxError> + Send + Sync>;
pub(crate) type Decode<Resp> = Arc<dyn Fn(Response<Bytes>) -> Result<Resp, BoxError> + Send + Sync>;
pub(crate) type KeyFn<Req> = Arc<dyn Fn(&Req, HashFn) -> u64 + Send + Sync>;

/// Everything an HTTP Endpoint's calls share.
pub(crate) struct Inner<Req, Resp, P: Pick> {
    pub(crate) client: HttpClient,
    pub(crate) service: String,
    pub(crate) balancer: Balancer<P>,
    pub(crate) encode: Encode<Req>,
    pub(crate) decode: Decode<Resp>,
    pub(crate) key: Option<KeyFn<Req>>,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) retry: Option<RetryState>,
}

/// The encoded request. Attempts before the last possible one send a copy; the last one (the
/// only one without retry) takes it, so a call without retry copies nothing.
struct Prepared {
    method: Method,
    path: PathAndQuery,
    /// Taken by the last attempt.
    parts: Option<(http::request::Parts, Bytes)>,
}

impl Prepared {
    fn new(req: Request<Bytes>) -> Self {
        let (mut parts, body) = req.into_parts();
        let path = std::mem::take(&mut parts.uri)
            .into_parts()
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Self {
            method: parts.method.clone(),
            path,
            parts: Some((parts, body)),
        }
    }

    /// The request for one attempt at `authority`; `last` moves the prepared parts out.
    fn to(
        &mut self,
        authority: Option<&Authority>,
        last: bool,
    ) -> Result<Request<Bytes>, BoxError> {
        let authority = authority.ok_or("the instance address is not a valid `host:port`")?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority.clone());
        let (mut parts, body) = if last {
            uri.path_and_query = Some(std::mem::replace(
                &mut self.path,
                PathAndQuery::from_static("/"),
            ));
            self.parts.take().ok_or("the request was already sent")?
        } else {
            uri.path_and_query = Some(self.path.clone());
            let (p, b) = self.parts.as_ref().ok_or("the request was already sent")?;
            let mut req = Request::new(b.clone());
            *req.method_mut() = p.method.clone();
            *req.version_mut() = p.version;
            *req.headers_mut() = p.headers.clone();
            req.into_parts()
        };
        parts.uri = Uri::from_parts(uri)?;
        Ok(Request::from_parts(parts, body))
    }
}

/// How one attempt ended.
enum Outcome {
    Done(Response<Bytes>),
    Failed(Error),
}

impl<Req: Send + 'static, Resp: Send + 'static, P: Pick> Inner<Req, Resp, P> {
    pub(crate) async fn call(self: Arc<Self>, req: Req) -> Result<Resp, Error> {
        let service = &self.service;
        let key = match (&self.key, self.balancer.key_hash()) {
            (Some(key), Some(hash)) => Some(key(&req, hash)),
            _ => None,
        };
        let encoded = (self.encode)(req).map_err(|source| Error::Encode {
            service: service.clone(),
            source,
        })?;
        let mut prepared = Prepared::new(encoded);
        let (max_attempts, deadline) = match &self.retry {
            Some(r) => {
                r.deposit();
                (
                    r.settings.max_attempts,
                    Some((deadline_from_now(r.settings.deadline), r.settings.deadline)),
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
                let last = attempts.len() + 1 >= max_attempts;
                let req = prepared.to(table.authorities[idx].as_ref(), last);
                self.attempt(req, addr, limit, limit_is_deadline, deadline)
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
        req: Result<Request<Bytes>, BoxError>,
        addr: &str,
        limit: Duration,
        limit_is_deadline: bool,
        deadline: Option<(Instant, Duration)>,
    ) -> Outcome {
        let service = &self.service;
        let req = match req {
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
        let addr = addr.to_owned();
        match self
            .client
            .send(req, Limits::new(limit, self.max_body))
            .await
        {
            Ok(resp) => Outcome::Done(resp),
            Err(TransportError::BodyTooLarge { limit, .. }) => {
                Outcome::Failed(Error::BodyTooLarge {
                    service: service.clone(),
                    addr,
                    limit,
                })
            }
            Err(TransportError::Timeout { after }) => Outcome::Failed(Error::Timeout {
                service: service.clone(),
                addr,
                after: match deadline {
                    Some((_, total)) if limit_is_deadline => total,
                    _ => after,
                },
            }),
            Err(TransportError::Connect { source }) => Outcome::Failed(Error::Transport {
                service: service.clone(),
                addr,
                connect: true,
                source,
            }),
            Err(TransportError::Request { source } | TransportError::Body { source, .. }) => {
                Outcome::Failed(Error::Transport {
                    service: service.clone(),
                    addr,
                    connect: false,
                    source,
                })
            }
            Err(other) => Outcome::Failed(Error::Transport {
                service: service.clone(),
                addr,
                connect: false,
                source: Box::new(other),
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

/// `now + after`, saturating far in the future for huge durations such as `Duration::MAX`
/// ("no overall deadline") instead of panicking on overflow.
fn deadline_from_now(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
