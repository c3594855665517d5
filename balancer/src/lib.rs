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
//!
//! # Metrics and traces
//!
//! Endpoints built by [`EndpointBuilder`] record through the [`metrics`](https://docs.rs/metrics)
//! facade (the application installs the exporter, before building its Endpoints: each one
//! takes its handles from the recorder installed when it is built). Labels are bounded: the
//! service name and a fixed outcome, never an address, key or path.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `svckit_endpoint_requests_total` | counter, once per `invoke` | `service`, `outcome` |
//! | `svckit_endpoint_request_duration_seconds` | histogram, per `invoke`, retries included | `service` |
//! | `svckit_endpoint_retries_total` | counter, attempts after the first | `service` |
//! | `svckit_endpoint_ejections_total` | counter, instances ejected after a failed connect | `service` |
//! | `svckit_endpoint_in_flight` | gauge, calls under way | `service` |
//!
//! `outcome` is one of `ok`; `status` (the instance answered a 5xx, whatever decode made of
//! it); `no_instances`, `timeout`, `transport`, `body_too_large`, `decode`, `encode` (the
//! [`Error`] of the call, the last attempt's for [`Error::RetriesExhausted`]); `cancelled`
//! (the caller dropped the call).
//!
//! Each call runs in an `invoke` span (INFO; fields `service`, `picker`, `outcome`) and each
//! attempt in an `attempt` span inside it (INFO; fields `attempt`, the number from 1,
//! `instance`, the address, and `outcome`: `ok`, `status`, `timeout`, `transport` or
//! `body_too_large`, none when the call was dropped meanwhile). Without a subscriber that
//! wants them they cost a check of a cached flag.
//! With the `otel` feature every request of [`HttpClient`] carries the current span's W3C
//! `traceparent` (an Endpoint's: its `attempt` span), so the callee's span becomes its child.
//!
//! [`endpoint_stats`] lists the live Endpoints with their counters ([`EndpointStats`]: calls,
//! failures, retries, ejections, in flight) for a status page; [`Endpoint::stats`] gives
//! one Endpoint's.

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
