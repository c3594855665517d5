//! Errors of the registry.

use std::time::Duration;

/// Everything that can go wrong registering or discovering instances.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An id or service name that is not ASCII word characters.
    #[error(
        "invalid {what} {value:?}: only ASCII letters, digits and `_` are allowed ([A-Za-z0-9_]+)"
    )]
    InvalidIdent {
        /// Which identifier: `"id"` or `"name"`.
        what: &'static str,
        /// The refused value.
        value: String,
    },
    /// An address that is not `host:port`.
    #[error("invalid address {addr:?}: expected `host:port`")]
    InvalidAddress {
        /// The refused address.
        addr: String,
    },
    /// A key prefix that is empty or does not start with `/`.
    #[error("invalid key prefix {prefix:?}: it must start with `/` and name at least one segment")]
    InvalidPrefix {
        /// The refused prefix.
        prefix: String,
    },
    /// etcd could not be reached or refused an operation.
    #[error("etcd {op} failed")]
    Etcd {
        /// The operation that failed (`connect`, `grant`, `put`, `revoke`, ...).
        op: &'static str,
        /// What etcd or the transport said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No etcd endpoint answered within the dial timeout: every attempt failed to connect
    /// (or met a member without a leader).
    #[error("no etcd endpoint answered within {after:?} ({attempts} attempt(s))")]
    Unreachable {
        /// The dial timeout.
        after: Duration,
        /// How many requests were tried.
        attempts: u32,
        /// The last connection failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// etcd answered and refused the user name or password.
    #[error("etcd authentication failed for user {user:?}: wrong user name or password")]
    AuthFailed {
        /// The user that was refused.
        user: String,
        /// What etcd said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// etcd has authentication enabled and no user was given.
    #[error("etcd requires authentication and no user was given (set a user and password)")]
    AuthRequired {
        /// What etcd said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A user was given with an empty password.
    #[error("etcd user {user:?} was given without a password")]
    MissingPassword {
        /// The user.
        user: String,
    },
    /// An operation did not finish in time.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// The lease behind a registration is gone (expired or revoked).
    #[error("lease {lease} not found")]
    LeaseNotFound {
        /// The lease id.
        lease: i64,
    },
    /// A server bound to `0.0.0.0` or `[::]` was registered without an advertised host:
    /// nobody could reach that address.
    #[error("cannot register the unspecified address {addr}: set an advertised host")]
    UnspecifiedAddress {
        /// The bound address.
        addr: String,
    },
    /// The shutdown signal handlers could not be installed.
    #[error("installing the SIGINT/SIGTERM handlers failed")]
    Signal {
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The server did not finish its requests within the grace timeout after the shutdown
    /// signal and was stopped with requests still in flight.
    #[error("grace timeout of {grace:?} expired {}", waiting_for(*in_flight))]
    GraceExpired {
        /// The grace timeout.
        grace: Duration,
        /// Requests in flight when it expired.
        in_flight: usize,
    },
    /// A second SIGINT/SIGTERM (or [`Lifecycle::force`](crate::Lifecycle::force)) during the
    /// drain stopped the server at once, with requests still in flight.
    #[error("shutdown forced with {in_flight} request(s) still in flight")]
    ShutdownForced {
        /// Requests in flight when it was forced.
        in_flight: usize,
    },
    /// A conditional transaction ([`Txn::if_unchanged_since`](crate::Txn::if_unchanged_since))
    /// found a key under its prefix changed after the expected revision; nothing was written.
    #[error(
        "conflict: a key under {prefix:?} changed after revision {expected} (now at {current})"
    )]
    Conflict {
        /// The prefix the condition was on.
        prefix: String,
        /// The revision the caller expected the prefix to be at.
        expected: i64,
        /// The store's revision when the transaction was refused.
        current: i64,
    },
    /// A transaction with more writes than etcd takes in one (`--max-txn-ops`, 128 by
    /// default): nothing was written.
    #[error("etcd refused a transaction with more writes than it takes in one (its --max-txn-ops, 128 by default); nothing was written")]
    TxnTooLarge {
        /// What etcd said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file named by an environment variable could not be read.
    #[error("cannot read {var}={path}")]
    ReadFile {
        /// The variable that named the file.
        var: &'static str,
        /// The path it named.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The registry was shut down.
    #[error("the registry is closed")]
    Closed,
}

/// What a drain that ran out of time was still waiting for.
fn waiting_for(in_flight: usize) -> String {
    match in_flight {
        // Only a server that keeps idle connections open through its graceful shutdown
        // (axum::serve) gets here: Lifecycle::serve closes them at once.
        0 => "with no request in flight, waiting for the server to close its connections \
              (idle or slow clients held them open; Lifecycle::serve closes those at once)"
            .to_owned(),
        n => format!("with {n} request(s) still in flight"),
    }
}

/// A key or value under the prefix that does not fit `<prefix>/<id>/<name>` → `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed registry entry {key:?}: {reason}")]
pub struct MalformedEntry {
    /// The key as read (lossily decoded when it is not UTF-8).
    pub key: String,
    /// Why it was skipped.
    pub reason: &'static str,
}

/// An error and its sources on one line (`what failed: why: why`), for logs: a registry
/// error's own text names the operation, its sources what etcd said.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
