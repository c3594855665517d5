//! One call of an HTTP Endpoint: encode, then attempts (each one pick, send and classify)
//! while the state across them ([`Attempts`]) allows another, then decode. The call runs in
//! an `invoke` span and each attempt in an `attempt` span inside it (fields in the crate
//! docs); what the call counts is [`Instruments`]'.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use tracing::field::Empty;
use tracing::Instrument;

use crate::attempts::{Attempts, TimeLimit};
use crate::balance::{Balancer, Table};
use crate::error::{chain_message, BoxError, Error, TransportError};
use crate::pick::Pick;
use crate::retry::{Failure, RetryState};
use crate::ring::HashFn;
use crate::telemetry::{Instruments, Outcome};
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
    pub(crate) instruments: Instruments,
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

impl<Req: Send + 'static, Resp: Send + 'static, P: Pick> Inner<Req, Resp, P> {
    /// One call in its `invoke` span, counted once when it ends (or is dropped).
    pub(crate) fn call(
        self: Arc<Self>,
        req: Req,
    ) -> impl Future<Output = Result<Resp, Error>> + Send + 'static {
        let span = tracing::info_span!(
            "invoke",
            service = %self.service,
            picker = %self.instruments.counters().picker(),
            outcome = Empty,
        );
        let record_span = span.clone();
        async move {
            let record = self.instruments.start(record_span);
            let mut answered = None;
            let result = self.run(req, &mut answered).await;
            let outcome = match (&result, answered) {
                (_, Some(status)) if status.is_server_error() => Outcome::Status,
                (Ok(_), _) => Outcome::Ok,
                (Err(err), _) => Outcome::of_error(err),
            };
            record.end(outcome);
            result
        }
        .instrument(span)
    }

    /// Encode, then attempts until one answers or the retry policy stops, then decode.
    /// `answered` is set to the status of the answer decoded.
    async fn run(&self, req: Req, answered: &mut Option<StatusCode>) -> Result<Resp, Error> {
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
        let mut attempts = Attempts::start(self.retry.as_ref());
        loop {
            let table = self.balancer.table();
            let Some(idx) = self.balancer.pick(&table, key, attempts.tried()) else {
                let err = Error::NoInstances {
                    service: service.clone(),
                };
                return Err(attempts.finish(service, String::new(), err));
            };
            let instance = &table.entry(idx).instance;
            let addr = instance.addr();
            match self.attempt(&table, idx, &mut prepared, &attempts).await {
                Ok(resp) => {
                    let status = resp.status();
                    let again = is_gateway_status(status)
                        && attempts.again(
                            &prepared.method,
                            &Failure::Status(status),
                            instance,
                            || format!("answered {status}"),
                        );
                    if !again {
                        *answered = Some(status);
                        return (self.decode)(resp).map_err(|source| Error::Decode {
                            service: service.clone(),
                            addr: addr.to_owned(),
                            source,
                        });
                    }
                    self.instruments.retry();
                    tracing::debug!(service = %service, addr = %addr, %status, attempt = attempts.len(), "retrying after a gateway status");
                }
                Err(err) => {
                    let again =
                        attempts.again(&prepared.method, &Failure::Error(&err), instance, || {
                            chain_message(&err)
                        });
                    if !again {
                        return Err(attempts.finish(service, addr.to_owned(), err));
                    }
                    self.instruments.retry();
                    tracing::debug!(service = %service, addr = %addr, error = %chain_message(&err), attempt = attempts.len(), "retrying on another instance");
                }
            }
        }
    }

    /// One attempt, in its `attempt` span: sends the prepared request to instance `idx` of
    /// `table` within the attempt's time limit, counted in flight meanwhile, and classifies
    /// how it ended. A failed connect ejects the instance.
    async fn attempt(
        &self,
        table: &Table<P::State>,
        idx: usize,
        prepared: &mut Prepared,
        attempts: &Attempts<'_>,
    ) -> Result<Response<Bytes>, Error> {
        let entry = table.entry(idx);
        let addr = entry.instance.addr();
        let limit = attempts.limit(self.timeout);
        let span = tracing::info_span!(
            "attempt",
            attempt = attempts.len() + 1,
            instance = %addr,
            outcome = Empty,
        );
        let result = async {
            let _in_flight = self.balancer.start(table, idx);
            match prepared.to(entry.authority.as_ref(), attempts.is_last()) {
                // Sent inside the span: the transport injects its context (feature `otel`).
                Ok(req) => self
                    .client
                    .send(req, Limits::new(limit.timeout, self.max_body))
                    .await
                    .map_err(|e| self.classify(e, addr, limit)),
                Err(source) => Err(Error::Transport {
                    service: self.service.clone(),
                    addr: addr.to_owned(),
                    connect: true,
                    source,
                }),
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = match &result {
            Ok(resp) => Outcome::of_status(resp.status()),
            Err(err) => Outcome::of_error(err),
        };
        span.record("outcome", outcome.as_str());
        if matches!(result, Err(Error::Transport { connect: true, .. }))
            && self.balancer.eject(table, idx)
        {
            self.instruments.ejection();
        }
        result
    }

    /// The Endpoint's error for a transport failure at `addr`.
    fn classify(&self, err: TransportError, addr: &str, limit: TimeLimit) -> Error {
        let (service, addr) = (self.service.clone(), addr.to_owned());
        match err {
            TransportError::BodyTooLarge { limit, .. } => Error::BodyTooLarge {
                service,
                addr,
                limit,
            },
            TransportError::Timeout { .. } => Error::Timeout {
                service,
                addr,
                after: limit.reported,
            },
            TransportError::Connect { source } => Error::Transport {
                service,
                addr,
                connect: true,
                source,
            },
            TransportError::Request { source } | TransportError::Body { source, .. } => {
                Error::Transport {
                    service,
                    addr,
                    connect: false,
                    source,
                }
            }
            other => Error::Transport {
                service,
                addr,
                connect: false,
                source: Box::new(other),
            },
        }
    }
}

fn is_gateway_status(s: StatusCode) -> bool {
    matches!(
        s,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}
