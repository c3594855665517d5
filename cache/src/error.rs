//! Errors of the cache.

use std::sync::Arc;

/// A boxed error, as returned by a [`Getter`](crate::Getter).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong building a cache or getting a value.
///
/// Cheap to clone: one load's outcome is handed to every caller waiting for that key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key longer than the group's limit; the getter was not called.
    #[error("key of {len} bytes is longer than the limit of {limit} bytes")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A value set that is larger than the cache can hold (a shard's share of the group's
    /// budget); nothing was stored.
    #[error("value of {bytes} bytes for key {key:?} is larger than the {limit} bytes the cache can hold per entry")]
    ValueTooLarge {
        /// The key (shortened when long).
        key: String,
        /// What the entry would be charged.
        bytes: usize,
        /// The most one entry may be charged.
        limit: usize,
    },
    /// The group's getter failed for a key. Not cached: the next get tries again.
    #[error("getter of group {group:?} failed for key {key:?}")]
    Getter {
        /// The group name.
        group: String,
        /// The key asked for (cut to 128 bytes).
        key: String,
        /// What the getter returned.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The getter panicked while loading a key.
    #[error("getter of group {group:?} panicked loading key {key:?}")]
    GetterPanicked {
        /// The group name.
        group: String,
        /// The key asked for (cut to 128 bytes).
        key: String,
    },
    /// The load was stopped because the cache that owns the group was dropped.
    #[error("the load of key {key:?} was stopped: the cache is shutting down")]
    Closed {
        /// The key asked for (cut to 128 bytes).
        key: String,
    },
    /// A group with this name already exists in this cache.
    #[error("a group named {name:?} already exists")]
    DuplicateGroup {
        /// The name refused.
        name: String,
    },
    /// A group name that is empty.
    #[error("a group name must not be empty")]
    EmptyGroupName,
    /// A peer or self URL that is not `http://host:port` (an optional path is allowed).
    #[error("invalid peer URL {url:?}: {reason}")]
    InvalidPeerUrl {
        /// The URL refused.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// A base path that does not start and end with `/`.
    #[error("invalid base path {path:?}: it must start and end with `/`")]
    InvalidBasePath {
        /// The path refused.
        path: String,
    },
    /// A shared secret that cannot be sent as an HTTP header value.
    #[error("the shared secret must be visible ASCII to fit an HTTP header")]
    InvalidSecret,
    /// A write to the peer that owns the key failed ([`Group::set`](crate::Group::set));
    /// nothing was stored on this node.
    #[error("{op} of key {key:?} in group {group:?} failed on its owner")]
    Peer {
        /// What was asked: `set`.
        op: &'static str,
        /// The group name.
        group: String,
        /// The key (cut to 128 bytes).
        key: String,
        /// Why the peer failed.
        #[source]
        source: Arc<PeerError>,
    },
    /// Reading or bumping a group's flush generation in the registry failed.
    #[error("flush generation {key:?}: {what}")]
    Generation {
        /// The registry key of the generation.
        key: String,
        /// What failed.
        what: &'static str,
        /// The registry's error, if it was one.
        #[source]
        source: Option<Arc<svckit_registry::Error>>,
    },
    /// Following a registry's discovery failed.
    #[error("following service {service:?} in the registry failed")]
    Discovery {
        /// The service name followed.
        service: String,
        /// The registry's error.
        #[source]
        source: Arc<svckit_registry::Error>,
    },
}

/// Why a fetch from a peer failed. Such a failure is never returned to a caller: the group
/// falls back to a local load and counts a peer error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The request could not be sent or its answer not received (refused, reset, ...).
    #[error("request to peer {peer} failed")]
    Transport {
        /// The peer's base URL.
        peer: String,
        /// The transport's error.
        #[source]
        source: BoxError,
    },
    /// The peer did not answer in time.
    #[error("peer {peer} did not answer within {after:?}")]
    Timeout {
        /// The peer's base URL.
        peer: String,
        /// The timeout.
        after: std::time::Duration,
    },
    /// The peer answered with a status other than 200.
    #[error("peer {peer} answered {status}")]
    Status {
        /// The peer's base URL.
        peer: String,
        /// The status received.
        status: http::StatusCode,
    },
    /// The answer's body was larger than the configured limit.
    #[error("peer {peer} sent a body larger than {limit} bytes")]
    TooLarge {
        /// The peer's base URL.
        peer: String,
        /// The configured limit.
        limit: usize,
    },
    /// The answer's body is not a `GetResponse` message.
    #[error("peer {peer} sent an undecodable body")]
    Decode {
        /// The peer's base URL.
        peer: String,
        /// The decoder's error.
        #[source]
        source: BoxError,
    },
}

impl PeerError {
    /// The base URL of the peer that failed.
    pub fn peer(&self) -> &str {
        match self {
            Self::Transport { peer, .. }
            | Self::Timeout { peer, .. }
            | Self::Status { peer, .. }
            | Self::TooLarge { peer, .. }
            | Self::Decode { peer, .. } => peer,
        }
    }
}

/// An error and its sources on one line (`what failed: why: why`): a getter error's own text
/// names the group and key, its sources what the getter said.
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

/// A key cut to at most 128 bytes (on a char boundary), for error messages and logs.
pub(crate) fn short_key(key: &str) -> String {
    if key.len() <= 128 {
        return key.to_owned();
    }
    let mut end = 128;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}
