//! The pooled HTTP/1 client every Endpoint of a client object sends through.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::BoxError;

/// A pooled HTTP/1 client (hyper-util's legacy client over plain TCP). Cheap to clone: clones
/// and every Endpoint built from them share one connection pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// How long [`HttpClient::new`] waits for a TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// A client with hyper-util's pool defaults (idle connections kept 90 s), `TCP_NODELAY` on
    /// and a connect timeout of [`DEFAULT_CONNECT_TIMEOUT`] (2 s).
    pub fn new() -> Self {
        Self::with_connect_timeout(DEFAULT_CONNECT_TIMEOUT)
    }

    /// Like [`new`](Self::new) with another connect timeout. A connect that takes longer fails
    /// as a connect error (`Error::Transport { connect: true, .. }`): the request was never
    /// sent, so it is retried on another instance whatever its method, and the instance is
    /// avoided for a while, instead of the call hanging until its own timeout on a host that
    /// drops packets.
    pub fn with_connect_timeout(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self { client }
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
