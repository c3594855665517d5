//! [`Store`] over a real etcd through etcd-client. No etcd-client type leaves this file.
//!
//! Two faults of real clusters are handled here, below every caller:
//! - A member that is down. etcd-client spreads requests over every endpoint, so a request
//!   can be routed to a member that refuses connections (or lost its leader). Every request
//!   made here is retried after such a connection-level failure, within its deadline; the
//!   next attempt goes to another endpoint. Only when no endpoint answers within the
//!   deadline does the caller get an error, the last one seen.
//! - An expired auth token (etcd's simple tokens live `--auth-token-ttl`, 300 s by default).
//!   etcd-client re-authenticates and retries once when etcd answers "invalid auth token"
//!   (`with_auto_token_refresh`); a watch opened with an expired token is cancelled by etcd
//!   ("permission denied"), so that answer refreshes the token before discovery re-lists.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient,
    LeaseTimeToLiveOptions, PutOptions, Txn as EtcdTxn, TxnOp as EtcdTxnOp, WatchClient,
    WatchOptions, WatchStream as EtcdWatchStream,
};
use tokio::time::Instant;

use crate::error::Error;
use crate::etcd::options::EtcdOptions;
use crate::store::{
    ttl_secs, Committed, KeepAlive, KeyValue, LeaseId, Listing, Range, Store, Txn, TxnOp,
    WatchEvent, WatchMessage, WatchStream,
};

/// The first pause before retrying a request that failed on one endpoint; it doubles up to
/// [`RETRY_PAUSE_MAX`]. Short: the next attempt most likely goes to a live member.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(400);

/// A request that hangs (a member that accepts but never answers) is given up after this
/// share of its deadline, so that another endpoint can still be tried within it.
const ATTEMPT_SHARE: u32 = 3;

/// The largest answer read from etcd (a listing, a watch response). tonic's default of 4 MiB
/// is less than a prefix of large config values or tens of thousands of instances can take;
/// etcd's own Go client accepts 2 GiB. 256 MiB bounds memory while fitting what etcd
/// (`--max-request-bytes` 1.5 MiB per write, 8 GiB of data) realistically returns.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// True for failures of the connection rather than of the request: the endpoint refused or
/// dropped the connection, or the member has no leader. Another endpoint may succeed.
fn is_connection_failure(e: &etcd_client::Error) -> bool {
    if is_tls_refusal(e) {
        return false;
    }
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // tonic reports a refused or broken connection as Unavailable; so does etcd for
        // "no leader", "leader changed" and its own request timeouts.
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// A TLS handshake that failed on a certificate: every endpoint will refuse the same way,
/// so it is reported at once rather than retried.
fn is_tls_refusal(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("certificate") {
            return true;
        }
        source = s.source();
    }
    false
}

fn grpc_message(e: &etcd_client::Error) -> Option<&str> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s.message()),
        _ => None,
    }
}

fn is_permission_denied(e: &etcd_client::Error) -> bool {
    grpc_message(e).is_some_and(|m| m.contains("permission denied"))
}

fn is_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::NotFound)
}

/// Maps an etcd-client error of `op` to the registry's error, naming authentication
/// failures for what they are.
fn etcd_error(op: &'static str, user: Option<&str>, e: etcd_client::Error) -> Error {
    let message = grpc_message(&e).unwrap_or_default();
    // etcd's texts, from etcd's api/v3rpc/rpctypes/error.go.
    if message.contains("authentication failed") {
        return Error::AuthFailed {
            user: user.unwrap_or_default().to_owned(),
            source: Box::new(e),
        };
    }
    if message.contains("user name is empty") {
        return Error::AuthRequired {
            source: Box::new(e),
        };
    }
    if message.contains("too many operations in txn request") {
        return Error::TxnTooLarge {
            source: Box::new(e),
        };
    }
    Error::Etcd {
        op,
        source: Box::new(e),
    }
}

