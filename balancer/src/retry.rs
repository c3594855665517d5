//! The retry policy (go-kit `lb.Retry`): bounded attempts, one overall deadline, another
//! instance per attempt, only what is safe to retry, within a retry budget.
//!
//! [`RetryPolicy`] is settings an Endpoint follows, not a middleware: the Endpoint's call
//! applies it across its attempts (`call.rs`), because another attempt means another pick
//! from the same set of instances.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use tower::retry::budget::{Budget, TpsBudget};

use crate::error::Error;

/// What went wrong with one attempt, as shown to a retry predicate.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Failure<'a> {
    /// The attempt failed with an error (connect, transport, timeout, ...).
    Error(&'a Error),
    /// The instance answered with a 5xx gateway status (502, 503 or 504).
    Status(StatusCode),
}

/// A retry predicate: should a request with this method be tried again after this failure?
pub type Predicate = Arc<dyn Fn(&Method, &Failure<'_>) -> bool + Send + Sync>;

/// True for methods that RFC 9110 defines as idempotent: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The default predicate: only what is safe to retry.
///
/// - a failed connect (refused, unreachable; the request was never sent): any method;
/// - a timeout, a transport error after connecting (reset, closed mid-response), or a 502,
///   503 or 504 answer: idempotent methods only (the request may have been processed);
/// - anything else (encode, decode, body too large, other statuses): never.
pub fn is_safe_to_retry(method: &Method, failure: &Failure<'_>) -> bool {
    match failure {
        Failure::Error(Error::Transport { connect: true, .. }) => true,
        Failure::Error(Error::Transport { .. } | Error::Timeout { .. }) => is_idempotent(method),
        Failure::Status(s) => {
            matches!(
                *s,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ) && is_idempotent(method)
        }
        _ => false,
    }
}

/// When an HTTP endpoint tries again (go-kit `lb.Retry(max, timeout, balancer)`); given to
/// [`EndpointBuilder::retry`](crate::EndpointBuilder::retry).
///
/// A policy the Endpoint follows, not a middleware around it: another attempt means another
/// pick from the same set of instances, avoiding those already tried, so the Endpoint's call
/// applies it between its attempts.
#[derive(Clone)]
#[must_use]
pub struct RetryPolicy {
    pub(crate) max_attempts: usize,
    pub(crate) deadline: Duration,
    pub(crate) predicate: Predicate,
    pub(crate) budget: Option<(f32, u32)>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all (at least 1), all within `deadline` from the
    /// start of the call. Defaults: predicate [`is_safe_to_retry`], budget 20% of calls plus
    /// 10 retries per second.
    pub fn new(max_attempts: usize, deadline: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            deadline,
            predicate: Arc::new(is_safe_to_retry),
            budget: Some((0.2, 10)),
        }
    }

    /// Decides which failures are retried. Default [`is_safe_to_retry`].
    pub fn predicate<F>(mut self, f: F) -> Self
    where
        F: Fn(&Method, &Failure<'_>) -> bool + Send + Sync + 'static,
    {
        self.predicate = Arc::new(f);
        self
    }

    /// The retry budget: retries may be at most `ratio` of the calls of the last 10 seconds
    /// (`0.2` = 20%, clamped to 0..=1000) plus `min_per_sec` retries per second. Default
    /// `(0.2, 10)`.
    pub fn budget(mut self, ratio: f32, min_per_sec: u32) -> Self {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        self.budget = Some((ratio, min_per_sec.min(1_000_000)));
        self
    }

    /// No retry budget: every retryable failure is retried up to the attempt limit.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }
}

/// The live retry policy of one endpoint: settings plus the budget's counters.
pub(crate) struct RetryState {
    pub(crate) settings: RetryPolicy,
    budget: Option<TpsBudget>,
}

impl fmt::Debug for RetryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RetryState {
    pub(crate) fn new(settings: RetryPolicy) -> Self {
        let budget = settings
            .budget
            .map(|(ratio, min)| TpsBudget::new(Duration::from_secs(10), min, ratio));
        Self { settings, budget }
    }

    /// Counts a call (one deposit).
    pub(crate) fn deposit(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    /// Takes one retry out of the budget; false when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.as_ref().is_none_or(|b| b.withdraw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(connect: bool) -> Error {
        Error::Transport {
            service: "s".into(),
            addr: "a:1".into(),
            connect,
            source: "x".into(),
        }
    }

    #[test]
    fn default_predicate_is_safe_only() {
        let refused = transport(true);
        let reset = transport(false);
        assert!(is_safe_to_retry(&Method::POST, &Failure::Error(&refused)));
        assert!(!is_safe_to_retry(&Method::POST, &Failure::Error(&reset)));
        assert!(is_safe_to_retry(&Method::GET, &Failure::Error(&reset)));
        assert!(is_safe_to_retry(
            &Method::GET,
            &Failure::Status(StatusCode::SERVICE_UNAVAILABLE)
        ));
        assert!(!is_safe_to_retry(
            &Method::POST,
            &Failure::Status(StatusCode::BAD_GATEWAY)
        ));
        assert!(!is_safe_to_retry(
            &Method::GET,
            &Failure::Status(StatusCode::INTERNAL_SERVER_ERROR)
        ));
        let decode = Error::Decode {
            service: "s".into(),
            addr: "a:1".into(),
            source: "bad".into(),
        };
        assert!(!is_safe_to_retry(&Method::GET, &Failure::Error(&decode)));
    }

    #[test]
    fn budget_limits_retries() {
        let state = RetryState::new(RetryPolicy::new(3, Duration::from_secs(1)).budget(0.2, 0));
        for _ in 0..100 {
            state.deposit();
        }
        let granted = (0..100).filter(|_| state.withdraw()).count();
        assert!((15..=25).contains(&granted), "granted {granted}");
        let unlimited = RetryState::new(RetryPolicy::new(3, Duration::from_secs(1)).no_budget());
        assert!((0..100).all(|_| unlimited.withdraw()));
    }
}
