//! [`CountingOrigin`]: an HTTP origin on a loopback port that counts its fetches per key, for
//! tests and benches of caches in front of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;

/// Answers `GET /<key>` with `v:<key>:<n>` for its n-th fetch of the key; keys starting with
/// `slow` take 600 ms. Clones share the counts. Serves until the runtime ends.
#[derive(Debug, Clone, Default)]
pub struct CountingOrigin(Arc<Mutex<HashMap<String, u64>>>);

impl CountingOrigin {
    /// How often `key` was fetched.
    pub fn fetches(&self, key: &str) -> u64 {
        self.counts().get(key).copied().unwrap_or(0)
    }

    /// How many fetches of any key.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts serving on a free loopback port; returns its base URL (`http://127.0.0.1:N`).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(&self) -> String {
        async fn serve(State(origin): State<CountingOrigin>, Path(key): Path<String>) -> String {
            let n = {
                let mut counts = origin.counts();
                let n = counts.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            if key.starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            format!("v:{key}:{n}")
        }
        let app = Router::new()
            .route("/{*key}", get(serve))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}
