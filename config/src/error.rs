//! Errors of the typed config.

use std::time::Duration;

/// An update of the keys under a prefix that did not make a valid value: it failed to
/// deserialize or failed the caller's validation. The last good value stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config under {prefix} at revision {revision} refused{}: {reason}", at_key(.key.as_deref()))]
pub struct Rejected {
    /// The watched prefix.
    pub prefix: String,
    /// The etcd revision of the refused keys.
    pub revision: i64,
    /// The key at fault: the one that did not deserialize, or for a failed validation the
    /// keys that changed since the last good value (comma-separated); none when unknown.
    pub key: Option<String>,
    /// Why.
    pub reason: String,
}

fn at_key(key: Option<&str>) -> String {
    key.map(|k| format!(" (key {k})")).unwrap_or_default()
}

/// Everything that can go wrong with live config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The keys under the prefix do not make a valid value (at start, or a write that would
    /// not read back).
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The first listing of the prefix did not arrive in time (etcd unreachable).
    #[error("config under {prefix}: no listing from etcd within {after:?}")]
    Unavailable {
        /// The watched prefix.
        prefix: String,
        /// How long it waited.
        after: Duration,
    },
    /// A value that cannot be written as keys (not a map of fields, or a field name with `/`).
    #[error("config under {prefix} cannot be written: {reason}")]
    Unrepresentable {
        /// The prefix it was to be written under.
        prefix: String,
        /// Why.
        reason: String,
    },
    /// etcd refused or did not answer (including a compare-and-swap conflict:
    /// `svckit_registry::Error::Conflict`).
    #[error("config under {prefix}: {op} failed")]
    Registry {
        /// The prefix.
        prefix: String,
        /// The operation (`watch`, `get`, `write`).
        op: &'static str,
        /// What the registry said.
        #[source]
        source: svckit_registry::Error,
    },
    /// The watch stopped.
    #[error("config watch of {prefix} is closed")]
    Closed {
        /// The prefix.
        prefix: String,
    },
}
