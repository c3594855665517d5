//! A groupcache-compatible distributed cache whose peers come from svckit-registry.
//!
//! - A [`Group`] is a named cache of immutable values with a byte budget, filled by a
//!   [`Getter`] on a miss; [`Group::get`] returns a value, [`Group::get_with`] lends it.
//!   Concurrent misses of one key cause one load (singleflight), also when the caller that
//!   started it is cancelled; errors are not cached.
//! - The budget counts what an entry costs in memory: its key, its value and about 200
//!   bytes of index, LRU and allocator overhead ([`CacheStats::bytes`]), so a group of N
//!   bytes grows the process by about N bytes.
//! - Each key has one owner among the peers, chosen on golang/groupcache's consistent-hash
//!   [`GroupcacheRing`] (crc32 IEEE, 50 points per peer). A node fetches keys it does not own from
//!   their owner and keeps popular ones in a hot cache (at most 1/8 of the budget).
//! - Peers speak golang/groupcache's HTTP protocol ([`Cache::router`]), so Rust and Go nodes
//!   can share a cluster. A failed fetch falls back to a local load; a request from a peer
//!   is never forwarded again.
//! - The peer list is static ([`Cache::set_peers`]) or follows the registry
//!   ([`Cache::follow`]).
//! - Writes follow mailgun/groupcache: [`Group::set`] stores a value on its owner (`PUT`),
//!   [`Group::remove`] drops a key on every node (`DELETE`); a load in flight never
//!   overwrites a newer write. Values may expire ([`Loaded`], [`loader_fn`]); the expiry
//!   travels with the value (`GetResponse.expire`), so copies on every node expire together.
//! - [`Group::flush`] drops a group on every node through a generation in the registry
//!   ([`Cache::follow_flushes`]). After the peer list changes, a key's new owner first asks
//!   the key's previous owner before its getter ([`CacheBuilder::handoff_window`]).
//!
//! A [`Cache`] owns a node's groups and its peers. The one process-wide state is a list of
//! weak references to the groups, which [`publish_metrics`] walks.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use svckit_cache::{getter_fn, BoxError, Cache};
//! use svckit_registry::Discovery;
//!
//! let cache = Cache::builder("http://127.0.0.1:9101").build()?;
//! let group = cache
//!     .new_group("users", 32 << 20, getter_fn(|key: String| async move {
//!         Ok::<_, BoxError>(Bytes::from(format!("profile of {key}")))
//!     }))
//!     .build()?;
//! // Peers from the registry: every instance of "groupcache" becomes http://{addr}.
//! # let discovery = Discovery::from_static([]);
//! let _follower = cache.follow(&discovery, "groupcache")?;
//! // Serve the peer protocol beside the application's routes.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let app = cache.router();
//! tokio::spawn(async move { axum::serve(listener, app).await });
//! assert_eq!(group.get("42").await?, "profile of 42");
//! // Or lend the value to a closure: a hit then takes no reference on it.
//! assert_eq!(group.get_with("42", |v| v.len()).await?, 13);
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics and traces
//!
//! A hit records nothing beyond the group's own striped counters ([`Group::stats`]).
//! [`publish_metrics`] writes those of every group in the process into the [`metrics`](::metrics)
//! facade when asked: call it right before the recorder renders (a `/metrics` route does
//! `publish_metrics(); handle.render()`), or on a timer with an exporter that pushes. All
//! families have the label `group` (groups of one name in one process are summed; a dropped
//! group's counts stay in its counters); keys are never labels.
//!
//! | family | type | other labels | [`Stats`] field |
//! |---|---|---|---|
//! | `svckit_cache_gets_total` | counter | | `gets` (a peer's request is a get on the owner) |
//! | `svckit_cache_hits_total` | counter | `tier` = `main`, `hot` | `main_cache.hits`, `hot_cache.hits` |
//! | `svckit_cache_loads_total` | counter | `source` = `peer`, `local` | `peer_loads`, `local_loads` |
//! | `svckit_cache_loads_deduped_total` | counter | | `loads_deduped` |
//! | `svckit_cache_peer_errors_total` | counter | `kind` = `unreachable` (refused, reset, timed out), `answered` (an error answer: the owner's getter failed) | `peer_unreachable`, `peer_errors - peer_unreachable` |
//! | `svckit_cache_getter_errors_total` | counter | | `local_load_errors` |
//! | `svckit_cache_handoff_loads_total` | counter | | `handoff_loads` |
//! | `svckit_cache_peer_requests_served_total` | counter | | `server_requests` |
//! | `svckit_cache_evictions_total` | counter | `tier` | `main_cache.evictions`, `hot_cache.evictions` |
//! | `svckit_cache_bytes` | gauge | `tier` | `main_cache.bytes`, `hot_cache.bytes` |
//! | `svckit_cache_items` | gauge | `tier` | `main_cache.items`, `hot_cache.items` |
//! | `svckit_cache_budget_bytes` | gauge | | [`Group::budget_bytes`] |
//!
//! A get that misses memory runs in an info span `cache_get` with the fields `group`,
//! `peer_request` (false for a caller on this node, true for a peer's request served here)
//! and `outcome`, recorded when the load ends: `peer` (fetched from the key's owner),
//! `local` (this node's getter), `handoff` (the previous owner's memory, see
//! [`CacheBuilder::handoff_window`]), `hit` (an earlier load of the key had just finished)
//! or `error`. A hit makes no span. The load, its getter call and its fetch from the owner
//! run inside that span; with the `otel` feature the fetch carries the span's W3C
//! `traceparent` (through svckit-balancer's transport), so the owner's server span, and the
//! `cache_get` span it serves the request in, join the caller's trace.
//!
//! For a status page: [`Cache::groups`] with each group's [`name`](Group::name),
//! [`stats`](Group::stats) and [`budget_bytes`](Group::budget_bytes);
//! [`Cache::self_url`], [`Cache::peers`] and [`Cache::ring_shares`].

mod cache;
mod clock;
mod error;
mod flush;
mod follower;
mod getter;
mod group;
mod lru;
mod metrics;
mod peers;
mod protocol;
mod ring;
mod server;
mod singleflight;
mod stats;
mod store;

pub use crate::metrics::publish_metrics;
pub use cache::{
    Cache, CacheBuilder, DEFAULT_BASE_PATH, DEFAULT_HANDOFF_WINDOW, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_PEER_TIMEOUT,
};
pub use error::{BoxError, Error, PeerError};
pub use flush::{flush_group, generation_key, FlushFollower, GENERATION_PREFIX};
pub use follower::{PeerFollower, PEER_COALESCE};
pub use getter::{getter_fn, loader_fn, Getter, GetterFn, Loaded, LoaderFn};
pub use group::{Group, GroupBuilder, Removed, DEFAULT_HOT_ONE_IN, DEFAULT_MAX_KEY_LEN};
pub use peers::SECRET_HEADER;
pub use ring::{crc32_ieee, GroupcacheHashFn, GroupcacheRing, DEFAULT_REPLICAS};
pub use server::{PeerFuture, PeerService};
pub use stats::{CacheStats, Stats};
