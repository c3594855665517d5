//! A groupcache-compatible distributed cache.
