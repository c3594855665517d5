//! The state across the attempts of one call: the retry policy's deadline and budget, the
//! instances already tried, and the log of failed attempts.

use std::time::Duration;

use http::Method;
use svckit_registry::Instance;
use tokio::time::Instant;

use crate::error::{Attempt, Error};
use crate::retry::{Failure, RetryState};

/// What the next attempt may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeLimit {
    /// The attempt's timeout: the per-attempt timeout, or what is left of the overall
    /// deadline when that is less.
    pub(crate) timeout: Duration,
    /// The duration a timeout reports: the overall deadline when it is what cut the attempt.
    pub(crate) reported: Duration,
}

/// One call's attempts so far. Without a retry policy there is exactly one attempt.
pub(crate) struct Attempts<'a> {
    retry: Option<&'a RetryState>,
    max: usize,
    /// The overall deadline and its length.
    deadline: Option<(Instant, Duration)>,
    /// Ids of the instances tried, which the next pick avoids.
    tried: Vec<String>,
    log: Vec<Attempt>,
}

impl<'a> Attempts<'a> {
    /// The first attempt is about to start: counts the call in the retry budget and starts
    /// the overall deadline.
    pub(crate) fn start(retry: Option<&'a RetryState>) -> Self {
        let (max, deadline) = match retry {
            Some(r) => {
                r.deposit();
                let total = r.settings.deadline;
                (
                    r.settings.max_attempts,
                    Some((deadline_from_now(total), total)),
                )
            }
            None => (1, None),
        };
        Self {
            retry,
            max,
            deadline,
            tried: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Instance ids of the earlier attempts.
    pub(crate) fn tried(&self) -> &[String] {
        &self.tried
    }

    /// True when the next attempt is the last one allowed.
    pub(crate) fn is_last(&self) -> bool {
        self.log.len() + 1 >= self.max
    }

    /// What the next attempt may take, given the per-attempt `timeout`.
    pub(crate) fn limit(&self, timeout: Duration) -> TimeLimit {
        match self.deadline {
            Some((at, total)) => {
                let left = at.saturating_duration_since(Instant::now());
                if left < timeout {
                    return TimeLimit {
                        timeout: left,
                        reported: total,
                    };
                }
                TimeLimit {
                    timeout,
                    reported: timeout,
                }
            }
            None => TimeLimit {
                timeout,
                reported: timeout,
            },
        }
    }

    /// Whether to try again after the attempt on `instance` ended with `failure`: attempts
    /// are left, the policy's predicate allows it for `method`, the deadline has not passed
    /// and the budget grants a retry (checked in that order; the budget is drawn only when
    /// all else allows). If so, the attempt is logged with `reason` and its instance avoided.
    pub(crate) fn again(
        &mut self,
        method: &Method,
        failure: &Failure<'_>,
        instance: &Instance,
        reason: impl FnOnce() -> String,
    ) -> bool {
        let Some(retry) = self.retry else {
            return false;
        };
        let again = !self.is_last()
            && (retry.settings.predicate)(method, failure)
            && self.deadline.is_some_and(|(at, _)| Instant::now() < at)
            && retry.withdraw();
        if again {
            self.log.push(Attempt::new(instance.addr(), reason()));
            self.tried.push(instance.id().to_owned());
        }
        again
    }

    /// The number of attempts logged so far.
    pub(crate) fn len(&self) -> usize {
        self.log.len()
    }

    /// The call's error: `err` alone after one attempt, or every attempt listed, the last
    /// one (at `addr`, empty when none was picked) with `err`.
    pub(crate) fn finish(self, service: &str, addr: String, err: Error) -> Error {
        if self.log.is_empty() {
            return err;
        }
        let mut attempts = self.log;
        attempts.push(Attempt::new(addr, crate::error::chain_message(&err)));
        Error::RetriesExhausted {
            service: service.to_owned(),
            attempts,
            last: Box::new(err),
        }
    }
}

/// `now + after`, saturating far in the future for huge durations such as `Duration::MAX`
/// ("no overall deadline") instead of panicking on overflow.
fn deadline_from_now(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryPolicy;

    fn refused() -> Error {
        Error::Transport {
            service: "s".into(),
            addr: "a:1".into(),
            connect: true,
            source: "refused".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_the_last_attempt_and_is_what_a_timeout_reports() {
        let policy = RetryState::new(RetryPolicy::new(3, Duration::from_secs(5)).no_budget());
        let attempts = Attempts::start(Some(&policy));
        let l = attempts.limit(Duration::from_secs(2));
        assert_eq!(
            (l.timeout, l.reported),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        let l = attempts.limit(Duration::from_secs(2));
        assert_eq!(
            (l.timeout, l.reported),
            (Duration::from_secs(1), Duration::from_secs(5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn again_within_attempts_and_deadline_then_every_attempt_listed() {
        let instance = Instance::new("i1", "svc", "127.0.0.1:1").unwrap();
        let err = refused();
        let failure = Failure::Error(&err);
        let mut none = Attempts::start(None);
        assert!(!none.again(&Method::POST, &failure, &instance, String::new));
        assert!(matches!(
            none.finish("svc", "a:1".into(), refused()),
            Error::Transport { .. }
        ));

        let policy = RetryState::new(RetryPolicy::new(3, Duration::from_secs(5)).no_budget());
        let mut attempts = Attempts::start(Some(&policy));
        assert!(attempts.again(&Method::POST, &failure, &instance, || "r1".into()));
        assert!(attempts.again(&Method::POST, &failure, &instance, || "r2".into()));
        assert!(attempts.is_last());
        assert!(!attempts.again(&Method::POST, &failure, &instance, || "r3".into()));
        assert_eq!(attempts.tried(), ["i1", "i1"]);
        match attempts.finish("svc", "127.0.0.1:2".into(), refused()) {
            Error::RetriesExhausted { attempts, .. } => {
                let reasons: Vec<_> = attempts.iter().map(|a| a.reason().to_owned()).collect();
                assert_eq!(reasons[..2], ["r1", "r2"]);
                assert_eq!(attempts[2].addr(), "127.0.0.1:2");
            }
            other => panic!("{other:?}"),
        }

        let mut late = Attempts::start(Some(&policy));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            !late.again(&Method::POST, &failure, &instance, || "late".into()),
            "past the deadline"
        );
    }
}
