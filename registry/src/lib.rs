//! Service instances in etcd: register with a supervised lease, discover through one shared
//! watch, and shut down gracefully behind a tower layer.
//!
//! Layout (fixed, other languages read it): one key per instance, `<prefix>/<id>/<name>`
//! (prefix default `/services`, id and name `[A-Za-z0-9_]+`), the value its `host:port`,
//! attached to a lease (default TTL 10 s).
//!
//! - [`EtcdRegistry`] (real) and [`MemoryRegistry`] (in process, same semantics) implement
//!   [`Registry`]: [`register`](Registry::register) returns a [`Registration`] that keeps the
//!   lease alive and re-registers when it is lost; [`discovery`](Registry::discovery) returns
//!   the shared [`Discovery`] view (snapshot, [`ServiceWatch`], tower `Discover`).
//! - [`Lifecycle`] registers a server once its listener is bound, counts requests in flight
//!   with [`InFlightLayer`], and on SIGINT/SIGTERM deregisters first, then lets the server
//!   drain within a grace timeout. [`Lifecycle::serve`] is the server to use (HTTP/1 + HTTP/2,
//!   slow and idle clients bounded by [`ServeOptions`], idle connections closed at once on
//!   shutdown); [`Lifecycle::drain`] wraps any other server future.
//!
//! A server, in three lines after binding:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{routing::get, Router};
//! use svckit_registry::{EtcdOptions, EtcdRegistry, Lifecycle};
//!
//! let registry = EtcdRegistry::connect(EtcdOptions::new(["127.0.0.1:2379"])).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!
//! let lifecycle = Lifecycle::register(&registry, "productservice", listener.local_addr()?).await?;
//! let app = Router::new().route("/", get(|| async { "ok" }));
//! lifecycle.serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! A client:
//!
//! ```no_run
//! # async fn demo() -> Result<(), svckit_registry::Error> {
//! use svckit_registry::{EtcdOptions, EtcdRegistry, Registry};
//!
//! let registry = EtcdRegistry::connect(EtcdOptions::new(["127.0.0.1:2379"])).await?;
//! let mut products = registry.discovery().watch("productservice")?;
//! println!("now: {:?}", products.snapshot());
//! let next = products.changed().await?;
//! # drop(next);
//! # Ok(()) }
//! ```
//!
//! # Metrics and traces
//!
//! The crate records through the [`metrics`](https://docs.rs/metrics) facade; the application
//! installs the recorder (`metrics-exporter-prometheus`, say) and may call
//! [`describe_metrics`] for help texts. Labels are bounded: service names, route templates,
//! status classes, never an id, key or path.
//!
//! | family | type | labels | moves when |
//! |---|---|---|---|
//! | `svckit_registry_registered` | gauge | `service` | a [`Registration`] starts (+1) and is deregistered or dropped (−1) |
//! | `svckit_registry_lease_keepalive_failures_total` | counter | `service` | a keepalive (or opening its stream) fails |
//! | `svckit_registry_reregistrations_total` | counter | `service` | a registration is put again after its lease was lost |
//! | `svckit_discovery_instances` | gauge | `service` | the instances discovery sees of a service change (0 once none is left) |
//! | `svckit_discovery_resyncs_total` | counter | `reason` | the discovery watch starts over: `compaction`, `reconnect` (broken or cancelled), `reconcile` (the periodic re-list) |
//! | `svckit_discovery_malformed_keys_total` | counter | | an entry under the prefix does not fit the layout (each time it is read) |
//! | `svckit_http_server_requests_total` | counter | `service`, `route`, `status` | [`Lifecycle::serve`] finished a response; `status` is the class, `1xx` to `5xx` |
//! | `svckit_http_server_request_duration_seconds` | histogram | `service`, `route` | the same, from the request's head to the end of its response body |
//! | `svckit_http_server_in_flight` | gauge | `service` | a request arrives (+1) and its response body is done or dropped (−1) |
//! | `svckit_http_server_drain_duration_seconds` | gauge | `service` | while a drain runs ([`Lifecycle::serve`], [`Lifecycle::drain`]), every 250 ms: how long it has been draining; at its end, how long it took |
//!
//! `route` is the template of the axum route that answered (`/prod/{id}`) when the router is
//! wrapped in [`RouteLayer`], `unmatched` when no route matched, and `other` without the layer.
//!
//! Spans (`tracing`): `registration` (`service`, `id`, `addr`) around a registration's first
//! put and its lease supervisor, whose events say `registered`, `keepalive failed` (`lease`,
//! `error`) and `re-registered`; `discovery_watch` (`prefix`), whose resync events carry
//! `reason`; `http.server` (`service`, `method`, then `route` and `status`) around each request
//! [`Lifecycle::serve`] serves. With the `otel` feature, that span continues the trace of an
//! incoming `traceparent` (see [`trace`]), so the handler's outgoing calls join it.

mod backoff;
mod config;
mod discover;
mod error;
mod etcd;
mod follow;
mod instance;
mod instances;
mod keyspace;
mod layer;
mod lease;
mod lifecycle;
mod memory;
mod registry;
mod route;
mod serve;
mod store;
mod task;
mod telemetry;
pub mod trace;
mod tracked;
mod txn;

pub use discover::{Discovery, DiscoveryStats, ServiceDiscover, ServiceWatch};
pub use error::{Error, MalformedEntry};
pub use etcd::{EtcdOptions, EtcdRegistry};
pub use follow::DiscoveryState;
pub use instance::{validate_name, Instance, DEFAULT_PREFIX};
pub use instances::{InstanceChange, Instances, Iter};
pub use keyspace::{KeyEntry, KeySnapshot, Keyspace, PrefixWatch};
pub use layer::{InFlight, InFlightCounter, InFlightFuture, InFlightLayer};
pub use lease::{Registration, RegistrationState};
pub use lifecycle::{Lifecycle, LifecycleBuilder, ShutdownSignal, DEFAULT_GRACE};
pub use memory::{MemoryRegistry, DEFAULT_MEMORY_TTL};
pub use registry::Registry;
pub use route::{Route, RouteFuture, RouteLayer, RouteService};
pub use serve::ServeOptions;
pub use telemetry::describe_metrics;
pub use txn::Txn;
