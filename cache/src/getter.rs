//! What fills a group on a miss: the [`Getter`] trait, its closures ([`getter_fn`],
//! [`loader_fn`]) and what a load yields, [`Loaded`] (a value and when it expires).

use std::future::Future;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::clock::{self, Expire, NEVER};
use crate::error::BoxError;

/// A value and when it expires: what a [`Getter::load`] returns and a peer sends.
///
/// An expired value is never returned by a get: the next get loads it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    value: Bytes,
    expire: Expire,
}

impl Loaded {
    /// A value that does not expire.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self {
            value: value.into(),
            expire: NEVER,
        }
    }

    /// Expires at `at` (a wall-clock time: peers keep their copies until the same instant).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expire = clock::to_nanos(at);
        self
    }

    /// Expires `ttl` from now.
    pub fn expires_in(self, ttl: Duration) -> Self {
        self.expires_at(clock::now() + ttl)
    }

    /// The value.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// When it expires; `None` for never.
    pub fn expire(&self) -> Option<SystemTime> {
        clock::from_nanos(self.expire)
    }

    /// The value, without its expiry.
    pub fn into_value(self) -> Bytes {
        self.value
    }

    pub(crate) fn from_parts(value: Bytes, expire: Expire) -> Self {
        Self { value, expire }
    }

    pub(crate) fn expire_nanos(&self) -> Expire {
        self.expire
    }

    pub(crate) fn is_expired(&self) -> bool {
        clock::expired(self.expire, clock::now_nanos())
    }
}

impl From<Bytes> for Loaded {
    fn from(value: Bytes) -> Self {
        Self::new(value)
    }
}

/// Loads the value of a key on a miss (golang/groupcache's `Getter`).
///
/// Called at most once at a time per key on a node (singleflight), in a task owned by the
/// load rather than by any one caller. An error goes to every caller waiting for the key and
/// is not cached.
///
/// A getter whose values expire implements [`load`](Self::load) too (or is made by
/// [`loader_fn`]); the group calls `load`, which by default calls `get` and never expires.
#[async_trait]
pub trait Getter: Send + Sync + 'static {
    /// The value of `key`.
    async fn get(&self, key: &str) -> Result<Bytes, BoxError>;

    /// The value of `key` and when it expires. Default: [`get`](Self::get)'s value, never
    /// expiring.
    async fn load(&self, key: &str) -> Result<Loaded, BoxError> {
        self.get(key).await.map(Loaded::new)
    }
}

/// A [`Getter`] from an async closure; see [`getter_fn`].
#[derive(Clone)]
pub struct GetterFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for GetterFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetterFn").finish_non_exhaustive()
    }
}

/// A [`Getter`] calling `f(key)`.
///
/// ```
/// use bytes::Bytes;
/// let getter = svckit_cache::getter_fn(|key: String| async move {
///     Ok::<_, svckit_cache::BoxError>(Bytes::from(key.to_uppercase()))
/// });
/// # let _ = getter;
/// ```
pub fn getter_fn<F, Fut>(f: F) -> GetterFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, BoxError>> + Send + 'static,
{
    GetterFn { f }
}

#[async_trait]
impl<F, Fut> Getter for GetterFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, BoxError>> + Send + 'static,
{
    async fn get(&self, key: &str) -> Result<Bytes, BoxError> {
        (self.f)(key.to_owned()).await
    }
}

/// A [`Getter`] whose values may expire, from an async closure; see [`loader_fn`].
#[derive(Clone)]
pub struct LoaderFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for LoaderFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderFn").finish_non_exhaustive()
    }
}

/// A [`Getter`] calling `f(key)` for a value and its expiry.
///
/// ```
/// use std::time::Duration;
/// use svckit_cache::{loader_fn, BoxError, Loaded};
/// let getter = loader_fn(|key: String| async move {
///     Ok::<_, BoxError>(Loaded::new(key.into_bytes()).expires_in(Duration::from_secs(60)))
/// });
/// # let _ = getter;
/// ```
pub fn loader_fn<F, Fut>(f: F) -> LoaderFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Loaded, BoxError>> + Send + 'static,
{
    LoaderFn { f }
}

#[async_trait]
impl<F, Fut> Getter for LoaderFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Loaded, BoxError>> + Send + 'static,
{
    async fn get(&self, key: &str) -> Result<Bytes, BoxError> {
        self.load(key).await.map(Loaded::into_value)
    }

    async fn load(&self, key: &str) -> Result<Loaded, BoxError> {
        (self.f)(key.to_owned()).await
    }
}