/// Runs `call` until it succeeds, fails for a reason other than the connection, or
/// `budget` is spent; see the module docs. Each attempt gets at most a third of the budget
/// (and never more than what is left), so one hung member cannot use all of it.
async fn retrying<T, F, Fut>(
    op: &'static str,
    budget: Duration,
    mut call: F,
) -> Result<T, RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + budget;
    let attempt_limit = (budget / ATTEMPT_SHARE).max(Duration::from_millis(500));
    let mut pause = RETRY_PAUSE_MIN;
    let mut attempts = 0u32;
    let mut last = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(RetryError::Spent { last, attempts });
        }
        attempts += 1;
        let limit = attempt_limit.min(deadline - now);
        match tokio::time::timeout(limit, call()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if is_connection_failure(&e) => {
                tracing::debug!(op, attempts, error = %e, "etcd request failed on one endpoint; retrying on another");
                last = Some(e);
            }
            Ok(Err(e)) => return Err(RetryError::Refused(e)),
            Err(_) => {
                tracing::debug!(op, attempts, after = ?limit, "etcd request hung; retrying on another endpoint")
            }
        }
        let wake = (Instant::now() + pause).min(deadline);
        tokio::time::sleep_until(wake).await;
        pause = (pause * 2).min(RETRY_PAUSE_MAX);
    }
}

/// Why [`retrying`] gave up.
enum RetryError {
    /// etcd answered and refused the request: not retried.
    Refused(etcd_client::Error),
    /// No endpoint answered within the budget; `last` is the last connection failure seen
    /// (none when every attempt hung).
    Spent {
        last: Option<etcd_client::Error>,
        attempts: u32,
    },
}

/// A connected etcd client.
#[derive(Clone)]
pub(crate) struct EtcdStore {
    client: Client,
    /// The client's KV and watch services with [`MAX_RESPONSE_BYTES`] as their limit.
    kv: KvClient,
    watcher: WatchClient,
    endpoints: Vec<String>,
    user: Option<String>,
    request_timeout: Duration,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers within the dial timeout (retrying on another
    /// endpoint while one refuses).
    pub(crate) async fn connect(options: &EtcdOptions, prefix: &str) -> Result<Self, Error> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            // Detect dead connections under open streams. etcd refuses pings more often than
            // every 5 s by default.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let user = options.user.as_ref().map(|(user, _)| user.clone());
        if let Some((user, password)) = &options.user {
            if password.is_empty() {
                return Err(Error::MissingPassword { user: user.clone() });
            }
            connect = connect
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            use etcd_client::{Certificate, Identity, TlsOptions};
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity_pem {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &tls.domain {
                config = config.domain_name(domain.clone());
            }
            connect = connect.with_tls(config);
        }
        let dial = options.dial_timeout;
        let started = Instant::now();
        // With credentials, connecting authenticates: a request that may meet a dead member.
        let client = retrying("connect", dial, || {
            Client::connect(&options.endpoints, Some(connect.clone()))
        })
        .await
        .map_err(|e| connect_error(e, user.as_deref(), dial))?;
        let store = Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            watcher: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            client,
            endpoints: options.endpoints.clone(),
            user,
            request_timeout: options.shared.request_timeout,
        };
        // The channel connects lazily: make one cheap request so a wrong endpoint fails here.
        // An exact key (the prefix itself), not a count over the prefix: etcd counts by
        // walking every key, 25 ms at 50,000 instances.
        let left = dial.saturating_sub(started.elapsed());
        let probe = retrying("connect", left, || {
            let mut c = store.kv.clone();
            async move { c.get(prefix, None).await }
        })
        .await;
        match probe {
            // etcd answered and knows the user; that user may only read other keys (a
            // config reader without access to the instances): connecting worked.
            Err(RetryError::Refused(e)) if is_permission_denied(&e) => Ok(store),
            Err(e) => Err(connect_error(e, store.user.as_deref(), dial)),
            Ok(_) => Ok(store),
        }
    }

    /// Runs one request with the retry of [`retrying`] within the request timeout.
    async fn request<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        retrying(op, self.request_timeout, call)
            .await
            .map_err(|e| match e {
                RetryError::Refused(e) | RetryError::Spent { last: Some(e), .. } => {
                    etcd_error(op, self.user.as_deref(), e)
                }
                RetryError::Spent { last: None, .. } => Error::Timeout {
                    op,
                    after: self.request_timeout,
                },
            })
    }
}

