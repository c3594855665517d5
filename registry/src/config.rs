//! [`Config`]: the settings lease supervision and discovery share, and their defaults, in
//! one place.

use std::time::Duration;

use crate::instance::DEFAULT_PREFIX;

/// The default lease TTL of registrations, in etcd and in memory.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The default bound on connecting to etcd.
pub(crate) const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Timings shared by lease supervision and discovery.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) deregister_timeout: Duration,
    pub(crate) reconcile_interval: Duration,
    /// First retry delay after a failure (re-registration, reconnect).
    pub(crate) backoff_base: Duration,
    /// Longest retry delay.
    pub(crate) backoff_max: Duration,
}

impl Config {
    /// The defaults (documented on [`EtcdOptions`](crate::EtcdOptions)'s setters), with
    /// `prefix` (a trailing `/` dropped) and `ttl`.
    pub(crate) fn new(prefix: &str, ttl: Duration) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
            ttl,
            request_timeout: Duration::from_secs(5),
            deregister_timeout: Duration::from_secs(2),
            reconcile_interval: Duration::from_secs(30),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }

    /// The retry cap used while a registration is lost: short enough to come back well
    /// within one TTL once the store is reachable again.
    pub(crate) fn recovery_backoff_max(&self) -> Duration {
        (self.ttl / 3).clamp(self.backoff_base, self.backoff_max)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX, DEFAULT_TTL)
    }
}
