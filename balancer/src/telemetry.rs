//! What an HTTP Endpoint's calls record: the `svckit_endpoint_*` metrics (through the
//! `metrics` facade, handles resolved once per built Endpoint), its [`Counters`] for
//! [`endpoint_stats`](crate::endpoint_stats), and the outcome of calls and attempts that
//! their spans carry. The families and spans are listed in the crate docs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Unit};

use crate::error::Error;
use crate::stats::Counters;

/// How a call (or one attempt) ended: the `outcome` label and span field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer that is not a 5xx, decoded.
    Ok,
    /// Discovery knew no instance ([`Error::NoInstances`]).
    NoInstances,
    /// [`Error::Timeout`].
    Timeout,
    /// Connecting, sending or receiving failed ([`Error::Transport`]).
    Transport,
    /// [`Error::BodyTooLarge`].
    BodyTooLarge,
    /// The instance answered a 5xx, whatever decode made of it.
    Status,
    /// Decode refused an answer that is not a 5xx ([`Error::Decode`]).
    Decode,
    /// Encode refused the request ([`Error::Encode`]).
    Encode,
    /// The caller dropped the call before it ended.
    Cancelled,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Self::Ok,
        Self::NoInstances,
        Self::Timeout,
        Self::Transport,
        Self::BodyTooLarge,
        Self::Status,
        Self::Decode,
        Self::Encode,
        Self::Cancelled,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NoInstances => "no_instances",
            Self::Timeout => "timeout",
            Self::Transport => "transport",
            Self::BodyTooLarge => "body_too_large",
            Self::Status => "status",
            Self::Decode => "decode",
            Self::Encode => "encode",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome of an answer with `status`.
    pub(crate) fn of_status(status: StatusCode) -> Self {
        if status.is_server_error() {
            Self::Status
        } else {
            Self::Ok
        }
    }

    /// The outcome of a failed call or attempt: its last attempt's error kind.
    pub(crate) fn of_error(err: &Error) -> Self {
        match err {
            Error::NoInstances { .. } => Self::NoInstances,
            Error::Timeout { .. } => Self::Timeout,
            Error::BodyTooLarge { .. } => Self::BodyTooLarge,
            Error::Encode { .. } => Self::Encode,
            Error::Decode { .. } => Self::Decode,
            Error::RetriesExhausted { last, .. } => Self::of_error(last),
            // Not produced by an HTTP call; counted with the transport so no failure is lost.
            Error::Transport { .. }
            | Error::Discovery { .. }
            | Error::Config { .. }
            | Error::Endpoint { .. } => Self::Transport,
        }
    }

    fn is_failure(self) -> bool {
        !matches!(self, Self::Ok | Self::Cancelled)
    }
}

/// One built Endpoint's metric handles and counters. The labels (service, outcome) are fixed
/// per Endpoint, so a call only increments handles: no lookup, no allocation.
pub(crate) struct Instruments {
    requests: [Counter; Outcome::ALL.len()],
    duration: Histogram,
    retries: Counter,
    ejections: Counter,
    in_flight: Gauge,
    counters: Arc<Counters>,
}

impl Instruments {
    /// Handles from the `metrics` recorder installed now (a recorder installed later does not
    /// see this Endpoint), and counters listed in [`endpoint_stats`](crate::endpoint_stats).
    pub(crate) fn new(service: &str, picker: &str) -> Self {
        describe();
        let label = || service.to_owned();
        Self {
            requests: Outcome::ALL.map(|o| {
                metrics::counter!("svckit_endpoint_requests_total", "service" => label(), "outcome" => o.as_str())
            }),
            duration: metrics::histogram!("svckit_endpoint_request_duration_seconds", "service" => label()),
            retries: metrics::counter!("svckit_endpoint_retries_total", "service" => label()),
            ejections: metrics::counter!("svckit_endpoint_ejections_total", "service" => label()),
            in_flight: metrics::gauge!("svckit_endpoint_in_flight", "service" => label()),
            counters: Counters::register(service, picker),
        }
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// A call starts: in flight until the returned record drops.
    pub(crate) fn start(&self, span: tracing::Span) -> CallRecord<'_> {
        self.in_flight.increment(1.0);
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        CallRecord {
            instruments: self,
            span,
            started: Instant::now(),
            outcome: Outcome::Cancelled,
        }
    }

    /// Another attempt of a call follows a failed one.
    pub(crate) fn retry(&self) {
        self.retries.increment(1);
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// An instance was ejected.
    pub(crate) fn ejection(&self) {
        self.ejections.increment(1);
        self.counters.ejections.fetch_add(1, Ordering::Relaxed);
    }
}

/// One call under way. When it drops (the call ended, or the caller dropped it) the call is
/// counted once with its outcome, `cancelled` unless [`end`](Self::end) said otherwise.
pub(crate) struct CallRecord<'a> {
    instruments: &'a Instruments,
    /// The call's `invoke` span, which gets the outcome.
    span: tracing::Span,
    started: Instant,
    outcome: Outcome,
}

impl CallRecord<'_> {
    pub(crate) fn end(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for CallRecord<'_> {
    fn drop(&mut self) {
        let (i, outcome) = (self.instruments, self.outcome);
        i.requests[outcome as usize].increment(1);
        i.duration.record(self.started.elapsed());
        i.in_flight.decrement(1.0);
        let c = &i.counters;
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        c.requests.fetch_add(1, Ordering::Relaxed);
        if outcome.is_failure() {
            c.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.span.record("outcome", outcome.as_str());
    }
}

/// Help text and units of the families, for the recorder installed now.
fn describe() {
    metrics::describe_counter!(
        "svckit_endpoint_requests_total",
        "Endpoint calls that ended, by service and outcome (ok, no_instances, timeout, transport, body_too_large, status, decode, encode, cancelled)."
    );
    metrics::describe_histogram!(
        "svckit_endpoint_request_duration_seconds",
        Unit::Seconds,
        "Duration of Endpoint calls, retries included, by service."
    );
    metrics::describe_counter!(
        "svckit_endpoint_retries_total",
        "Attempts of Endpoint calls after the first, by service."
    );
    metrics::describe_counter!(
        "svckit_endpoint_ejections_total",
        "Instances avoided for a while after a failed connect, by service."
    );
    metrics::describe_gauge!(
        "svckit_endpoint_in_flight",
        "Endpoint calls under way, by service."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_index_their_own_counter_and_a_retried_error_counts_as_its_last() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
        let timeout = Error::Timeout {
            service: "s".into(),
            addr: "a:1".into(),
            after: std::time::Duration::from_secs(1),
        };
        let exhausted = Error::RetriesExhausted {
            service: "s".into(),
            attempts: Vec::new(),
            last: Box::new(timeout),
        };
        assert_eq!(Outcome::of_error(&exhausted), Outcome::Timeout);
        assert_eq!(Outcome::of_status(StatusCode::NOT_FOUND), Outcome::Ok);
        assert_eq!(
            Outcome::of_status(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::Status
        );
    }
}
