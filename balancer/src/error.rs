//! The balancer's error type.

use std::fmt;
use std::time::Duration;

/// A boxed error from user code (encode, decode, endpoints) or from the transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong calling a service through an [`Endpoint`](crate::Endpoint).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Discovery knows no instance of the service right now. Returned at once, never a hang.
    #[error("no instances of service `{service}`")]
    NoInstances {
        /// The service name asked for.
        service: String,
    },
    /// A call (or the retry deadline) ran out of time.
    #[error("call to `{service}` at {addr} timed out after {after:?}")]
    Timeout {
        /// The service name.
        service: String,
        /// The instance address being called, `host:port` (empty when none was picked yet).
        addr: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// Connecting, sending or receiving failed.
    #[error("transport error calling `{service}` at {addr}")]
    Transport {
        /// The service name.
        service: String,
        /// The instance address, `host:port`.
        addr: String,
        /// True when the failure happened while connecting, so the request was never sent.
        connect: bool,
        /// What failed (a hyper or I/O error).
        #[source]
        source: BoxError,
    },
    /// The encode function refused the request value.
    #[error("encoding a request for `{service}` failed")]
    Encode {
        /// The service name.
        service: String,
        /// The encode function's error.
        #[source]
        source: BoxError,
    },
    /// The decode function refused the response.
    #[error("decoding the response of `{service}` from {addr} failed")]
    Decode {
        /// The service name.
        service: String,
        /// The instance address, `host:port`.
        addr: String,
        /// The decode function's error.
        #[source]
        source: BoxError,
    },
    /// The response body was larger than the configured limit.
    #[error("response body from `{service}` at {addr} exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The service name.
        service: String,
        /// The instance address, `host:port`.
        addr: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// More than one attempt was made and none succeeded. `attempts` lists each one; the
    /// source is the last attempt's error.
    #[error("{} attempts to call `{service}` failed: {}", attempts.len(), DisplayAttempts(attempts))]
    RetriesExhausted {
        /// The service name.
        service: String,
        /// Every attempt, in order.
        attempts: Vec<Attempt>,
        /// The error of the last attempt.
        #[source]
        last: Box<Error>,
    },
    /// The service name is not a valid identifier, or discovery failed.
    #[error("discovery of `{service}` failed")]
    Discovery {
        /// The service name.
        service: String,
        /// The registry's error.
        #[source]
        source: svckit_registry::Error,
    },
    /// An endpoint builder was misconfigured.
    #[error("invalid endpoint configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// An error raised by a user endpoint or middleware (see [`Error::endpoint`]).
    #[error("endpoint failed")]
    Endpoint {
        /// The user's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Wraps an error from user code (an endpoint built with
    /// [`Endpoint::from_fn`](crate::Endpoint::from_fn) or a middleware).
    pub fn endpoint(source: impl Into<BoxError>) -> Self {
        Self::Endpoint {
            source: source.into(),
        }
    }

    /// True for [`Error::NoInstances`].
    pub fn is_no_instances(&self) -> bool {
        matches!(self, Self::NoInstances { .. })
    }

    /// True for [`Error::Timeout`], also when it ended a series of retries.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::RetriesExhausted { last, .. } => last.is_timeout(),
            _ => false,
        }
    }
}

/// Why [`HttpClient::send`](crate::HttpClient::send) (or `get`) failed: the transport's
/// typed errors. A status is never an error here; every answer is a response.
///
/// The messages do not repeat the URL (the caller knows what it sent and says so in its own
/// error, as an Endpoint's [`Error`] does with the service and address); the source is
/// hyper's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The URL given to [`HttpClient::get`](crate::HttpClient::get) is not an absolute
    /// `http://` URL. Nothing was sent.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting failed (refused, unreachable, the connect timeout elapsed): the request
    /// was never sent, so it is safe to send again whatever its method.
    #[error("connect failed")]
    Connect {
        /// hyper's error.
        #[source]
        source: BoxError,
    },
    /// Sending the request or receiving the response head failed after connecting (reset,
    /// closed, malformed answer): the peer may have processed the request.
    #[error("request failed")]
    Request {
        /// hyper's error.
        #[source]
        source: BoxError,
    },
    /// The head arrived but reading the body failed.
    #[error("reading the body of a {status} answer failed")]
    Body {
        /// The status of the answer.
        status: http::StatusCode,
        /// hyper's error.
        #[source]
        source: BoxError,
    },
    /// The body (declared or read so far) is larger than the limit; the rest was not read.
    #[error("the body of a {status} answer exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The status of the answer.
        status: http::StatusCode,
        /// The limit in bytes.
        limit: usize,
    },
    /// The whole exchange did not finish within the request's timeout.
    #[error("no complete answer within {after:?}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
}

impl TransportError {
    /// True for [`TransportError::Connect`]: the request was never sent.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// True for [`TransportError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// One failed attempt of a call, as listed by [`Error::RetriesExhausted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    addr: String,
    reason: String,
}

impl Attempt {
    pub(crate) fn new(addr: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            reason: reason.into(),
        }
    }

    /// The instance address tried, `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Why the attempt failed (the error's message and its sources).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.addr, self.reason)
    }
}

struct DisplayAttempts<'a>(&'a [Attempt]);

impl fmt::Display for DisplayAttempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "[{}] {a}", i + 1)?;
        }
        Ok(())
    }
}

/// The error and its chain of sources on one line: `a: b: c`.
pub(crate) fn chain_message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
