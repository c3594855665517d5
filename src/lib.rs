//! svckit: services register themselves in etcd, clients find them by name and call them
//! through go-kit style Endpoints with client-side load balancing, and a groupcache-compatible
//! distributed cache runs as one of those services.
//!
//! This facade re-exports the member crates:
//!
//! - [`registry`]: instances in etcd, leases kept alive, discovery, the tower layer and
//!   graceful shutdown.
//! - [`balancer`]: Endpoints, pickers (random, round robin, consistent hash, power of two
//!   choices), retry and the HTTP transport.
//! - [`cache`]: the groupcache-style distributed cache.
//! - [`config`]: live typed config from etcd, and a confd-compatible renderer of files.
//!
//! and adds [`status`]: the `/_svckit/status` page of a process.
//!
//! The README's tour, compiled here so it stays true:
//!
//! ```no_run
//! use std::time::{Duration, SystemTime};
//! use axum::{routing::get, Router};
//! use bytes::Bytes;
//! use svckit::balancer::{HttpClient, Picker, RetryPolicy};
//! use svckit::cache::{getter_fn, BoxError, Cache};
//! use svckit::registry::{EtcdOptions, EtcdRegistry, Lifecycle, Registry};
//! # async fn tour() -> Result<(), Box<dyn std::error::Error>> {
//!
//! // 1. Serve an axum app, registered in etcd as `productservice` once the listener is bound.
//! //    SIGINT/SIGTERM: deregister first, keep serving what is in flight, drain (30 s grace).
//! let registry = EtcdRegistry::connect(EtcdOptions::new(["127.0.0.1:2379"])).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! let lifecycle = Lifecycle::register(&registry, "productservice", listener.local_addr()?).await?;
//! let app = Router::new().route("/prod/{id}", get(|| async { "a product" })).layer(lifecycle.layer());
//! lifecycle.drain(axum::serve(listener, app).with_graceful_shutdown(lifecycle.shutdown_signal())).await??;
//!
//! // 2. Call it by name: encode, pick, send over a pooled client, decode, retry when safe.
//! let get_product = HttpClient::new()
//!     .endpoint(&registry.discovery(), "productservice",
//!         |id: u64| http::Request::get(format!("/prod/{id}")).body(Bytes::new()),
//!         |resp: http::Response<Bytes>| String::from_utf8(resp.into_body().to_vec()))
//!     .picker(Picker::by_name("hash")?)              // random | round_robin | hash | p2c
//!     .hash_key(|id: &u64| id.to_be_bytes())
//!     .retry(RetryPolicy::new(3, Duration::from_secs(5)))
//!     .build()?;
//! let product: String = get_product.invoke(42).await?;
//!
//! // 3. A cache node: one group, peers from discovery, golang/groupcache's protocol on /_groupcache/.
//! let cache = Cache::builder("http://127.0.0.1:9101").build()?;
//! let group = cache.new_group("thumbnails", 64 << 20, getter_fn(|key: String| async move {
//!     Ok::<_, BoxError>(Bytes::from(format!("value of {key}")))  // called once per key across the cluster
//! })).build()?;
//! let _peers = cache.follow(&registry.discovery(), "groupcache")?;  // the ring follows etcd
//! let app = cache.router();                                         // mount beside your routes
//! let value = group.get("some-key").await?;
//!
//! // 4. Writes (mailgun/groupcache's wire): set on the key's owner with an expiry, remove
//! //    everywhere, flush the group on every node through a generation in etcd.
//! group.set("some-key", Bytes::from("new"), Some(SystemTime::now() + Duration::from_secs(60)), false).await?;
//! let removed = group.remove("some-key").await?;                 // removed.failed(): peers that missed it
//! let _flushes = cache.follow_flushes(&registry.keyspace())?;     // this node drops the group on a flush
//! group.flush(&registry.keyspace()).await?;                      // or: svckit cache flush thumbnails
//! # Ok(()) }
//! ```

pub mod status;

pub use svckit_balancer as balancer;
pub use svckit_cache as cache;
pub use svckit_config as config;
pub use svckit_registry as registry;
