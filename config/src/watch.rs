//! [`ConfigWatch`]: a typed value built from the keys under an etcd prefix, always the last
//! good one.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::de::DeserializeOwned;
use svckit_registry::{DiscoveryState, KeySnapshot, Keyspace, PrefixWatch};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Error, Rejected};
use crate::tree;

/// How long [`ConfigWatchBuilder::start`] waits for the first listing by default.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A value and the etcd revision of the keys it was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    value: T,
    revision: i64,
}

impl<T> Versioned<T> {
    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The etcd revision of the keys it was built from.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

impl<T> Deref for Versioned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

type Validate<T> = Arc<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

/// Builds a [`ConfigWatch`]; see [`ConfigWatch::builder`].
#[must_use]
pub struct ConfigWatchBuilder<T> {
    keyspace: Keyspace,
    prefix: String,
    validate: Option<Validate<T>>,
    default: Option<T>,
    startup_timeout: Duration,
}

impl<T> fmt::Debug for ConfigWatchBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigWatchBuilder")
            .field("prefix", &self.prefix)
            .field("validate", &self.validate.is_some())
            .field("default", &self.default.is_some())
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

impl<T> ConfigWatchBuilder<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// A check every new value must pass besides deserializing (a range, a relation between
    /// fields). A value that fails it is refused like one that does not deserialize.
    /// Default: none.
    pub fn validate<E: fmt::Display>(
        mut self,
        check: impl Fn(&T) -> Result<(), E> + Send + Sync + 'static,
    ) -> Self {
        self.validate = Some(Arc::new(move |value| {
            check(value).map_err(|e| e.to_string())
        }));
        self
    }

    /// The value to start with when the keys at start are missing or invalid (it is logged
    /// and readable from [`ConfigWatch::last_rejected`]). Default: none, and
    /// [`start`](Self::start) fails instead.
    pub fn default_value(mut self, value: T) -> Self {
        self.default = Some(value);
        self
    }

    /// How long [`start`](Self::start) waits for the first listing from etcd. Default:
    /// [`DEFAULT_STARTUP_TIMEOUT`] (10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Lists the prefix, builds the first value and follows the prefix from then on.
    ///
    /// # Errors
    /// [`Error::Rejected`] when the keys at start do not make a valid value and no default
    /// was given; [`Error::Unavailable`] when etcd did not list the prefix within the
    /// startup timeout; [`Error::Registry`] for an invalid prefix.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn start(self) -> Result<ConfigWatch<T>, Error> {
        let prefix = self.prefix;
        let mut source = self
            .keyspace
            .watch(&prefix)
            .map_err(|source| Error::Registry {
                prefix: prefix.clone(),
                op: "watch",
                source,
            })?;
        let mut first = source.mark_seen();
        if first.revision() == 0 {
            first = tokio::time::timeout(self.startup_timeout, source.changed())
                .await
                .map_err(|_| Error::Unavailable {
                    prefix: prefix.clone(),
                    after: self.startup_timeout,
                })?
                .map_err(|_| Error::Closed {
                    prefix: prefix.clone(),
                })?;
        }
        let validate = self.validate;
        let (value, rejected) = match build(&first, None, &prefix, validate.as_ref()) {
            Ok(value) => (value, None),
            Err(rejected) => match self.default {
                Some(value) => {
                    tracing::warn!(prefix = %prefix, error = %rejected, "starting with the default config");
                    (value, Some(Arc::new(rejected)))
                }
                None => return Err(rejected.into()),
            },
        };
        let revision = first.revision();
        // The snapshot the value was built from; none when it is the default.
        let last_good = rejected.is_none().then(|| first.clone());
        let shared = Arc::new(Shared {
            prefix,
            current: ArcSwap::from_pointee(Versioned { value, revision }),
            notify: watch::Sender::new(revision),
            rejected: AtomicU64::new(u64::from(rejected.is_some())),
            last_rejected: ArcSwapOption::new(rejected),
            source: source.clone(),
        });
        let cancel = CancellationToken::new();
        let span = tracing::info_span!("config_watch", prefix = %shared.prefix);
        let handle = tokio::spawn(tracing::Instrument::instrument(
            follow(shared.clone(), source, last_good, validate, cancel.clone()),
            span,
        ));
        Ok(ConfigWatch {
            seen: shared.notify.subscribe(),
            shared,
            _owner: Arc::new(Owner {
                _cancel: cancel.drop_guard(),
                _task: handle,
            }),
        })
    }
}

/// The value of the keys under an etcd prefix as a `T`, kept current: every change in etcd
/// (one revision at a time, never half a transaction) that deserializes and passes the
/// validation becomes the new value; one that does not is refused, logged, counted, and the
/// last good value stays. Reading is lock-free. Clones share the watch; it stops when the
/// last clone is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use serde::Deserialize;
/// use svckit_config::ConfigWatch;
/// use svckit_registry::{MemoryRegistry, Registry};
///
/// #[derive(Deserialize)]
/// struct Product { greeting: String, price_factor: f64 }
///
/// let registry = MemoryRegistry::new();
/// let mut config = ConfigWatch::<Product>::builder(&registry.keyspace(), "/config/product/")
///     .validate(|p: &Product| if p.price_factor > 0.0 { Ok(()) } else { Err("price_factor must be > 0") })
///     .start()
///     .await?;
/// println!("{} (revision {})", config.get().greeting, config.get().revision());
/// let next = config.changed().await?;
/// # drop(next);
/// # Ok(()) }
/// ```
pub struct ConfigWatch<T> {
    shared: Arc<Shared<T>>,
    seen: watch::Receiver<i64>,
    _owner: Arc<Owner>,
}