/// The error of a failed connect: what etcd said, or that no endpoint answered in time.
fn connect_error(e: RetryError, user: Option<&str>, dial: Duration) -> Error {
    match e {
        RetryError::Refused(e) => etcd_error("connect", user, e),
        RetryError::Spent {
            last: Some(e),
            attempts,
        } => Error::Unreachable {
            after: dial,
            attempts,
            source: Box::new(e),
        },
        RetryError::Spent { last: None, .. } => Error::Timeout {
            op: "connect",
            after: dial,
        },
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, Error> {
        // A grant retried after a lost answer may leave an unused lease behind; it has no
        // key and expires with its TTL.
        let resp = self
            .request("grant", || {
                let mut c = self.client.clone();
                async move { c.lease_grant(ttl_secs(ttl), None).await }
            })
            .await?;
        Ok(resp.id())
    }

    async fn put(&self, key: &[u8], value: &[u8], lease: LeaseId) -> Result<i64, Error> {
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let resp = self
            .request("put", || {
                let mut c = self.client.clone();
                let options = options.clone();
                async move { c.put(key, value, options).await }
            })
            .await
            .map_err(|e| match e {
                Error::Etcd { source, .. } if source_is_not_found(&*source) => {
                    Error::LeaseNotFound { lease }
                }
                e => e,
            })?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), Error> {
        let result = self
            .request("revoke", || {
                let mut c = self.client.clone();
                async move { c.lease_revoke(lease).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already expired or revoked: the key is gone either way.
            Err(Error::Etcd { source, .. }) if source_is_not_found(&*source) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn keepalive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>, Error> {
        let (keeper, stream) = self
            .request("keepalive", || {
                let mut c = self.client.clone();
                async move { c.lease_keep_alive(lease).await }
            })
            .await
            .map_err(|e| match e {
                Error::Etcd { source, .. } if source_is_lease_gone(&*source) => {
                    Error::LeaseNotFound { lease }
                }
                e => e,
            })?;
        Ok(Box::new(EtcdKeepAlive { keeper, stream }))
    }

    async fn get_prefix(&self, prefix: &[u8]) -> Result<Listing, Error> {
        let mut resp = self
            .request("get", || {
                let mut c = self.kv.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .take_kvs()
            .into_iter()
            .map(|kv| {
                let (lease, mod_revision) = (kv.lease(), kv.mod_revision());
                let (key, value) = kv.into_key_value();
                KeyValue {
                    key,
                    value,
                    lease,
                    mod_revision,
                }
            })
            .collect();
        Ok(Listing { kvs, revision })
    }

    async fn txn(&self, txn: &Txn) -> Result<Committed, Error> {
        let ops: Vec<EtcdTxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => EtcdTxnOp::put(key.as_str(), value.clone(), None),
                TxnOp::Delete { key } => EtcdTxnOp::delete(key.as_str(), None),
                TxnOp::DeletePrefix { prefix } => {
                    EtcdTxnOp::delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
                }
            })
            .collect();
        let mut request = EtcdTxn::new();
        if let Some((prefix, revision)) = &txn.unchanged_since {
            // Every key in the range must have been modified before `revision + 1`; an
            // empty range passes (etcd compares it as one key at revision 0).
            request = request.when([Compare::mod_revision(
                prefix.as_str(),
                CompareOp::Less,
                revision.saturating_add(1),
            )
            .with_prefix()]);
        }
        let request = request.and_then(ops);
        // A retry after a lost answer applies the same writes again (idempotent); a
        // conditional one may then see its own first write and report a conflict.
        let resp = self
            .request("txn", || {
                let mut c = self.kv.clone();
                let request = request.clone();
                async move { c.txn(request).await }
            })
            .await?;
        Ok(Committed {
            applied: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<i64>, Error> {
        let resp = self
            .request("lease ttl", || {
                let mut c = self.client.clone();
                async move {
                    c.lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new()))
                        .await
                }
            })
            .await;
        match resp {
            // etcd answers TTL -1 for a lease that expired or never existed.
            Ok(r) if r.ttl() < 0 => Ok(None),
            Ok(r) => Ok(Some(r.ttl())),
            Err(Error::Etcd { source, .. }) if source_is_not_found(&*source) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn watch(
        &self,
        key: &[u8],
        range: Range,
        start_revision: i64,
    ) -> Result<Box<dyn WatchStream>, Error> {
        let mut options = WatchOptions::new();
        if range == Range::Prefix {
            options = options.with_prefix();
        }
        if start_revision > 0 {
            options = options.with_start_revision(start_revision);
        }
        let stream = self
            .request("watch", || {
                let mut c = self.watcher.clone();
                let options = options.clone();
                async move { c.watch(key, Some(options)).await }
            })
            .await?;
        Ok(Box::new(EtcdWatch {
            stream,
            client: self.user.is_some().then(|| self.client.clone()),
        }))
    }
}

/// The etcd-client error inside a registry error's source, if that is what it is.
fn as_etcd<'a>(
    source: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> Option<&'a etcd_client::Error> {
    source.downcast_ref::<etcd_client::Error>()
}

fn source_is_not_found(source: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    as_etcd(source).is_some_and(is_not_found)
}

fn source_is_lease_gone(source: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    as_etcd(source).is_some_and(|e: &etcd_client::Error| {
        // etcd-client's answer when the first keepalive reports TTL 0: the lease is gone.
        matches!(e, etcd_client::Error::LeaseKeepAliveError(m) if m == "lease not found")
            || is_not_found(e)
    })
}

struct EtcdKeepAlive {
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
}

impl fmt::Debug for EtcdKeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdKeepAlive")
            .field("lease", &self.keeper.id())
            .finish()
    }
}

fn stream_error(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
    move |e| Error::Etcd {
        op,
        source: Box::new(e),
    }
}

#[async_trait]
impl KeepAlive for EtcdKeepAlive {
    async fn keep_alive(&mut self) -> Result<i64, Error> {
        self.keeper
            .keep_alive()
            .await
            .map_err(stream_error("keepalive"))?;
        match self
            .stream
            .message()
            .await
            .map_err(stream_error("keepalive"))?
        {
            Some(resp) => Ok(resp.ttl()),
            None => Err(Error::Etcd {
                op: "keepalive",
                source: "the keepalive stream ended".into(),
            }),
        }
    }
}

struct EtcdWatch {
    stream: EtcdWatchStream,
    /// The client to re-authenticate with when etcd cancels the watch for its token (only
    /// with credentials).
    client: Option<Client>,
}

impl fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdWatch").finish_non_exhaustive()
    }
}

#[async_trait]
impl WatchStream for EtcdWatch {
    async fn next(&mut self) -> Result<WatchMessage, Error> {
        loop {
            let Some(resp) = self.stream.message().await.map_err(stream_error("watch"))? else {
                return Err(Error::Etcd {
                    op: "watch",
                    source: "the watch stream ended".into(),
                });
            };
            if resp.compact_revision() > 0 {
                return Ok(WatchMessage::Compacted {
                    compact_revision: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                let reason = resp.cancel_reason().to_owned();
                // etcd checks a watch's token when the watch is created and cancels it with
                // "permission denied" when the token has expired; a fresh token lets the
                // watch that follows the re-list succeed.
                if let Some(client) = &self.client {
                    if reason.contains("permission denied") {
                        if let Err(error) = client.refresh_token().await {
                            tracing::warn!(error = %error, "re-authenticating with etcd failed");
                        }
                    }
                }
                return Ok(WatchMessage::Cancelled { reason });
            }
            let events: Vec<WatchEvent> = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let (key, revision) = (kv.key().to_vec(), kv.mod_revision());
                    Some(match e.event_type() {
                        EventType::Put => WatchEvent::Put {
                            key,
                            value: kv.value().to_vec(),
                            revision,
                        },
                        EventType::Delete => WatchEvent::Delete { key, revision },
                    })
                })
                .collect();
            if !events.is_empty() {
                return Ok(WatchMessage::Events(events));
            }
            // Created or progress notifications carry no events.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn keepalive_of_a_revoked_lease_is_lease_not_found() {
        let etcd = svckit_testing::Etcd::start();
        let options = EtcdOptions::new([etcd.endpoint()]);
        let store = EtcdStore::connect(&options, "/services").await.unwrap();
        let lease = store.grant(Duration::from_secs(10)).await.unwrap();
        store.keepalive(lease).await.unwrap();
        store.revoke(lease).await.unwrap();
        match store.keepalive(lease).await {
            Err(Error::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
            Err(other) => panic!("expected LeaseNotFound, got {other}"),
            Ok(_) => panic!("a revoked lease cannot be kept alive"),
        }
    }
}
