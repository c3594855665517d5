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
//! A [`Cache`] owns a node's groups and its peers; there are no process globals.
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

mod cache;
mod clock;
mod error;
mod flush;
mod follower;
mod getter;
mod group;
mod lru;
mod peers;
mod protocol;
mod ring;
mod server;
mod singleflight;
mod stats;
mod store;

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