/// The follower task of a watch: cancelled when the last clone drops it.
struct Owner {
    _cancel: DropGuard,
    _task: tokio::task::JoinHandle<()>,
}

impl<T> Clone for ConfigWatch<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            seen: self.seen.clone(),
            _owner: self._owner.clone(),
        }
    }
}

impl<T> fmt::Debug for ConfigWatch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("prefix", &self.shared.prefix)
            .field("revision", &self.shared.current.load().revision)
            .field("rejected", &self.rejected_count())
            .finish()
    }
}

struct Shared<T> {
    prefix: String,
    current: ArcSwap<Versioned<T>>,
    /// The revision of `current`, for `changed`.
    notify: watch::Sender<i64>,
    rejected: AtomicU64,
    last_rejected: ArcSwapOption<Rejected>,
    source: PrefixWatch,
}

impl<T> ConfigWatch<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// A watch of the keys under `prefix` (a `/` is added when missing) of `keyspace`, to
    /// configure and [`start`](ConfigWatchBuilder::start).
    pub fn builder(keyspace: &Keyspace, prefix: &str) -> ConfigWatchBuilder<T> {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        ConfigWatchBuilder {
            keyspace: keyspace.clone(),
            prefix,
            validate: None,
            default: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }

    /// [`builder`](Self::builder) without validation or default, started.
    ///
    /// # Errors
    /// As [`ConfigWatchBuilder::start`].
    pub async fn start(keyspace: &Keyspace, prefix: &str) -> Result<Self, Error> {
        Self::builder(keyspace, prefix).start().await
    }
}

impl<T> ConfigWatch<T> {
    /// The current value: lock-free, one reference count.
    pub fn get(&self) -> Arc<Versioned<T>> {
        self.shared.current.load_full()
    }

    /// Waits for a value newer than the last one this handle returned from `changed` (or
    /// than the one current when it was created or cloned), and returns the newest.
    ///
    /// # Errors
    /// [`Error::Closed`] when the watch stopped.
    pub async fn changed(&mut self) -> Result<Arc<Versioned<T>>, Error> {
        self.seen.changed().await.map_err(|_| Error::Closed {
            prefix: self.shared.prefix.clone(),
        })?;
        self.seen.borrow_and_update();
        Ok(self.get())
    }

    /// The watched prefix (ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The last refused update (key, revision and reason), if any.
    pub fn last_rejected(&self) -> Option<Arc<Rejected>> {
        self.shared.last_rejected.load_full()
    }

    /// How many updates were refused so far.
    pub fn rejected_count(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Where the underlying watch stands with etcd; the value stays the last good one while
    /// it is `Reconnecting`.
    pub fn state(&self) -> DiscoveryState {
        self.shared.source.state()
    }
}

/// Builds and checks a value from `snapshot`. A failed validation names the keys that differ
/// from `last_good` (the snapshot of the current value), when there is one.
fn build<T: DeserializeOwned>(
    snapshot: &KeySnapshot,
    last_good: Option<&KeySnapshot>,
    prefix: &str,
    validate: Option<&Validate<T>>,
) -> Result<T, Rejected> {
    let rejected = |key, reason| Rejected {
        prefix: prefix.to_owned(),
        revision: snapshot.revision(),
        key,
        reason,
    };
    let value =
        tree::from_snapshot::<T>(snapshot, prefix).map_err(|r| rejected(r.key, r.reason))?;
    if let Some(check) = validate {
        check(&value).map_err(|reason| {
            let changed = last_good.map(|old| changed_keys(old, snapshot, prefix));
            rejected(changed.filter(|k| !k.is_empty()), reason)
        })?;
    }
    Ok(value)
}

/// The keys under `prefix` that differ between `old` and `new`, comma-separated.
fn changed_keys(old: &KeySnapshot, new: &KeySnapshot, prefix: &str) -> String {
    let mut keys: Vec<&str> = new
        .iter()
        .filter(|(k, v)| k.starts_with(prefix) && old.get(k) != Some(*v))
        .map(|(k, _)| k)
        .chain(
            old.iter()
                .filter(|(k, _)| k.starts_with(prefix) && new.get(k).is_none())
                .map(|(k, _)| k),
        )
        .collect();
    keys.sort_unstable();
    keys.join(", ")
}

/// Applies every new snapshot of the prefix until cancelled.
async fn follow<T: DeserializeOwned>(
    shared: Arc<Shared<T>>,
    mut source: PrefixWatch,
    mut last_good: Option<KeySnapshot>,
    validate: Option<Validate<T>>,
    cancel: CancellationToken,
) {
    loop {
        let snapshot = tokio::select! {
            () = cancel.cancelled() => return,
            next = source.changed() => match next {
                Ok(snapshot) => snapshot,
                Err(_) => return,
            },
        };
        if snapshot.revision() <= shared.current.load().revision {
            continue;
        }
        match build(
            &snapshot,
            last_good.as_ref(),
            &shared.prefix,
            validate.as_ref(),
        ) {
            Ok(value) => {
                let revision = snapshot.revision();
                shared
                    .current
                    .store(Arc::new(Versioned { value, revision }));
                shared.notify.send_replace(revision);
                last_good = Some(snapshot);
                tracing::debug!(revision, "config updated");
            }
            Err(rejected) => {
                tracing::warn!(
                    revision = rejected.revision,
                    key = rejected.key.as_deref().unwrap_or(""),
                    reason = %rejected.reason,
                    "config update refused; keeping the last good value"
                );
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                shared.last_rejected.store(Some(Arc::new(rejected)));
            }
        }
    }
}
