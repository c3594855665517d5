//! go-kit style Endpoints over instances discovered by `svckit-registry`: pickers (random,
//! round robin, consistent hash, power of two choices), retry, and an HTTP transport.
//!
//! An [`Endpoint`] is an async function from request to response (a cloneable tower
//! `Service`). [`HttpClient::endpoint`] builds one for a service name: each call encodes the
//! request, takes the current instances from the registry's shared view (no etcd round trip),
//! picks one, sends over one pooled hyper client, and decodes the answer.
//!
//! - [`HttpClient`] is svckit's one HTTP transport (pooled hyper-util client, connect timeout,
//!   bounded body, typed [`TransportError`]); the cache's peer client and the examples use it
//!   too, through [`HttpClient::send`] and [`HttpClient::get`].
//! - A picker is any [`Pick`]: the built-in [`Random`], [`RoundRobin`], [`ConsistentHash`]
//!   and [`P2c`], [`Picker`] to choose one of them by name, or your own.
//! - [`RetryPolicy`] says when a call is tried again on another instance.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use svckit_balancer::{HttpClient, Picker, RetryPolicy};
//! use svckit_registry::{Discovery, Instance};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let discovery = Discovery::from_static([Instance::new("a1", "products", "127.0.0.1:8080")?]);
//! let client = HttpClient::new();
//! let get_product = client
//!     .endpoint(
//!         &discovery,
//!         "products",
//!         |id: u64| http::Request::get(format!("/products/{id}")).body(Bytes::new()),
//!         |resp: http::Response<Bytes>| String::from_utf8(resp.into_body().to_vec()),
//!     )
//!     .picker(Picker::by_name("hash")?)
//!     .hash_key(|id: &u64| id.to_be_bytes())
//!     .timeout(Duration::from_secs(2))
//!     .retry(RetryPolicy::new(3, Duration::from_secs(5)))
//!     .build()?;
//! let name: String = get_product.invoke(42).await?;
//! # Ok(()) }
//! ```

mod attempts;
mod balance;
mod builder;
mod call;
mod consistent_hash;
mod endpoint;
mod error;
mod p2c;
mod pick;
mod picker;
mod random;
mod retry;
mod ring;
mod round_robin;
mod slot;
mod stats;
mod telemetry;
mod transport;

pub use builder::{EndpointBuilder, DEFAULT_EJECTION};
pub use consistent_hash::{ConsistentHash, RingState, DEFAULT_COALESCE};
pub use endpoint::{chain, Chain, Endpoint, Middleware};
pub use error::{Attempt, BoxError, Error, TransportError};
pub use p2c::P2c;
pub use pick::{Candidates, Pick, SetChange};
pub use picker::Picker;
pub use random::Random;
pub use retry::{is_idempotent, is_safe_to_retry, Failure, Predicate, RetryPolicy};
pub use ring::{xxh3, HashFn, Ring, DEFAULT_VNODES, MAX_VNODES};
pub use round_robin::RoundRobin;
pub use stats::{endpoint_stats, EndpointStats};
pub use transport::{
    HttpClient, HttpClientBuilder, Limits, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BODY,
    DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_TIMEOUT,
};
